# -*- test-case-name: tests.test_batcher -*-
"""
Unit tests for L{relay.batcher.Batcher}: group commit on a L{task.Clock}
with a fake C{write(batch)} whose Deferreds the test fires by hand.
"""

from twisted.internet import defer, task
from twisted.trial import unittest

from relay.batcher import Batcher

# Any owner's statement names, in its order (the batcher knows none).
STATEMENTS = ("message", "delivery", "status", "ack_by_id", "stream", "expire", "meta")


class FakeWriter:
    """
    A C{write(batch)} that records each batch with a Deferred the test
    fires (commit) or fails (rollback).
    """

    def __init__(self):
        self.calls = []
        self.committed = []

    def __call__(self, batch):
        d = defer.Deferred()
        # Copy the rows now: what was written is what the batch held when
        # the flush took it.
        self.calls.append((batch, {k: list(v) for k, v in batch.rows.items()}, d))
        return d

    def rows(self, i, statement="message"):
        return self.calls[i][1][statement]

    def commit(self, i=-1):
        self.committed.append(self.calls[i][1])
        self.calls[i][2].callback(None)

    def fail(self, i=-1):
        self.calls[i][2].errback(RuntimeError("disk I/O error"))


def make(size=50, delay=0.1, max_bytes=1048576, on_committed=None, start=True):
    clock = task.Clock()
    writer = FakeWriter()
    batcher = Batcher(clock, writer, STATEMENTS, size=size, delay=delay, max_bytes=max_bytes,
                      on_committed=on_committed)
    if start:
        batcher.start()
    return clock, writer, batcher


class FlushTriggerTests(unittest.TestCase):

    def test_flush_by_size(self):
        """
        The open batch is written at once when it reaches C{size} rows,
        not before, without waiting for the timer.
        """
        clock, writer, batcher = make(size=3, delay=10.0)
        batcher.add("message", [1])
        batcher.add("message", [2])
        self.assertEqual(writer.calls, [])
        batcher.add("delivery", [3])
        self.assertEqual(len(writer.calls), 1)
        self.assertEqual(writer.rows(0), [[1], [2]])
        self.assertEqual(writer.rows(0, "delivery"), [[3]])
        self.assertEqual(batcher.metrics["flushes_by_cause"]["size"], 1)
        self.assertEqual(batcher.metrics["flushes_by_cause"]["time"], 0)

    def test_flush_by_time(self):
        """
        A batch below every limit is written once C{delay} seconds have
        passed on the injected clock, and not a moment before.
        """
        clock, writer, batcher = make(size=100, delay=0.5)
        batcher.add("message", [1])
        clock.advance(0.49)
        self.assertEqual(writer.calls, [])
        clock.advance(0.01)
        self.assertEqual(len(writer.calls), 1)
        self.assertEqual(writer.rows(0), [[1]])
        self.assertEqual(batcher.metrics["flushes_by_cause"]["time"], 1)

    def test_timer_idle_without_rows(self):
        """
        The timer writes nothing while nothing is pending.
        """
        clock, writer, batcher = make(delay=0.1)
        clock.pump([0.1] * 10)
        self.assertEqual(writer.calls, [])

    def test_flush_by_bytes(self):
        """
        The open batch is written at once when its rows reach C{max_bytes},
        even far below C{size} rows.
        """
        clock, writer, batcher = make(size=100, delay=10.0, max_bytes=1000)
        batcher.add("message", [1], nbytes=600)
        self.assertEqual(writer.calls, [])
        batcher.add("message", [2], nbytes=500)
        self.assertEqual(len(writer.calls), 1)
        self.assertEqual(batcher.metrics["flushes_by_cause"]["bytes"], 1)
        self.assertEqual(batcher.metrics["flushes_by_cause"]["size"], 0)

    def test_flush_on_demand(self):
        """
        L{Batcher.flush} writes what is pending at once and its Deferred
        fires only when that write has committed.
        """
        clock, writer, batcher = make(delay=10.0)
        batcher.add("message", [1])
        d = batcher.flush()
        self.assertEqual(len(writer.calls), 1)
        self.assertNoResult(d)
        writer.commit()
        self.successResultOf(d)
        self.assertEqual(batcher.metrics["flushes_by_cause"]["demand"], 1)

    def test_flush_nothing_pending(self):
        """
        A flush with nothing pending and nothing in flight fires at once
        and writes nothing.
        """
        clock, writer, batcher = make()
        self.successResultOf(batcher.flush())
        self.assertEqual(writer.calls, [])


