# -*- test-case-name: tests.test_sync_live -*-
"""
Unit tests for L{relay.sync.live}: live batches meeting every kind of
answer (retries and backoff, spill when retries run out, 413 splits, 400s
naming a message or the whole batch, 401/403, a 2xx that does not count
what was sent, a redirect), driven by L{tests.support.sync.SyncHarness}.
"""

import os

from twisted.trial import unittest

from relay.sync.service import HOLDING, IDLE, UNAUTHORIZED
from tests.support.sync import SyncHarness as Harness

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
        self.assertEqual(h.service.queue.mem_bytes, 0)

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
