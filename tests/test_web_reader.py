# -*- test-case-name: tests.test_web_reader -*-
"""
Tests for L{relay.web.reader}: the dashboard's reads on a read-only
connection and a thread of their own, against a real store file.
"""

import os
import sqlite3

from twisted.internet import defer, reactor
from twisted.trial import unittest

from relay.store import Store
from relay.web.reader import StoreReader


class StoreReaderTests(unittest.TestCase):
    """
    Reads through L{StoreReader} see what the writer committed.
    """

    def setUp(self):
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        self.path = os.path.join(directory, "relay.sqlite")
        store = Store(reactor, self.path)
        store.open()
        d = store.close()
        conn = sqlite3.connect(self.path)
        with conn:
            conn.execute(
                "INSERT INTO messages (seq, id, send_id, ts, sender, recipient, topic, thread,"
                " kind, payload, payload_meta, extra, expires_at)"
                " VALUES (1, 'm-1', 's-1', 1000, 'alice', '*', 'news', 't1', 'message',"
                " '{\"body\":\"<script>x</script>\"}', NULL, NULL, 99999999999)")
            conn.executemany(
                "INSERT INTO deliveries (recipient, message_seq, stream_seq, status, attempts,"
                " updated_at) VALUES (?, 1, 1, ?, 1, 1000)",
                [("bob", "pending"), ("carol", "delivered"), ("dave", "acked")])
        conn.close()
        self.reader = StoreReader(reactor, self.path)
        self.reader.start()
        self.addCleanup(self.reader.stop)
        return d

    @defer.inlineCallbacks
    def test_waiting_by_status(self):
        """
        Deliveries not yet acked nor expired are counted by status; acked
        ones are not waiting.
        """
        counts = yield self.reader.waiting()
        self.assertEqual(counts, {"pending": 1, "delivered": 1})

    @defer.inlineCallbacks
    def test_messages_with_filters(self):
        """
        Messages come back through C{relay history}'s query, filters
        applied; the body is returned as text, as stored.
        """
        rows = yield self.reader.messages(thread="t1", limit=10)
        self.assertEqual([r["id"] for r in rows], ["m-1"])
        self.assertEqual(rows[0]["body"], "<script>x</script>")
        none = yield self.reader.messages(thread="other", limit=10)
        self.assertEqual(none, [])

    @defer.inlineCallbacks
    def test_quarantine_and_dead_letters_empty(self):
        """
        An empty quarantine and no dead letters read as empty lists.
        """
        self.assertEqual((yield self.reader.quarantine(10)), [])
        self.assertEqual(list((yield self.reader.dead_letters(10))), [])

    def test_read_only(self):
        """
        The reader's connection cannot write to the store.
        """
        from relay.cli import history
        db = history.open_store(self.path)
        self.addCleanup(db.close)
        self.assertRaises(sqlite3.OperationalError, db.execute,
                          "DELETE FROM messages")