class GroupCommitTests(unittest.TestCase):

    def test_one_flush_in_flight(self):
        """
        While a flush is in flight no other one starts, whatever the
        triggers say (size, bytes, time, demand).
        """
        clock, writer, batcher = make(size=2, delay=0.1, max_bytes=100)
        batcher.add("message", [1])
        batcher.add("message", [2])
        self.assertEqual(len(writer.calls), 1)
        for i in range(3, 8):
            batcher.add("message", [i], nbytes=50)
        clock.advance(0.5)
        batcher.flush()
        self.assertEqual(len(writer.calls), 1)

    def test_next_batch_takes_everything_pending(self):
        """
        When the flush in flight commits, the next one takes every row that
        arrived meanwhile in one transaction, in arrival order.
        """
        clock, writer, batcher = make(size=2, delay=10.0)
        batcher.add("message", [1])
        batcher.add("message", [2])
        for i in range(3, 10):
            batcher.add("message", [i])
        self.assertEqual(batcher.pending_rows(), 9)
        writer.commit(0)
        self.assertEqual(len(writer.calls), 2)
        self.assertEqual(writer.rows(1), [[i] for i in range(3, 10)])
        writer.commit(1)
        self.assertEqual(len(writer.calls), 2)
        self.assertEqual(batcher.pending_rows(), 0)

    def test_demand_during_flight(self):
        """
        A flush asked for while another is in flight is done right after
        it, without waiting for the timer, and its Deferred fires only after
        the second commit.
        """
        clock, writer, batcher = make(size=100, delay=10.0)
        batcher.add("message", [1])
        first = batcher.flush()
        batcher.add("message", [2])
        second = batcher.flush()
        self.assertEqual(len(writer.calls), 1)
        writer.commit(0)
        self.successResultOf(first)
        self.assertNoResult(second)
        self.assertEqual(len(writer.calls), 2)
        self.assertEqual(writer.rows(1), [[2]])
        writer.commit(1)
        self.successResultOf(second)

    def test_rows_editable_until_taken(self):
        """
        A row is a live list while its batch is open (the store edits
        statuses in place) and the batch is closed once a flush takes it.
        """
        clock, writer, batcher = make(delay=10.0)
        batch = batcher.current
        row = batcher.add("delivery", ["bob", 1, 1, "pending"])
        self.assertTrue(batch.open)
        row[3] = "acked"
        batcher.flush()
        self.assertFalse(batch.open)
        self.assertIsNot(batcher.current, batch)
        self.assertEqual(writer.rows(0, "delivery"), [["bob", 1, 1, "acked"]])


