# -*- test-case-name: tests.e2e.test_retention -*-
"""
End-to-end tests of --retention through the real daemon process (issue 14,
"a store that stays bounded"): old acked messages disappear from the file,
unacked and pending ones stay, also across a restart; STATUS and /metrics
count what went.
"""

import sqlite3
import time

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer, reactor, task
from twisted.trial import unittest

from tests.support.daemon import DaemonProcess, connect_agent, send, wait_status
from tests.support.poll import poll_until
from tests.support.sync import KEY, WORKSPACE, IngestServer
from tests.support.web import WebDaemon, get


def stored(db_path):
    """
    {body: [delivery statuses]} of every message in the store file.
    """
    conn = sqlite3.connect(db_path)
    try:
        out = {}
        for body, status in conn.execute(
                "SELECT json_extract(m.payload, '$.body'), d.status FROM messages m"
                " LEFT JOIN deliveries d ON d.message_seq = m.seq ORDER BY m.seq"):
            out.setdefault(body, []).append(status)
        return out
    finally:
        conn.close()


def retention_samples(text):
    """
    {name: value} of the relay_retention_* samples in a /metrics body.
    """
    return {sample.name: sample.value for family in text_string_to_metric_families(text)
            for sample in family.samples if sample.name.startswith("relay_retention_")}


class RetentionTests(unittest.TestCase):

    @defer.inlineCallbacks
    def test_old_acked_go_unacked_stay(self):
        """
        With --retention 2s, messages acked by their recipient are deleted
        from the file (with their delivery rows) a few seconds later; a
        message to an agent never connected (pending) and one delivered to
        an agent that does not ACK stay, and still stay after a restart and
        another wait; the pending one is then delivered.  STATUS's
        retention section counts the three messages and their three
        delivery rows, and a finished pass; /metrics says the same; after
        the restart the counters are the new process's (the marker alone).
        """
        daemon = WebDaemon(self, ["--retention", "2s", "--ack-timeout-ms", "600000"])
        yield daemon.start()
        rx = yield connect_agent(daemon, "rx")
        mute = yield connect_agent(daemon, "mute")
        mute.auto_ack = False
        tx = yield connect_agent(daemon, "tx")
        tx.send_many([send("rx", "acked-%d" % i, requires_ack=True) for i in range(3)]
                     + [send("offline", "pending", requires_ack=True),
                        send("mute", "unacked", requires_ack=True)])
        yield tx.wait_type("ACK", 5, timeout=30)
        yield rx.wait_type("DELIVER", 3)
        yield mute.wait_type("DELIVER", 1)
        yield poll_until(lambda: stored(daemon.db_path).get("acked-0") == ["acked"],
                         what="the acks on disk")
        yield poll_until(lambda: not any(b.startswith("acked") for b in stored(daemon.db_path)),
                         timeout=30, what=lambda: "acked messages gone: %r"
                         % (stored(daemon.db_path),))
        self.assertEqual(stored(daemon.db_path),
                         {"pending": ["pending"], "unacked": ["delivered"]})
        status = yield wait_status(daemon, lambda s: s["retention"]["deleted_messages"] >= 3
                                   and s["retention"]["last_run_at"] is not None)
        counted = status["retention"]
        self.assertEqual(
            {k: counted[k] for k in ("deleted_messages", "deleted_deliveries",
                                     "deleted_dead_letters", "deleted_quarantine", "errors",
                                     "retention_s", "dead_letter_retention_s")},
            {"deleted_messages": 3, "deleted_deliveries": 3, "deleted_dead_letters": 0,
             "deleted_quarantine": 0, "errors": 0, "retention_s": 2.0,
             "dead_letter_retention_s": None})
        self.assertGreaterEqual(counted["passes"], 1)
        self.assertLess(abs(counted["last_run_at"] - time.time()), 60)
        self.assertTrue(0 <= counted["last_run_s"] < 10, counted)
        code, _, body = yield get(daemon.url + "/metrics")
        self.assertEqual(code, 200)
        scraped = retention_samples(body.decode())
        self.assertEqual(scraped["relay_retention_deleted_messages_total"], 3)
        self.assertEqual(scraped["relay_retention_deleted_deliveries_total"], 3)
        self.assertGreaterEqual(scraped["relay_retention_passes_total"], 1)
        self.assertIn("relay_retention_last_run_duration_seconds", scraped)
        for agent in (rx, mute, tx):
            agent.transport.loseConnection()
        yield daemon.stop()
        yield daemon.start()
        # An acked marker going shows that passes ran after the restart.
        rx = yield connect_agent(daemon, "rx")
        tx = yield connect_agent(daemon, "tx")
        tx.send(send("rx", "marker", requires_ack=True))
        yield rx.wait_type("DELIVER")
        yield poll_until(lambda: "marker" in stored(daemon.db_path))
        yield poll_until(lambda: "marker" not in stored(daemon.db_path), timeout=30,
                         what="the acked marker gone after the restart")
        status = yield wait_status(daemon, lambda s: s["retention"]["deleted_messages"] >= 1)
        self.assertEqual(status["retention"]["deleted_messages"], 1)
        left = stored(daemon.db_path)
        self.assertEqual(sorted(left), ["pending", "unacked"])
        self.assertIn(left["unacked"], (["delivered"], ["pending"]))
        self.assertEqual(left["pending"], ["pending"])
        offline = yield connect_agent(daemon, "offline")
        yield offline.wait_type("DELIVER")
        self.assertEqual(offline.of_type("DELIVER")[0]["payload"]["body"], "pending")
        for agent in (rx, tx, offline):
            agent.transport.loseConnection()


