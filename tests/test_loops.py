# -*- test-case-name: tests.test_loops -*-
"""
Tests for L{relay.loops.GuardedLoop}: a periodic call that survives its
own errors, on a L{task.Clock}.
"""

from twisted.internet import defer, task
from twisted.trial import unittest

from relay.loops import GuardedLoop


class GuardedLoopTests(unittest.TestCase):

    def test_raising_iteration_does_not_stop_the_loop(self):
        """
        An iteration that raises is logged and counted; the next ones still
        run on schedule.
        """
        clock = task.Clock()
        calls = []

        def fn():
            calls.append(clock.seconds())
            if len(calls) == 2:
                raise RuntimeError("one bad iteration")

        loop = GuardedLoop(clock, fn, "test")
        loop.start(1.0, now=False)
        clock.pump([1.0] * 4)
        self.assertEqual(calls, [1.0, 2.0, 3.0, 4.0])
        self.assertEqual(loop.errors, 1)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertTrue(loop.running)
        loop.stop()
        self.assertFalse(loop.running)

    def test_failed_deferred_does_not_stop_the_loop(self):
        """
        An iteration whose Deferred fails is logged; the loop goes on.
        """
        clock = task.Clock()
        calls = []

        def fn():
            calls.append(1)
            return defer.fail(ValueError("async failure"))

        loop = GuardedLoop(clock, fn, "test")
        loop.start(1.0, now=True)
        clock.pump([1.0] * 2)
        self.assertEqual(len(calls), 3)
        self.assertEqual(loop.errors, 3)
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 3)
        loop.stop()

    def test_pending_deferred_holds_the_next_call(self):
        """
        An iteration still running (its Deferred unfired) holds the next
        one back: no overlapping runs.
        """
        clock = task.Clock()
        pending = []

        def fn():
            d = defer.Deferred()
            pending.append(d)
            return d

        loop = GuardedLoop(clock, fn, "test")
        loop.start(1.0, now=True)
        clock.pump([1.0] * 3)
        self.assertEqual(len(pending), 1)
        pending[0].callback(None)
        clock.advance(1.0)
        self.assertEqual(len(pending), 2)
        pending[1].callback(None)
        loop.stop()