class FailureTests(unittest.TestCase):

    def test_failed_flush_keeps_rows_and_retries(self):
        """
        A failed write loses nothing: its rows go back ahead of rows queued
        since, and a retry writes them all together after C{delay}.
        """
        clock, writer, batcher = make(size=100, delay=0.2)
        batcher.add("message", [1])
        batcher.add("message", [2])
        clock.advance(0.2)
        self.assertEqual(len(writer.calls), 1)
        batcher.add("message", [3])
        writer.fail(0)
        self.assertEqual(batcher.metrics["failures"], 1)
        self.assertEqual(batcher.pending_rows(), 3)
        self.assertEqual(len(writer.calls), 1)
        clock.advance(0.2)
        self.assertEqual(len(writer.calls), 2)
        self.assertEqual(writer.rows(1), [[1], [2], [3]])
        writer.commit(1)
        self.assertEqual(batcher.metrics["rows"], 3)
        self.assertEqual(batcher.pending_rows(), 0)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_failures_never_stop_the_loop(self):
        """
        After several failed writes in a row the timer still runs: rows
        added later are written by time, and every row lands exactly once.
        """
        clock, writer, batcher = make(size=100, delay=0.1)
        batcher.add("message", [1])
        for _ in range(3):
            clock.advance(0.1)
            writer.fail()
        clock.advance(0.1)
        writer.commit()
        self.assertEqual(batcher.metrics["failures"], 3)
        batcher.add("message", [2])
        clock.advance(0.1)
        self.assertEqual(writer.rows(-1), [[2]])
        writer.commit()
        written = [r for rows in writer.committed for r in rows["message"]]
        self.assertEqual(written, [[1], [2]])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 3)

    def test_flush_deferred_waits_for_the_retry(self):
        """
        A flush whose write failed fires only once a retry has committed
        its rows, never on the failure.
        """
        clock, writer, batcher = make(size=100, delay=0.1)
        batcher.add("message", [1])
        d = batcher.flush()
        writer.fail()
        self.assertNoResult(d)
        clock.advance(0.1)
        writer.commit()
        self.successResultOf(d)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class StopTests(unittest.TestCase):

    def test_stop_flushes_everything(self):
        """
        stop() writes what is in flight and everything pending, and fires
        only when all of it has committed; then the timer is stopped.
        """
        clock, writer, batcher = make(size=2, delay=0.1)
        batcher.add("message", [1])
        batcher.add("message", [2])
        batcher.add("message", [3])
        d = batcher.stop()
        self.assertNoResult(d)
        writer.commit(0)
        self.assertNoResult(d)
        self.assertEqual(writer.rows(1), [[3]])
        writer.commit(1)
        self.successResultOf(d)
        clock.advance(1.0)
        batcher.add("message", [4])
        clock.advance(1.0)
        self.assertEqual(len(writer.calls), 2)

    def test_stop_retries_a_failed_write(self):
        """
        A write that fails during shutdown is tried again until it lands;
        stop() does not fire before.
        """
        clock, writer, batcher = make(size=100, delay=0.1)
        batcher.add("message", [1])
        d = batcher.stop()
        self.assertEqual(batcher.metrics["flushes_by_cause"]["shutdown"], 1)
        writer.fail()
        self.assertNoResult(d)
        clock.advance(0.1)
        self.assertEqual(len(writer.calls), 2)
        self.assertEqual(writer.rows(1), [[1]])
        writer.commit()
        self.successResultOf(d)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_stop_cancels_pending_retry(self):
        """
        stop() after a failure does not wait for the retry timer: it
        writes at once and leaves no delayed call behind.
        """
        clock, writer, batcher = make(size=100, delay=5.0)
        batcher.add("message", [1])
        batcher.flush()
        writer.fail()
        d = batcher.stop()
        self.assertEqual(len(writer.calls), 2)
        writer.commit()
        self.successResultOf(d)
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class AfterCommitTests(unittest.TestCase):

    def test_runs_only_after_commit(self):
        """
        An after_commit callback does not run when the flush starts nor
        when it fails, only once the write holding its rows commits.
        """
        clock, writer, batcher = make(size=100, delay=0.1)
        seen = []
        batcher.add("message", [1])
        batcher.after_commit(seen.append, "receipt")
        clock.advance(0.1)
        self.assertEqual(seen, [])
        writer.fail()
        self.assertEqual(seen, [])
        clock.advance(0.1)
        self.assertEqual(seen, [])
        writer.commit()
        self.assertEqual(seen, ["receipt"])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_waits_for_its_own_batch(self):
        """
        A callback registered while an earlier batch is in flight waits for
        the batch its own rows are in, not the earlier commit.
        """
        clock, writer, batcher = make(size=100, delay=0.1)
        seen = []
        batcher.add("message", [1])
        clock.advance(0.1)
        batcher.add("message", [2])
        batcher.after_commit(seen.append, 2)
        writer.commit(0)
        self.assertEqual(seen, [])
        clock.advance(0.1)
        writer.commit(1)
        self.assertEqual(seen, [2])

    def test_failing_callback_does_not_stop_others(self):
        """
        An exception in one after-commit callback is logged; the others
        still run and the batcher keeps working.
        """
        clock, writer, batcher = make(size=100, delay=0.1)
        seen = []

        def boom(arg):
            raise ValueError(arg)

        batcher.add("message", [1])
        batcher.after_commit(boom, "x")
        batcher.after_commit(seen.append, "y")
        clock.advance(0.1)
        writer.commit()
        self.assertEqual(seen, ["y"])
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
        batcher.add("message", [2])
        clock.advance(0.1)
        self.assertEqual(len(writer.calls), 2)

    def test_on_committed_gets_max_message_seq(self):
        """
        on_committed is called with the highest message seq of a committed
        batch, and not for a batch without messages.
        """
        got = []
        clock, writer, batcher = make(size=100, delay=0.1, on_committed=got.append)
        batcher.mark(7)
        batcher.add("message", [7])
        clock.advance(0.1)
        self.assertEqual(got, [])
        writer.commit()
        self.assertEqual(got, [7])
        batcher.add("status", ("acked",))
        clock.advance(0.1)
        writer.commit()
        self.assertEqual(got, [7])


