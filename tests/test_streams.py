# -*- test-case-name: tests.test_streams -*-
"""
Tests for L{relay.streams.StreamSeqs}: the bounded memory of stream seqs,
backed by a real store file's C{streams} table.
"""

import os
import sqlite3

from twisted.trial import unittest

from relay.streams import StreamSeqs


class StreamSeqsTests(unittest.TestCase):
    """The LRU, the uncommitted seqs kept apart, and reads from the file."""

    def setUp(self):
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        self.path = os.path.join(directory, "s.sqlite")
        conn = sqlite3.connect(self.path)
        with conn:
            conn.execute("CREATE TABLE streams (recipient TEXT, topic TEXT, sender TEXT,"
                         " last_seq INTEGER, PRIMARY KEY (recipient, topic, sender))")
            conn.execute("INSERT INTO streams VALUES ('bob', 'default', 'alice', 41)")
        conn.close()
        self.seqs = StreamSeqs(self.path, limit=2)
        self.seqs.open()
        self.addCleanup(self.seqs.close)

    def test_read_from_file_once(self):
        """A stream not in memory is read from the file once, then kept."""
        key = ("bob", "default", "alice")
        self.assertEqual(self.seqs.last(key), 41)
        self.assertEqual(self.seqs.last(key), 41)
        self.assertEqual(self.seqs.reads, 1)
        self.assertEqual(self.seqs.last(("carol", "default", "alice")), 0)

    def test_bounded(self):
        """Beyond the limit the least recently used committed stream is dropped."""
        for i in range(10):
            key = ("n%d" % i, "default", "alice")
            self.seqs.given(key, 1)
            self.seqs.committed({key: 1})
        self.assertEqual(self.seqs.cached(), 2)
        self.assertEqual(self.seqs.size(), 2)

    def test_uncommitted_never_read_back(self):
        """
        A seq handed to a batch that has not committed is the one given
        next time, even once the LRU dropped it: the file does not have it.
        """
        key = ("bob", "default", "alice")
        self.seqs.given(key, 42)
        for i in range(5):
            self.seqs.given(("x%d" % i, "t", "s"), 1)
            self.seqs.committed({("x%d" % i, "t", "s"): 1})
        self.assertEqual(self.seqs.last(key), 42)
        self.seqs.committed({key: 42})
        self.assertEqual(self.seqs.size(), 2)

    def test_committed_older_batch_keeps_newer(self):
        """A batch committing an older seq does not undo a newer one given since."""
        key = ("bob", "default", "alice")
        self.seqs.given(key, 42)
        self.seqs.given(key, 43)
        self.seqs.committed({key: 42})
        self.assertEqual(self.seqs.last(key), 43)
