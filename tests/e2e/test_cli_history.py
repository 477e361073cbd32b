# -*- test-case-name: tests.e2e.test_cli_history -*-
"""
End-to-end tests of C{relay history} (L{relay.cli.history}) against real stores and daemons.
"""

import json
import sqlite3

from twisted.internet import defer
from twisted.trial import unittest

from tests.support.cli import run_cli
from tests.support.daemon import DaemonProcess


class DeadLetterTests(unittest.TestCase):
    """relay history --dead-letters."""

    @defer.inlineCallbacks
    def test_dead_letters(self):
        """A message the sync target refused for good is listed with its reason."""
        daemon = DaemonProcess(self)
        yield daemon.start()
        out, err, code = yield run_cli(["send", "--as", "alice", "--to", "bob", "poison",
                                        "--socket", daemon.socket_path])
        self.assertEqual(code, 0, err)
        yield daemon.stop()
        db = sqlite3.connect(daemon.db_path)
        seq, mid = db.execute("SELECT seq, id FROM messages WHERE send_id = ?",
                              (out.strip(),)).fetchone()
        db.execute("INSERT INTO dead_letters (message_seq, id, reason, ts) VALUES (?, ?, ?, ?)",
                   (seq, mid, "400: body too long", 0))
        db.commit()
        db.close()
        out, err, code = yield run_cli(["history", "--db", daemon.db_path, "--dead-letters"])
        self.assertEqual(code, 0, err)
        self.assertIn("alice -> bob: poison", out)
        self.assertIn("400: body too long", out)
        out, _, _ = yield run_cli(["history", "--db", daemon.db_path, "--dead-letters",
                                   "--json"])
        self.assertEqual(json.loads(out)["reason"], "400: body too long")


class HistoryUnderLoadTests(unittest.TestCase):
    """relay history next to a daemon busy writing."""

    @defer.inlineCallbacks
    def test_history_during_load(self):
        """While the load generator pushes 4000 durable messages through the
        daemon, repeated relay history runs succeed, and the run loses nothing
        and completes (the read-only WAL reader blocks no writer)."""
        from twisted.internet import threads

        from relay.bench import loadgen
        daemon = DaemonProcess(self, extra_args=["--no-rate-limit"])
        yield daemon.start()
        running = threads.deferToThread(loadgen.run, daemon.socket_path, messages=4000,
                                        size=100, window=100)
        reads = 0
        while not running.called or reads == 0:
            out, err, code = yield run_cli(["history", "--db", daemon.db_path, "--limit", "5",
                                            "--json"])
            self.assertEqual(code, 0, err)
            reads += 1
        result = yield running
        self.assertEqual((result["lost"], result["complete"]), (0, True))
        self.assertEqual(result["receipts"], 4000)
        yield daemon.stop()
