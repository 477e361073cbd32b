# -*- test-case-name: tests.test_holding -*-
"""
Tests for L{relay.holding.SendHolding}: a paused connection's SENDs are
held in order and routed when every reason has cleared; beyond the bound
behind a store that is behind, the socket itself stops being read.  A
L{RelayProtocol} on a L{StringTransport}, the router on
L{relay.testing.MemoryStore}, one L{task.Clock}.
"""

from twisted.internet import task
from twisted.internet.testing import StringTransport
from twisted.trial import unittest

from relay.frames import frame
from relay.protocol import RelayFactory
from relay.router import Router
from relay.testing import FakeConnection, MemoryStore


def send(to, body):
    return frame({"v": 1, "type": "SEND", "id": "s-" + body, "to": to,
                  "payload": {"kind": "message", "body": body}})


class SendHoldingTests(unittest.TestCase):

    def setUp(self):
        self.clock = task.Clock()
        self.router = Router(self.clock, MemoryStore(self.clock))
        self.factory = RelayFactory(self.router, self.clock, hold_max=2)
        self.rx = FakeConnection(self.router, self.clock)
        self.rx.hello("rx")
        self.proto = self.factory.buildProtocol(None)
        self.transport = StringTransport()
        self.proto.makeConnection(self.transport)
        self.addCleanup(self.proto.connectionLost, None)
        self.proto.dataReceived(frame({"v": 1, "type": "HELLO", "payload": {"agent": "tx"}}))
        self.clock.advance(0)

    def bodies(self):
        return [d["payload"]["body"] for d in self.rx.delivered()]

    def test_held_until_every_reason_clears(self):
        """
        SENDs read while the connection is paused for two reasons wait;
        clearing one routes nothing, clearing both routes them in order.
        """
        self.proto.pause_reading(("queue", "rx"))
        self.proto.pause_reading("rate")
        self.proto.dataReceived(send("rx", "a") + send("rx", "b"))
        self.assertEqual(len(self.proto.held), 2)
        self.proto.resume_reading("rate")
        self.clock.advance(0)
        self.assertEqual(self.bodies(), [])
        self.proto.resume_reading(("queue", "rx"))
        self.clock.advance(0)
        self.assertEqual(self.bodies(), ["a", "b"])
        self.assertEqual((len(self.proto.held), self.proto.held_bytes), (0, 0))

    def test_full_hold_behind_the_store_stops_reading(self):
        """
        Beyond the hold while the store is behind, the SEND is kept and the
        socket is no longer read; when the store catches up, reading
        resumes and all of them are routed.
        """
        self.proto.pause_reading("store")
        self.proto.dataReceived(send("rx", "a") + send("rx", "b") + send("rx", "c"))
        self.assertEqual(len(self.proto.held), 3)
        self.assertEqual(self.proto.stop_reasons, {"store"})
        self.assertEqual(self.transport.producerState, "paused")
        self.proto.resume_reading("store")
        self.clock.advance(0)
        self.assertEqual(self.transport.producerState, "producing")
        self.assertEqual(self.bodies(), ["a", "b", "c"])

    def test_close_routes_what_is_held(self):
        """
        A connection closed with SENDs held routes them first: they were
        read, so they are not dropped.
        """
        self.proto.pause_reading(("queue", "rx"))
        self.proto.dataReceived(send("rx", "kept"))
        self.proto.close()
        self.assertEqual(self.bodies(), ["kept"])