class ReceiptFlushTests(unittest.TestCase):

    def test_idle_writer_flushes_at_end_of_turn(self):
        """
        soon() (a durable SEND waits for its receipt) with the writer idle
        flushes at the end of the reactor turn, not after the timer, taking
        every row queued in that turn.
        """
        clock, writer, batcher = make(size=100, delay=10.0)
        batcher.add("message", [1])
        batcher.soon()
        batcher.add("message", [2])
        batcher.soon()
        self.assertEqual(writer.calls, [])
        clock.advance(0)
        self.assertEqual(len(writer.calls), 1)
        self.assertEqual(writer.rows(0), [[1], [2]])
        self.assertEqual(batcher.metrics["flushes_by_cause"]["receipt"], 1)

    def test_group_commit_while_in_flight(self):
        """
        Receipts asked for while a flush is in flight wait for it, then go
        in one next flush at once (no timer wait).
        """
        clock, writer, batcher = make(size=100, delay=10.0)
        batcher.add("message", [1])
        batcher.soon()
        clock.advance(0)
        for i in range(2, 6):
            batcher.add("message", [i])
            batcher.soon()
        clock.advance(0)
        self.assertEqual(len(writer.calls), 1)
        writer.commit(0)
        self.assertEqual(len(writer.calls), 2)
        self.assertEqual(writer.rows(1), [[2], [3], [4], [5]])

    def test_plain_rows_wait_for_the_timer(self):
        """
        Without a receipt waiting, rows wait for the timer as before.
        """
        clock, writer, batcher = make(size=100, delay=10.0)
        batcher.add("message", [1])
        clock.advance(0)
        self.assertEqual(writer.calls, [])


class MetricsTests(unittest.TestCase):

    def test_metrics(self):
        """
        The metrics count committed batches, rows and bytes, flushes by
        cause, the last flush's duration on the injected clock and the rows
        still pending.
        """
        clock, writer, batcher = make(size=3, delay=1.0)
        batcher.add("message", [1], nbytes=100)
        batcher.add("delivery", [1], nbytes=10)
        batcher.add("delivery", [2], nbytes=10)
        batcher.add("message", [2], nbytes=100)
        self.assertEqual(batcher.pending_rows(), 4)
        self.assertEqual(batcher.pending_bytes(), 220)
        clock.advance(0.25)
        writer.commit(0)
        m = batcher.metrics
        self.assertEqual(m["batches"], 1)
        self.assertEqual(m["rows"], 3)
        self.assertEqual(m["bytes"], 120)
        self.assertEqual(m["last_flush_ms"], 250.0)
        self.assertEqual(m["pending_rows"], 1)
        clock.advance(1.0 - 0.25)
        self.assertEqual(m["flushes_by_cause"]["time"], 1)
        clock.advance(0.01)
        writer.commit(1)
        self.assertEqual(m["batches"], 2)
        self.assertEqual(m["rows"], 4)
        self.assertEqual(m["bytes"], 220)
        self.assertEqual(m["pending_rows"], 0)
        self.assertEqual(batcher.pending_rows(), 0)
        self.assertEqual(m["flushes_by_cause"],
                         {"size": 1, "time": 1, "bytes": 0, "receipt": 0, "demand": 0,
                          "shutdown": 0})
        self.assertEqual(m["failures"], 0)


class OverloadTests(unittest.TestCase):

    def test_overload_listeners(self):
        """
        Overload listeners hear True when pending bytes pass
        C{overload_bytes} and False once a commit brings them back under.
        """
        clock, writer, batcher = make(size=1000, delay=0.1, max_bytes=1000)
        heard = []
        batcher.add_overload_listener(heard.append)
        batcher.add("message", [1], nbytes=1000)
        for i in range(5):
            batcher.add("message", [i], nbytes=1000)
        self.assertTrue(batcher.check_overload())
        self.assertEqual(heard, [True])
        writer.commit(0)
        writer.commit(1)
        self.assertEqual(heard, [True, False])


