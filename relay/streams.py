# -*- test-case-name: tests.test_streams,tests.test_store -*-
"""
Stream seqs for the store: the last seq given on each (recipient, topic,
sender) stream, kept in memory for the newest streams only (issue 13 point
7: never one entry per name ever seen), the rest read back from the file.
"""

import sqlite3
from collections import OrderedDict


class StreamSeqs:
    """
    @param path: the store file; its C{streams} table holds every stream's
        last committed seq.  It is read on a connection of its own, in the
        reactor thread: a primary-key lookup, and WAL readers never block
        the writer thread nor wait for it.
    @param limit: how many committed streams to keep in memory (an LRU).

    A seq handed to a batch that has not committed yet is kept apart until
    it commits: the file does not have it, so it must never be read back.
    """

    def __init__(self, path, limit):
        self.path = path
        self.limit = limit
        self._db = None
        self.reads = 0
        self._cache = OrderedDict()
        self._uncommitted = {}

    def open(self):
        """
        @raise sqlite3.Error: the file cannot be read.
        """
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA busy_timeout=10000")

    def close(self):
        if self._db is not None:
            self._db.close()
            self._db = None

    def read(self, key):
        """
        The last seq of stream C{key} in the file (0 for one it does not
        know).
        """
        rows = self._db.execute(
            "SELECT last_seq FROM streams WHERE recipient = ? AND topic = ? AND sender = ?",
            key).fetchall()
        return rows[0][0] if rows else 0

    def last(self, key):
        """
        The last seq given on stream C{key}: in a batch not yet committed,
        in memory, or only in the file.
        """
        seq = self._uncommitted.get(key)
        if seq is not None:
            return seq
        cache = self._cache
        seq = cache.get(key)
        if seq is not None:
            cache.move_to_end(key)
            return seq
        self.reads += 1
        seq = self.read(key)
        self._keep(key, seq)
        return seq

    def given(self, key, seq):
        """
        C{seq} was handed to a batch on stream C{key}.
        """
        if seq > self._uncommitted.get(key, 0):
            self._uncommitted[key] = seq
        self._keep(key, max(seq, self._cache.get(key, 0)))

    def committed(self, highs):
        """
        A batch holding the stream seqs C{highs} (key -> seq) committed.
        """
        uncommitted = self._uncommitted
        for key, seq in highs.items():
            if uncommitted.get(key) == seq:
                del uncommitted[key]
                if key in self._cache:
                    self._cache[key] = max(self._cache[key], seq)

    def cached(self):
        """
        How many committed streams are in memory.
        """
        return len(self._cache)

    def size(self):
        """
        How many streams are held in memory in all.
        """
        return len(self._cache) + len(self._uncommitted)

    def _keep(self, key, seq):
        cache = self._cache
        cache[key] = seq
        cache.move_to_end(key)
        while len(cache) > self.limit:
            cache.popitem(last=False)
