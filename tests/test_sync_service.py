# -*- test-case-name: tests.test_sync_service -*-
"""
Unit tests for L{relay.sync.service.SyncService}: the pipeline driven by a
L{task.Clock}, an in-memory store and the ingest stub resource served in
memory by C{treq.testing.StubTreq}.
"""

import os
import uuid

import orjson
from treq.testing import StubTreq
from twisted.internet import task
from twisted.trial import unittest

from relay.sync.backoff import Backoff
from relay.sync.poster import Poster
from relay.sync.service import HOLDING, IDLE, UNAUTHORIZED, SyncService
from relay.sync.spill import SpillDir
from relay.sync.wire import encode_message
from tests.support.sync import DAEMON, KEY, WORKSPACE, FakeSyncSource, IngestStub, make_row

URL = "http://127.0.0.1:9/api/daemons/messages/sync"


class Harness:
    """
    A service wired to a clock, a fake store and an in-memory ingest stub.
    """

    def __init__(self, testcase, source=None, spill_dir=None, spill_max=10 ** 9, timeout=30.0,
                 compress=1024, **kwargs):
        self.clock = task.Clock()
        self.clock.advance(1700000000)
        self.source = source if source is not None else FakeSyncSource()
        self.stub = IngestStub(clock=self.clock)
        self.treq = StubTreq(self.stub)
        self.poster = Poster(self.clock, URL, KEY, timeout, compress, self.treq)
        self.spill_dir = spill_dir or testcase.mktemp()
        self.spill = SpillDir(self.spill_dir, spill_max, self.clock)
        kwargs.setdefault("retries", 3)
        kwargs.setdefault("spill_retry_interval", 30.0)
        self.service = SyncService(
            self.source, self.poster, self.spill, self.clock, Backoff(1.0, jitter=0.0),
            WORKSPACE, daemon_id=DAEMON, **kwargs)
        self.service.startService()
        self.settle()
        testcase.addCleanup(self.stop)

    def settle(self):
        """
        Run everything due now (the pipeline hops through callLater(0)).
        """
        for _ in range(100000):
            if not any(c.getTime() <= self.clock.seconds() for c in self.clock.getDelayedCalls()):
                self.treq.flush()
                if not any(c.getTime() <= self.clock.seconds() for c in self.clock.getDelayedCalls()):
                    return
            self.clock.advance(0)
        raise AssertionError("pipeline never settled")

    def advance(self, seconds):
        self.clock.advance(seconds)
        self.settle()

    def stop(self):
        if self.service.running:
            d = self.service.stopService()
            self.settle()
            return d


