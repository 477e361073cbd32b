# -*- test-case-name: tests.test_store -*-
"""
Tests for L{relay.store.Store} on real SQLite files through its real adbapi
writer thread.
"""

import os
import sqlite3

from twisted.internet import defer, reactor
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from relay.interfaces import ISyncSource
from relay.store import Store, StoreError


class _StoreTestCase(unittest.TestCase):

    def setUp(self):
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)
        self.path = os.path.join(self.dir, "relay.sqlite")

    def open(self, **kw):
        store = Store(reactor, self.path, batch_delay=0.01, **kw)
        store.open()
        self.addCleanup(store.close)
        return store

    def rows(self, sql, *args):
        conn = sqlite3.connect(self.path)
        try:
            return conn.execute(sql, args).fetchall()
        finally:
            conn.close()

    def message(self, store, to="bob", sender="alice", ttl_ms=60000, now_ms=1000, body="hi",
                topic=None, meta=None):
        seq = store.next_seq()
        mid = store.message_id(seq)
        store.add_message([seq, mid, "s%d" % seq, now_ms, sender, to, topic, None, "message",
                           '{"kind":"message","body":"%s"}' % (body,), meta, None,
                           now_ms + ttl_ms], 100)
        return seq, mid


class OpenTests(_StoreTestCase):

    def test_schema_created(self):
        """
        Opening a new file creates the schema at the newest version, in WAL
        mode, with an id prefix for message ids.
        """
        store = self.open()
        self.assertEqual(self.rows("SELECT value FROM meta WHERE key = 'schema_version'"),
                         [("5",)])
        self.assertEqual(self.rows("PRAGMA journal_mode"), [("wal",)])
        self.assertTrue(store.id_prefix)
        self.assertEqual(store.message_id(7), "%s-7" % (store.id_prefix,))

    @defer.inlineCallbacks
    def test_counters_survive_reopen(self):
        """
        After a close and reopen the message seq goes on from the last
        stored one, the run number in the id prefix goes up (its random part
        is drawn again: issue 13 point 17) and stream seqs go on from the
        stored ones, read from the file when first used.
        """
        store = self.open()
        self.message(store)
        seq, _ = self.message(store)
        store.add_delivery("bob", seq, ("bob", "default", "alice"), 2, "pending", 1000)
        prefix = store.id_prefix
        yield store.close()
        again = self.open()
        self.assertEqual(int(again.id_prefix.rpartition(".")[2]),
                         int(prefix.rpartition(".")[2]) + 1)
        self.assertNotEqual(again.id_prefix.rpartition(".")[0], prefix.rpartition(".")[0])
        self.assertEqual(again.next_seq(), seq + 1)
        self.assertEqual(again.last_seq(), seq)
        self.assertEqual(again.stream_state_size(), 0)
        self.assertEqual(again.next_stream_seq(("bob", "default", "alice")), 3)
        self.assertEqual(again.next_stream_seq(("bob", "default", "carol")), 1)

    @defer.inlineCallbacks
    def test_ids_unique_across_runs(self):
        """
        A seq handed out but never committed (a crash) is given again after
        a restart, but never the same id: each run has its own id prefix,
        of the same store.
        """
        store = self.open()
        lost = store.message_id(store.next_seq())
        yield store.close()
        again = self.open()
        reused = again.message_id(again.next_seq())
        self.assertEqual(lost.rpartition("-")[2], reused.rpartition("-")[2])
        self.assertNotEqual(lost, reused)
        self.assertEqual(self.rows("SELECT value FROM meta WHERE key = 'runs'"), [("2",)])

    @defer.inlineCallbacks
    def test_upgrade_from_version_1(self):
        """
        A store written by schema version 1 is upgraded in place to the
        newest version at startup: the new table appears, every row stays,
        and the store works on.
        """
        from relay.store import SCHEMA_DIR
        conn = sqlite3.connect(self.path)
        with open(os.path.join(SCHEMA_DIR, "001_initial.sql")) as f:
            conn.executescript(f.read())
        conn.execute("INSERT INTO meta VALUES ('schema_version', '1')")
        conn.execute("INSERT INTO messages VALUES (1, 'old-1', 's1', 5, 'alice', 'bob', NULL,"
                     " NULL, 'message', '{\"body\":\"kept\"}', NULL, NULL, 99999999999999)")
        conn.commit()
        conn.close()
        self.assertEqual(self.rows("SELECT count(*) FROM sqlite_master WHERE name = 'quarantine'"),
                         [(0,)])
        store = self.open()
        self.assertEqual(self.rows("SELECT value FROM meta WHERE key = 'schema_version'"),
                         [("5",)])
        self.assertEqual(self.rows("SELECT count(*) FROM quarantine"), [(0,)])
        self.assertEqual(self.rows("SELECT id FROM messages"), [("old-1",)])
        self.assertEqual(store.last_seq(), 1)
        self.message(store)
        yield store.batcher.flush()
        self.assertEqual(self.rows("SELECT count(*) FROM messages"), [(2,)])

    def test_missing_directory(self):
        """
        A store in a directory that does not exist raises StoreError with a
        one-line reason.
        """
        store = Store(reactor, "/nonexistent-dir/relay.sqlite")
        e = self.assertRaises(StoreError, store.open)
        self.assertIn("does not exist", str(e))

    def test_not_a_database(self):
        """
        A file that is not SQLite raises StoreError naming the file.
        """
        with open(self.path, "wb") as f:
            f.write(b"this is not a database, just text" * 100)
        e = self.assertRaises(StoreError, Store(reactor, self.path).open)
        self.assertIn(self.path, str(e))

    def test_newer_schema_refused(self):
        """
        A file written by a newer relay (higher schema version) is refused
        instead of being used half-understood.
        """
        conn = sqlite3.connect(self.path)
        conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        conn.execute("INSERT INTO meta VALUES ('schema_version', '99')")
        conn.commit()
        conn.close()
        e = self.assertRaises(StoreError, Store(reactor, self.path).open)
        self.assertIn("newer", str(e))

    def test_sync_source(self):
        """
        The store provides ISyncSource.
        """
        self.assertTrue(verifyObject(ISyncSource, self.open()))


