# -*- test-case-name: tests.test_policy -*-
"""
Tests for L{relay.policy.SendPolicy}: the throttle-or-reject decision and
the answers a refused sender gets, on the router's side, with
L{relay.testing.FakeConnection}s on a L{task.Clock}.
"""

from twisted.internet import task
from twisted.trial import unittest

from relay.policy import REJECTED, SEND_NOW, THROTTLED
from relay.ratelimit import RateLimiter
from relay.router import Router
from relay.testing import FakeConnection, MemoryStore


def send(body):
    return {"v": 1, "type": "SEND", "id": "s-" + body, "to": "bob",
            "payload": {"kind": "message", "body": body}}


class SendPolicyTests(unittest.TestCase):

    def make(self, policy, rate=1, burst=1):
        clock = task.Clock()
        router = Router(clock, MemoryStore(clock),
                        limiter=RateLimiter(clock, rate=rate, burst=burst), rate_policy=policy)
        conn = FakeConnection(router, clock)
        conn.hello("alice")
        return clock, router, conn

    def test_no_limiter_sends_now(self):
        """
        Without a rate limit every SEND may be routed now.
        """
        clock = task.Clock()
        router = Router(clock, MemoryStore(clock))
        conn = FakeConnection(router, clock)
        conn.hello("alice")
        for i in range(100):
            self.assertEqual(router.admit_send(conn, send(str(i))), (SEND_NOW, 0))

    def test_reject_policy_nacks_busy(self):
        """
        Over the limit under policy reject: the SEND is refused with NACK
        BUSY carrying its id and a retry time, and counted as nacked.
        """
        clock, router, conn = self.make("reject")
        self.assertEqual(router.admit_send(conn, send("a")), (SEND_NOW, 0))
        self.assertEqual(router.admit_send(conn, send("b")), (REJECTED, 0))
        [nack] = conn.frames
        self.assertEqual((nack["type"], nack["payload"]["code"], nack["payload"]["ack_id"]),
                         ("NACK", "BUSY", "s-b"))
        self.assertEqual(nack["payload"]["retry_after_ms"], 1000)
        self.assertEqual(router.counters["nacked"], 1)

    def test_throttle_policy_one_busy_per_episode(self):
        """
        Over the limit under policy throttle: the caller is told to hold the
        SEND for the wait; the sender hears BUSY once per episode, and a new
        episode (after the bucket refills) gets a BUSY again.
        """
        clock, router, conn = self.make("throttle", burst=2)
        router.admit_send(conn, send("a"))
        router.admit_send(conn, send("b"))
        verdict, wait = router.admit_send(conn, send("c"))
        self.assertEqual((verdict, wait), (THROTTLED, 1.0))
        self.assertEqual(router.admit_send(conn, send("c"))[0], THROTTLED)
        self.assertEqual([f["type"] for f in conn.frames], ["BUSY"])
        self.assertEqual(conn.frames[0]["payload"]["queue_depth"], 1)
        self.assertEqual(router.counters["busy"], 1)
        # Refilled: a SEND that leaves a token spare ends the episode.
        clock.advance(5)
        self.assertEqual(router.admit_send(conn, send("d"))[0], SEND_NOW)
        router.admit_send(conn, send("e"))
        self.assertEqual(router.admit_send(conn, send("f"))[0], THROTTLED)
        self.assertEqual([f["type"] for f in conn.frames], ["BUSY", "BUSY"])

    def test_refuse_invalid(self):
        """
        An invalid SEND is answered NACK INVALID with the reason, counted.
        """
        clock, router, conn = self.make("throttle")
        router.refuse_invalid(conn, "s1", "no 'to'")
        [nack] = conn.frames
        self.assertEqual((nack["payload"]["code"], nack["payload"]["message"]),
                         ("INVALID", "no 'to'"))
        self.assertEqual(router.counters["nacked"], 1)

    def test_retry_ms_follows_the_reasons(self):
        """
        The retry time covers what holds the sender: the rate limit (held
        SENDs over the rate), the store, a slow recipient (ack timeout).
        """
        clock, router, conn = self.make("throttle", rate=2)
        self.assertEqual(router.retry_ms(conn), 50)
        conn.pause_reasons.add("store")
        self.assertEqual(router.retry_ms(conn), 100)
        conn.pause_reasons.add(("queue", "bob"))
        self.assertEqual(router.retry_ms(conn), 500)
        conn.pause_reasons = {"rate"}
        conn.held = [None] * 3
        self.assertEqual(router.retry_ms(conn), 2000)
