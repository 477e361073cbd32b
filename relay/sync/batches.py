# -*- test-case-name: tests.test_sync_batches -*-
"""
The sync pipeline's memory: encoded messages waiting to leave, and the
rule for when a batch leaves and what it holds.

Rows read from the store are encoded once (L{relay.sync.wire.encode_message})
and queued here.  A batch is ready when it reaches C{batch_size} messages or
C{batch_bytes}, or when its oldest message has waited C{batch_delay}
seconds (L{BatchQueue.ready}); L{BatchQueue.take} cuts it.  Halves of a
batch the ingest refused as too large wait in front of the queue
(L{BatchQueue.splits}).  L{BatchQueue.mem_bytes} counts every message held
in memory, in the queue, in the splits or in flight, until the pipeline
releases it (L{BatchQueue.release}); the reader stops at its bound.
"""

import collections

from relay.sync.wire import encode_message

#: The most rows read from the store at once.
MAX_PAGE = 2000


class BatchQueue:
    """
    Encoded messages waiting to be sent, in seq order.

    @ivar items: a deque of L{relay.sync.wire.Item}.
    @ivar queued_bytes: the size of C{items}.
    @ivar oldest_at: when the oldest queued message was queued, or None.
    @ivar splits: a deque of batches (lists of items) to send before the queue.
    @ivar mem_bytes: the size of everything held, in flight included.
    @ivar avg_size: a running mean message size, for sizing store reads.
    @ivar read_pos: the highest seq read from the store.
    """

    def __init__(self, clock):
        """
        @param clock: provides C{seconds}.
        """
        self.clock = clock
        self.items = collections.deque()
        self.queued_bytes = 0
        self.oldest_at = None
        self.splits = collections.deque()
        self.mem_bytes = 0
        self.avg_size = 512.0
        self.read_pos = 0

    def __len__(self):
        """
        How many messages wait, in the queue and in the splits.
        """
        return len(self.items) + sum(len(s) for s in self.splits)

    def page_limit(self, max_bytes):
        """
        @return: how many rows to read next so that memory stays near
            C{max_bytes} (at least 1, at most L{MAX_PAGE}).
        """
        room = max_bytes - self.mem_bytes
        return int(max(1, min(MAX_PAGE, room // self.avg_size)))

    def add_rows(self, rows):
        """
        Encode and queue C{rows} (from
        L{relay.interfaces.ISyncSource.read_messages_after}).
        """
        added = 0
        for row in rows:
            item = encode_message(row)
            self.read_pos = max(self.read_pos, item.seq)
            self.items.append(item)
            self.queued_bytes += item.size
            self.mem_bytes += item.size
            added += item.size
        if rows:
            self.avg_size = max(64.0, (self.avg_size + added / len(rows)) / 2)
        if self.items and self.oldest_at is None:
            self.oldest_at = self.clock.seconds()

    def ready(self, batch_size, batch_bytes, batch_delay):
        """
        Whether a batch from the queue should leave now.
        """
        return bool(self.items) and (
            len(self.items) >= batch_size
            or self.queued_bytes >= batch_bytes
            # (a microsecond of slack for float rounding of the clock)
            or self.clock.seconds() - self.oldest_at >= batch_delay - 1e-6)

    def wait(self, batch_delay):
        """
        @return: the seconds until the oldest queued message has waited
            C{batch_delay} (0 or more).
        """
        return max(0.0, self.oldest_at + batch_delay - self.clock.seconds())

    def take(self, batch_size, batch_bytes):
        """
        Cut the next batch from the queue: up to C{batch_size} messages
        and C{batch_bytes} (a first message larger than that goes alone);
        a message that could not be encoded always travels alone.

        @return: a list of items (it stays counted in C{mem_bytes}).
        """
        items = []
        size = 0
        while self.items and len(items) < batch_size:
            item = self.items[0]
            if items and (size + item.size > batch_bytes or item.json is None):
                break
            self.items.popleft()
            items.append(item)
            size += item.size
            if item.json is None:
                # An unencodable row travels alone (to the dead letters).
                break
        self.queued_bytes -= size
        if not self.items:
            self.oldest_at = None
        return items

    def split(self, items):
        """
        Put the two halves of C{items} in front of everything else, first
        half first.
        """
        half = len(items) // 2
        self.splits.appendleft(items[half:])
        self.splits.appendleft(items[:half])

    def release(self, size):
        """
        Forget C{size} bytes of messages that left memory (confirmed,
        spilled, dead-lettered or split off).
        """
        self.mem_bytes -= size

    def reset(self, read_pos):
        """
        Drop everything held and read again after C{read_pos}.
        """
        self.items.clear()
        self.splits.clear()
        self.queued_bytes = 0
        self.mem_bytes = 0
        self.oldest_at = None
        self.read_pos = read_pos