class WriteTests(_StoreTestCase):

    @defer.inlineCallbacks
    def test_message_and_delivery(self):
        """
        A message and its delivery rows are on disk once the batcher's
        flush fires, not before.
        """
        store = self.open()
        seq, mid = self.message(store)
        store.add_delivery("bob", seq, ("bob", "default", "alice"), 1, "pending", 1000)
        self.assertEqual(self.rows("SELECT count(*) FROM messages"), [(0,)])
        yield store.batcher.flush()
        self.assertEqual(self.rows("SELECT seq, id, sender, recipient FROM messages"),
                         [(seq, mid, "alice", "bob")])
        self.assertEqual(self.rows("SELECT recipient, message_seq, stream_seq, status"
                                   " FROM deliveries"), [("bob", seq, 1, "pending")])
        self.assertEqual(self.rows("SELECT * FROM streams"), [("bob", "default", "alice", 1)])

    @defer.inlineCallbacks
    def test_status_edited_in_place(self):
        """
        A status change while the delivery's insert still waits in the open
        batch edits that row (no UPDATE is queued); after the batch is taken
        an UPDATE is queued instead, and both reach the disk.
        """
        store = self.open()
        seq, _ = self.message(store)
        handle = store.add_delivery("bob", seq, ("bob", "default", "alice"), 1, "pending", 1000)
        handle = store.set_status(handle, "bob", seq, "delivered", 1, 1001)
        self.assertEqual(store.batcher.current.rows["status"], [])
        self.assertEqual(store.batcher.current.rows["delivery"][0][3:], ["delivered", 1, 1001])
        yield store.batcher.flush()
        self.assertEqual(self.rows("SELECT status, attempts FROM deliveries"), [("delivered", 1)])
        handle = store.set_status(handle, "bob", seq, "acked", 1, 1002)
        self.assertIsNone(handle)
        self.assertEqual(len(store.batcher.current.rows["status"]), 1)
        yield store.batcher.flush()
        self.assertEqual(self.rows("SELECT status, updated_at FROM deliveries"), [("acked", 1002)])

    @defer.inlineCallbacks
    def test_acked_never_downgraded(self):
        """
        A late 'delivered' (a redelivery racing its ACK) does not turn an
        acked delivery back into an open one.
        """
        store = self.open()
        seq, _ = self.message(store)
        store.add_delivery("bob", seq, ("bob", "default", "alice"), 1, "acked", 1000)
        yield store.batcher.flush()
        store.set_status(None, "bob", seq, "delivered", 2, 1001)
        yield store.batcher.flush()
        self.assertEqual(self.rows("SELECT status FROM deliveries"), [("acked",)])

    @defer.inlineCallbacks
    def test_ack_by_id_across_runs(self):
        """
        An ACK naming a message id given by an earlier run of the daemon
        (another id prefix) marks exactly that recipient's delivery acked;
        ids naming no message, or another recipient's, change nothing.
        """
        first = self.open()
        seq, mid = self.message(first)
        first.add_delivery("bob", seq, ("bob", "default", "alice"), 1, "delivered", 1000)
        first.add_delivery("carol", seq, ("carol", "default", "alice"), 1, "delivered", 1000)
        yield first.close()
        second = self.open()
        self.assertNotEqual(second.id_prefix, first.id_prefix)
        second.ack_by_id("bob", mid, 2000)
        second.ack_by_id("bob", "no-such-id", 2000)
        second.ack_by_id("dave", mid, 2000)
        yield second.batcher.flush()
        self.assertEqual(self.rows("SELECT recipient, status FROM deliveries ORDER BY recipient"),
                         [("bob", "acked"), ("carol", "delivered")])
        self.assertEqual(second.batcher.metrics["failures"], 0)

    @defer.inlineCallbacks
    def test_refused_row_is_quarantined_not_retried_forever(self):
        """
        A row SQLite can never take (here an integer too large to bind)
        does not stop the store: its batch is written row by row, the
        refused row is kept as JSON with the reason in the quarantine
        table, the other rows and the receipts go through, and later
        batches commit as usual.
        """
        store = self.open()
        good_seq, _ = self.message(store, body="good")
        bad_seq = store.next_seq()
        store.add_message([bad_seq, store.message_id(bad_seq), "s-bad", 2 ** 70, "alice", "bob",
                           None, None, "message", '{"body":"bad"}', None, None, 10 ** 13], 100)
        receipts = []
        store.after_commit(receipts.append, "r")
        yield store.batcher.flush()
        self.assertEqual(receipts, ["r"])
        self.assertEqual(self.rows("SELECT seq FROM messages"), [(good_seq,)])
        [(statement, row, error)] = self.rows("SELECT statement, row, error FROM quarantine")
        self.assertEqual(statement, "message")
        self.assertIn(str(2 ** 70), row)
        self.assertIn("OverflowError", error)
        self.assertEqual(store.stats()["quarantined"], 1)
        self.message(store, body="later")
        yield store.batcher.flush()
        self.assertEqual(self.rows("SELECT count(*) FROM messages"), [(2,)])

    @defer.inlineCallbacks
    def test_expire_due(self):
        """
        expire_due marks open deliveries of messages past their expiry as
        expired; acked ones and ones with time left are untouched, and no
        message row is deleted.
        """
        store = self.open()
        old, _ = self.message(store, ttl_ms=100)
        done, _ = self.message(store, ttl_ms=100)
        fresh, _ = self.message(store, ttl_ms=10 ** 9)
        for seq, status in ((old, "delivered"), (done, "acked"), (fresh, "pending")):
            store.add_delivery("bob", seq, ("bob", "default", "alice"), seq, status, 1000)
        store.expire_due(5000)
        yield store.batcher.flush()
        self.assertEqual(self.rows("SELECT message_seq, status FROM deliveries ORDER BY 1"),
                         [(old, "expired"), (done, "acked"), (fresh, "pending")])
        self.assertEqual(self.rows("SELECT count(*) FROM messages"), [(3,)])

    @defer.inlineCallbacks
    def test_close_flushes(self):
        """
        close() writes everything still queued before closing the file.
        """
        store = self.open()
        for _ in range(3):
            self.message(store)
        yield store.close()
        self.assertEqual(self.rows("SELECT count(*) FROM messages"), [(3,)])

    @defer.inlineCallbacks
    def test_commit_listener_and_last_seq(self):
        """
        Commit listeners hear the highest committed message seq after each
        commit that stored messages; last_seq follows commits, not queueing.
        """
        store = self.open()
        heard = []
        store.add_commit_listener(heard.append)
        base = store.last_seq()
        self.message(store)
        seq, _ = self.message(store)
        self.assertEqual(store.last_seq(), base)
        yield store.batcher.flush()
        self.assertEqual(heard, [seq])
        self.assertEqual(store.last_seq(), seq)