class GroupTests(unittest.TestCase):
    """
    Rows added between begin_group and end_group (one SEND) are never split
    across two flushes (issue 13 point 1).
    """

    def test_size_and_bytes_triggers_wait_for_the_group(self):
        """
        A group of 61 rows (a broadcast to 60 agents) added with a batch
        size of 2 and a byte limit of 10 starts no flush until the group is
        complete, then one flush takes all 61 rows.
        """
        clock, writer, batcher = make(size=2, delay=10.0, max_bytes=10)
        batcher.begin_group()
        batcher.add("message", [1], 100)
        for i in range(60):
            batcher.add("delivery", ["agent%d" % i, 1])
        self.assertEqual(writer.calls, [])
        batcher.end_group()
        self.assertEqual(len(writer.calls), 1)
        self.assertEqual(writer.rows(0), [[1]])
        self.assertEqual(len(writer.rows(0, "delivery")), 60)
        self.assertEqual(writer.calls[0][0].groups, [{"message": (0, 1), "delivery": (0, 60)}])

    def test_demanded_flush_inside_a_group_waits(self):
        """
        A flush asked for in the middle of a group (a callback that runs
        synchronously, a commit arriving) starts only at end_group, with
        the whole group in it.
        """
        clock, writer, batcher = make(size=50, delay=10.0)
        batcher.begin_group()
        batcher.add("message", [1])
        d = batcher.flush()
        self.assertEqual(writer.calls, [])
        batcher.add("delivery", ["bob", 1])
        batcher.end_group()
        self.assertEqual(len(writer.calls), 1)
        self.assertEqual(writer.rows(0, "delivery"), [["bob", 1]])
        writer.commit(0)
        self.assertIsNone(self.successResultOf(d))

    def test_groups_of_a_failed_batch_keep_their_rows(self):
        """
        A failed batch put back in front of the open one keeps each group's
        row ranges pointing at that group's rows, and a group added after
        the failure points at its own rows in the merged batch.
        """
        clock, writer, batcher = make(size=50, delay=1.0)
        for seq in (1, 2):
            batcher.begin_group()
            batcher.add("message", [seq])
            batcher.add("delivery", ["bob", seq])
            batcher.add("delivery", ["carol", seq])
            batcher.end_group()
        batcher.flush()
        batcher.begin_group()
        batcher.add("message", [3])
        batcher.add("delivery", ["dave", 3])
        batcher.end_group()
        writer.fail(0)
        self.flushLoggedErrors(RuntimeError)
        clock.advance(1.0)
        batch, rows, _ = writer.calls[-1]
        for group, seq in zip(batch.groups, (1, 2, 3)):
            start, end = group["message"]
            self.assertEqual(rows["message"][start:end], [[seq]])
            start, end = group["delivery"]
            self.assertEqual({r[1] for r in rows["delivery"][start:end]}, {seq})
        self.assertEqual(len(batch.groups), 3)

    def test_stream_seqs_merge_on_retry(self):
        """
        Stream seqs of a failed batch and of the batch after it merge to the
        highest seq per stream, so the retried transaction writes each
        stream's newest seq.
        """
        clock, writer, batcher = make(size=50, delay=1.0)
        batcher.add("delivery", ["bob", 1])
        batcher.note(("bob", "default", "a"), 1)
        batcher.flush()
        batcher.add("delivery", ["bob", 2])
        batcher.note(("bob", "default", "a"), 2)
        batcher.note(("bob", "t", "a"), 1)
        writer.fail(0)
        self.flushLoggedErrors(RuntimeError)
        self.assertEqual(batcher.current.highs,
                         {("bob", "default", "a"): 2, ("bob", "t", "a"): 1})

    def test_abort_takes_the_group_back(self):
        """
        abort_group removes the rows and bytes of the unit and nothing
        before it; a flush asked for meanwhile starts then, and fires.
        """
        clock, writer, batcher = make(size=50, delay=10.0)
        batcher.add("message", [1], 10)
        batcher.begin_group()
        batcher.add("message", [2], 100)
        batcher.add("delivery", ["bob", 2], 100)
        d = batcher.flush()
        batcher.abort_group()
        writer.commit(0)
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(len(writer.calls), 1)
        self.assertEqual(writer.rows(0), [[1]])
        self.assertEqual(writer.rows(0, "delivery"), [])
        batch = writer.calls[0][0]
        self.assertEqual((batch.count, batch.nbytes, batch.groups), (1, 10, []))