class BatchingTests(unittest.TestCase):
    """
    When a batch leaves: size, delay, bytes, and growth while one is out.
    """

    def test_size_trigger(self):
        """
        A batch leaves as soon as it holds batch_size messages; the rest
        wait for the delay.
        """
        h = Harness(self, batch_size=10, batch_delay=1.0)
        h.source.add(25)
        h.settle()
        self.assertEqual(h.stub.sizes(), [10, 10])
        h.advance(0.99)
        self.assertEqual(h.stub.sizes(), [10, 10])
        h.advance(0.01)
        self.assertEqual(h.stub.sizes(), [10, 10, 5])
        self.assertEqual(h.source.cursor, 25)

    def test_delay_trigger(self):
        """
        A partial batch leaves batch_delay seconds after its first message
        was queued, not before.
        """
        h = Harness(self, batch_size=100, batch_delay=0.25)
        h.source.add(3)
        h.settle()
        h.advance(0.125)
        h.source.add(2)
        h.advance(0.0625)
        self.assertEqual(h.stub.sizes(), [])
        h.advance(0.0625)
        self.assertEqual(h.stub.sizes(), [5])

    def test_bytes_trigger(self):
        """
        A batch leaves once its JSON reaches batch_bytes, and never holds
        more than batch_bytes (unless a single message is larger).
        """
        h = Harness(self, batch_size=1000, batch_delay=10.0, batch_bytes=4096)
        h.source.add(20, body="x" * 900)
        h.settle()
        fits = 4096 // encode_message(make_row(1, body="x" * 900)).size
        sizes = h.stub.sizes()
        self.assertTrue(sizes, "no batch left on bytes")
        self.assertEqual(set(sizes), {fits})
        for request in h.stub.requests:
            self.assertLessEqual(sum(len(orjson.dumps(m)) + 1 for m in request["doc"]["messages"]), 4096)
        h.advance(10.0)
        self.assertEqual(sum(h.stub.sizes()), 20)

    def test_batches_grow_while_one_is_in_flight(self):
        """
        While a POST is out the next batch keeps filling, and leaves whole
        once the first is answered.
        """
        h = Harness(self, batch_size=100, batch_delay=0.0)
        h.stub.script.append("hold")
        h.source.add(1)
        h.settle()
        self.assertEqual(len(h.stub.held), 1)
        self.assertEqual(h.service.stats()["in_flight"], 1)
        for _ in range(6):
            h.source.add(10)
            h.settle()
        self.assertEqual(h.stub.sizes(), [1])
        self.assertEqual(h.service.stats()["queued"], 60)
        h.stub.release()
        h.settle()
        self.assertEqual(h.stub.sizes(200), [1, 60])
        self.assertEqual(h.source.cursor, 61)
        self.assertEqual(h.service.stats()["batches"], 2)

    def test_memory_bound(self):
        """
        With the ingest stalled, no more than about max_bytes of messages
        are read; the rest wait in the store and all arrive later.
        """
        h = Harness(self, batch_size=10, batch_delay=0.0, max_bytes=8192)
        h.stub.script.append("hold")
        h.source.add(500)
        h.settle()
        self.assertLessEqual(h.service._mem_bytes, 8192 + 2000)
        self.assertLess(h.service.stats()["queued"], 40)
        h.stub.release()
        h.settle()
        self.assertEqual(len(h.stub.unique), 500)
        self.assertEqual(h.source.cursor, 500)
        self.assertEqual(h.service._mem_bytes, 0)


class RetryTests(unittest.TestCase):
    """
    Failed POSTs: backoff, Retry-After, timeouts, spill after retries.
    """

    def test_backoff_schedule_then_spill(self):
        """
        A 503 is retried after 1, 2 and 4 seconds; after the third retry the
        batch goes to a spill file and the cursor moves past it.
        """
        h = Harness(self, batch_size=5, batch_delay=0.0)
        h.stub.status = 503
        start = h.clock.seconds()
        h.source.add(5)
        h.settle()
        for _ in range(40):
            h.advance(0.5)
        times = [r["at"] - start for r in h.stub.requests]
        self.assertEqual(times, [0, 1, 3, 7])
        self.assertEqual(h.spill.files, 1)
        self.assertEqual(h.source.cursor, 5)
        stats = h.service.stats()
        self.assertEqual(stats["failed_attempts"], 4)
        self.assertEqual(stats["spilled_files"], 1)
        self.assertIn("503", stats["last_error"])

    def test_retry_after_is_honoured(self):
        """
        A 429 with Retry-After: 5 is retried after 5 seconds, not after the
        1 second backoff.
        """
        h = Harness(self, batch_size=5, batch_delay=0.0)
        h.stub.script.append((429, {"error": "slow down"}, {"Retry-After": "5"}))
        start = h.clock.seconds()
        h.source.add(5)
        h.settle()
        h.advance(4.9)
        self.assertEqual(len(h.stub.requests), 1)
        h.advance(0.1)
        self.assertEqual([r["at"] - start for r in h.stub.requests], [0, 5])
        self.assertEqual(len(h.stub.unique), 5)

    def test_timeout_is_retried(self):
        """
        A POST unanswered after the timeout is abandoned and retried.
        """
        h = Harness(self, batch_size=5, batch_delay=0.0, timeout=10.0)
        h.stub.script.append("hold")
        h.source.add(5)
        h.settle()
        h.advance(10.0)
        self.assertIn("timeout", h.service.stats()["last_error"])
        h.advance(1.0)
        self.assertEqual(len(h.stub.requests), 2)
        self.assertEqual(len(h.stub.unique), 5)
        self.assertEqual(h.source.cursor, 5)

    def test_spill_replayed_when_ingest_answers(self):
        """
        Spill files are re-sent every spill_retry_interval once the ingest
        answers, then deleted; every message arrives.
        """
        h = Harness(self, batch_size=5, batch_delay=0.0, retries=0, spill_retry_interval=30.0)
        h.stub.status = 503
        h.source.add(15)
        h.settle()
        self.assertEqual(h.spill.files, 3)
        h.advance(30.0)
        self.assertEqual(h.spill.files, 3, "a pass while the ingest is down deletes nothing")
        h.stub.status = None
        h.advance(30.0)
        self.assertEqual(h.spill.files, 0)
        self.assertEqual(len(h.stub.unique), 15)
        self.assertEqual(os.listdir(h.spill_dir), [])

    def test_spill_full_holds_in_memory(self):
        """
        With no room to spill, the failed batch stays at the head and is
        retried; nothing is dropped and all arrives once the ingest is back.
        """
        h = Harness(self, batch_size=5, batch_delay=0.0, retries=1, spill_max=0,
                    spill_retry_interval=10.0)
        h.stub.status = 503
        h.source.add(12)
        h.advance(1.0)
        h.advance(10.0)
        self.assertEqual(h.service.state, HOLDING)
        self.assertEqual(h.spill.files, 0)
        self.assertEqual(h.source.cursor, 0)
        h.stub.status = None
        h.advance(10.0)
        h.advance(0.2)
        self.assertEqual(len(h.stub.unique), 12)
        self.assertEqual(h.source.cursor, 12)
        self.assertEqual(h.service.state, IDLE)


