# -*- test-case-name: tests.test_web_resources -*-
"""
Tests for L{relay.web.resources}: health and the routes' checks.
"""

from twisted.internet import defer, task
from twisted.trial import unittest

from relay.router import Router
from relay.status import StatusReporter
from relay.store import Store
from relay.web.resources import BadRequest, Health, message_filters


class HealthTests(unittest.TestCase):

    def test_store_failing(self):
        """
        /healthz turns 503 while store commits fail (the rows are kept and
        retried) and back to 200 once a commit succeeds.
        """
        clock = task.Clock()
        store = Store(clock, self.mktemp())
        router = Router(clock, store)
        results = []

        def write(batch):
            d = defer.Deferred()
            results.append(d)
            return d
        store.batcher._write = write
        store.pool = object()
        health = Health([], StatusReporter(clock, router, store), store)
        self.assertEqual(health.problems(), [])
        store.batcher.add("meta", ("k", "v"))
        store.batcher.flush()
        results.pop().errback(OSError("disk full"))
        self.flushLoggedErrors(OSError)
        self.assertEqual(health.problems(), ["store: commits are failing (rows kept, retrying)"])
        clock.advance(1)
        results.pop().callback(None)
        self.assertEqual(health.problems(), [])

    def test_store_not_open(self):
        """
        A store that is not open is a problem.
        """
        clock = task.Clock()
        store = Store(clock, self.mktemp())
        health = Health([], StatusReporter(clock, Router(clock, store), store), store)
        self.assertEqual(health.problems(), ["store: not open"])


class FilterTests(unittest.TestCase):

    def test_filters(self):
        """
        /api/messages' parameters map onto relay history's filters.
        """
        self.assertEqual(message_filters({}), {"limit": 100})
        self.assertEqual(message_filters({"from": "a", "to": "b", "thread": "t", "topic": "x",
                                          "since": "1000", "limit": "5"}),
                         {"sender": "a", "recipient": "b", "thread": "t", "topic": "x",
                          "since_ms": 1000, "limit": 5})
        self.assertEqual(message_filters({"since": "1970-01-01T00:00:01"})["since_ms"], 1000)

    def test_bad(self):
        """
        Values of every wrong shape are refused with a reason.
        """
        for query in ({"limit": "0"}, {"limit": "1001"}, {"limit": "1.5"}, {"limit": ""},
                      {"since": "soon"}, {"since": "-5"}, {"from": ""}):
            self.assertRaises(BadRequest, message_filters, query)
