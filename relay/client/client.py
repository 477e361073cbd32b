# -*- test-case-name: tests.test_client -*-
"""
``Client``: one agent's connection to the relay daemon, kept up across daemon
restarts.

- ``start()`` connects, says HELLO and fires with the client after WELCOME; the
  first attempt fails fast with a one-line error (``ConnectFailed``,
  ``HandshakeRefused``).
- After that, a lost connection is retried with exponential backoff
  (``twisted.application.internet.backoffPolicy``, on the injected reactor); each
  new connection says HELLO again with the resume token of the last WELCOME and
  re-sends SUBSCRIBE for every topic.
- ``send()`` returns a Deferred that fires with the SEND's own id (the one this
  client generated) when the daemon's receipt arrives (``durable=True``), or as
  soon as the frame is written (``durable=False``); a NACK fails it with
  ``SendRefused``. A SEND made while disconnected, or written but not yet
  receipted when the connection dropped, waits and is written again after the
  next WELCOME, in order: never dropped silently. (A SEND whose receipt was lost
  with the connection may thus be stored twice; receivers de-duplicate by the
  DELIVER id, which differs, so give such messages your own idempotency key in
  ``data`` if it matters.)
- Deliveries go to ``on_message(message)`` if given, else to a queue read with
  ``next_message()`` or ``async for message in client``. The ACK is sent after
  the callback returns (or its Deferred fires), or when ``next_message()`` hands
  the message out. A callback that fails is logged and its message is not ACKed,
  so the daemon delivers it again after its ack timeout. Redeliveries of an id
  already handled are ACKed again and not passed on.
- Why not ``ClientService``: the HELLO/WELCOME handshake would be its
  ``prepareConnection``, and in Twisted 26.10 a connection lost while that is
  pending (the daemon restarting or refusing the HELLO) raises automat's
  ``NoTransition: no transition for _clientDisconnected in ... 'Connecting'``
  and the service never retries. The loop here is small and uses the same
  ``backoffPolicy``.
- A fatal ERROR on an active connection (the daemon's way of saying a newer
  connection took this agent name) closes the client instead of reconnecting:
  two clients with one name would otherwise throw each other out forever.
"""

import collections
import random
import re

from twisted.application.internet import backoffPolicy
from twisted.internet import defer
from twisted.internet.endpoints import clientFromString
from twisted.logger import Logger

from relay.client.errors import (
    ClientClosed, ConnectFailed, HandshakeRefused, SendRefused, TooManyPending,
    describe_connect_failure)
from relay.client.message import Message
from relay.client.protocol import RelayClientFactory, envelope, untrusted_peer

NAME_RE = re.compile(r"[A-Za-z0-9._\-@:]{1,128}\Z")
KINDS = ("message", "action", "state", "thinking")

IDLE, CONNECTING, HANDSHAKING, ACTIVE, WAITING, CLOSING, CLOSED = (
    "idle", "connecting", "handshaking", "active", "waiting", "closing", "closed")


