# -*- test-case-name: tests.test_ratelimit -*-
"""
Token buckets on an injected clock.
"""

from twisted.internet.task import Clock
from twisted.trial import unittest

from relay.ratelimit import RateLimiter, TokenBucket


class TokenBucketTests(unittest.TestCase):
    """
    The token bucket on a L{task.Clock}.
    """

    def test_burst_then_wait(self):
        """
        A full bucket allows C{burst} sends at once; the next one is told
        exactly how long until a token is due.
        """
        bucket = TokenBucket(rate=10, burst=3, now=0.0)
        self.assertEqual([bucket.take(0.0) for _ in range(3)], [0.0, 0.0, 0.0])
        self.assertAlmostEqual(bucket.take(0.0), 0.1)

    def test_refill_at_rate(self):
        """
        Tokens come back at C{rate} per second, never above C{burst}.
        """
        bucket = TokenBucket(rate=10, burst=2, now=0.0)
        bucket.take(0.0)
        bucket.take(0.0)
        self.assertAlmostEqual(bucket.take(0.05), 0.05)
        self.assertEqual(bucket.take(0.1), 0.0)
        bucket.take(100.0)
        self.assertAlmostEqual(bucket.tokens, 1.0)


class RateLimiterTests(unittest.TestCase):
    """
    Per-agent buckets of the rate limiter.
    """

    def test_per_agent(self):
        """
        Each agent has its own bucket.
        """
        clock = Clock()
        limiter = RateLimiter(clock, rate=1, burst=1)
        self.assertEqual(limiter.take("a"), 0.0)
        self.assertGreater(limiter.take("a"), 0.0)
        self.assertEqual(limiter.take("b"), 0.0)

    def test_sustained_rate(self):
        """
        Over ten simulated seconds an agent gets burst + rate * 10 sends.
        """
        clock = Clock()
        limiter = RateLimiter(clock, rate=50, burst=20)
        allowed = 0
        for _ in range(1000):
            if limiter.take("a") == 0.0:
                allowed += 1
            clock.advance(0.01)
        self.assertTrue(20 + 500 - 2 <= allowed <= 20 + 500 + 1, allowed)

    def test_idle_buckets_dropped(self):
        """
        Buckets of agents idle for an hour are dropped, bounding memory.
        """
        clock = Clock()
        limiter = RateLimiter(clock, rate=1, burst=1, idle=3600)
        for i in range(100):
            limiter.take("agent%d" % i)
        clock.advance(1800)
        limiter.take("recent")
        clock.advance(1801)
        limiter.prune()
        self.assertEqual(set(limiter.buckets), {"recent"})