class ReadTests(_StoreTestCase):

    @defer.inlineCallbacks
    def test_read_open_deliveries(self):
        """
        read_open_deliveries returns a recipient's pending and delivered
        deliveries after a cursor, in message order, up to a limit.
        """
        store = self.open()
        seqs = []
        for i, status in enumerate(["pending", "acked", "delivered", "expired", "pending"]):
            seq, _ = self.message(store, body="m%d" % i)
            store.add_delivery("bob", seq, ("bob", "default", "alice"), i + 1, status, 1000)
            store.add_delivery("carol", seq, ("carol", "default", "alice"), i + 1, "pending", 1000)
            seqs.append(seq)
        yield store.batcher.flush()
        rows = yield store.read_open_deliveries("bob", 0, 10)
        self.assertEqual([r[0] for r in rows], [seqs[0], seqs[2], seqs[4]])
        rows = yield store.read_open_deliveries("bob", seqs[0], 1)
        self.assertEqual([r[0] for r in rows], [seqs[2]])

    @defer.inlineCallbacks
    def test_read_messages_after(self):
        """
        read_messages_after decodes committed messages for sync, in seq
        order (the sync wire flags are derived in relay.sync.wire, see
        tests.test_sync_wire).
        """
        store = self.open()
        a, aid = self.message(store, to="*", topic="t", meta='{"importance":"high"}')
        b, _ = self.message(store, to="bob")
        yield store.batcher.flush()
        got = yield store.read_messages_after(0, 10)
        self.assertEqual([m["seq"] for m in got], [a, b])
        first = got[0]
        self.assertEqual((first["id"], first["from"], first["to"], first["topic"], first["body"]),
                         (aid, "alice", "*", "t", "hi"))
        self.assertEqual(first["payload_meta"], {"importance": "high"})
        got = yield store.read_messages_after(a, 10)
        self.assertEqual([m["seq"] for m in got], [b])

    @defer.inlineCallbacks
    def test_meta_and_dead_letters(self):
        """
        set_meta/get_meta round-trip through the disk; dead letters are
        recorded and counted.
        """
        store = self.open()
        yield store.set_meta("sync_cursor", "42")
        value = yield store.get_meta("sync_cursor")
        self.assertEqual(value, "42")
        missing = yield store.get_meta("nothing")
        self.assertIsNone(missing)
        seq, mid = self.message(store)
        yield store.add_dead_letter(seq, mid, "400: bad body")
        count = yield store.dead_letter_count()
        self.assertEqual(count, 1)
        self.assertEqual(self.rows("SELECT id, reason FROM dead_letters"), [(mid, "400: bad body")])


