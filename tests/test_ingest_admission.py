"""
Tests for L{relay.ingest.admission}: deadlines and the bounded admission
queue of database operations, on L{Clock} with no database.
"""

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial import unittest

from relay.ingest.admission import Admission, Busy, with_deadline
from relay.ingest.db import is_unavailable


class DeadlineTests(unittest.TestCase):
    """
    L{with_deadline}.
    """

    def test_in_time(self):
        """
        A result before the deadline passes through and the timer is gone.
        """
        clock = Clock()
        d = defer.Deferred()
        r = with_deadline(d, 5, clock)
        clock.advance(4)
        d.callback("ok")
        self.assertEqual(self.successResultOf(r), "ok")
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_failure_in_time(self):
        """
        A failure before the deadline passes through.
        """
        clock = Clock()
        d = defer.Deferred()
        r = with_deadline(d, 5, clock)
        d.errback(ValueError("x"))
        self.failureResultOf(r, ValueError)

    def test_late(self):
        """
        Past the deadline the result fails with TimeoutError and the original
        Deferred is cancelled (issue 13 point 15: a waiter must not stay
        queued; L{Admission} makes that cancellation safe); a late
        outcome of a Deferred that ignores the cancellation is dropped.
        """
        clock = Clock()
        cancelled = []
        d = defer.Deferred(cancelled.append)
        r = with_deadline(d, 5, clock)
        self.assertNoResult(r)
        clock.advance(5)
        self.failureResultOf(r, defer.TimeoutError)
        self.assertEqual(cancelled, [d])
        self.assertIsNone(self.successResultOf(d))
        late = defer.Deferred()
        r = with_deadline(late, 5, clock)
        clock.advance(5)
        self.failureResultOf(r, defer.TimeoutError)
        late.errback(ValueError("late"))
        self.assertIsNone(self.successResultOf(late))


class DeadlineCancelTests(unittest.TestCase):
    """
    Cancelling what L{with_deadline} returned.
    """

    def test_cancel_reaches_the_operation(self):
        """
        A caller that gives up (its client went away) cancels the operation
        too, and its timer; the caller sees CancelledError.
        """
        clock = Clock()
        admission = Admission(1, 1)
        admission.run(defer.Deferred)
        waiting = admission.run(defer.Deferred)
        r = with_deadline(waiting, 5, clock)
        r.cancel()
        self.failureResultOf(r, defer.CancelledError)
        self.assertEqual(admission.waiting, 0)
        self.assertEqual(clock.getDelayedCalls(), [])


class AdmissionTests(unittest.TestCase):
    """
    L{Admission}: a bounded, cancellable queue of database operations.
    """

    def setUp(self):
        self.calls = []
        self.admission = Admission(2, 2)

    def op(self, tag):
        d = defer.Deferred()
        self.calls.append((tag, d))
        return d

    def test_bounded(self):
        """
        Two run, two wait, the fifth fails at once with Busy (counted as
        "unavailable": answered 503), and a freed turn starts the oldest
        waiter.
        """
        a = self.admission
        running = [a.run(self.op, i) for i in range(2)]
        waiting = [a.run(self.op, i) for i in range(2, 4)]
        self.assertEqual((a.running, a.waiting), (2, 2))
        f = self.failureResultOf(a.run(self.op, 4), Busy)
        self.assertTrue(is_unavailable(f))
        self.assertEqual([t for t, _ in self.calls], [0, 1])
        self.calls[0][1].callback("zero")
        self.assertEqual(self.successResultOf(running[0]), "zero")
        self.assertEqual([t for t, _ in self.calls], [0, 1, 2])
        self.assertNoResult(waiting[0])

    def test_cancel_waiting_drops_its_rows(self):
        """
        Cancelling a waiting operation takes it out of the queue at once,
        its arguments (the rows) are no longer referenced, and it never runs.
        """
        import gc
        import weakref

        class Rows(list):
            pass

        a = self.admission
        a.run(self.op, "r1")
        a.run(self.op, "r2")
        rows = Rows([("m-1",)])
        ref = weakref.ref(rows)
        d = a.run(self.op, rows)
        del rows
        self.assertEqual(a.waiting, 1)
        d.cancel()
        self.failureResultOf(d, defer.CancelledError)
        self.assertEqual(a.waiting, 0)
        gc.collect()
        self.assertIsNone(ref())
        self.calls[0][1].callback(None)
        self.assertEqual([t for t, _ in self.calls], ["r1", "r2"])

    def test_cancel_running_does_not_cancel_the_query(self):
        """
        Cancelling a running operation fails its Deferred with CancelledError
        but does not cancel the operation itself (txpostgres would block in
        PQcancel); its turn is freed only when it really ends, and its late
        result is dropped.
        """
        a = self.admission
        d = a.run(self.op, "q")
        inner = self.calls[0][1]
        d.cancel()
        self.failureResultOf(d, defer.CancelledError)
        self.assertFalse(inner.called)
        self.assertEqual(a.running, 1)
        inner.errback(ValueError("late"))
        self.assertEqual(a.running, 0)

    def test_cancel_after_start_from_queue(self):
        """
        A waiter that has started (its turn came) is treated as running when
        cancelled: the operation goes on, the caller gets CancelledError.
        """
        a = self.admission
        a.run(self.op, 0)
        a.run(self.op, 1)
        d = a.run(self.op, 2)
        self.calls[0][1].callback(None)
        d.cancel()
        self.failureResultOf(d, defer.CancelledError)
        self.assertEqual(a.running, 2)
        self.calls[2][1].callback("done")
        self.assertEqual(a.running, 1)

    def test_on_change(self):
        """
        The change callback sees every queue length (the metrics gauge).
        """
        seen = []
        a = Admission(1, 3, lambda adm: seen.append(adm.waiting))
        first = a.run(self.op, 0)
        d = a.run(self.op, 1)
        d.cancel()
        self.failureResultOf(d, defer.CancelledError)
        self.calls[0][1].callback(None)
        self.successResultOf(first)
        self.assertEqual(seen[-1], 0)
        self.assertIn(1, seen)
