# -*- test-case-name: tests.test_redelivery -*-
"""
Tests for L{relay.redelivery}: the router's redelivery and expiry loops on
a L{task.Clock} over L{relay.testing.MemoryStore}, with
L{relay.testing.FakeConnection}s.
"""

from twisted.internet import task
from twisted.trial import unittest

from relay.router import Router
from relay.testing import FakeConnection, MemoryStore


def send(to, body):
    return {"v": 1, "type": "SEND", "id": "s-" + body, "to": to,
            "payload": {"kind": "message", "body": body}}


class RedeliveryLoopTests(unittest.TestCase):

    def setUp(self):
        self.clock = task.Clock()
        self.store = MemoryStore(self.clock)
        self.router = Router(self.clock, self.store, ack_timeout=1.0)
        self.router.start()
        self.addCleanup(self.router.stop)
        self.alice = FakeConnection(self.router, self.clock)
        self.alice.hello("alice")
        self.bob = FakeConnection(self.router, self.clock)
        self.bob.hello("bob")
        self.clock.advance(0)

    def test_unacked_delivery_is_resent(self):
        """
        A delivery not ACKed within the ack timeout is resent to a peer that
        has shown signs of life since, and counted as redelivered.
        """
        self.router.send(self.alice.session, send("bob", "x"), 10)
        self.assertEqual(len(self.bob.delivered()), 1)
        self.clock.advance(0.5)
        self.bob.last_rx = self.clock.seconds()
        self.clock.advance(1.0)
        self.assertEqual([d["payload"]["body"] for d in self.bob.delivered()], ["x", "x"])
        self.assertEqual(self.router.counters["redelivered"], 1)

    def test_raising_sweep_does_not_stop_redelivery(self):
        """
        A sweep that raises (here: the store refuses a status change once)
        is logged, and the next sweep still resends.
        """
        self.router.send(self.alice.session, send("bob", "x"), 10)
        real = self.store.set_status
        broken = [True]

        def set_status(*args):
            if broken:
                broken.pop()
                raise RuntimeError("store refused")
            return real(*args)

        self.store.set_status = set_status
        self.clock.advance(0.5)
        self.bob.last_rx = self.clock.seconds()
        self.clock.advance(1.0)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(self.router.timers.sweeper.errors, 1)
        self.clock.advance(0.1)
        self.bob.last_rx = self.clock.seconds()
        self.clock.pump([0.25] * 8)
        self.assertGreaterEqual(len(self.bob.delivered()), 2)
        self.assertTrue(self.router.timers.sweeper.running)

    def test_raising_expiry_does_not_stop_expiry(self):
        """
        An expiry run that raises is logged; the next one, a minute later,
        still runs.
        """
        calls = []

        def expire_due(now_ms):
            calls.append(now_ms)
            raise RuntimeError("disk gone")

        self.store.expire_due = expire_due
        self.clock.advance(60.0)
        self.clock.advance(60.0)
        self.assertEqual(len(calls), 2)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 2)
        self.assertTrue(self.router.timers.expirer.running)
