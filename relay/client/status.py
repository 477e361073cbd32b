# -*- test-case-name: tests.test_client -*-
"""
The STATUS request (a relay extension to the agent-relay protocol): connect,
send ``{"type": "STATUS", "id": ...}`` without saying HELLO (so no agent name is
registered), wait for the ``STATUS_REPLY`` with the same id, say BYE.
"""

from twisted.internet import defer
from twisted.internet.endpoints import clientFromString

from relay import wire
from relay.client.errors import ConnectFailed, ProtocolViolation, describe_connect_failure
from relay.client.protocol import RelayClientFactory, untrusted_peer


class _StatusRequest:
    """The owner of the one connection a STATUS request uses."""

    def __init__(self, endpoint_string, trust_uid=None):
        self.endpoint_string = endpoint_string
        self.trust_uid = trust_uid
        self.result = defer.Deferred()
        self.request_id = None
        self.proto = None

    def connection_made(self, proto):
        self.proto = proto
        problem = untrusted_peer(proto.transport, self.endpoint_string, self.trust_uid)
        if problem is not None:
            proto.transport.abortConnection()
            self.result.errback(ConnectFailed(problem, "untrusted"))
            return
        self.request_id = proto.send_frame(wire.STATUS)["id"]

    def frame_received(self, proto, env):
        if self.result.called:
            return
        payload = env.get("payload")
        if env["type"] == wire.STATUS_REPLY and env.get("id") == self.request_id:
            if not isinstance(payload, dict):
                self.result.errback(ProtocolViolation("STATUS_REPLY without a payload"))
            else:
                self.result.callback(payload)
            proto.send_frame(wire.BYE)
            proto.transport.loseConnection()
        elif env["type"] == wire.ERROR:
            payload = payload if isinstance(payload, dict) else {}
            self.result.errback(ProtocolViolation(
                "the daemon does not answer STATUS: {} {}".format(
                    payload.get("code"), payload.get("message"))))
            proto.transport.loseConnection()

    def connection_lost(self, proto, reason):
        if not self.result.called:
            self.result.errback(ConnectFailed(
                "the daemon at {} closed the connection before STATUS_REPLY".format(
                    self.endpoint_string), "closed"))


def fetch_status(reactor, endpoint_string, timeout=10.0, trust_uid=None):
    """
    A Deferred firing with the daemon's STATUS_REPLY payload (agents, store,
    rate_limit, sync, uptime_s), or failing with ``ConnectFailed`` /
    ``ProtocolViolation``. On a Unix socket the daemon must run as
    ``trust_uid`` (default: our own uid).
    """
    try:
        endpoint = clientFromString(reactor, endpoint_string)
    except (ValueError, TypeError, KeyError) as e:
        return defer.fail(ConnectFailed("bad endpoint {!r}: {}".format(endpoint_string, e),
                                        "endpoint"))
    request = _StatusRequest(endpoint_string, trust_uid)
    connecting = endpoint.connect(RelayClientFactory(request, reactor))

    def connect_failed(failure):
        # After a timeout the cancelled attempt lands here too: already reported.
        if not request.result.called:
            request.result.errback(describe_connect_failure(failure.value, endpoint_string))
    connecting.addErrback(connect_failed)

    def timed_out():
        if request.result.called:
            return
        request.result.errback(ConnectFailed(
            "no STATUS_REPLY from {} within {}s".format(endpoint_string, timeout), "timeout"))
        if request.proto is not None:
            request.proto.transport.abortConnection()
        else:
            connecting.cancel()
    call = reactor.callLater(timeout, timed_out)

    def done(result):
        if call.active():
            call.cancel()
        return result
    return request.result.addBoth(done)
