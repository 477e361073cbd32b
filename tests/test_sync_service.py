# -*- test-case-name: tests.test_sync_service -*-
"""
Unit tests for L{relay.sync.service.SyncService}: the pipeline driven by a
L{task.Clock}, an in-memory store and the ingest stub resource served in
memory by C{treq.testing.StubTreq} (L{tests.support.sync.SyncHarness}):
when batches leave, the cursor, reads racing commits, stopping, and the
spill timer that must survive its own errors.
"""

import uuid

import orjson
from treq.testing import StubTreq
from twisted.internet import task
from twisted.trial import unittest

from relay.sync.backoff import Backoff
from relay.sync.poster import Poster
from relay.sync.service import SyncService
from relay.sync.spill import SpillDir
from relay.sync.wire import encode_message
from tests.support.sync import (KEY, STUB_URL as URL, WORKSPACE, FakeSyncSource,
                                IngestStub, SyncHarness as Harness, make_row)

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
        self.assertLessEqual(h.service.queue.mem_bytes, 8192 + 2000)
        self.assertLess(h.service.stats()["queued"], 40)
        h.stub.release()
        h.settle()
        self.assertEqual(len(h.stub.unique), 500)
        self.assertEqual(h.source.cursor, 500)
        self.assertEqual(h.service.queue.mem_bytes, 0)


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


class SpillTimerTests(unittest.TestCase):
    """
    The spill replay timer is a loop that must not die.
    """

    def test_timer_survives_a_raising_pump(self):
        """
        When the pump raises on a tick of the spill timer, the error is
        logged, the timer keeps running, and the next tick replays the
        waiting spill file.
        """
        h = Harness(self, batch_size=3, batch_delay=0.0, retries=0, spill_retry_interval=30.0)
        h.stub.status = 503
        h.source.add(3)
        h.settle()
        self.assertEqual(h.spill.files, 1)
        h.stub.status = None
        pump = h.service._pump
        raised = []

        def broken():
            h.service._pump = pump
            raised.append(True)
            raise RuntimeError("pump broke")

        h.service._pump = broken
        h.advance(30.0)
        self.assertEqual(raised, [True])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertTrue(h.service._spill_loop.running)
        self.assertEqual(h.spill.files, 1)
        h.advance(30.0)
        self.assertEqual(h.spill.files, 0)
        self.assertEqual(len(h.stub.unique), 3)


class ReadFailureTests(unittest.TestCase):
    """
    A store read that fails, even by raising at once, never stops sync.
    """

    def test_raising_read_retried(self):
        """
        C{read_messages_after} raising synchronously (not through its
        Deferred) is logged and retried a second later; the messages then
        go out.
        """
        h = Harness(self, batch_size=5, batch_delay=0.0)
        read = h.source.read_messages_after
        raised = []

        def broken(seq, limit):
            h.source.read_messages_after = read
            raised.append(True)
            raise RuntimeError("store read broke")

        h.source.read_messages_after = broken
        h.source.add(5)
        h.settle()
        self.assertEqual(raised, [True])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(h.stub.sizes(), [])
        h.advance(1.0)
        self.assertEqual(h.stub.sizes(), [5])
