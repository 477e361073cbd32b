# -*- test-case-name: tests.test_sync_stats -*-
"""
Unit tests for L{relay.sync.stats}: the pipeline's counters and the
STATUS snapshot built from them.
"""

import orjson
from twisted.internet import task
from twisted.trial import unittest

from relay.sync import poster as P
from relay.sync.spill import SpillDir
from relay.sync.stats import IDLE, SyncCounters, snapshot

#: The keys of the STATUS C{sync} object (README.rst, "Cloud sync", lists them).
DOCUMENTED = {
    "state", "url", "daemon_id", "workspace_id", "cursor", "backlog", "queued", "in_flight",
    "synced", "batches", "duplicates", "failed_attempts", "spilled_files", "spilled_bytes",
    "spills_written", "rejected_files", "last_rejected", "collisions", "bytes_raw",
    "bytes_wire", "dead_letters", "last_error",
}


class SyncCountersTests(unittest.TestCase):
    """
    What the counters add up.
    """

    def test_confirmed_counts_what_the_answer_reports(self):
        """
        A confirmed batch adds its messages and the duplicates and
        collisions the ingest reports; counts of the wrong shape (a bool,
        a string, missing) add nothing.
        """
        c = SyncCounters()
        c.confirmed(5, P.Outcome(P.OK, data={"duplicates": 2, "collisions": 1}))
        c.confirmed(3, P.Outcome(P.OK, data={"duplicates": True, "collisions": "4"}))
        c.confirmed(1, P.Outcome(P.OK))
        self.assertEqual((c.batches, c.synced, c.duplicates, c.collisions), (3, 9, 2, 1))

    def test_posted_and_failed(self):
        """
        Every POST adds its raw and wire bytes; a failed one counts an
        attempt and becomes C{last_error}.
        """
        c = SyncCounters()
        c.posted(1000, P.Outcome(P.OK, wire_bytes=300))
        c.posted(500, P.Outcome(P.RETRY, wire_bytes=500))
        c.failed("HTTP 503")
        self.assertEqual((c.bytes_raw, c.bytes_wire), (1500, 800))
        self.assertEqual((c.failed_attempts, c.last_error), (1, "HTTP 503"))


class SnapshotTests(unittest.TestCase):
    """
    The STATUS dict.
    """

    def test_documented_keys_and_json(self):
        """
        The snapshot holds exactly the documented keys, serialises as JSON,
        and its backlog is what is stored beyond the cursor (never below 0).
        """
        spill = SpillDir(self.mktemp(), 10 ** 6, task.Clock())
        c = SyncCounters()
        stats = orjson.loads(orjson.dumps(
            snapshot(c, IDLE, "http://x/", "d", "w", cursor=10, known_max=25, queued=4, spill=spill)))
        self.assertEqual(set(stats), DOCUMENTED)
        self.assertEqual((stats["state"], stats["backlog"], stats["queued"]), (IDLE, 15, 4))
        self.assertEqual((stats["spilled_files"], stats["rejected_files"]), (0, 0))
        behind = snapshot(c, IDLE, "u", "d", "w", cursor=30, known_max=25, queued=0, spill=spill)
        self.assertEqual(behind["backlog"], 0)
