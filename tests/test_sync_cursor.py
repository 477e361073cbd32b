# -*- test-case-name: tests.test_sync_cursor -*-
"""
Unit tests for L{relay.sync.cursor.CursorWriter}: the cursor written
behind the pipeline, one write at a time, against a store whose writes
are Deferreds the test fires.
"""

from twisted.internet import defer
from twisted.trial import unittest

from relay.sync.cursor import CONFIRMED_KEY, CURSOR_KEY, CursorWriter, SyncMarks
from tests.support.sync import FakeSyncSource


class SlowMeta:
    """
    A store whose C{set_meta} writes land only when the test fires them.
    """

    def __init__(self, stored=None):
        self.meta = {} if stored is None else {CURSOR_KEY: stored}
        self.pending = []

    def get_meta(self, key):
        return defer.succeed(self.meta.get(key))

    def set_meta(self, key, value):
        d = defer.Deferred()
        self.pending.append((d, key, value))
        return d

    def land(self, error=None):
        """
        Finish the oldest write (or fail it with C{error}).
        """
        d, key, value = self.pending.pop(0)
        if error is None:
            self.meta[key] = value
            d.callback(None)
        else:
            d.errback(error)


class CursorWriterTests(unittest.TestCase):
    """
    L{CursorWriter} on its own.
    """

    def setUp(self):
        self.store = SlowMeta("7")
        self.errors = []
        self.writer = CursorWriter(self.store, self.errors.append)

    def test_load(self):
        """
        The cursor starts at the stored value, or 0 when none is stored.
        """
        self.assertEqual(self.successResultOf(defer.ensureDeferred(self.writer.load())), 7)
        self.assertEqual((self.writer.value, self.writer.saved), (7, 7))
        empty = CursorWriter(SlowMeta(), self.errors.append)
        self.assertEqual(self.successResultOf(defer.ensureDeferred(empty.load())), 0)

    def test_one_write_in_flight_then_the_latest(self):
        """
        Advances during a write do not start writes of their own; when the
        write lands, one more carries the latest value.
        """
        self.writer.advance(3)
        self.writer.advance(5)
        self.writer.advance(4)          # backwards: ignored
        self.assertEqual([v for _, _, v in self.store.pending], ["3"])
        self.store.land()
        self.assertEqual(self.writer.saved, 3)
        self.assertEqual([v for _, _, v in self.store.pending], ["5"])
        self.store.land()
        self.assertEqual(self.store.meta[CURSOR_KEY], "5")
        self.assertEqual(self.store.pending, [])
        self.assertIsNone(self.writer.saving)

    def test_failed_write_is_reported_and_retried_by_the_next(self):
        """
        A failed write is reported (the messages may be sent twice) and
        logged; the store still gets the cursor from the next write.
        """
        self.writer.advance(3)
        self.writer.advance(4)
        self.store.land(RuntimeError("disk"))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(self.errors, ["cursor write: disk"])
        self.assertEqual(self.writer.saved, 0)
        self.assertEqual([v for _, _, v in self.store.pending], ["4"])
        self.store.land()
        self.assertEqual(self.store.meta[CURSOR_KEY], "4")

    def test_flush_waits_and_writes_the_last_value(self):
        """
        L{CursorWriter.flush} waits for the write in flight and then writes
        the value the store is behind on; it fires only once that landed.
        """
        self.writer.advance(3)
        self.writer.advance(9)
        d = defer.ensureDeferred(self.writer.flush())
        self.store.land()
        self.assertNoResult(d)
        self.assertEqual([v for _, _, v in self.store.pending], ["9"])
        self.store.land()
        self.successResultOf(d)
        self.assertEqual(self.store.meta[CURSOR_KEY], "9")

    def test_inactive_writer_does_not_chain(self):
        """
        Once stopped (C{active} false), a landing write starts no next one
        by itself; only L{CursorWriter.flush} writes the last value.
        """
        self.writer.advance(3)
        self.writer.advance(9)
        self.writer.active = False
        self.store.land()
        self.assertEqual(self.store.pending, [])
        d = defer.ensureDeferred(self.writer.flush())
        self.assertEqual([v for _, _, v in self.store.pending], ["9"])
        self.store.land()
        self.successResultOf(d)


class _Spill:
    files = 0
    rejected = 0


class SyncMarksTests(unittest.TestCase):
    """
    The confirmed mark follows the cursor only while nothing is spilled
    or rejected.
    """

    def setUp(self):
        self.source = FakeSyncSource()
        self.spill = _Spill()
        self.marks = SyncMarks(self.source, lambda reason: None, self.spill)

    def test_follows_while_nothing_spilled(self):
        """With no spill file both marks move, and both are written."""
        self.marks.advance(5)
        self.assertEqual((self.marks.cursor.value, self.marks.confirmed.value), (5, 5))
        self.assertEqual((self.source.meta[CURSOR_KEY], self.source.meta[CONFIRMED_KEY]),
                         ("5", "5"))

    def test_held_by_spill_and_rejected_files(self):
        """
        A waiting spill file or a rejected one holds the confirmed mark; it
        catches up on the next advance once none is left.
        """
        self.marks.advance(3)
        self.spill.files = 1
        self.marks.advance(7)
        self.assertEqual((self.marks.cursor.value, self.marks.confirmed.value), (7, 3))
        self.spill.files, self.spill.rejected = 0, 1
        self.marks.advance(7)
        self.assertEqual(self.marks.confirmed.value, 3)
        self.spill.rejected = 0
        self.marks.advance(7)
        self.assertEqual(self.marks.confirmed.value, 7)

    @defer.inlineCallbacks
    def test_load(self):
        """load() reads both marks and returns the cursor."""
        self.source.meta.update({CURSOR_KEY: "9", CONFIRMED_KEY: "4"})
        self.spill.files = 1
        cursor = yield defer.ensureDeferred(self.marks.load())
        self.assertEqual((cursor, self.marks.confirmed.value), (9, 4))