def check_agent_name(name):
    """Raise ValueError with a one-line reason unless ``name`` may register."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ValueError(
            "invalid agent name {!r}: use 1-128 letters, digits, '.', '_', '-', '@', ':'"
            .format(name))
    if name.startswith("_"):
        raise ValueError("invalid agent name {!r}: names starting with '_' are reserved"
                         .format(name))


class _PendingSend:
    __slots__ = ("env", "deferred", "durable", "written")

    def __init__(self, env, deferred, durable):
        self.env = env
        self.deferred = deferred
        self.durable = durable
        self.written = False


class Client:
    """One agent's connection to the daemon; see the module docstring."""

    log = Logger()

    def __init__(self, reactor, endpoint_string, agent_name, on_message=None,
                 reconnect=True, timeout=10.0, retry_policy=None, max_attempts=None,
                 dedupe_size=10000, queue_high=1000, hello_fields=None, max_pending=10000,
                 trust_uid=None, token=None):
        check_agent_name(agent_name)
        if token is not None and (not isinstance(token, str) or not token):
            raise ValueError("token must be a non-empty string")
        self._token = token
        try:
            self._endpoint = clientFromString(reactor, endpoint_string)
        except (ValueError, TypeError, KeyError) as e:
            raise ConnectFailed("bad endpoint {!r}: {}".format(endpoint_string, e), "endpoint")
        self._reactor = reactor
        self.endpoint_string = endpoint_string
        self.agent_name = agent_name
        self._hello_fields = dict(hello_fields or {})
        self._on_message = on_message
        self._reconnect = reconnect
        self._timeout = timeout
        self._policy = retry_policy or backoffPolicy(
            initialDelay=0.1, maxDelay=30.0, factor=2.0, jitter=lambda: random.random() * 0.1)
        self._max_attempts = max_attempts
        self._dedupe_size = dedupe_size
        self._queue_high = queue_high
        self._max_pending = max_pending
        self._trust_uid = trust_uid

        self.state = IDLE
        self.session_id = None
        self.resume_token = None
        self.server = {}
        self.connections = 0        # WELCOMEs received so far
        self.duplicates = 0         # redeliveries not passed on
        self.busy_frames = 0
        self.last_busy = None       # payload of the last BUSY frame

        self._proto = None
        self._attempt = 0
        self._attempt_d = None
        self._timeout_call = None
        self._timed_out = False
        self._retry_call = None
        self._first = None
        self._close_waiters = []
        self._closed_watchers = []
        self._fatal = None
        self.close_reason = None    # the ClientClosed error once CLOSED
        self._pending = collections.OrderedDict()   # SEND id -> _PendingSend
        self._topics = {}                            # ordered set
        self._seen = collections.OrderedDict()       # DELIVER id -> "running" | "done"
        self._queue = collections.deque()
        self._getters = collections.deque()
        self._paused = False
        self._status_waiters = {}

    # -- connecting -------------------------------------------------------

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
        self._proto.send_frame("HELLO", payload)

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

    def _welcome(self, payload):
        self._cancel_timeout()
        self.state = ACTIVE
        self._attempt = 0
        self.connections += 1
        self.session_id = payload.get("session_id")
        self.resume_token = payload.get("resume_token") or self.resume_token
        self.server = payload.get("server") or {}
        proto = self._proto
        for topic in self._topics:
            proto.send_frame("SUBSCRIBE", {}, topic=topic)
        for pending in list(self._pending.values()):
            self._write_send(pending)
        if self._paused:
            proto.pauseProducing()
        if self.connections > 1:
            self.log.info("{agent}: reconnected (session {session}), {n} SENDs re-sent",
                          agent=self.agent_name, session=self.session_id,
                          n=len(self._pending))
        first = self._first
        if not first.called:
            first.callback(self)

    # -- frames -------------------------------------------------------------

    def frame_received(self, proto, env):
        if proto is not self._proto:
            return
        kind = env["type"]
        payload = env.get("payload")
        if not isinstance(payload, dict):
            payload = {}
        if kind == "DELIVER":
            self._deliver(env)
        elif kind == "ACK":
            pending = self._pending.pop(payload.get("ack_id"), None)
            if pending is not None:
                pending.deferred.callback(pending.env["id"])
        elif kind == "NACK":
            send_id = payload.get("ack_id")
            pending = self._pending.pop(send_id, None)
            if pending is not None:
                pending.deferred.errback(SendRefused(
                    send_id, payload.get("code"), payload.get("message"),
                    payload.get("retry_after_ms")))
            else:
                self.log.warn("{agent}: NACK for an unknown SEND {id}: {code} {message}",
                              agent=self.agent_name, id=send_id, code=payload.get("code"),
                              message=payload.get("message"))
        elif kind == "WELCOME":
            if self.state == HANDSHAKING:
                self._welcome(payload)
        elif kind == "STATUS_REPLY":
            waiter = self._status_waiters.pop(env.get("id"), None)
            if waiter is not None:
                waiter.callback(payload)
        elif kind == "BUSY":
            self.busy_frames += 1
            self.last_busy = payload
            self.log.debug("{agent}: daemon busy, retry after {ms} ms (queue {depth})",
                           agent=self.agent_name, ms=payload.get("retry_after_ms"),
                           depth=payload.get("queue_depth"))
        elif kind == "ERROR":
            self._error_frame(proto, payload)
        elif kind in ("PONG", "BYE"):
            pass
        else:
            self.log.debug("{agent}: ignoring a {type} frame", agent=self.agent_name, type=kind)

    def _error_frame(self, proto, payload):
        code = payload.get("code")
        message = payload.get("message")
        if self.state == HANDSHAKING:
            if code == "RESUME_TOO_OLD":
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

    def connection_lost(self, proto, reason):
        if proto is not self._proto:
            return
        self._proto = None
        self._cancel_timeout()
        for waiter in self._status_waiters.values():
            waiter.errback(ClientClosed("the connection closed before STATUS_REPLY"))
        self._status_waiters.clear()
        for pending in self._pending.values():
            pending.written = False
        if self.state in (CLOSING, CLOSED):
            self._finish(ClientClosed("the client was closed"))
            return
        if self.state == HANDSHAKING:
            if self._timed_out:
                error = ConnectFailed("timed out after {}s waiting for WELCOME from {}".format(
                    self._timeout, self.endpoint_string), "timeout")
            else:
                error = ConnectFailed("the daemon closed the connection during HELLO ({})"
                                      .format(self.endpoint_string), "closed")
            self._attempt_failed(error)
            return
        if self.state == ACTIVE and self._fatal:
            self.log.error("{agent}: {why}; not reconnecting", agent=self.agent_name,
                           why=self._fatal)
            self._finish(ClientClosed(self._fatal))
            return
        if self.state == ACTIVE:
            self.log.info("{agent}: connection to the daemon lost ({why}); {n} SENDs wait",
                          agent=self.agent_name, why=reason.getErrorMessage(),
                          n=len(self._pending))
            self._attempt_failed(ConnectFailed("connection lost", "closed"))

    # -- sending ------------------------------------------------------------

    def send(self, to, body, *, kind="message", data=None, thread=None, topic=None,
             durable=True, ttl_ms=None, importance=None, reply_to=None, meta=None):
        """
        Send ``body`` to agent ``to`` (``"*"`` broadcasts). Returns a Deferred
        firing with the SEND id once the daemon's receipt arrives (``durable``),
        or once written (not ``durable``); failing with ``SendRefused`` on NACK or
        ``ClientClosed`` if the client is closed first; failing at once with
        ``TooManyPending`` when ``max_pending`` SENDs already wait (memory stays
        bounded while the daemon is away).
        """
        if self.state == CLOSED or self.state == CLOSING:
            return defer.fail(ClientClosed("the client is closed"))
        if len(self._pending) >= self._max_pending:
            # Bounded memory while the daemon is away: refuse loudly.
            return defer.fail(TooManyPending(
                "{} messages already wait for the daemon's receipt (max_pending); "
                "try again later".format(len(self._pending))))
        if not isinstance(body, str):
            return defer.fail(TypeError("body must be a string, not {}".format(
                type(body).__name__)))
        if kind not in KINDS:
            return defer.fail(ValueError("kind must be one of {}, not {!r}".format(
                ", ".join(KINDS), kind)))
        if to != "*":
            try:
                check_agent_name(to)
            except ValueError as e:
                return defer.fail(ValueError(str(e).replace("agent name", "recipient")))
        if data is not None and not isinstance(data, dict):
            return defer.fail(TypeError("data must be a dict"))
        payload = {"kind": kind, "body": body}
        if data is not None:
            payload["data"] = data
        if thread is not None:
            payload["thread"] = thread
        fields = {"to": to}
        if topic is not None:
            fields["topic"] = topic
        payload_meta = dict(meta or {})
        if durable:
            payload_meta["requires_ack"] = True
        if ttl_ms is not None:
            payload_meta["ttl_ms"] = ttl_ms
        if importance is not None:
            payload_meta["importance"] = importance
        if reply_to is not None:
            payload_meta["replyTo"] = reply_to
        if payload_meta:
            fields["payload_meta"] = payload_meta
        env = envelope("SEND", self._reactor, payload, **fields)
        send_id = env["id"]
        # Cancelling (e.g. addTimeout) forgets the SEND: not re-sent after that.
        pending = _PendingSend(env, defer.Deferred(lambda d: self._pending.pop(send_id, None)),
                               durable)
        self._pending[env["id"]] = pending
        if self.state == ACTIVE:
            self._write_send(pending)
        return pending.deferred

    def broadcast(self, body, topic=None, **kwargs):
        """Send to every connected agent, or to the subscribers of ``topic``."""
        return self.send("*", body, topic=topic, **kwargs)

    def _write_send(self, pending):
        env = pending.env
        env["ts"] = int(self._reactor.seconds() * 1000)
        self._proto.send_envelope(env)
        pending.written = True
        if not pending.durable:
            del self._pending[env["id"]]
            pending.deferred.callback(env["id"])

    @property
    def pending_sends(self):
        """How many SENDs still wait for a receipt (or for a connection)."""
        return len(self._pending)

    def subscribe(self, topic):
        """Join ``topic``; kept across reconnects."""
        if not isinstance(topic, str) or not topic:
            raise ValueError("topic must be a non-empty string")
        self._topics[topic] = True
        if self.state == ACTIVE:
            self._proto.send_frame("SUBSCRIBE", {}, topic=topic)

    def unsubscribe(self, topic):
        """Leave ``topic``."""
        self._topics.pop(topic, None)
        if self.state == ACTIVE:
            self._proto.send_frame("UNSUBSCRIBE", {}, topic=topic)

    @property
    def topics(self):
        return list(self._topics)

    def status(self):
        """Ask the daemon for its STATUS_REPLY payload (a relay extension)."""
        if self.state != ACTIVE:
            return defer.fail(ClientClosed("not connected"))
        d = defer.Deferred()
        env = self._proto.send_frame("STATUS")
        self._status_waiters[env["id"]] = d
        return d

    # -- receiving ----------------------------------------------------------

    def _deliver(self, env):
        message = Message(env)
        if not isinstance(message.id, str):
            self.log.warn("{agent}: DELIVER without an id ignored", agent=self.agent_name)
            return
        seen = self._seen.get(message.id)
        if seen is not None:
            self.duplicates += 1
            if seen == "done":
                self._ack(message)
            return
        self._seen[message.id] = "running"
        while len(self._seen) > self._dedupe_size:
            self._seen.popitem(last=False)
        if self._on_message is not None:
            d = defer.maybeDeferred(self._on_message, message)
            d.addCallbacks(lambda _: self._ack(message),
                           lambda f: self._handler_failed(message, f))
            return
        if self._getters:
            self._getters.popleft().callback(message)
            self._ack(message)
            return
        self._queue.append(message)
        if len(self._queue) >= self._queue_high and not self._paused:
            self._paused = True
            if self._proto is not None:
                self._proto.pauseProducing()

    def _handler_failed(self, message, failure):
        self.log.failure("{agent}: on_message failed for {id}; not ACKed, it will come back",
                         failure, agent=self.agent_name, id=message.id)
        self._seen.pop(message.id, None)

    def _ack(self, message):
        if message.id in self._seen:
            self._seen[message.id] = "done"
        if self.state == ACTIVE and self._proto is not None:
            self._proto.send_frame("ACK", {"ack_id": message.id, "seq": message.seq})

    def next_message(self):
        """
        A Deferred firing with the next ``Message`` (it is ACKed then).
        Cancelling the Deferred gives up the wait: a message arriving later
        stays queued for the next call.
        """
        if self._queue:
            message = self._queue.popleft()
            self._ack(message)
            if self._paused and len(self._queue) <= self._queue_high // 2:
                self._paused = False
                if self._proto is not None:
                    self._proto.resumeProducing()
            return defer.succeed(message)
        if self.state == CLOSED:
            return defer.fail(ClientClosed("the client is closed"))
        d = defer.Deferred(self._getters.remove)
        self._getters.append(d)
        return d

    def __aiter__(self):
        return self

    async def __anext__(self):
        try:
            return await self.next_message()
        except ClientClosed:
            raise StopAsyncIteration

    # -- closing ------------------------------------------------------------

    def close(self):
        """
        Say BYE and close; fires when the connection is gone. SENDs still
        waiting for a receipt fail with ``ClientClosed``.
        """
        if self.state == CLOSED:
            return defer.succeed(None)
        d = defer.Deferred()
        self._close_waiters.append(d)
        if self.state == CLOSING:
            return d
        previous = self.state
        self.state = CLOSING
        self._cancel_timeout()
        if self._retry_call is not None and self._retry_call.active():
            self._retry_call.cancel()
        self._retry_call = None
        if self._proto is not None:
            if previous == ACTIVE:
                self._proto.send_frame("BYE")
            self._proto.transport.loseConnection()
        elif self._attempt_d is not None:
            self._attempt_d.cancel()
            self._finish(ClientClosed("the client was closed"))
        else:
            self._finish(ClientClosed("the client was closed"))
        return d

    def when_closed(self):
        """
        A Deferred firing with the ``ClientClosed`` error (as its result, not a
        failure) once this client is closed for good: by ``close()``, by a fatal
        ERROR such as a newer connection taking the name, or after giving up
        reconnecting.
        """
        if self.state == CLOSED:
            return defer.succeed(self.close_reason)
        d = defer.Deferred()
        self._closed_watchers.append(d)
        return d

    def _finish(self, error, first_error=None):
        """
        Become CLOSED; fail whatever still waits with ``error`` (the first
        connection's Deferred with ``first_error`` if given).
        """
        self.state = CLOSED
        self.close_reason = error
        self._cancel_timeout()
        pending, self._pending = self._pending, collections.OrderedDict()
        for item in pending.values():
            item.deferred.errback(ClientClosed(
                "{}; message {} was not confirmed".format(error, item.env["id"])))
        getters, self._getters = self._getters, collections.deque()
        for getter in getters:
            getter.errback(ClientClosed(str(error)))
        waiters, self._close_waiters = self._close_waiters, []
        for waiter in waiters:
            waiter.callback(None)
        watchers, self._closed_watchers = self._closed_watchers, []
        for watcher in watchers:
            watcher.callback(error)
        first = self._first
        if first is not None and not first.called:
            # The first connection failed, or close() came before WELCOME.
            first.errback(first_error or ClientClosed(str(error)))


