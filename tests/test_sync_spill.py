# -*- test-case-name: tests.test_sync_spill -*-
"""
Tests for L{relay.sync.spill.SpillDir}: naming, durability, recovery order.
"""

import gzip
import os
import stat

from twisted.internet import task
from twisted.trial import unittest

from relay.sync.spill import REJECTED, SUFFIX, TMP_PREFIX, SpillDir, UnreadableSpill
from relay.sync.wire import encode_message
from tests.support.sync import DAEMON, WORKSPACE, make_row


def items(first, count):
    return [encode_message(make_row(seq)) for seq in range(first, first + count)]


class SpillDirTests(unittest.TestCase):
    """
    Spill files on a real directory.
    """

    def setUp(self):
        self.clock = task.Clock()
        self.clock.advance(1700000000.5)
        self.path = self.mktemp()

    def test_round_trip(self):
        """
        A written batch reads back as the same items and ids.
        """
        spill = SpillDir(self.path, 10 ** 6, self.clock)
        batch = items(1, 10)
        name = spill.write(DAEMON, WORKSPACE, batch)
        self.assertTrue(name.endswith(SUFFIX))
        self.assertEqual(spill.read(name), (DAEMON, WORKSPACE, batch))
        self.assertEqual(spill.files, 1)
        self.assertEqual(spill.bytes, os.path.getsize(os.path.join(self.path, name)))
        mode = stat.S_IMODE(os.stat(os.path.join(self.path, name)).st_mode)
        self.assertEqual(mode, 0o600)

    def test_names_unique_and_ordered(self):
        """
        Names carry a UUID (two directories objects, as two processes,
        never collide) and sort in the order they were written, also within
        one millisecond.
        """
        a = SpillDir(self.path, 10 ** 6, self.clock)
        b = SpillDir(self.path, 10 ** 6, self.clock)
        written = []
        for i in range(5):
            written.append(a.write(DAEMON, WORKSPACE, items(i * 10 + 1, 2)))
        self.clock.advance(0.001)
        written.append(a.write(DAEMON, WORKSPACE, items(100, 2)))
        other = b.write(DAEMON, WORKSPACE, items(200, 2))
        self.assertEqual(a.names(), written)
        self.assertNotIn(other, written)
        self.assertEqual(len(set(os.listdir(self.path))), 7)

    def test_recovery_order(self):
        """
        A new SpillDir (a restart) finds the files, oldest first.
        """
        spill = SpillDir(self.path, 10 ** 6, self.clock)
        written = []
        for i in range(4):
            written.append(spill.write(DAEMON, WORKSPACE, items(i * 5 + 1, 5)))
            self.clock.advance(1)
        again = SpillDir(self.path, 10 ** 6, self.clock)
        self.assertEqual(again.names(), written)
        self.assertEqual([again.read(n)[2][0].seq for n in again.names()], [1, 6, 11, 16])

    def test_unfinished_write_removed(self):
        """
        A temporary file left by a crash mid-write is removed at startup;
        finished files are kept.
        """
        spill = SpillDir(self.path, 10 ** 6, self.clock)
        name = spill.write(DAEMON, WORKSPACE, items(1, 3))
        with open(os.path.join(self.path, TMP_PREFIX + "x" + SUFFIX), "wb") as f:
            f.write(b"\x1f\x8b half")
        again = SpillDir(self.path, 10 ** 6, self.clock)
        self.assertEqual(again.names(), [name])
        self.assertEqual(os.listdir(self.path), [name])

    def test_unreadable_kept(self):
        """
        A file that is not a spill batch is moved into rejected/ and kept,
        not deleted; it is counted, also by a SpillDir opened later.
        """
        spill = SpillDir(self.path, 10 ** 6, self.clock)
        name = "0000000000001-000000-bad" + SUFFIX
        with open(os.path.join(self.path, name), "wb") as f:
            f.write(gzip.compress(b'{"seqs": [1]}'))
        spill = SpillDir(self.path, 10 ** 6, self.clock)
        self.assertRaises(UnreadableSpill, spill.read, name)
        self.assertEqual(spill.files, 0)
        self.assertEqual(os.listdir(self.path), [REJECTED])
        self.assertEqual(os.listdir(os.path.join(self.path, REJECTED)), [name])
        self.assertEqual(spill.rejected, 1)
        self.assertEqual(SpillDir(self.path, 10 ** 6, self.clock).rejected, 1)

    def test_room(self):
        """
        has_room() turns false once the files reach max_bytes; remove()
        frees it.
        """
        spill = SpillDir(self.path, 1, self.clock)
        self.assertTrue(spill.has_room())
        name = spill.write(DAEMON, WORKSPACE, items(1, 3))
        self.assertFalse(spill.has_room())
        spill.remove(name)
        self.assertTrue(spill.has_room())
        self.assertEqual(os.listdir(self.path), [])

    def test_rewrite_keeps_place(self):
        """
        A file rewritten in parts (after a split) keeps its place: its parts
        sort after older files, before newer ones, and in part order.
        """
        spill = SpillDir(self.path, 10 ** 6, self.clock)
        old = spill.write(DAEMON, WORKSPACE, items(1, 2))
        self.clock.advance(1)
        middle = spill.write(DAEMON, WORKSPACE, items(3, 4))
        self.clock.advance(1)
        new = spill.write(DAEMON, WORKSPACE, items(7, 2))
        self.clock.advance(1)
        parts = [spill.write(DAEMON, WORKSPACE, items(3, 2), replacing=middle, part=0),
                 spill.write(DAEMON, WORKSPACE, items(5, 2), replacing=middle, part=1)]
        spill.remove(middle)
        again = [spill.write(DAEMON, WORKSPACE, items(3, 1), replacing=parts[0], part=0),
                 spill.write(DAEMON, WORKSPACE, items(4, 1), replacing=parts[0], part=1)]
        spill.remove(parts[0])
        self.assertEqual(spill.names(), [old] + again + [parts[1], new])
        self.assertEqual([spill.read(n)[2][0].seq for n in spill.names()], [1, 3, 4, 5, 7])
