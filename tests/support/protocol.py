# -*- test-case-name: tests.test_protocol,tests.test_router -*-
"""
The protocol-level harness of the unit tests: a router and factory on a
L{task.Clock} over a real store, and agent connections on
L{StringTransport}s whose frames are decoded.
"""

import os
import sqlite3

from twisted.internet import defer, task
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python import failure

from relay.protocol import RelayFactory
from relay.router import Router
from relay.store import Store
from relay.testing import ThreadlessConnectionPool, settle
from tests.support.frames import decode_from, encode, hello


class Transport(StringTransport):
    """
    A StringTransport whose loseConnection/abortConnection tell the
    protocol the connection is lost, as a real transport eventually does.
    """

    def __init__(self):
        StringTransport.__init__(self)
        self.protocol = None
        self.connected = True
        self.aborted = False

    def loseConnection(self):
        self.disconnecting = True
        if self.connected:
            self.connected = False
            self.protocol.connectionLost(failure.Failure(ConnectionDone("closed")))

    def abortConnection(self):
        self.aborted = True
        self.loseConnection()


class Peer:
    """
    One agent connection: a L{RelayProtocol} on a L{Transport}, with the
    frames the daemon wrote to it decoded.
    """

    def __init__(self, factory):
        self.transport = Transport()
        self.proto = factory.buildProtocol(None)
        self.transport.protocol = self.proto
        self.proto.makeConnection(self.transport)
        self._offset = 0
        self.frames = []
        self._seen = 0

    def feed(self, env):
        self.proto.dataReceived(encode(env))

    def raw(self, data):
        self.proto.dataReceived(data)

    def received(self):
        """
        Every frame the daemon wrote to this connection so far.
        """
        frames, self._offset = decode_from(self.transport.value(), self._offset)
        self.frames.extend(frames)
        return self.frames

    def new(self):
        """
        Frames received since the last call.
        """
        frames = self.received()
        out = frames[self._seen:]
        self._seen = len(frames)
        return out

    def of_type(self, kind):
        return [f for f in self.received() if f.get("type") == kind]

    def ack(self, deliver):
        self.feed({"v": 1, "type": "ACK", "id": "a" + deliver["id"],
                   "payload": {"ack_id": deliver["id"], "seq": deliver["delivery"]["seq"]}})

    @property
    def closed(self):
        return not self.transport.connected


class Relay:
    """
    A router and factory over a real store on a fresh SQLite file, all on
    one L{task.Clock} (the store's pool is threadless).
    """

    def __init__(self, testcase, max_frame_bytes=1048576, heartbeat=5.0, ack_timeout=5.0,
                 message_ttl=86400.0, **router_kw):
        self.testcase = testcase
        self.clock = task.Clock()
        directory = os.path.abspath(testcase.mktemp())
        os.makedirs(directory)
        self.db_path = os.path.join(directory, "relay.sqlite")
        self.store = Store(self.clock, self.db_path, batch_delay=0.01,
                           pool_factory=ThreadlessConnectionPool.on(self.clock))
        self.store.open()
        testcase.addCleanup(lambda: settle(self.clock, self.store.close()))
        self.router = Router(self.clock, self.store, ack_timeout=ack_timeout,
                             message_ttl=message_ttl, **router_kw)
        self.router.start()
        testcase.addCleanup(self.router.stop)
        self.factory = RelayFactory(self.router, self.clock, max_frame_bytes=max_frame_bytes,
                                    heartbeat=heartbeat, ack_timeout=ack_timeout)

    def connect(self):
        return Peer(self.factory)

    @defer.inlineCallbacks
    def agent(self, name, **payload):
        """
        A connected agent that said HELLO and is live (its catch-up from
        the store is done).
        """
        peer = self.connect()
        peer.feed(hello(name, **payload))
        yield self.live(name)
        return peer

    def live(self, name, turns=1000):
        """
        Turn the clock (without moving time) until C{name}'s catch-up from
        the store is done; a Deferred firing with its session.
        """
        for _ in range(turns):
            session = self.router.sessions.get(name)
            if session is not None and session.live and not session.catching_up:
                return defer.succeed(session)
            self.clock.advance(0)
        raise AssertionError("agent %s never became live" % (name,))

    def flush(self):
        """
        Commit everything queued (one clock turn per transaction); a fired
        Deferred.
        """
        return settle(self.clock, self.store.flush())

    def rows(self, sql, *args):
        conn = sqlite3.connect(self.db_path)
        try:
            return conn.execute(sql, args).fetchall()
        finally:
            conn.close()
