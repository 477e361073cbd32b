# -*- test-case-name: tests.e2e.test_sync_ingest -*-
"""
Cloud sync end to end with both real processes: the daemon
(C{twistd -n relay}) syncing to the ingest service (C{twistd -n
relay-ingest}) writing to the real PostgreSQL.

PostgreSQL comes from C{RELAY_TEST_POSTGRES_DSN} through the ingest tests'
helper (one database per test run, emptied per test); when it cannot be
reached the tests skip loudly, or fail under C{RELAY_REQUIRE_POSTGRES=1}.
"""

import os
import sqlite3
import uuid

import psycopg2
from twisted.internet import defer, reactor
from twisted.trial import unittest

from relay.ingest import keys
from tests.support.daemon import DaemonProcess, daemon_status, send, send_receipted
from tests.support.ingest_process import IngestProcess
from tests.support.ingest import fetchAll, testDatabaseDSN, truncate
from tests.support.sync import TEXT, stored_ids, wait_until


class SyncToIngestTests(unittest.TestCase):
    """
    Every message lands in PostgreSQL exactly once, across an ingest outage,
    a kill -9 of the daemon and a lost cursor.
    """

    timeout = 120

    def setUp(self):
        self.dsn = testDatabaseDSN(self)
        truncate(self.dsn)
        self.workspace = str(uuid.uuid4())
        conn = psycopg2.connect(self.dsn)
        try:
            self.key = keys.create_key(conn, self.workspace)[1]
        finally:
            conn.close()
        self.ingest = None

    @defer.inlineCallbacks
    def start_ingest(self, port=None):
        ingest = IngestProcess(reactor, self.dsn)
        if port is not None:
            ingest.port = port
            ingest.url = "http://127.0.0.1:%d" % (port,)
        self.addCleanup(ingest.stop)
        yield ingest.start()
        self.ingest = ingest
        return ingest

    def rows(self):
        return fetchAll(self.dsn, "SELECT original_id, count(*) FROM agent_messages"
                                  " WHERE workspace_id = %s GROUP BY original_id", (self.workspace,))

    @defer.inlineCallbacks
    def send_messages(self, daemon, count, start):
        yield send_receipted(daemon, "alice-{}".format(start),
                             [send("bob", TEXT.format(i=i), requires_ack=True)
                              for i in range(start, start + count)])

    @defer.inlineCallbacks
    def sync_status(self, daemon):
        status = yield daemon_status(daemon)
        return status["sync"]

    @defer.inlineCallbacks
    def test_outage_kill_and_lost_cursor_end_exactly_once(self):
        """
        100 messages sync; the ingest goes down; 200 more are stored and
        some spilled; the daemon is killed with SIGKILL and its cursor is
        reset to 0 (as if it had never been written); daemon and ingest come
        back on the same port: PostgreSQL holds all 300, each exactly once,
        and the daemon counts the re-sent ones as duplicates.
        """
        ingest = yield self.start_ingest()
        port = ingest.port
        daemon = DaemonProcess(self, extra_args=[
            "--sync-url", ingest.url, "--workspace-id", self.workspace,
            "--sync-batch-delay-ms", "20", "--sync-retry-delay-ms", "100",
            "--sync-retries", "1", "--spill-retry-interval", "1", "--sync-timeout", "5",
        ], env={"RELAY_SYNC_KEY": self.key})
        self.addCleanup(daemon.kill)
        yield daemon.start()
        yield self.send_messages(daemon, 100, 0)
        yield wait_until(reactor, lambda: len(self.rows()) == 100, timeout=30,
                         what="the first 100 in PostgreSQL")

        yield ingest.stop()
        yield self.send_messages(daemon, 200, 100)
        spill = daemon.db_path + ".sync-spill"
        yield wait_until(reactor, lambda: os.path.isdir(spill) and os.listdir(spill), timeout=30,
                         what="a spill file while the ingest is down")
        yield daemon.kill()
        ids = stored_ids(daemon.db_path)
        self.assertEqual(len(ids), 300)
        conn = sqlite3.connect(daemon.db_path)
        with conn:
            conn.execute("UPDATE meta SET value = '0' WHERE key = 'sync_cursor'")
        conn.close()

        yield daemon.start()
        yield self.start_ingest(port)
        yield wait_until(reactor, lambda: len(self.rows()) == 300, timeout=60,
                         what="all 300 in PostgreSQL")
        rows = self.rows()
        self.assertEqual({r[0] for r in rows}, ids)
        self.assertEqual({r[1] for r in rows}, {1})
        yield wait_until(reactor, lambda: not os.listdir(spill), timeout=30,
                         what="spill files replayed and deleted")
        status = yield self.sync_status(daemon)
        self.assertGreaterEqual(status["duplicates"], 100)
        self.assertEqual(status["state"], "idle")