class AtomicSendTests(_StoreTestCase):
    """
    One SEND (message row, delivery rows, stream seqs) commits in one
    transaction (issue 13 point 1).
    """

    def broadcast(self, store, n, body="hi"):
        store.begin_send()
        seq, mid = self.message(store, to="*", body=body)
        for i in range(n):
            key = ("agent%d" % i, "default", "alice")
            store.add_delivery(key[0], seq, key, store.next_stream_seq(key), "pending", 1000)
        store.end_send()
        return seq

    @defer.inlineCallbacks
    def test_broadcast_commits_whole_with_tiny_batches(self):
        """
        With a batch size of 5 rows and 64 bytes, every commit of three
        broadcasts to 60 agents holds whole SENDs: after each commit, each
        message on disk has its 60 delivery rows and their stream seqs.
        """
        store = self.open(batch_size=5, batch_bytes=64)
        seen = []

        def check(max_seq):
            per_message = self.rows("SELECT m.seq, count(d.recipient) FROM messages m"
                                    " LEFT JOIN deliveries d ON d.message_seq = m.seq"
                                    " GROUP BY m.seq")
            streams = self.rows("SELECT count(*), min(last_seq), max(last_seq) FROM streams")
            seen.append((per_message, streams))

        store.add_commit_listener(check)
        seqs = [self.broadcast(store, 60, body=str(i)) for i in range(3)]
        yield store.batcher.flush()
        self.assertTrue(seen)
        for per_message, streams in seen:
            self.assertTrue(per_message)
            for _, n in per_message:
                self.assertEqual(n, 60)
            self.assertEqual(streams[0][0], 60)
            self.assertEqual(streams[0][1], streams[0][2])
            self.assertEqual(streams[0][1], len(per_message))
        self.assertEqual(self.rows("SELECT count(*) FROM deliveries"), [(180,)])
        self.assertEqual(seen[-1][0], [(seq, 60) for seq in seqs])

    @defer.inlineCallbacks
    def test_refused_send_is_quarantined_whole(self):
        """
        When SQLite refuses one delivery row of a SEND, the row-by-row
        fallback quarantines that whole SEND (message and every delivery)
        instead of storing a message that reaches only some recipients; the
        other SEND of the batch is stored whole.
        """
        store = self.open()
        good = self.broadcast(store, 3, body="good")
        store.begin_send()
        bad, _ = self.message(store, body="bad")
        store.add_delivery("bob", bad, ("bob", "default", "alice"), 1, "pending", 1000)
        store.add_delivery("carol", bad, ("carol", "default", "alice"), 1, "pending", 2 ** 70)
        store.end_send()
        yield store.batcher.flush()
        self.assertEqual(self.rows("SELECT seq FROM messages"), [(good,)])
        self.assertEqual(self.rows("SELECT DISTINCT message_seq FROM deliveries"), [(good,)])
        self.assertEqual(
            self.rows("SELECT statement, count(*) FROM quarantine GROUP BY 1 ORDER BY 1"),
            [("delivery", 2), ("message", 1)])
        self.assertEqual(store.stats()["quarantined"], 3)