class SyncDownTests(unittest.TestCase):

    timeout = 120

    @defer.inlineCallbacks
    def test_spilled_messages_stay_until_the_ingest_has_them(self):
        """
        With the ingest down, acked messages older than --retention 2s go
        to spill files (the sync cursor moves past them) but stay in the
        store, also across a restart; once the ingest is back and the spill
        files are re-sent, they go.
        """
        server = IngestServer(reactor).start()
        self.addCleanup(server.stop)
        yield server.refuse()
        daemon = DaemonProcess(self, [
            "--retention", "2s", "--sync-url", server.url, "--workspace-id", WORKSPACE,
            "--sync-batch-delay-ms", "20", "--sync-retry-delay-ms", "100",
            "--sync-retries", "1", "--spill-retry-interval", "1", "--sync-timeout", "5"],
            env={"RELAY_SYNC_KEY": KEY})
        self.addCleanup(daemon.kill)
        yield daemon.start()
        rx = yield connect_agent(daemon, "rx")
        tx = yield connect_agent(daemon, "tx")
        tx.send_many([send("rx", "acked-%d" % i, requires_ack=True) for i in range(5)])
        yield tx.wait_type("ACK", 5)
        yield rx.wait_type("DELIVER", 5)
        yield poll_until(lambda: stored(daemon.db_path).get("acked-4") == ["acked"])
        yield wait_status(daemon, lambda s: s["sync"]["spills_written"] > 0
                          and s["sync"]["cursor"] >= 5, timeout=30)
        # Past the retention, several passes (every 0.5 s): nothing goes.
        yield task.deferLater(reactor, 4.0, lambda: None)
        self.assertEqual(len(stored(daemon.db_path)), 5)
        for agent in (rx, tx):
            agent.transport.loseConnection()
        yield daemon.stop()
        yield daemon.start()
        yield task.deferLater(reactor, 3.0, lambda: None)
        self.assertEqual(len(stored(daemon.db_path)), 5)
        conn = sqlite3.connect(daemon.db_path)
        ids = {r[0] for r in conn.execute("SELECT id FROM messages")}
        conn.close()
        server.start()
        yield poll_until(lambda: not stored(daemon.db_path), timeout=30,
                         what=lambda: "synced messages gone: %r" % (stored(daemon.db_path),))
        self.assertLessEqual(ids, server.stub.unique)
