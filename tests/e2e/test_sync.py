# -*- test-case-name: tests.e2e.test_sync -*-
"""
End-to-end tests of cloud sync: the real daemon (C{twistd -n relay}) in a
subprocess, real agents over its Unix socket, and a real twisted.web
server on loopback in the test process playing the ingest service.
"""

import gzip
import os

from twisted.internet import defer, reactor, task
from twisted.trial import unittest

from relay.store import connect_readonly
from relay.sync.spill import SpillDir
from relay.sync.wire import encode_message
from tests.support.daemon import DaemonProcess, daemon_status, send, send_receipted
from relay.sync.options import SYNC_PATH
from tests.support.sync import (DAEMON, KEY, TEXT, WORKSPACE, IngestServer, make_row,
                                stored_ids, wait_until)

class SyncEndToEndTests(unittest.TestCase):
    """
    The daemon ships what agents send to the ingest server and loses
    nothing across outages, restarts and kill -9.
    """

    timeout = 90

    def setUp(self):
        self.server = IngestServer(reactor).start()
        self.addCleanup(self.server.stop)

    def daemon(self, *extra):
        args = ["--sync-url", self.server.url, "--workspace-id", WORKSPACE,
                "--sync-batch-delay-ms", "20",
                "--sync-retry-delay-ms", "200", "--sync-retries", "2",
                "--spill-retry-interval", "1", "--sync-timeout", "5"] + list(extra)
        daemon = DaemonProcess(self, extra_args=args, env={"RELAY_SYNC_KEY": KEY})
        self.addCleanup(daemon.kill)
        return daemon

    @defer.inlineCallbacks
    def send_messages(self, daemon, count, start=0):
        """
        Send C{count} messages from alice to (absent) bob and wait for every
        store receipt.
        """
        yield send_receipted(daemon, "alice-{}".format(start),
                             [send("bob", TEXT.format(i=i), requires_ack=True)
                              for i in range(start, start + count)])

    @defer.inlineCallbacks
    def status(self, daemon):
        status = yield daemon_status(daemon)
        return status["sync"]

    @defer.inlineCallbacks
    def test_outage_of_ten_seconds(self):
        """
        The ingest refuses connections for 10 seconds, then accepts: every
        stored message arrives (retries and spill files included), and the
        daemon's status shows the failures and the result.
        """
        daemon = self.daemon()
        yield daemon.start()
        yield self.server.refuse()
        yield self.send_messages(daemon, 300)
        yield task.deferLater(reactor, 10.0, lambda: None)
        down = yield self.status(daemon)
        self.assertGreater(down["failed_attempts"], 0)
        self.assertGreater(down["spills_written"], 0)
        self.server.start()
        ids = stored_ids(daemon.db_path)
        self.assertEqual(len(ids), 300)
        yield self.server.stub.wait_for_ids(ids)
        self.assertEqual(self.server.stub.unique, ids)
        yield wait_until(reactor, lambda: not os.listdir(daemon.db_path + ".sync-spill"),
                         what="spill files replayed and deleted")
        up = yield self.status(daemon)
        self.assertEqual(up["spilled_files"], 0)
        self.assertIsNotNone(up["last_error"])

    @defer.inlineCallbacks
    def test_kill_9_while_ingest_down(self):
        """
        The daemon is killed with SIGKILL while the ingest is down, and
        restarted: every message arrives.
        """
        daemon = self.daemon()
        yield daemon.start()
        yield self.server.refuse()
        yield self.send_messages(daemon, 200)
        spill = daemon.db_path + ".sync-spill"
        yield wait_until(reactor, lambda: os.path.isdir(spill) and os.listdir(spill),
                         what="a spill file")
        yield self.send_messages(daemon, 100, start=200)
        yield daemon.kill()
        ids = stored_ids(daemon.db_path)
        self.assertEqual(len(ids), 300)
        self.server.start()
        yield daemon.start()
        yield self.server.stub.wait_for_ids(ids)
        self.assertEqual(self.server.stub.unique, ids)

    @defer.inlineCallbacks
    def test_spill_files_replayed_at_startup(self):
        """
        Spill files left by an earlier run are re-sent at startup, oldest
        first, and deleted once the ingest took them.
        """
        daemon = self.daemon()
        spill = SpillDir(daemon.db_path + ".sync-spill", 10 ** 9, reactor)
        first = [encode_message(make_row(seq, id="old-{}".format(seq))) for seq in range(1, 51)]
        second = [encode_message(make_row(seq, id="old-{}".format(seq))) for seq in range(51, 81)]
        spill.write("7a8b9c0d-1e2f-4a3b-8c4d-5e6f7a8b9c0d", None, first)
        spill.write("7a8b9c0d-1e2f-4a3b-8c4d-5e6f7a8b9c0d", None, second)
        yield daemon.start()
        yield self.server.stub.wait_for_ids({"old-{}".format(seq) for seq in range(1, 81)})
        self.assertEqual(self.server.stub.ids, ["old-{}".format(seq) for seq in range(1, 81)])
        yield wait_until(reactor, lambda: not os.listdir(spill.path), what="spill files deleted")

    @defer.inlineCallbacks
    def test_redirect_and_wrong_counts_keep_messages(self):
        """
        Issue 13 point 13: an ingest URL that redirects, then answers 200
        without counting the batch, confirms nothing: the redirect target
        never sees a request, and every message reaches the real ingest
        once it answers properly (before, they were confirmed and lost).
        """
        other = IngestServer(reactor).start()
        self.addCleanup(other.stop)
        target = other.url + SYNC_PATH
        self.server.stub.script = ([(302, {}, {"Location": target})] * 3
                                   + [(200, {"ok": True}, {})] * 3)
        daemon = self.daemon()
        yield daemon.start()
        yield self.send_messages(daemon, 20)
        ids = stored_ids(daemon.db_path)
        yield self.server.stub.wait_for_ids(ids)
        self.assertEqual(other.stub.requests, [])
        status = yield self.status(daemon)
        self.assertGreaterEqual(status["failed_attempts"], 6)
        self.assertEqual(status["synced"], 20)

    @defer.inlineCallbacks
    def test_bad_spill_files_set_aside(self):
        """
        Issue 13 point 14: a corrupt oldest spill file and one written for
        another workspace (the key changed since; the ingest answers 403)
        are moved to spill/rejected/ and counted in STATUS; the newer file
        and live messages still arrive and sync keeps running.
        """
        self.server.stub.workspace = WORKSPACE
        daemon = self.daemon()
        path = daemon.db_path + ".sync-spill"
        spill = SpillDir(path, 10 ** 9, reactor)
        rows = lambda a, b: [encode_message(make_row(s, id="old-{}".format(s))) for s in range(a, b)]
        corrupt = spill.write(DAEMON, WORKSPACE, rows(1, 11))
        with open(os.path.join(path, corrupt), "wb") as f:
            f.write(b"\x1f\x8b\x08 cut short")
        stale = spill.write(DAEMON, "0b7e0c52-7d0c-4c59-9a43-3b0b4c1f5a11", rows(11, 21))
        spill.write(DAEMON, WORKSPACE, rows(21, 31))
        yield daemon.start()
        yield self.server.stub.wait_for_ids({"old-{}".format(s) for s in range(21, 31)})
        yield self.send_messages(daemon, 5)
        yield self.server.stub.wait_for_ids(stored_ids(daemon.db_path))
        status = yield self.status(daemon)
        self.assertEqual((status["rejected_files"], status["spilled_files"]), (2, 0))
        self.assertNotEqual(status["state"], "unauthorized")
        self.assertEqual(sorted(os.listdir(os.path.join(path, "rejected"))),
                         sorted([corrupt, stale]))
        self.assertTrue({"old-{}".format(s) for s in range(1, 21)}.isdisjoint(self.server.stub.unique))

    @defer.inlineCallbacks
    def test_gzip_bodies(self):
        """
        Bodies above the threshold arrive gzip-compressed with
        Content-Encoding: gzip and the bearer key; the server decodes them
        to exactly the stored messages; a clean stop records the cursor.
        """
        daemon = self.daemon("--sync-batch-delay-ms", "100")
        yield daemon.start()
        yield self.send_messages(daemon, 50)
        ids = stored_ids(daemon.db_path)
        yield self.server.stub.wait_for_ids(ids)
        requests = self.server.stub.requests
        self.assertTrue(all(r["headers"]["authorization"] == "Bearer " + KEY for r in requests))
        big = [r for r in requests if r["headers"].get("content-encoding") == "gzip"]
        self.assertTrue(big, "no gzip body")
        for r in big:
            self.assertEqual(r["raw"][:2], b"\x1f\x8b")
            self.assertLess(len(r["raw"]), len(gzip.decompress(r["raw"])))
        bodies = sorted(m["body"] for doc in self.server.stub.docs() for m in doc["messages"])
        self.assertEqual(bodies, sorted(TEXT.format(i=i) for i in range(50)))
        stats = yield self.status(daemon)
        self.assertEqual(stats["synced"], 50)
        self.assertLess(stats["bytes_wire"], stats["bytes_raw"])
        yield daemon.stop()
        # (twistd re-raises SIGTERM after a clean shutdown, so look at the log)
        self.assertIn("Sync stopped at seq 50", daemon.output())

    @defer.inlineCallbacks
    def test_dead_letter_visible(self):
        """
        A message the ingest refuses by name (400 with its id) lands in the
        store's dead_letters table with the reason and is counted in the
        daemon's status; the others arrive.
        """
        daemon = self.daemon()
        yield daemon.start()
        yield self.server.refuse()
        yield self.send_messages(daemon, 10)
        conn = connect_readonly(daemon.db_path)
        ids = [row[0] for row in conn.execute("SELECT id FROM messages ORDER BY seq")]
        conn.close()
        self.server.stub.reject = {ids[3]: "body"}
        self.server.start()
        yield self.server.stub.wait_for_ids(set(ids) - {ids[3]})
        yield wait_until(reactor, lambda: dead_letters(daemon.db_path), what="a dead letter row")
        [(seq, mid, reason)] = dead_letters(daemon.db_path)
        self.assertEqual(mid, ids[3])
        self.assertIn("field body", reason)
        self.assertNotIn(ids[3], self.server.stub.unique)
        stats = yield self.status(daemon)
        self.assertEqual(stats["dead_letters"], 1)

    @defer.inlineCallbacks
    def test_wrong_key_stops_loudly(self):
        """
        With a key the ingest refuses (401) the daemon stops syncing with a
        critical log line, keeps running, and keeps every message.
        """
        daemon = DaemonProcess(self, extra_args=[
            "--sync-url", self.server.url, "--workspace-id", WORKSPACE,
            "--sync-batch-delay-ms", "0"], env={"RELAY_SYNC_KEY": "not-the-key"})
        self.addCleanup(daemon.kill)
        yield daemon.start()
        yield self.send_messages(daemon, 5)
        yield wait_until(reactor, lambda: "SYNC STOPPED" in daemon.output(), what="the loud line")
        stats = yield self.status(daemon)
        self.assertEqual(stats["state"], "unauthorized")
        self.assertEqual(stats["cursor"], 0)
        self.assertEqual(len(self.server.stub.requests), 1)
        self.assertEqual(self.server.stub.unique, set())


def dead_letters(db_path):
    conn = connect_readonly(db_path)
    try:
        return conn.execute("SELECT message_seq, id, reason FROM dead_letters").fetchall()
    finally:
        conn.close()
