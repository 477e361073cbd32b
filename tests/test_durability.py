# -*- test-case-name: tests.test_durability -*-
"""
Durability of receipts: C{--synchronous full|normal} reaches SQLite's
writer connection (the real daemon C{kill -9}ed at random moments while an
agent sends is in L{tests.e2e.test_crash}).
"""

import os

from twisted.internet import defer, reactor
from twisted.python import usage
from twisted.trial import unittest

from relay import tap
from relay.store import Store

# PRAGMA synchronous reads back as a number.
SQLITE_LEVEL = {"normal": 1, "full": 2}


def _pragma(txn):
    txn.execute("PRAGMA synchronous")
    return txn.fetchone()[0]


class SynchronousOptionTests(unittest.TestCase):
    """
    C{--synchronous} reaches the store's writer connection.
    """

    def setUp(self):
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)
        self.path = os.path.join(self.dir, "relay.sqlite")

    @defer.inlineCallbacks
    def check_writer(self, **kw):
        store = Store(reactor, self.path, batch_delay=0.01, **kw)
        store.open()
        self.addCleanup(store.close)
        # The pool has one connection: the writer every batch commits on.
        level = yield store.pool.runInteraction(_pragma)
        return level

    @defer.inlineCallbacks
    def test_default_is_full_on_writer(self):
        """
        Without a setting the store's writer connection runs
        C{synchronous=FULL}: every commit fsyncs the WAL before the
        batch's receipts are sent.
        """
        level = yield self.check_writer()
        self.assertEqual(level, SQLITE_LEVEL["full"])

    @defer.inlineCallbacks
    def test_normal_on_writer(self):
        """
        C{synchronous="normal"} reaches the writer connection as NORMAL.
        """
        level = yield self.check_writer(synchronous="normal")
        self.assertEqual(level, SQLITE_LEVEL["normal"])

    @defer.inlineCallbacks
    def test_setting_survives_a_write(self):
        """
        After a committed batch the writer connection is still at the
        configured level (nothing resets it on the way).
        """
        store = Store(reactor, self.path, batch_delay=0.01, synchronous="full")
        store.open()
        self.addCleanup(store.close)
        store.set_meta("k", "v")
        yield store.batcher.flush()
        level = yield store.pool.runInteraction(_pragma)
        self.assertEqual(level, SQLITE_LEVEL["full"])

    def test_bad_value(self):
        """
        A value other than full or normal is refused before anything opens.
        """
        for bad in ("FULL ", "off", "", None, 2):
            self.assertRaises(ValueError, Store, reactor, self.path, synchronous=bad)
        self.assertFalse(os.path.exists(self.path))

    def test_option(self):
        """
        C{--synchronous} defaults to full, accepts normal, refuses anything
        else with a usage error, and makeService hands it to the store.
        """
        o = tap.Options()
        o.parseOptions(["--db", self.path])
        self.assertEqual(o["synchronous"], "full")
        o = tap.Options()
        o.parseOptions(["--db", self.path, "--synchronous", "normal",
                        "--listen", "unix:%s" % (os.path.join(self.dir, "s"),)])
        self.assertEqual(tap.makeService(o).store.synchronous, "normal")
        for bad in ("off", "extra", "NORMAL"):
            self.assertRaises(usage.UsageError, tap.Options().parseOptions,
                              ["--synchronous", bad])