class RefusalTests(unittest.TestCase):
    """
    What the ingest refuses for good: 413, 400 naming a message, 400 for
    the whole batch, 401/403.
    """

    def test_413_splits(self):
        """
        A batch refused as too large is split in halves until it is taken;
        every message arrives once, in batches the server accepts.
        """
        h = Harness(self, batch_size=10, batch_delay=0.0)
        h.stub.max_messages = 3
        ids = h.source.add(10)
        h.settle()
        self.assertEqual(sorted(h.stub.ids), sorted(ids))
        self.assertTrue(all(n <= 3 for n in h.stub.sizes(200)))
        self.assertIn(413, [r["status"] for r in h.stub.requests])
        self.assertEqual(h.source.cursor, 10)
        self.assertEqual(h.service._mem_bytes, 0)

    def test_413_single_message_dead_letters(self):
        """
        A single message refused as too large cannot be split: it goes to
        the dead letters with the reason, and the rest goes on.
        """
        h = Harness(self, batch_size=4, batch_delay=0.0)
        h.stub.script.append((413, {"error": "too large"}, {}))
        h.stub.max_messages = 0
        h.source.add(1)
        h.settle()
        h.stub.max_messages = None
        h.source.add(3)
        h.settle()
        self.assertEqual(list(h.source.dead), [1])
        self.assertIn("413", h.source.dead[1][1])
        self.assertEqual(len(h.stub.unique), 3)
        self.assertEqual(h.source.cursor, 4)

    def test_400_naming_a_message_dead_letters_it(self):
        """
        A 400 naming one message moves exactly that message to the dead
        letters with the reason; the rest of the batch is sent again and
        arrives.
        """
        h = Harness(self, batch_size=10, batch_delay=0.0)
        h.stub.reject = {"msg-00000004": "ts", "msg-00000009": "body"}
        h.source.add(10)
        h.settle()
        self.assertEqual(sorted(h.source.dead), [4, 9])
        self.assertEqual(h.source.dead[4][0], "msg-00000004")
        self.assertIn("field ts", h.source.dead[4][1])
        self.assertEqual(len(h.stub.unique), 8)
        self.assertNotIn("msg-00000004", h.stub.unique)
        self.assertEqual(h.source.cursor, 10)
        self.assertEqual(h.service.stats()["dead_letters"], 2)

    def test_400_for_whole_batch_spills(self):
        """
        A 400 that names no message is our bug: the batch is kept in a
        spill file (not retried, not dropped), the rest goes on, and a
        replay the ingest refuses again as a whole moves the file into
        rejected/ (kept, counted in stats) instead of blocking the replay.
        """
        h = Harness(self, batch_size=5, batch_delay=0.0, spill_retry_interval=30.0)
        h.stub.script.append((400, {"error": "messages must be a list"}, {}))
        h.source.add(10)
        h.settle()
        self.assertEqual(h.stub.sizes(), [5, 5])
        self.assertEqual(h.spill.files, 1)
        self.assertEqual(len(h.stub.unique), 5)
        self.assertEqual(h.source.cursor, 10)
        self.assertEqual(h.source.dead, {})
        h.stub.script.append((400, {"error": "messages must be a list"}, {}))
        h.advance(30.0)
        self.assertEqual(h.stub.sizes(), [5, 5, 5])
        self.assertEqual(h.spill.files, 0)
        self.assertEqual(h.spill.rejected, 1)
        self.assertEqual(len(os.listdir(h.spill.rejected_path)), 1)
        stats = h.service.stats()
        self.assertEqual(stats["rejected_files"], 1)
        self.assertIn("messages must be a list", stats["last_rejected"])
        h.advance(30.0)
        self.assertEqual(h.stub.sizes(), [5, 5, 5])
        self.assertEqual(len(h.stub.unique), 5)
        self.assertEqual(h.source.cursor, 10)

    def test_401_stops_and_keeps_everything(self):
        """
        A 401 stops syncing: no retries, no spill, the cursor stays, and
        new messages are not sent either.
        """
        h = Harness(self, batch_size=5, batch_delay=0.0)
        h.stub.key = "another key"
        h.source.add(5)
        h.settle()
        h.source.add(5)
        h.advance(60.0)
        self.assertEqual(len(h.stub.requests), 1)
        self.assertEqual(h.service.state, UNAUTHORIZED)
        self.assertEqual(h.spill.files, 0)
        self.assertEqual(h.source.cursor, 0)
        self.assertIn("401", h.service.stats()["last_error"])

    def test_403_stops(self):
        """
        A 403 stops syncing like a 401.
        """
        h = Harness(self, batch_size=5, batch_delay=0.0)
        h.stub.script.append((403, {"error": "workspace disabled"}, {}))
        h.source.add(5)
        h.advance(10.0)
        self.assertEqual(h.service.state, UNAUTHORIZED)
        self.assertEqual(len(h.stub.requests), 1)

    def test_unencodable_row_dead_letters(self):
        """
        A stored row that cannot be encoded as JSON (an integer beyond 64
        bits) goes to the dead letters; its neighbours are sent.
        """
        h = Harness(self, batch_size=10, batch_delay=0.0)
        h.source.add(3)
        h.source.add(1, data={"n": 2 ** 70})
        h.source.add(3)
        h.settle()
        self.assertEqual(list(h.source.dead), [4])
        self.assertIn("cannot encode", h.source.dead[4][1])
        self.assertEqual(len(h.stub.unique), 6)
        self.assertEqual(h.source.cursor, 7)


