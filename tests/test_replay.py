# -*- test-case-name: tests.test_replay -*-
"""
Tests for L{relay.replay.Replay}: catch-up from the store, page by page,
on L{relay.testing.MemoryStore} and a L{task.Clock} alone.
"""

from twisted.internet import task
from twisted.trial import unittest

from relay.router import Router
from relay.testing import FakeConnection, MemoryStore


def send(to, body, **meta):
    env = {"v": 1, "type": "SEND", "id": "s-" + body, "to": to,
           "payload": {"kind": "message", "body": body}}
    if meta:
        env["payload_meta"] = meta
    return env


class ReplayTests(unittest.TestCase):

    def setUp(self):
        self.clock = task.Clock()
        self.store = MemoryStore(self.clock)
        self.router = Router(self.clock, self.store)
        self.router.replay.page = 3
        self.alice = FakeConnection(self.router, self.clock)
        self.alice.hello("alice")
        self.clock.advance(0)

    def test_offline_messages_replayed_in_order_across_pages(self):
        """
        Seven messages stored for an agent that is away arrive, in order
        and with their stream seqs, when it connects, read three at a time;
        then it is live.
        """
        for i in range(7):
            self.router.send(self.alice.session, send("bob", "m%d" % i), 10)
        bob = FakeConnection(self.router, self.clock)
        session = bob.hello("bob")
        self.assertFalse(session.live)
        for _ in range(10):
            self.clock.advance(0)
        got = bob.delivered()
        self.assertEqual([d["payload"]["body"] for d in got], ["m%d" % i for i in range(7)])
        self.assertEqual([d["delivery"]["seq"] for d in got], list(range(1, 8)))
        self.assertTrue(session.live)
        self.assertGreaterEqual(self.store.commits, 1)

    def test_expired_while_away_is_not_replayed(self):
        """
        A message whose TTL ran out while its recipient was away is marked
        expired and counted, not delivered.
        """
        self.router.send(self.alice.session, send("bob", "old", ttl_ms=1000), 10)
        self.router.send(self.alice.session, send("bob", "new"), 10)
        self.clock.advance(5)
        bob = FakeConnection(self.router, self.clock)
        bob.hello("bob")
        for _ in range(5):
            self.clock.advance(0)
        self.assertEqual([d["payload"]["body"] for d in bob.delivered()], ["new"])
        self.assertEqual(self.router.counters["expired"], 1)

    def test_read_failure_is_retried(self):
        """
        A store read that fails is logged and retried a second later;
        nothing is lost.
        """
        self.router.send(self.alice.session, send("bob", "kept"), 10)
        real = self.store.read_open_deliveries
        calls = []

        def read(*args):
            calls.append(args)
            if len(calls) == 1:
                raise RuntimeError("read failed")
            return real(*args)

        self.store.read_open_deliveries = read
        bob = FakeConnection(self.router, self.clock)
        bob.hello("bob")
        self.clock.advance(0)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(bob.delivered(), [])
        self.clock.advance(1.0)
        self.clock.advance(0)
        self.assertEqual([d["payload"]["body"] for d in bob.delivered()], ["kept"])