class ExpiryTests(_StoreTestCase):
    """
    The expiry is incremental (issue 13 point 12) and still marks exactly
    the open deliveries of messages past their expiry.
    """

    def deliver(self, store, seq, status="pending"):
        store.add_delivery("bob", seq, ("bob", "default", "alice"), seq, status, 1000)

    @defer.inlineCallbacks
    def test_marks_exactly_the_expired_rows(self):
        """
        Over several runs: a run marks the open deliveries whose message
        expired since the last run; a message stored after a run with an
        expiry older than that run is still marked at the next; acked ones,
        ones with time left and ones already expired by an earlier run stay
        as they are; a status update never reopens an expired delivery.
        """
        store = self.open()
        early, _ = self.message(store, ttl_ms=1000)           # expires 2000
        acked, _ = self.message(store, ttl_ms=1000)           # expires 2000, acked
        later, _ = self.message(store, ttl_ms=9000)           # expires 10000
        for seq, status in ((early, "pending"), (acked, "acked"), (later, "delivered")):
            self.deliver(store, seq, status)
        store.expire_due(5000)
        yield store.batcher.flush()
        self.assertEqual(self.rows("SELECT message_seq, status FROM deliveries ORDER BY 1"),
                         [(early, "expired"), (acked, "acked"), (later, "delivered")])
        # Stored after the run at 5000 with an expiry before it (a client
        # clock, a TTL of 1 ms, a message written late).
        late, _ = self.message(store, ttl_ms=1, now_ms=1000)  # expires 1001
        self.deliver(store, late)
        store.set_status(None, "bob", early, "delivered", 2, 6000)
        store.expire_due(6000)
        yield store.batcher.flush()
        self.assertEqual(self.rows("SELECT message_seq, status FROM deliveries ORDER BY 1"),
                         [(early, "expired"), (acked, "acked"), (later, "delivered"),
                          (late, "expired")])
        store.expire_due(20000)
        yield store.batcher.flush()
        self.assertEqual(self.rows("SELECT message_seq, status FROM deliveries ORDER BY 1"),
                         [(early, "expired"), (acked, "acked"), (later, "expired"),
                          (late, "expired")])
        self.assertEqual(dict(self.rows("SELECT key, value FROM meta WHERE key LIKE 'expire%'")),
                         {"expire_after_ms": "20000", "expire_after_seq": str(late)})
        store.set_status(None, "bob", later, "acked", 3, 21000)
        yield store.batcher.flush()
        self.assertEqual(self.rows("SELECT status FROM deliveries WHERE message_seq = ?", later),
                         [("acked",)])

    @defer.inlineCallbacks
    def test_watermark_survives_restart(self):
        """
        After a restart the expiry goes on from the watermarks in the file:
        it still finds a message stored before the restart that expires
        after it.
        """
        store = self.open()
        seq, _ = self.message(store, ttl_ms=9000)
        self.deliver(store, seq)
        store.expire_due(5000)
        yield store.close()
        again = self.open()
        again.expire_due(9000)
        yield again.batcher.flush()
        self.assertEqual(self.rows("SELECT status FROM deliveries"), [("pending",)])
        again.expire_due(10000)
        yield again.batcher.flush()
        self.assertEqual(self.rows("SELECT status FROM deliveries"), [("expired",)])

    def test_query_plan_uses_indexes(self):
        """
        The expiry statement reads messages through the expiry index and
        the rowid range, and deliveries through the (message_seq, status) index:
        no full scan of either table.
        """
        from relay.store import SQL
        self.open()
        conn = sqlite3.connect(self.path)
        self.addCleanup(conn.close)
        plan = [r[3] for r in conn.execute(
            "EXPLAIN QUERY PLAN " + SQL["expire"], {"now": 1, "after_ms": 0, "after_seq": 0})]
        text = "\n".join(plan)
        self.assertNotIn("SCAN messages", text)
        self.assertNotIn("SCAN deliveries", text)
        self.assertIn("deliveries_by_message", text)
        self.assertIn("INTEGER PRIMARY KEY (rowid>?)", text)
        self.assertIn("messages_expires (expires_at>? AND expires_at<?)", text)