class CursorTests(unittest.TestCase):
    """
    The persistent cursor: resume after restart, stop without loss.
    """

    def test_resume_from_cursor(self):
        """
        A new service on the same store sends only what the cursor does not
        cover.
        """
        source = FakeSyncSource()
        h = Harness(self, source=source, batch_size=10, batch_delay=0.0)
        source.add(20)
        h.settle()
        h.stop()
        self.assertEqual(source.cursor, 20)
        source.add(5)
        h2 = Harness(self, source=source, batch_size=10, batch_delay=0.0)
        h2.settle()
        self.assertEqual(sorted(h2.stub.ids), ["msg-{:08d}".format(i) for i in range(21, 26)])
        self.assertEqual(source.cursor, 25)

    def test_stop_while_in_flight_keeps_batch(self):
        """
        Stopping while a POST is out leaves that batch behind the cursor; a
        new service sends it again.
        """
        source = FakeSyncSource()
        h = Harness(self, source=source, batch_size=5, batch_delay=0.0)
        source.add(5)
        h.settle()
        h.stub.script.append("hold")
        source.add(5)
        h.settle()
        self.assertEqual(len(h.stub.held), 1)
        d = h.service.stopService()
        h.settle()
        self.successResultOf(d)
        self.assertEqual(source.cursor, 5)
        h2 = Harness(self, source=source, batch_size=5, batch_delay=0.0)
        h2.settle()
        self.assertEqual(sorted(h2.stub.ids), ["msg-{:08d}".format(i) for i in range(6, 11)])

    def test_generated_ids_are_kept(self):
        """
        Without --daemon-id a UUID is generated once and kept in the store;
        a restart reuses it.
        """
        source = FakeSyncSource()
        clock = task.Clock()
        spill = SpillDir(self.mktemp(), 10 ** 6, clock)
        poster = Poster(clock, URL, KEY, 30, 1024, StubTreq(IngestStub()))
        s1 = SyncService(source, poster, spill, clock, Backoff(1.0), WORKSPACE)
        s1.startService()
        self.assertEqual(source.meta["daemon_id"], s1.daemon_id)
        self.assertEqual(str(uuid.UUID(s1.daemon_id)), s1.daemon_id)
        s1.stopService()
        s2 = SyncService(source, poster, spill, clock, Backoff(1.0), WORKSPACE)
        s2.startService()
        self.assertEqual(s2.daemon_id, s1.daemon_id)
        s2.stopService()
        clock.advance(0)

    def test_stats_are_json(self):
        """
        stats() holds every documented key and serialises as JSON.
        """
        h = Harness(self, batch_size=5, batch_delay=0.0, compress=100)
        h.source.add(5)
        h.settle()
        stats = orjson.loads(orjson.dumps(h.service.stats()))
        for key in ("queued", "in_flight", "synced", "duplicates", "failed_attempts",
                    "spilled_files", "spilled_bytes", "bytes_raw", "bytes_wire",
                    "dead_letters", "last_error", "state"):
            self.assertIn(key, stats)
        self.assertEqual(stats["synced"], 5)
        self.assertLess(stats["bytes_wire"], stats["bytes_raw"])


