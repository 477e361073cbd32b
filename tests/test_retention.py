# -*- test-case-name: tests.test_retention -*-
"""
Tests for L{relay.retention}: what the store deletes after --retention and
what it never deletes, on real SQLite files through the store's real adbapi
writer, run on a threadless pool and a L{task.Clock}.  Also: every filter of
relay history is served by an index.
"""

import os
import sqlite3

from twisted.internet import task
from twisted.python import failure
from twisted.trial import unittest

from relay.cli.history import messages_sql, query_messages
from relay.retention import BUSY_WAIT, IDLE_POLL, Retention
from relay.store import Store
from relay.testing import ThreadlessConnectionPool, settle

DAY_MS = 86400 * 1000


class _RetentionCase(unittest.TestCase):

    def setUp(self):
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)
        self.path = os.path.join(self.dir, "relay.sqlite")
        self.clock = task.Clock()
        self.clock.advance(10 * 86400)   # "now" is day 10
        self.stores = []

    def open(self):
        store = Store(self.clock, self.path, batch_delay=0.01,
                      pool_factory=ThreadlessConnectionPool.on(self.clock))
        store.open()
        self.stores.append(store)
        self.addCleanup(self.close, store)
        return store

    def close(self, store):
        if store.is_open():
            settle(self.clock, store.close())

    def retention(self, store, retention=86400.0, **kw):
        r = Retention(self.clock, store, retention, **kw)
        r.startService()
        self.addCleanup(r.stopService)
        return r

    def run_pass(self, r):
        """
        Run one pass to its end, moving the clock in steps of the idle poll
        (a step waits for a batch being written).
        """
        fired = []
        r.run_pass().addBoth(fired.append)
        for _ in range(100000):
            if fired:
                break
            self.clock.advance(IDLE_POLL)
        self.assertEqual(len(fired), 1)
        if isinstance(fired[0], failure.Failure):
            fired[0].raiseException()

    def message(self, store, statuses, age_days=5.0, dead=False):
        """
        Store a message accepted C{age_days} ago with one delivery per
        entry of C{statuses}; return its seq.
        """
        now_ms = int(self.clock.seconds() * 1000)
        ts = now_ms - int(age_days * DAY_MS)
        seq = store.next_seq()
        store.begin_send()
        store.add_message([seq, store.message_id(seq), None, ts, "alice", "bob", "t1", "th1",
                           "message", '{"body":"x%d"}' % seq, None, None, ts + 60000], 100)
        for i, status in enumerate(statuses):
            store.add_delivery("r%d" % i, seq, ("r%d" % i, "t1", "alice"), seq, status, ts)
        store.end_send()
        if dead:
            store.add_dead_letter(seq, store.message_id(seq), "refused")
        settle(self.clock, store.flush())
        return seq

    def rows(self, sql, *args):
        conn = sqlite3.connect(self.path)
        try:
            return conn.execute(sql, args).fetchall()
        finally:
            conn.close()

    def seqs(self):
        return [r[0] for r in self.rows("SELECT seq FROM messages ORDER BY seq")]