class IdPrefixTests(_StoreTestCase):
    """
    A store copied or restored from a backup never gives out an id again
    (issue 13 point 17, the daemon's side).
    """

    @defer.inlineCallbacks
    def test_copy_and_original_never_share_an_id(self):
        """
        A copy of a store file opened next to its original, and the
        original reopened from a backup taken earlier, give ids none of
        which another of them gave.
        """
        import shutil
        store = self.open()
        self.message(store)
        yield store.close()
        backup = os.path.join(self.dir, "backup.sqlite")
        shutil.copy(self.path, backup)
        copy_path = os.path.join(self.dir, "copy.sqlite")
        shutil.copy(self.path, copy_path)
        ids = []
        for path, restore in ((self.path, False), (copy_path, False), (self.path, True)):
            if restore:
                # Back over the same inode, as cp does: the file's identity
                # does not change, only its content goes back in time.
                shutil.copyfile(backup, path)
            s = Store(reactor, path, batch_delay=0.01)
            s.open()
            for _ in range(3):
                seq, mid = self.message(s)
                ids.append(mid)
            yield s.close()
        # The same seqs 2, 3, 4 were given three times, never the same id.
        self.assertEqual({i.rpartition("-")[2] for i in ids}, {"2", "3", "4"})
        self.assertEqual(len(set(ids)), 9)


