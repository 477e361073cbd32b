# -*- test-case-name: tests.test_client_connecting,tests.test_client -*-
"""
The connecting half of L{relay.client.Client}: one attempt at a time on
the injected reactor, each bounded by C{timeout}; the HELLO (with the
resume token of the last WELCOME, and the C{--auth} token); a handshake
refused; and the retry with backoff after a lost connection or a failed
attempt.  The first attempt fails fast with a one-line error instead.
"""

from twisted.internet import defer

from relay import wire
from relay.client.errors import (
    ClientClosed, ConnectFailed, HandshakeRefused, describe_connect_failure)
from relay.client.protocol import RelayClientFactory, untrusted_peer

IDLE, CONNECTING, HANDSHAKING, ACTIVE, WAITING, CLOSING, CLOSED = (
    "idle", "connecting", "handshaking", "active", "waiting", "closing", "closed")


class Connecting:
    """
    Mixed into L{relay.client.Client}, which provides the attributes set in
    its C{__init__} (C{_reactor}, C{_endpoint}, C{_timeout}, C{_policy},
    C{_first}, C{_proto}, C{state}, ...), C{_welcome(payload)} and
    C{_finish(error, first_error)}.
    """

    def start(self):
        """Connect; a Deferred firing with this client after the first WELCOME."""
        if self._first is not None:
            raise RuntimeError("Client.start() called twice")
        self._first = defer.Deferred()
        self._connect_attempt()
        return self._first

    def _connect_attempt(self):
        self._retry_call = None
        self.state = CONNECTING
        self._timed_out = False
        self._timeout_call = self._reactor.callLater(self._timeout, self._attempt_timed_out)
        d = self._attempt_d = self._endpoint.connect(RelayClientFactory(self, self._reactor))
        d.addErrback(self._connect_failed)

    def _attempt_timed_out(self):
        self._timeout_call = None
        self._timed_out = True
        if self.state == CONNECTING and self._attempt_d is not None:
            self._attempt_d.cancel()
        elif self.state == HANDSHAKING and self._proto is not None:
            self._proto.transport.abortConnection()

    def _cancel_timeout(self):
        if self._timeout_call is not None and self._timeout_call.active():
            self._timeout_call.cancel()
        self._timeout_call = None

    def _connect_failed(self, failure):
        self._attempt_d = None
        self._cancel_timeout()
        if self.state in (CLOSING, CLOSED):
            return None
        if self._timed_out:
            error = ConnectFailed("timed out after {}s connecting to {}".format(
                self._timeout, self.endpoint_string), "timeout")
        else:
            error = describe_connect_failure(failure.value, self.endpoint_string)
        self._attempt_failed(error)
        return None

    def connection_made(self, proto):
        self._attempt_d = None
        if self.state != CONNECTING:
            proto.transport.abortConnection()
            return
        problem = untrusted_peer(proto.transport, self.endpoint_string, self._trust_uid)
        if problem is not None:
            self._cancel_timeout()
            proto.transport.abortConnection()
            self._attempt_failed(ConnectFailed(problem, "untrusted"))
            return
        self._proto = proto
        self.state = HANDSHAKING
        self._send_hello()

    def _send_hello(self):
        payload = {
            "agent": self.agent_name,
            "capabilities": {"ack": True, "resume": True, "max_inflight": 256,
                             "supports_topics": True},
        }
        payload.update(self._hello_fields)
        if self.resume_token:
            payload["session"] = {"resume_token": self.resume_token}
        if self._token is not None:
            # The daemon's --auth checks it (issue 9).
            payload["auth"] = {"token": self._token}
        self._proto.send_frame(wire.HELLO, payload)

    def _attempt_failed(self, error):
        first = self._first
        if first is not None and not first.called:
            # The first connection fails fast with the reason.
            self._finish(ClientClosed("could not connect: {}".format(error)), first_error=error)
            return
        self._attempt += 1
        if not self._reconnect or (self._max_attempts is not None
                                   and self._attempt > self._max_attempts):
            self.log.error("{agent}: giving up reconnecting: {error}",
                           agent=self.agent_name, error=str(error))
            self._finish(ClientClosed("gave up reconnecting: {}".format(error)))
            return
        delay = self._policy(self._attempt)
        self.log.info("{agent}: {error}; retrying in {delay:.2f}s (attempt {attempt})",
                      agent=self.agent_name, error=str(error), delay=delay,
                      attempt=self._attempt)
        self.state = WAITING
        self._retry_call = self._reactor.callLater(delay, self._connect_attempt)

    def _error_frame(self, proto, payload):
        code = payload.get("code")
        message = payload.get("message")
        if self.state == HANDSHAKING:
            if code == wire.RESUME_TOO_OLD:
                self.log.info("{agent}: resume token refused; starting a new session",
                              agent=self.agent_name)
                self.resume_token = None
                if not payload.get("fatal"):
                    self._send_hello()
                return
            error = HandshakeRefused(code, message)
            first = self._first
            if not first.called:
                self._cancel_timeout()
                self._finish(ClientClosed(str(error)), first_error=error)
                proto.transport.loseConnection()
                return
            self.log.error("{agent}: {error}", agent=self.agent_name, error=str(error))
            proto.transport.loseConnection()
            return
        self.log.warn("{agent}: daemon ERROR {code}: {message}{fatal}", agent=self.agent_name,
                      code=code, message=message,
                      fatal=" (fatal)" if payload.get("fatal") else "")
        if payload.get("fatal") and self.state == ACTIVE:
            # The daemon is closing this connection on purpose, e.g. a newer
            # connection took this agent name: reconnecting would throw that one
            # out in turn, so this client stops instead.
            self._fatal = "the daemon closed the connection: {} {}".format(code, message)
