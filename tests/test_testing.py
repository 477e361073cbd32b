# -*- test-case-name: tests.test_testing -*-
"""
Tests for L{relay.testing}: the threadless pool runs real SQLite
transactions on clock turns; L{settle} turns a clock until a Deferred
fires and says so when it never does.
"""

import os
import sqlite3
import threading

from twisted.internet import defer, task
from twisted.trial import unittest

from relay.testing import ThreadlessConnectionPool, settle


class ThreadlessPoolTests(unittest.TestCase):

    def setUp(self):
        self.clock = task.Clock()
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        self.path = os.path.join(directory, "t.sqlite")
        self.pool = ThreadlessConnectionPool(self.clock, "sqlite3", self.path,
                                             check_same_thread=False)
        self.addCleanup(self.pool.close)

    def test_interaction_runs_on_the_next_turn_in_this_thread(self):
        """
        An interaction runs at the next clock turn (not before), in the
        calling thread, and commits to the real file.
        """
        threads = []

        def create(txn):
            threads.append(threading.current_thread())
            txn.execute("CREATE TABLE t (x INTEGER)")
            txn.execute("INSERT INTO t VALUES (1)")
            return "done"

        d = self.pool.runInteraction(create)
        self.assertNoResult(d)
        self.clock.advance(0)
        self.assertEqual(self.successResultOf(d), "done")
        self.assertEqual(threads, [threading.current_thread()])
        conn = sqlite3.connect(self.path)
        self.addCleanup(conn.close)
        self.assertEqual(conn.execute("SELECT x FROM t").fetchall(), [(1,)])

    def test_failure_rolls_back_and_fails_the_deferred(self):
        """
        An interaction that raises fails its Deferred and leaves nothing
        written.
        """
        settle(self.clock, self.pool.runOperation("CREATE TABLE u (x INTEGER)"))

        def broken(txn):
            txn.execute("INSERT INTO u VALUES (1)")
            raise ValueError("no")

        d = self.pool.runInteraction(broken)
        self.clock.advance(0)
        self.failureResultOf(d, ValueError)
        d = self.pool.runQuery("SELECT x FROM u")
        self.assertEqual(self.successResultOf(settle(self.clock, d)), [])


class SettleTests(unittest.TestCase):

    def test_settle_turns_until_fired(self):
        """
        settle turns the clock until a Deferred chained over several turns
        has fired, without moving time.
        """
        clock = task.Clock()
        d = task.deferLater(clock, 0, lambda: task.deferLater(clock, 0, lambda: 5))
        self.assertEqual(self.successResultOf(settle(clock, d)), 5)
        self.assertEqual(clock.seconds(), 0)

    def test_settle_never_fired(self):
        """
        A Deferred that waits on time (or on nothing) makes settle fail
        loudly instead of hanging.
        """
        clock = task.Clock()
        self.assertRaises(AssertionError, settle, clock, defer.Deferred(), turns=5)
        d = task.deferLater(clock, 1.0, lambda: None)
        self.assertRaises(AssertionError, settle, clock, d, turns=5)
        clock.advance(1.0)