class WhatGoesTests(_RetentionCase):

    def test_only_finished_old_messages_go(self):
        """
        Of messages older than the retention, those whose every delivery is
        acked or expired go with their delivery rows; one pending, one
        delivered (unacked), one with an acked and a pending delivery stay;
        a finished message younger than the retention stays.
        """
        store = self.open()
        acked = self.message(store, ["acked"])
        pending = self.message(store, ["pending"])
        unacked = self.message(store, ["delivered"])
        mixed = self.message(store, ["acked", "pending"])
        expired = self.message(store, ["expired", "acked"])
        young = self.message(store, ["acked"], age_days=0.5)
        r = self.retention(store)
        self.run_pass(r)
        self.assertEqual(self.seqs(), [pending, unacked, mixed, young])
        self.assertEqual(
            self.rows("SELECT message_seq, status FROM deliveries ORDER BY message_seq, recipient"),
            [(pending, "pending"), (unacked, "delivered"), (mixed, "acked"), (mixed, "pending"),
             (young, "acked")])
        self.assertNotIn(acked, self.seqs())
        self.assertNotIn(expired, self.seqs())
        self.assertEqual(r.metrics["deleted_messages"], 2)
        self.assertEqual(r.metrics["deleted_deliveries"], 3)

    def test_a_state_it_does_not_know_holds_the_message(self):
        """
        A delivery in a state retention does not know (federation's
        "remote", or any later one) is taken as open: its old message stays
        while a finished one of the same age goes.
        """
        store = self.open()
        finished = self.message(store, ["acked"])
        remote = self.message(store, ["acked", "acked"])
        conn = sqlite3.connect(self.path)
        conn.execute("UPDATE deliveries SET status = 'remote' WHERE message_seq = ?"
                     " AND recipient = 'r1'", (remote,))
        conn.commit()
        conn.close()
        self.run_pass(self.retention(store))
        self.assertEqual(self.seqs(), [remote])
        self.assertNotIn(finished, self.seqs())

    def test_ack_still_in_the_open_batch_does_not_count(self):
        """
        A delivery acked in memory but not yet committed is still open on
        disk: its message stays until the ack commits, then goes.
        """
        store = self.open()
        seq = self.message(store, ["delivered"])
        store.set_status(None, "r0", seq, "acked", 1, int(self.clock.seconds() * 1000))
        r = self.retention(store)
        self.assertEqual(store.batcher.current.count, 1)   # the ack waits in the open batch
        settle(self.clock, store.retire(0, seq, int(self.clock.seconds() * 1000) - DAY_MS,
                                        None, 100))
        self.assertEqual(self.seqs(), [seq])
        settle(self.clock, store.flush())
        self.run_pass(r)
        self.assertEqual(self.seqs(), [])

    def test_zero_keeps_everything(self):
        """
        --retention 0: nothing is deleted, however old and finished.
        """
        store = self.open()
        seqs = [self.message(store, ["acked"], age_days=400) for _ in range(3)]
        self.run_pass(self.retention(store, retention=0))
        self.assertEqual(self.seqs(), seqs)

    def test_survives_restart_and_seqs_not_reused(self):
        """
        Across a restart the same messages stay (pending, unacked) and go
        (finished); when the newest message was deleted, the reopened store
        still gives seqs above it (the sync cursor is past it).
        """
        store = self.open()
        pending = self.message(store, ["pending"])
        unacked = self.message(store, ["delivered"])
        last = self.message(store, ["acked"])
        self.run_pass(self.retention(store))
        self.assertEqual(self.seqs(), [pending, unacked])
        self.close(store)
        again = self.open()
        self.assertEqual(again.last_given_seq(), last)
        self.assertGreater(again.next_seq(), last)
        self.run_pass(self.retention(again))
        self.assertEqual(self.seqs(), [pending, unacked])


class SyncTests(_RetentionCase):

    def test_nothing_unconfirmed_goes(self):
        """
        With sync on, only messages at or below meta sync_confirmed go:
        with no mark at all (sync down since the start) nothing goes; with
        the mark at the second message, the first two go and the rest stay.
        """
        store = self.open()
        seqs = [self.message(store, ["acked"]) for _ in range(4)]
        r = self.retention(store, sync=True)
        self.run_pass(r)
        self.assertEqual(self.seqs(), seqs)
        settle(self.clock, store.set_meta("sync_cursor", str(seqs[3])))
        self.run_pass(r)
        self.assertEqual(self.seqs(), seqs, "the cursor (spilled too) is not confirmation")
        settle(self.clock, store.set_meta("sync_confirmed", str(seqs[1])))
        self.run_pass(r)
        self.assertEqual(self.seqs(), seqs[2:])


class DeadLetterTests(_RetentionCase):

    def test_dead_letters_and_quarantine_kept_until_their_retention(self):
        """
        A finished, old, dead-lettered message and the quarantine rows stay
        by default (dead letters are kept for ever); with a dead-letter
        retention shorter than their age they go, the dead-letter row with
        its message.
        """
        store = self.open()
        dead = self.message(store, ["acked"], dead=True)
        conn = sqlite3.connect(self.path)
        conn.execute("INSERT INTO quarantine (ts, statement, row, error) VALUES (?, 'x', '[]', 'e')",
                     (int(self.clock.seconds() * 1000) - 3 * DAY_MS,))
        conn.commit()
        conn.close()
        self.run_pass(self.retention(store))
        self.assertEqual(self.seqs(), [dead])
        self.assertEqual(self.rows("SELECT message_seq FROM dead_letters"), [(dead,)])
        self.assertEqual(len(self.rows("SELECT * FROM quarantine")), 1)
        self.clock.advance(2 * 86400)
        self.run_pass(self.retention(store, dead_retention=86400.0))
        self.assertEqual(self.seqs(), [])
        self.assertEqual(self.rows("SELECT * FROM dead_letters"), [])
        self.assertEqual(self.rows("SELECT * FROM quarantine"), [])