class ReadRaceTests(unittest.TestCase):
    """
    Commits announced while a store read is out.
    """

    def test_commit_during_empty_read_is_not_forgotten(self):
        """
        A read that comes back empty does not erase a commit announced while
        it was out: the new rows are read and sent.
        """
        from twisted.internet import defer

        source = FakeSyncSource()
        pending = []
        real_read = source.read_messages_after

        def slow_read(seq, limit):
            d = defer.Deferred()
            pending.append((d, real_read(seq, limit)))
            return d

        h = Harness(self, source=source, batch_size=10, batch_delay=0.0)
        source.read_messages_after = slow_read
        h.service._committed(1)      # an announcement that the read will not see
        self.assertEqual(len(pending), 1)
        source.add(3)                 # committed (and announced) while the read is out
        d, _ = pending.pop()
        source.read_messages_after = real_read
        d.callback([])                # the read's snapshot predates the commit
        h.settle()
        self.assertEqual(len(h.stub.unique), 3)


class ReplayTests(unittest.TestCase):
    """
    Spill files meeting refusals when they are re-sent.
    """

    def spilled(self, count=6):
        """
        A harness whose first batch of C{count} went to a spill file.
        """
        h = Harness(self, batch_size=count, batch_delay=0.0, retries=0, spill_retry_interval=30.0)
        h.stub.status = 503
        h.source.add(count)
        h.settle()
        self.assertEqual(h.spill.files, 1)
        h.stub.status = None
        return h

    def test_400_in_spill_file(self):
        """
        A spill file holding a message the ingest names in a 400: that one
        goes to the dead letters, the rest arrive, no file is left.
        """
        h = self.spilled()
        h.stub.reject = {"msg-00000002": "kind"}
        h.advance(30.0)
        h.advance(0)
        self.assertEqual(list(h.source.dead), [2])
        self.assertEqual(len(h.stub.unique), 5)
        self.assertEqual(h.spill.files, 0)
        self.assertEqual(os.listdir(h.spill_dir), [])

    def test_413_splits_spill_file(self):
        """
        A spill file refused as too large is rewritten as two halves (the
        original goes only after both are on disk) until all is taken.
        """
        h = self.spilled(8)
        h.stub.max_messages = 2
        h.advance(30.0)
        self.assertEqual(len(h.stub.unique), 8)
        self.assertTrue(all(n <= 2 for n in h.stub.sizes(200)))
        self.assertEqual(os.listdir(h.spill_dir), [])

    def test_401_in_replay_stops(self):
        """
        A 401 while re-sending a spill file stops sync and keeps the file.
        """
        h = self.spilled()
        h.stub.key = "rotated"
        h.advance(30.0)
        self.assertEqual(h.service.state, UNAUTHORIZED)
        self.assertEqual(h.spill.files, 1)
        h.source.add(3)
        h.advance(60.0)
        self.assertEqual(h.stub.unique, set())

    def test_replay_alternates_with_live(self):
        """
        While spill files are re-sent, live batches that are ready go out in
        between, so a long replay does not stall new messages.
        """
        h = Harness(self, batch_size=2, batch_delay=0.0, retries=0, spill_retry_interval=30.0)
        h.stub.status = 503
        h.source.add(6)
        h.settle()
        self.assertEqual(h.spill.files, 3)
        h.stub.status = None
        h.source.add(4)
        h.advance(30.0)
        order = [m["id"] for doc in h.stub.docs() for m in doc["messages"]][-10:]
        self.assertEqual(len(h.stub.unique), 10)
        live_positions = [order.index("msg-{:08d}".format(i)) for i in (7, 9)]
        spill_positions = [order.index("msg-{:08d}".format(i)) for i in (1, 3, 5)]
        self.assertLess(min(live_positions), max(spill_positions))


