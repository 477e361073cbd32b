# -*- test-case-name: tests.test_bare_relay -*-
"""
The measuring tools of issue 14 against real processes: the bare Twisted
relay baseline (benchmarks/bare_relay.py) carries the load generator's run
without loss, and bench_scale's pieces (its agents, its fan-out driver, its
store builder on relay.store's schema) work against the real daemon, so the
figures they print are of what they claim.
"""

import os
import shutil
import sqlite3
import sys
import tempfile

from twisted.internet import threads
from twisted.trial import unittest

from relay.bench import loadgen
from tests.support.daemon import REPO

sys.path.insert(0, os.path.join(REPO, "benchmarks"))
import bench_core  # noqa: E402
import bench_scale  # noqa: E402


def _bare(testcase):
    bare = bench_core.start_bare("test")
    if bare is None:
        testcase.fail("the bare relay did not start")
    testcase.addCleanup(shutil.rmtree, bare.directory, True)
    testcase.addCleanup(bare.stop)
    return bare


class BareRelayTests(unittest.TestCase):
    """benchmarks/bare_relay.py, as its own process."""

    def test_loadgen_run_complete(self):
        """
        Two senders to two receivers with receipts: every message is
        delivered once, in order, and receipted; nothing is lost.
        """
        bare = _bare(self)
        d = threads.deferToThread(loadgen.run, bare.socket_path, senders=2, receivers=2,
                                  messages=2000, size=50, durable=True, idle_timeout=10.0)

        def check(result):
            self.assertEqual(result["lost"], 0)
            self.assertEqual(result["delivered"], 2000)
            self.assertEqual(result["receipts"], 2000)
            self.assertEqual(result["duplicates"], 0)
            self.assertEqual(result["out_of_order"], 0)
            self.assertTrue(result["complete"])
        return d.addCallback(check)

    def test_fanout_reaches_every_subscriber(self):
        """
        bench_scale's fan-out driver on the bare relay: each of 5
        subscribers gets every one of 30 messages, the sender every receipt.
        """
        bare = _bare(self)
        d = threads.deferToThread(bench_scale.fanout_point, bare, 5, 30)

        def check(point):
            rate, result = point
            self.assertEqual(result["deliveries"], 150)
            self.assertEqual(result["receipts"], 30)
            self.assertGreater(rate, 0)
        return d.addCallback(check)


class ScaleOnDaemonTests(unittest.TestCase):
    """bench_scale's pieces against the real daemon."""

    def test_fanout_on_daemon(self):
        """
        The fan-out driver on the real daemon: 4 subscribers each get all
        20 messages (they PONG after SUBSCRIBE, so none subscribed late).
        """
        daemon = bench_core.start_daemon("test", "relay-test-", [], False)
        self.assertIsNotNone(daemon)
        self.addCleanup(shutil.rmtree, daemon.directory, True)
        self.addCleanup(daemon.stop)
        d = threads.deferToThread(bench_scale.fanout_point, daemon, 4, 20)

        def check(point):
            self.assertEqual(point[1]["deliveries"], 80)
            self.assertEqual(point[1]["receipts"], 20)
        return d.addCallback(check)

    def test_built_store_is_the_daemons(self):
        """
        A store built by bench_scale.build_store (300 acked, 40 waiting)
        opens in the real daemon, which counts its rows, delivers the 40
        waiting ones to the agent they wait for, and keeps counting stream
        seqs after the built ones.
        """
        directory = tempfile.mkdtemp(prefix="relay-built-")
        self.addCleanup(shutil.rmtree, directory, True)
        db = os.path.join(directory, "relay.sqlite")
        bench_scale.build_store(db, 300, backlog=40)
        conn = sqlite3.connect(db)
        self.assertEqual(conn.execute("SELECT count(*) FROM messages").fetchone(), (340,))
        self.assertEqual(conn.execute(
            "SELECT count(*) FROM deliveries WHERE status = 'pending'").fetchone(), (40,))
        conn.close()
        d = threads.deferToThread(bench_scale.backlog_point_on, db, directory, 40)

        def check(r):
            self.assertEqual(r["delivered"], 40)
            self.assertIsNotNone(r["first_deliver_s"])
        return d.addCallback(check)


class ProfileSummaryTests(unittest.TestCase):
    """benchmarks/profile_summary.py on py-spy's raw (collapsed) stacks."""

    def test_per_thread_shares_with_lines_merged(self):
        """
        Samples are split by thread (reactor, writer), one function's lines
        are merged into one row, and shares are of that thread's samples.
        """
        import profile_summary
        raw = [
            "<module> (twistd:8);ReactorBase.mainLoop (twisted/internet/base.py:697);"
            "Router.send (relay/router.py:319) 3\n",
            "<module> (twistd:8);ReactorBase.mainLoop (twisted/internet/base.py:697);"
            "Router.send (relay/router.py:332);frame (relay/frames.py:32) 1\n",
            "Thread.run (threading.py:982);ThreadWorker.work (t/_threadworker.py:75);"
            "_write_rows (relay/store.py:601) 4\n",
            "garbage without a count\n",
        ]
        counts = profile_summary.summarise(raw)
        reactor = counts["reactor"]
        self.assertEqual(reactor["total"], 4)
        self.assertEqual(reactor["self"]["Router.send (relay/router.py)"], 3)
        self.assertEqual(reactor["incl"]["Router.send (relay/router.py)"], 4)
        self.assertEqual(reactor["self"]["frame (relay/frames.py)"], 1)
        self.assertEqual(counts["writer"]["total"], 4)
        self.assertEqual(counts["writer"]["self"]["_write_rows (relay/store.py)"], 4)