def connect(reactor, endpoint_string, agent_name, *, on_message=None, reconnect=True,
            timeout=10.0, retry_policy=None, max_attempts=None, max_pending=10000,
            trust_uid=None, token=None, **hello_fields):
    """
    Connect to the daemon at ``endpoint_string`` (any Twisted client endpoint,
    e.g. ``unix:/tmp/agent-relay.sock``) as ``agent_name``. Extra keyword
    arguments go into the HELLO payload (``cli``, ``program``, ``model``,
    ``task``, ``displayName``...). Returns a Deferred firing with a connected
    ``Client`` after WELCOME, or failing with ``ConnectFailed`` (refused, missing
    socket, permission denied, timeout, bad endpoint, or ``reason`` ``untrusted``:
    on a Unix socket the daemon runs as another uid than ``trust_uid``, by
    default our own), ``HandshakeRefused`` (ERROR frame, e.g. ``UNAUTHORIZED``
    for a wrong ``token``) or ``ValueError`` (bad agent name). ``token`` is sent
    as the HELLO's ``payload.auth.token`` for a daemon run with ``--auth``.
    """
    try:
        client = Client(reactor, endpoint_string, agent_name, on_message=on_message,
                        reconnect=reconnect, timeout=timeout, retry_policy=retry_policy,
                        max_attempts=max_attempts, hello_fields=hello_fields,
                        max_pending=max_pending, trust_uid=trust_uid, token=token)
    except (ValueError, ConnectFailed) as e:
        return defer.fail(e)
    return client.start()
