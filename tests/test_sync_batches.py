# -*- test-case-name: tests.test_sync_batches -*-
"""
Unit tests for L{relay.sync.batches.BatchQueue}: what a batch holds, when
it is ready, and how memory is counted, on a L{task.Clock}.
"""

from twisted.internet import task
from twisted.trial import unittest

from relay.sync.batches import MAX_PAGE, BatchQueue
from tests.support.sync import make_row


def unencodable(seq):
    """
    A row whose C{data} holds an integer JSON cannot carry.
    """
    return make_row(seq, data={"n": 2 ** 70})


class BatchQueueTests(unittest.TestCase):
    """
    L{BatchQueue} on its own.
    """

    def setUp(self):
        self.clock = task.Clock()
        self.queue = BatchQueue(self.clock)

    def test_rows_are_queued_in_order_and_counted(self):
        """
        Added rows are encoded and queued in order; the read position, the
        queued and held bytes all follow them.
        """
        self.queue.add_rows([make_row(1), make_row(2), make_row(5)])
        self.assertEqual([i.seq for i in self.queue.items], [1, 2, 5])
        self.assertEqual(self.queue.read_pos, 5)
        size = sum(i.size for i in self.queue.items)
        self.assertEqual(self.queue.queued_bytes, size)
        self.assertEqual(self.queue.mem_bytes, size)
        self.assertEqual(len(self.queue), 3)

    def test_ready_by_size_bytes_or_age(self):
        """
        A batch is ready at C{batch_size} messages, at C{batch_bytes}, or
        once the oldest message has waited C{batch_delay}; not before.
        """
        self.assertFalse(self.queue.ready(1, 1, 0.0))
        self.queue.add_rows([make_row(1), make_row(2)])
        self.assertTrue(self.queue.ready(2, 10 ** 9, 60.0))
        self.assertTrue(self.queue.ready(10, self.queue.queued_bytes, 60.0))
        self.assertFalse(self.queue.ready(10, 10 ** 9, 0.5))
        self.assertAlmostEqual(self.queue.wait(0.5), 0.5)
        self.clock.advance(0.5)
        self.assertTrue(self.queue.ready(10, 10 ** 9, 0.5))
        self.assertEqual(self.queue.wait(0.5), 0.0)

    def test_take_respects_count_and_bytes(self):
        """
        L{BatchQueue.take} stops at C{batch_size} messages or before
        C{batch_bytes} would be passed, but a first message larger than
        the byte limit still goes (alone).
        """
        self.queue.add_rows([make_row(i, body="x" * 200) for i in range(1, 6)])
        one = self.queue.items[0].size
        self.assertEqual([i.seq for i in self.queue.take(2, 10 ** 9)], [1, 2])
        self.assertEqual([i.seq for i in self.queue.take(10, one * 2 - 1)], [3])
        self.assertEqual([i.seq for i in self.queue.take(10, 1)], [4])
        self.assertIsNotNone(self.queue.oldest_at)
        self.assertEqual([i.seq for i in self.queue.take(10, 10 ** 9)], [5])
        self.assertIsNone(self.queue.oldest_at)
        self.assertEqual(self.queue.queued_bytes, 0)
        self.assertEqual(self.queue.mem_bytes, one * 5)

    def test_unencodable_row_travels_alone(self):
        """
        A row that cannot be encoded ends the batch before it and is a
        batch of its own.
        """
        self.queue.add_rows([make_row(1), unencodable(2), make_row(3)])
        self.assertEqual([i.seq for i in self.queue.take(10, 10 ** 9)], [1])
        alone = self.queue.take(10, 10 ** 9)
        self.assertEqual([i.seq for i in alone], [2])
        self.assertIsNone(alone[0].json)
        self.assertEqual([i.seq for i in self.queue.take(10, 10 ** 9)], [3])

    def test_split_goes_first_half_first(self):
        """
        The halves of a split batch wait in front, first half first, and
        count as queued.
        """
        self.queue.add_rows([make_row(i) for i in range(1, 6)])
        batch = self.queue.take(5, 10 ** 9)
        self.queue.split(batch)
        self.assertEqual([[i.seq for i in s] for s in self.queue.splits], [[1, 2], [3, 4, 5]])
        self.assertEqual(len(self.queue), 5)

    def test_page_limit_follows_memory(self):
        """
        Store reads are sized to the room left under the memory bound: at
        least one row, at most L{MAX_PAGE}.
        """
        self.assertEqual(self.queue.page_limit(10 ** 12), MAX_PAGE)
        self.assertEqual(self.queue.page_limit(512 * 10), 10)
        self.queue.add_rows([make_row(1)])
        self.assertEqual(self.queue.page_limit(self.queue.mem_bytes), 1)

    def test_release_and_reset(self):
        """
        Released bytes leave the memory count; a reset drops everything
        held and rewinds the read position.
        """
        self.queue.add_rows([make_row(1), make_row(2)])
        batch = self.queue.take(1, 10 ** 9)
        self.queue.release(batch[0].size)
        self.assertEqual(self.queue.mem_bytes, self.queue.queued_bytes)
        self.queue.split([batch[0]])
        self.queue.reset(1)
        self.assertEqual((len(self.queue), self.queue.mem_bytes, self.queue.queued_bytes),
                         (0, 0, 0))
        self.assertIsNone(self.queue.oldest_at)
        self.assertEqual(self.queue.read_pos, 1)
