# -*- test-case-name: tests.test_sync_backoff -*-
"""
Tests for L{relay.sync.backoff}: the retry schedule and Retry-After.
"""

import random

from twisted.trial import unittest

from relay.sync.backoff import Backoff, parse_retry_after


class BackoffTests(unittest.TestCase):
    """
    The jittered exponential schedule.
    """

    def test_doubles_without_jitter(self):
        """
        With no jitter, retry n waits initial * 2**n.
        """
        b = Backoff(1.0, jitter=0.0)
        self.assertEqual([b.delay(n) for n in range(5)], [1.0, 2.0, 4.0, 8.0, 16.0])

    def test_jitter_stays_in_band(self):
        """
        With jitter j every delay lies in [(1-j), (1+j)] times the doubled
        base, and the delays are not all the same.
        """
        b = Backoff(0.5, jitter=0.2, rng=random.Random(7))
        for n in range(6):
            delays = [b.delay(n) for _ in range(50)]
            base = 0.5 * 2 ** n
            self.assertTrue(all(base * 0.8 <= d <= base * 1.2 for d in delays), (n, delays))
            self.assertGreater(len(set(delays)), 1)

    def test_injected_rng_gives_exact_schedule(self):
        """
        The same seed gives the same schedule.
        """
        a = Backoff(1.0, rng=random.Random(42))
        b = Backoff(1.0, rng=random.Random(42))
        self.assertEqual([a.delay(n) for n in range(8)], [b.delay(n) for n in range(8)])

    def test_capped(self):
        """
        No delay exceeds the maximum, however many retries.
        """
        b = Backoff(1.0, maximum=60.0, jitter=0.0)
        self.assertEqual(b.delay(10), 60.0)
        self.assertEqual(b.delay(10 ** 6), 60.0)

    def test_retry_after_overrides(self):
        """
        A server's Retry-After replaces the schedule, within the cap.
        """
        b = Backoff(1.0, maximum=300.0, jitter=0.0)
        self.assertEqual(b.delay(0, retry_after=12.0), 12.0)
        self.assertEqual(b.delay(3, retry_after=0.0), 0.0)
        self.assertEqual(b.delay(0, retry_after=10 ** 6), 300.0)


class RetryAfterTests(unittest.TestCase):
    """
    Parsing the Retry-After header.
    """

    def test_seconds(self):
        """
        Delay-seconds, as str or bytes.
        """
        self.assertEqual(parse_retry_after("120", now=0), 120.0)
        self.assertEqual(parse_retry_after(b" 3 ", now=0), 3.0)

    def test_http_date(self):
        """
        An HTTP date gives the seconds until then from C{now} (never
        negative).
        """
        now = 1445412480.0  # Wed, 21 Oct 2015 07:28:00 GMT
        self.assertEqual(parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now), 30.0)
        self.assertEqual(parse_retry_after("Wed, 21 Oct 2015 07:27:00 GMT", now), 0.0)

    def test_absent_or_garbage(self):
        """
        No header, or one that is neither form, gives None.
        """
        self.assertIsNone(parse_retry_after(None, 0))
        self.assertIsNone(parse_retry_after("soon", 0))
        self.assertIsNone(parse_retry_after("-5", 0))
