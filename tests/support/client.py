"""
The in-memory client harness (a L{relay.client.Client} on a
MemoryReactorClock with StringTransports) shared by the client's unit tests.
"""

from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure

from relay.client import Client
from tests.support.frames import decode_from, encode


def decode_frames(transport):
    """Every envelope written to ``transport`` since the last call."""
    frames, _ = decode_from(transport.value())
    transport.clear()
    return frames


class Harness:
    """A Client on a MemoryReactorClock, with helpers to play the daemon."""

    def __init__(self, testcase, **kwargs):
        self.reactor = MemoryReactorClock()
        kwargs.setdefault("retry_policy", lambda attempt: 0.5 * attempt)
        self.client = Client(self.reactor, "unix:/nowhere/relay.sock", "alice", **kwargs)
        self.proto = None
        self.transport = None

    def attempts(self):
        return len(self.reactor.unixClients)

    def accept(self):
        """The latest connection attempt succeeds; returns the HELLO frame."""
        factory = self.reactor.unixClients[-1][1]
        self.proto = factory.buildProtocol(None)
        self.transport = StringTransport()
        self.proto.makeConnection(self.transport)
        (hello,) = decode_frames(self.transport)
        return hello

    def refuse(self, error=None):
        factory = self.reactor.unixClients[-1][1]
        connector = self.reactor.connectors[-1]
        factory.clientConnectionFailed(connector, Failure(error or ConnectionRefusedError()))

    def feed(self, type_, payload=None, **fields):
        env = {"v": 1, "type": type_, "id": fields.pop("id", "srv"), "ts": 0,
               "payload": payload if payload is not None else {}}
        env.update(fields)
        self.proto.dataReceived(encode(env))

    def welcome(self, token="tok-1"):
        self.feed("WELCOME", {"session_id": "sess", "resume_token": token,
                              "server": {"max_frame_bytes": 1048576, "heartbeat_ms": 5000}})

    def drop(self):
        self.proto.connectionLost(Failure(ConnectionDone()))

    def sent(self):
        return decode_frames(self.transport)

    def deliver(self, message_id, body="hi", seq=1):
        self.feed("DELIVER", {"kind": "message", "body": body}, id=message_id,
                  to="alice", delivery={"seq": seq, "session_id": "sess"},
                  **{"from": "bob"})