OTHER_WORKSPACE = "0b7e0c52-7d0c-4c59-9a43-3b0b4c1f5a11"


class CheckedOutcomeTests(unittest.TestCase):
    """
    A 2xx that does not count what was sent, and a redirect, keep the batch.
    """

    def test_wrong_counts_keep_the_batch(self):
        """
        200 with counts that do not add up to the batch is retried, then
        spilled (never confirmed): synced stays 0 and the reason is in
        last_error; once the ingest answers properly the file is re-sent.
        """
        h = Harness(self, batch_size=5, batch_delay=0.0, retries=1)
        h.stub.script = [(200, {"synced": 2, "duplicates": 0}, {}),
                         (200, {"ok": True}, {})]
        h.source.add(5)
        h.advance(5.0)
        stats = h.service.stats()
        self.assertEqual((stats["synced"], stats["batches"]), (0, 0))
        self.assertEqual(h.spill.files, 1)
        self.assertEqual(h.stub.unique, set())
        self.assertIn("does not count the 5 messages", stats["last_error"])
        h.advance(30.0)
        self.assertEqual(h.spill.files, 0)
        self.assertEqual(len(h.stub.unique), 5)
        self.assertEqual(h.service.stats()["synced"], 5)

    def test_redirect_keeps_the_batch(self):
        """
        A 302 is not followed (no request to its Location): the batch is
        retried, then spilled, and the reason names the redirect.
        """
        h = Harness(self, batch_size=5, batch_delay=0.0, retries=1)
        h.stub.script = [(302, {}, {"Location": "http://127.0.0.1:9/elsewhere"})] * 2
        h.source.add(5)
        h.advance(5.0)
        self.assertEqual(len(h.stub.requests), 2)
        self.assertEqual(h.spill.files, 1)
        self.assertIn("redirect", h.service.stats()["last_error"])
        self.assertEqual(h.service.stats()["synced"], 0)


class CollisionReportTests(unittest.TestCase):
    """
    The ingest's "collisions" count reaches the daemon's STATUS.
    """

    def test_collisions_counted(self):
        """
        A 200 reporting collisions (ids the ingest already held with other
        content, stored under disambiguated ids) confirms the batch and adds
        them to the stats' collisions.
        """
        h = Harness(self, batch_size=5, batch_delay=0.0)
        h.stub.script = [(200, {"synced": 5, "duplicates": 0, "collisions": 2}, {})]
        h.source.add(5)
        h.settle()
        stats = h.service.stats()
        self.assertEqual((stats["synced"], stats["collisions"]), (5, 2))
        self.assertEqual(h.source.cursor, 5)