class StepTests(_RetentionCase):

    def fill(self, store, n, status="acked"):
        now_ms = int(self.clock.seconds() * 1000) - 5 * DAY_MS
        for _ in range(n):
            seq = store.next_seq()
            store.begin_send()
            store.add_message([seq, store.message_id(seq), None, now_ms, "a", "b", None, None,
                               "message", '{"body":"%s"}' % ("x" * 2000), None, None,
                               now_ms + 1], 2100)
            store.add_delivery("b", seq, ("b", "default", "a"), seq, status, now_ms)
            store.end_send()
        settle(self.clock, store.flush(), turns=100000)

    def test_bounded_steps(self):
        """
        One step deletes at most C{scan} messages; a pass takes at most
        C{steps} steps and the next pass goes on where it stopped, until
        all finished messages are gone.
        """
        store = self.open()
        self.fill(store, 500)
        deleted, after, end = settle(self.clock, store.retire(
            0, 500, int(self.clock.seconds() * 1000), None, 50)).result
        self.assertEqual((deleted["messages"], after, end), (50, 50, False))
        r = self.retention(store, scan=50, steps=3)
        self.run_pass(r)
        self.assertEqual(len(self.seqs()), 500 - 50 - 150)
        self.assertEqual(r.metrics["steps"], 3)
        for _ in range(4):
            self.run_pass(r)
        self.assertEqual(self.seqs(), [])

    def test_step_waits_for_the_batch_being_written(self):
        """
        A step never starts while a batch is being written: it begins only
        once that batch has committed.
        """
        store = self.open()
        self.fill(store, 5)
        seen = []
        real = store.retire

        def retire(*args):
            seen.append(store.writer_busy())
            return real(*args)
        store.retire = retire
        self.fill_nowait(store)
        self.assertTrue(store.writer_busy())
        r = self.retention(store)
        self.run_pass(r)
        self.assertEqual(seen, [False])

    def test_a_writer_that_stays_busy_does_not_starve_retention(self):
        """
        Under sustained load the writer is never seen idle (each group
        commit starts as the last one ends): a step waits BUSY_WAIT at most,
        then goes (queued behind the batch in flight), and the pass deletes
        what it should.
        """
        store = self.open()
        self.fill(store, 5)
        store.writer_busy = lambda: True
        r = self.retention(store)
        started = self.clock.seconds()
        self.run_pass(r)
        self.assertEqual(self.seqs(), [])
        self.assertEqual(r.metrics["deleted_messages"], 5)
        # One wait before the delete step and one before the vacuum step.
        self.assertLessEqual(self.clock.seconds() - started, 2 * (BUSY_WAIT + IDLE_POLL))

    def fill_nowait(self, store):
        seq = store.next_seq()
        store.add_message([seq, store.message_id(seq), None, 1, "a", "b", None, None,
                           "message", "{}", None, None, 2], 100)
        store.batcher.flush()

    def test_pages_go_back_to_the_file_system(self):
        """
        After the deletions the pass frees the pages in steps: no free page
        is left and the file (after a checkpoint) is smaller.
        """
        store = self.open()
        self.fill(store, 400)
        checkpoint = sqlite3.connect(self.path)
        checkpoint.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        checkpoint.close()
        before = os.path.getsize(self.path)
        r = self.retention(store, pages=20)
        self.run_pass(r)
        self.assertEqual(self.seqs(), [])
        self.assertEqual(r.free_pages, 0)
        self.assertEqual(self.rows("PRAGMA auto_vacuum"), [(2,)])
        checkpoint = sqlite3.connect(self.path)
        checkpoint.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        checkpoint.close()
        self.assertLess(os.path.getsize(self.path), before / 4)


class HistoryIndexTests(_RetentionCase):

    def test_every_history_filter_uses_an_index(self):
        """
        relay history --from, --to, --thread and --topic read messages
        through an index (no scan of the messages table), in seq order
        without a sort; --since alone is a backwards rowid walk stopped by
        the limit or the ts index.  The results are still right.
        """
        store = self.open()
        seq = self.message(store, ["acked"])
        conn = sqlite3.connect(self.path)
        self.addCleanup(conn.close)
        for kw in (dict(sender="a"), dict(recipient="b"), dict(thread="t"), dict(topic="x"),
                   dict(recipient="b", sender="a")):
            sql, params = messages_sql(limit=50, **kw)
            plan = "\n".join(r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + sql, params))
            self.assertNotIn("SCAN m", plan, kw)
            self.assertNotIn("TEMP B-TREE FOR ORDER BY", plan, kw)
            self.assertNotIn("SCAN deliveries", plan, kw)
        conn.row_factory = sqlite3.Row
        for kw in (dict(sender="alice"), dict(recipient="r0"), dict(recipient="bob"), dict(thread="th1"),
                   dict(topic="t1"), dict(since_ms=0), dict(recipient="r0", sender="alice")):
            self.assertEqual([m["seq"] for m in query_messages(conn, **kw)], [seq], kw)
        self.assertEqual(query_messages(conn, recipient="nobody"), [])


