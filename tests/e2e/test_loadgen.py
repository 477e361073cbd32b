# -*- test-case-name: tests.e2e.test_loadgen -*-
"""
relay.bench.loadgen, the standard-library load generator, against the real
daemon process (its accounting is proven against a scripted peer in
C{tests/test_loadgen.py}).
"""

import sqlite3

from twisted.internet import defer, threads
from twisted.trial import unittest

from relay.bench import loadgen
from tests.support.daemon import DaemonProcess


class RealDaemonTests(unittest.TestCase):
    """The load generator against the real daemon process."""

    @defer.inlineCallbacks
    def test_many_to_many_stored(self):
        """2 senders to 3 receivers: everything delivered once, in order, with
        receipts, and the store holds one row per message of this run."""
        daemon = DaemonProcess(self, extra_args=["--no-rate-limit"])
        yield daemon.start()
        result = yield threads.deferToThread(
            loadgen.run, daemon.socket_path, senders=2, receivers=3, messages=3000,
            size=100, window=200)
        yield daemon.stop()
        self.assertEqual((result["sent"], result["delivered"], result["receipts"]),
                         (3000, 3000, 3000))
        self.assertEqual((result["lost"], result["duplicates"], result["out_of_order"]),
                         (0, 0, 0))
        db = sqlite3.connect("file:{}?mode=ro".format(daemon.db_path), uri=True)
        self.addCleanup(db.close)
        (rows,) = db.execute("SELECT count(*) FROM messages WHERE sender LIKE ?",
                             (result["agent_prefix"] + "%",)).fetchone()
        self.assertEqual(rows, 3000)

    @defer.inlineCallbacks
    def test_slow_receiver(self):
        """A receiver reading at 500 msg/s behind an open-loop sender still gets
        every message; the run takes at least as long as the reader needs."""
        daemon = DaemonProcess(self, extra_args=["--no-rate-limit"])
        yield daemon.start()
        result = yield threads.deferToThread(
            loadgen.run, daemon.socket_path, messages=400, size=50, open_loop=True,
            receiver_rate=500)
        yield daemon.stop()
        self.assertEqual((result["delivered"], result["lost"]), (400, 0))
        self.assertGreater(result["elapsed_s"], 0.7)