class DedupeLoadTests(_StoreTestCase):
    """
    What the store loads at startup for the dedupe window: bounded, per
    sender, and no payloads (issue 13 points 3 and 7).
    """

    def test_upgrade_from_version_2_loads_fingerprints(self):
        """
        A version 2 file (no stored fingerprints) is upgraded to 3 and its
        recent SENDs load with the fingerprint computed from their rows,
        equal to what the router computes for the same SEND.
        """
        from relay.dedupe import fingerprint
        from relay.store import SCHEMA_DIR
        conn = sqlite3.connect(self.path)
        for name in ("001_initial.sql", "002_quarantine.sql"):
            with open(os.path.join(SCHEMA_DIR, name)) as f:
                conn.executescript(f.read())
        conn.execute("INSERT INTO meta VALUES ('schema_version', '2')")
        now_ms = int(reactor.seconds() * 1000)
        conn.execute("INSERT INTO messages VALUES (1, 'old-1', 's1', ?, 'alice', 'bob', 't',"
                     " NULL, 'message', '{\"body\":\"kept\"}', NULL, NULL, 99999999999999)",
                     (now_ms,))
        conn.commit()
        conn.close()
        store = self.open()
        self.assertEqual(self.rows("SELECT value FROM meta WHERE key = 'schema_version'"),
                         [("5",)])
        self.assertEqual(store.recent_sends,
                         [("alice", "s1", "old-1", fingerprint("bob", "t", b'{"body":"kept"}'),
                           now_ms)])

    def test_bounded_per_sender_and_age(self):
        """
        Startup loads for each sender only its newest SENDs (per-sender
        bound), none older than the age bound, and no more than the total
        bound; a quiet sender keeps its SEND whatever a chatty one sent.
        """
        store = self.open()
        now_ms = int(reactor.seconds() * 1000)
        self.message(store, sender="quiet", now_ms=now_ms - 1000)
        self.message(store, sender="stale", now_ms=now_ms - 10 * 3600 * 1000)
        for _ in range(50):
            self.message(store, sender="chatty", now_ms=now_ms)
        store.batcher.flush()
        d = store.close()

        @d.addCallback
        def reopened(_):
            again = self.open(recent_per_sender=10, recent_age=3600.0, recent_sends=12)
            senders = [r[0] for r in again.recent_sends]
            self.assertEqual(senders.count("chatty"), 10)
            self.assertEqual(senders.count("quiet"), 1)
            self.assertNotIn("stale", senders)
            self.assertEqual(len(again.recent_sends[0]), 5)
            again2 = Store(reactor, self.path, recent_per_sender=10, recent_age=3600.0,
                           recent_sends=5)
            again2.open()
            self.addCleanup(again2.close)
            self.assertEqual(len(again2.recent_sends), 5)
        return d


class StartupBoundsTests(_StoreTestCase):

    @defer.inlineCallbacks
    def test_100000_names_on_disk_load_bounded(self):
        """
        A store holding SENDs from 100,000 distinct senders to 100,000
        distinct recipients (100,000 streams) loads at startup no more
        dedupe entries than its total bound, each without payload, and no
        stream state at all.
        """
        yield self.open().close()
        conn = sqlite3.connect(self.path)
        now_ms = int(reactor.seconds() * 1000)
        conn.executemany(
            "INSERT INTO messages (seq, id, send_id, ts, sender, recipient, kind, payload,"
            " expires_at, send_fp) VALUES (?, ?, 's', ?, ?, ?, 'message', ?, ?, 7)",
            ((i, "m%d" % i, now_ms, "sender-%06d" % i, "rcpt-%06d" % i,
              '{"body":"%s"}' % ("x" * 100), now_ms + 10 ** 9) for i in range(1, 100001)))
        conn.executemany("INSERT INTO streams VALUES (?, 'default', ?, 1)",
                         (("rcpt-%06d" % i, "sender-%06d" % i) for i in range(1, 100001)))
        conn.commit()
        conn.close()
        store = self.open(recent_sends=5000)
        self.assertEqual(len(store.recent_sends), 5000)
        self.assertEqual(store.recent_sends[-1], ("sender-100000", "s", "m100000", 7, now_ms))
        self.assertEqual(store.stream_state_size(), 0)
        self.assertEqual(store.next_stream_seq(("rcpt-000001", "default", "sender-000001")), 2)