class StatsTests(_RetentionCase):

    def test_rows_deleted_are_counted_by_table(self):
        """
        A pass counts what it deleted in each table: finished messages, all
        their delivery rows, the dead letters and quarantine rows older than
        --dead-letter-retention; a pending message counts nowhere.  The
        last pass's start and duration are those of the clock.
        """
        store = self.open()
        self.message(store, ["acked"])
        self.message(store, ["acked", "expired"])
        self.message(store, ["acked"], age_days=3, dead=True)
        self.message(store, ["pending"])
        conn = sqlite3.connect(self.path)
        conn.execute("INSERT INTO quarantine (ts, statement, row, error) VALUES (?, 'x', '[]', 'e')",
                     (int(self.clock.seconds() * 1000) - 3 * DAY_MS,))
        conn.commit()
        conn.close()
        self.clock.advance(2 * 86400)   # the dead letter was recorded now: let it age
        r = self.retention(store, dead_retention=86400.0)
        self.assertEqual((r.stats()["last_run_at"], r.stats()["passes"]), (None, 0))
        started = self.clock.seconds()
        self.run_pass(r)
        stats = r.stats()
        self.assertEqual(
            {k: stats[k] for k in ("deleted_messages", "deleted_deliveries",
                                   "deleted_dead_letters", "deleted_quarantine", "passes",
                                   "errors")},
            {"deleted_messages": 3, "deleted_deliveries": 4, "deleted_dead_letters": 1,
             "deleted_quarantine": 1, "passes": 1, "errors": 0})
        self.assertEqual(stats["last_run_at"], started)
        self.assertEqual(stats["last_run_s"], self.clock.seconds() - started)
        self.assertEqual((stats["retention_s"], stats["dead_letter_retention_s"]),
                         (86400.0, 86400.0))
        self.run_pass(r)
        self.assertEqual((r.stats()["deleted_messages"], r.stats()["passes"]), (3, 2))

    def test_vacuumed_pages_are_the_pages_the_file_lost(self):
        """
        The pages counted as vacuumed are those the file gave back: its
        page count drops by exactly that many, and no free page is left.
        """
        store = self.open()
        now_ms = int(self.clock.seconds() * 1000) - 5 * DAY_MS
        for _ in range(300):
            seq = store.next_seq()
            store.begin_send()
            store.add_message([seq, store.message_id(seq), None, now_ms, "a", "b", None, None,
                               "message", '{"body":"%s"}' % ("x" * 2000), None, None,
                               now_ms + 1], 2100)
            store.add_delivery("b", seq, ("b", "default", "a"), seq, "acked", now_ms)
            store.end_send()
        settle(self.clock, store.flush(), turns=100000)
        [(before,)] = self.rows("PRAGMA page_count")
        r = self.retention(store, pages=20)
        self.run_pass(r)
        [(after,)] = self.rows("PRAGMA page_count")
        self.assertGreater(r.stats()["vacuumed_pages"], 100)
        self.assertEqual(r.stats()["vacuumed_pages"], before - after)
        self.assertEqual(r.stats()["free_pages"], 0)

    def test_a_failed_pass_is_counted_and_not_taken_for_a_run(self):
        """
        A pass that fails counts in C{errors}, leaves the last run as it
        was, and the loop's next pass runs and is recorded.
        """
        store = self.open()
        self.message(store, ["acked"])
        real = store.retire
        store.retire = lambda *a: task.deferLater(self.clock, 0, lambda: 1 / 0)
        r = self.retention(store, interval=1.0)
        self.clock.advance(1.0)
        self.clock.advance(0)
        self.assertEqual((r.stats()["errors"], r.stats()["passes"]), (1, 1))
        self.assertIsNone(r.stats()["last_run_at"])
        self.flushLoggedErrors(ZeroDivisionError)
        store.retire = real
        for _ in range(2000):
            self.clock.advance(IDLE_POLL)
            if r.stats()["last_run_at"] is not None:
                break
        self.assertEqual(r.stats()["passes"], 2)
        self.assertEqual(r.stats()["deleted_messages"], 1)
        # The loop's second call, at the first clock step at or past it.
        self.assertTrue(10 * 86400 + 2.0 <= r.stats()["last_run_at"] <= 10 * 86400 + 2.0
                        + 2 * IDLE_POLL, r.stats())
