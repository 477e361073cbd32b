# -*- test-case-name: tests.test_sync_replay -*-
"""
Unit tests for L{relay.sync.replay}: spill files re-sent and meeting
refusals, files refused as a whole set aside so the ones behind go on,
driven by L{tests.support.sync.SyncHarness}.
"""

import os

from twisted.trial import unittest

from relay.sync.service import UNAUTHORIZED
from relay.sync.wire import encode_message
from tests.support.sync import DAEMON, WORKSPACE, SyncHarness as Harness, make_row

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

    def test_spilled_is_not_confirmed_until_replayed(self):
        """
        A spilled batch moves the cursor but not sync_confirmed (store
        retention deletes nothing above it); live batches confirmed while
        the spill file waits do not move it either; once the replay removes
        the last file it catches up with the cursor.
        """
        h = self.spilled()
        self.assertEqual(h.source.cursor, 6)
        self.assertEqual(int(h.source.meta.get("sync_confirmed") or 0), 0)
        h.source.add(6)
        h.settle()
        self.assertEqual(h.source.cursor, 12)
        self.assertEqual(int(h.source.meta.get("sync_confirmed") or 0), 0)
        h.advance(30.0)
        h.advance(0)
        self.assertEqual(h.spill.files, 0)
        self.assertEqual(h.source.meta.get("sync_confirmed"), "12")
        self.assertEqual(h.service.confirmed, 12)

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

    def test_rejected_file_holds_the_confirmed_mark(self):
        """
        Messages of a file set aside in rejected/ were never taken by the
        ingest: sync_confirmed (what store retention may delete up to)
        stays below them while that file is there, whatever is confirmed
        after.
        """
        h = Harness(self, batch_size=2, batch_delay=0.0, spill_retry_interval=30.0)
        self.write(h, [1, 2])
        h.stub.script = [(400, {"error": "the body must hold a messages list"}, {})]
        h.advance(30.0)
        self.assertEqual(h.spill.rejected, 1)
        h.source.add(4)
        h.settle()
        self.assertGreaterEqual(h.source.cursor, 4)
        self.assertEqual(int(h.source.meta.get("sync_confirmed") or 0), 0)

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