class StreamStateTests(_StoreTestCase):
    """
    Stream seqs are kept in a bounded LRU backed by the streams table
    (issue 13 point 7).
    """

    @defer.inlineCallbacks
    def test_100000_names_bounded_and_seqs_correct(self):
        """
        Deliveries on 100,000 distinct streams keep at most stream_cache of
        them in memory once committed; a stream pushed out of memory, in a
        batch not yet committed or only on disk, goes on from its last seq.
        """
        store = self.open(stream_cache=1000, batch_size=5000)
        seq, _ = self.message(store)
        first = ("name-0", "default", "alice")
        for i in range(100000):
            key = ("name-%d" % i, "default", "alice")
            store.add_delivery(key[0], seq, key, store.next_stream_seq(key), "pending", 1000)
            if i == 0:
                # Not yet committed, and soon out of the LRU: must not be
                # read back from the file as 0.
                self.assertEqual(store.next_stream_seq(first), 2)
        self.assertLessEqual(store.streams.cached(), 1000)
        yield store.batcher.flush()
        self.assertEqual(store.stream_state_size(), 1000)
        reads = store.streams.reads
        self.assertEqual(store.next_stream_seq(first), 2)
        self.assertEqual(store.streams.reads, reads + 1)
        seq2, _ = self.message(store)
        store.add_delivery("name-0", seq2, first, 2, "pending", 1000)
        yield store.batcher.flush()
        self.assertEqual(self.rows("SELECT last_seq FROM streams WHERE recipient = 'name-0'"),
                         [(2,)])
        self.assertEqual(self.rows("SELECT count(*) FROM streams"), [(100000,)])


class KnownSendTests(_StoreTestCase):

    @defer.inlineCallbacks
    def test_send_with_a_stored_derived_id_is_left_out(self):
        """
        A SEND whose derived id ("m...") a stored message already has (the
        same SEND again once the dedupe window forgot it) is left out of the
        batch whole, neither quarantined nor failing the batch: the other
        SENDs of the batch and its receipts go through. A seq-style id
        taken twice is a real fault and is quarantined.
        """
        store = self.open()

        def add(mid, body):
            store.begin_send()
            seq = store.next_seq()
            store.add_message([seq, mid, "s", 1000, "a", "b", None, None, "message",
                               '{"body":"%s"}' % body, None, None, 10 ** 13], 100)
            store.add_delivery("b", seq, ("b", "default", "a"), seq, "pending", 1000)
            store.end_send()
            return seq

        add("mfirst", "one")
        yield store.batcher.flush()
        add("mfirst", "one")
        other = add("mother", "two")
        add(store.message_id(1), "three")
        add(store.message_id(1), "four")
        receipts = []
        store.after_commit(receipts.append, "r")
        yield store.batcher.flush()
        self.assertEqual(receipts, ["r"])
        self.assertEqual(self.rows("SELECT id, json_extract(payload, '$.body') FROM messages"
                                   " ORDER BY seq"),
                         [("mfirst", "one"), ("mother", "two"), (store.message_id(1), "three")])
        self.assertEqual(self.rows("SELECT message_seq FROM deliveries ORDER BY 1"),
                         [(1,), (other,), (other + 1,)])
        self.assertEqual(store.stats()["known_sends"], 1)
        self.assertEqual(self.rows("SELECT statement FROM quarantine ORDER BY 1"),
                         [("delivery",), ("message",)])
        self.assertEqual(store.batcher.metrics["failures"], 0)