class SpillRejectTests(unittest.TestCase):
    """
    A spill file refused as a whole is moved aside; the files behind it go on.
    """

    def write(self, h, seqs, workspace=WORKSPACE):
        return h.spill.write(DAEMON, workspace, [encode_message(make_row(s)) for s in seqs])

    def test_unreadable_file_does_not_block(self):
        """
        A corrupt oldest file is moved into rejected/ and reported; the
        newer file behind it is re-sent in the same pass.
        """
        h = Harness(self, spill_retry_interval=30.0)
        bad = self.write(h, [1, 2])
        with open(os.path.join(h.spill_dir, bad), "wb") as f:
            f.write(b"\x1f\x8b not gzip")
        self.write(h, [3, 4])
        h.advance(30.0)
        self.assertEqual(h.stub.unique, {"msg-00000003", "msg-00000004"})
        self.assertEqual(os.listdir(h.spill.rejected_path), [bad])
        stats = h.service.stats()
        self.assertEqual((stats["spilled_files"], stats["rejected_files"]), (0, 1))
        self.assertIn(bad, stats["last_rejected"])

    def test_whole_file_400_does_not_block(self):
        """
        A file the ingest refuses as a whole (a 400 naming no message) is set
        aside and the next file is sent at once.
        """
        h = Harness(self, spill_retry_interval=30.0)
        first = self.write(h, [1, 2])
        self.write(h, [3, 4])
        h.stub.script = [(400, {"error": "the body must hold a messages list"}, {})]
        h.advance(30.0)
        self.assertEqual(h.stub.unique, {"msg-00000003", "msg-00000004"})
        self.assertEqual(os.listdir(h.spill.rejected_path), [first])
        self.assertEqual(h.spill.files, 0)

    def test_stale_workspace_file_is_set_aside(self):
        """
        A 403 "not the key's workspace" for a file written for another
        workspace (the key was changed since) sets that file aside; sync
        does not stop, and live messages and newer files go on.
        """
        h = Harness(self, batch_size=2, batch_delay=0.0, spill_retry_interval=30.0)
        stale = self.write(h, [1, 2], workspace=OTHER_WORKSPACE)
        self.write(h, [3, 4])
        h.stub.script = [(403, {"error": "this key does not belong to workspace " + OTHER_WORKSPACE,
                                "field": "workspace_id"}, {})]
        h.advance(30.0)
        self.assertNotEqual(h.service.state, UNAUTHORIZED)
        self.assertEqual(os.listdir(h.spill.rejected_path), [stale])
        self.assertEqual(h.stub.unique, {"msg-00000003", "msg-00000004"})
        h.source.add(2)
        h.settle()
        self.assertIn("msg-00000001", h.stub.unique)
        self.assertEqual(h.source.cursor, 2)

    def test_workspace_403_for_our_own_file_stops(self):
        """
        The same 403 for a file of the configured workspace means our
        key/workspace pair is wrong: sync stops and the file stays in place.
        """
        h = Harness(self, spill_retry_interval=30.0)
        ours = self.write(h, [1, 2])
        h.stub.script = [(403, {"error": "this key does not belong to workspace " + WORKSPACE,
                                "field": "workspace_id"}, {})]
        h.advance(30.0)
        self.assertEqual(h.service.state, UNAUTHORIZED)
        self.assertEqual(h.spill.names(), [ours])
        self.assertEqual(h.spill.rejected, 0)


class StopTests(unittest.TestCase):
    """
    Stopping while the pipeline waits on the store.
    """

    def test_no_post_after_stop(self):
        """
        A stop that arrives while a dead letter is being written lets the
        write finish but sends nothing more; the rest stays behind the
        cursor.
        """
        from twisted.internet import defer

        source = FakeSyncSource()
        h = Harness(self, source=source, batch_size=5, batch_delay=0.0)
        writes = []
        source.add_dead_letter = lambda seq, mid, reason: writes.append(defer.Deferred()) or writes[-1]
        h.stub.reject = {"msg-00000002": "body"}
        source.add(5)
        h.settle()
        self.assertEqual(len(writes), 1)
        d = h.service.stopService()
        writes[0].callback(None)
        h.settle()
        self.successResultOf(d)
        self.assertEqual(len(h.stub.requests), 1)
        self.assertEqual(source.cursor, 0)
