# -*- test-case-name: tests.test_status -*-
"""
Tests for L{relay.status.StatusReporter}: STATUS reports what it was given
at construction (store, limiter, sync and auth stats), on a clock alone.
"""

from twisted.internet import task
from twisted.trial import unittest

from relay.ratelimit import RateLimiter
from relay.router import Router
from relay.status import StatusReporter
from relay.testing import FakeConnection, MemoryStore


class StatusReporterTests(unittest.TestCase):

    def setUp(self):
        self.clock = task.Clock()
        self.store = MemoryStore(self.clock)
        self.limiter = RateLimiter(self.clock, rate=10, burst=5)
        self.router = Router(self.clock, self.store, limiter=self.limiter)

    def test_reports_what_it_was_given(self):
        """
        Sync, auth and retention sections come from the callables given to the
        constructor; the store section from the store's stats() and the
        router's dedupe window; rate limit from the limiter and policy.
        """
        reporter = StatusReporter(self.clock, self.router, self.store, self.limiter, "reject",
                                  sync_stats=lambda: {"queued": 3},
                                  auth_stats=lambda: {"refused": 1},
                                  retention_stats=lambda: {"deleted_messages": 4})
        self.clock.advance(7)
        status = reporter.report()
        self.assertEqual(status["retention"], {"deleted_messages": 4})
        self.assertEqual(status["sync"], {"queued": 3})
        self.assertEqual(status["auth"], {"refused": 1})
        self.assertEqual(status["rate_limit"]["policy"], "reject")
        self.assertEqual(status["rate_limit"]["rate"], 10)
        self.assertEqual(status["store"]["streams_in_memory"], 0)
        self.assertEqual(status["store"]["dedupe_entries"], 0)
        self.assertEqual(status["uptime_s"], 7)

    def test_without_sync_or_auth(self):
        """
        Without sync, auth or retention stats, those sections are None;
        without a limiter, the rate limit is reported disabled.
        """
        status = StatusReporter(self.clock, self.router, self.store).report()
        self.assertIsNone(status["sync"])
        self.assertIsNone(status["auth"])
        self.assertIsNone(status["retention"])
        self.assertFalse(status["rate_limit"]["enabled"])

    def test_agents_listed(self):
        """
        A registered agent is listed with its queue, pause reasons, topics
        and the HELLO fields shown; a throttled one among throttled_agents.
        """
        conn = FakeConnection(self.router, self.clock)
        session = conn.hello("alice", model="m-1", secret={"no": "shown"})
        self.router.subscribe(session, "builds")
        conn.pause_reading("rate")
        status = StatusReporter(self.clock, self.router, self.store, self.limiter).report()
        [agent] = status["agents"]
        self.assertEqual(agent["name"], "alice")
        self.assertEqual(agent["topics"], ["builds"])
        self.assertEqual(agent["paused"], ["rate"])
        self.assertEqual(agent["info"], {"model": "m-1"})
        self.assertEqual(status["rate_limit"]["throttled_agents"], ["alice"])
        self.assertEqual(status["connections"], 1)
