# -*- test-case-name: tests.test_storesql -*-
"""
Tests for L{relay.storesql}: the store's transaction functions run
directly on a real SQLite connection (no pool, no reactor).
"""

import sqlite3

from twisted.logger import Logger
from twisted.trial import unittest

from relay import storesql
from relay.storesql import SQL, STATEMENTS, STATUS_EXPIRED, STATUS_PENDING


def message_row(seq, mid=None, expires=10 ** 12):
    return [seq, mid or "p-%d" % (seq,), None, 1000, "alice", "bob", None, None, "message",
            "{}", None, None, expires, None]


class StoreSQLTests(unittest.TestCase):

    def setUp(self):
        self.conn = sqlite3.connect(":memory:", isolation_level=None)
        self.addCleanup(self.conn.close)
        storesql.upgrade(self.conn, Logger(), ":memory:")
        self.txn = self.conn.cursor()

    def rows(self, sql):
        return self.conn.execute(sql).fetchall()

    def empty(self):
        return {name: [] for name in STATEMENTS}

    def test_upgrade_to_newest_and_refuse_newer(self):
        """
        upgrade brings a fresh file to the newest packaged version; a file
        newer than this code is refused with StoreError.
        """
        newest = storesql.schema_scripts()[-1][0]
        self.assertEqual(storesql.schema_version(self.conn), newest)
        self.conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'",
                          (str(newest + 1),))
        self.assertRaises(storesql.StoreError, storesql.upgrade, self.conn, Logger(), "x")

    def test_status_sql_uses_the_constants(self):
        """
        The statements name delivery states through the module's constants.
        """
        for name in ("status", "ack_by_id", "expire", "read_open"):
            self.assertNotIn("%(", SQL[name])
        self.assertIn("'%s'" % (STATUS_EXPIRED,), SQL["expire"])

    def test_isolated_write_keeps_a_send_whole(self):
        """
        Written unit by unit, a SEND whose delivery row SQLite refuses is
        quarantined whole (its message too); the SEND beside it is written.
        """
        rows = self.empty()
        rows["message"] = [message_row(1), message_row(2)]
        rows["delivery"] = [["bob", 1, 1, STATUS_PENDING, 0, 1000],
                            ["bob", 2, 1, STATUS_PENDING, 0, 2 ** 70]]
        groups = [{"message": (0, 1), "delivery": (0, 1)},
                  {"message": (1, 2), "delivery": (1, 2)}]
        refused, known = storesql._write_rows_isolated(self.txn, rows, groups, 5000)
        self.assertEqual([r[0] for r in refused], ["message", "delivery"])
        self.assertEqual(known, [])
        self.assertEqual(self.rows("SELECT seq FROM messages"), [(1,)])
        self.assertEqual(self.rows("SELECT count(*) FROM quarantine"), [(2,)])

    def test_known_send_is_left_out(self):
        """
        A SEND whose derived id ("m...") is already stored is the same SEND
        again: its rows are left out, not quarantined.
        """
        rows = self.empty()
        rows["message"] = [message_row(1, "mabc")]
        storesql._write_rows(self.txn, rows)
        rows["message"] = [message_row(2, "mabc")]
        refused, known = storesql._write_rows_isolated(self.txn, rows, [{"message": (0, 1)}], 1)
        self.assertEqual((refused, known), ([], ["mabc"]))

    def test_expire_moves_its_watermarks(self):
        """
        _expire marks open deliveries of expired messages and moves its
        watermarks, so a second run looks at nothing already seen.
        """
        rows = self.empty()
        rows["message"] = [message_row(1, expires=2000), message_row(2)]
        rows["delivery"] = [["bob", 1, 1, STATUS_PENDING, 0, 1000],
                            ["bob", 2, 2, STATUS_PENDING, 0, 1000]]
        storesql._write_rows(self.txn, rows)
        storesql._expire(self.txn, 3000)
        self.assertEqual(self.rows("SELECT message_seq, status FROM deliveries ORDER BY 1"),
                         [(1, STATUS_EXPIRED), (2, STATUS_PENDING)])
        marks = dict(self.rows("SELECT key, value FROM meta WHERE key LIKE 'expire_%'"))
        self.assertEqual(marks, {"expire_after_ms": "3000", "expire_after_seq": "2"})
