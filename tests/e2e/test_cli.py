# -*- test-case-name: tests.e2e.test_cli -*-
"""
The ``relay send|listen|status|history|bench`` commands, run as real processes
(``python -m relay.cli``) against the real daemon process.
"""

import json
import os
import re
import sqlite3
import tempfile

from twisted.internet import defer, reactor
from twisted.trial import unittest

from relay.client import fetch_status
from tests.support.cli import DaemonMixin, HOSTILE, run_cli, spawn_cli, wait_for


class CommandTests(DaemonMixin, unittest.TestCase):
    """The commands against one running daemon."""

    @defer.inlineCallbacks
    def test_send_then_listen_json(self):
        """relay send exits 0 with the SEND id once stored (BODY as argument and
        from stdin); relay listen --count 2 --json then prints both and exits 0."""
        out, err, code = yield run_cli(["send", "--as", "alice", "--to", "bob",
                                        "--thread", "t-9", "--data", '{"k": 2}',
                                        "hello bob"] + self.sock)
        self.assertEqual((code, err), (0, ""))
        first_id = out.strip()
        out, err, code = yield run_cli(["send", "--as", "alice", "--to", "bob"] + self.sock,
                                       stdin=b"line one\nline two\n")
        self.assertEqual(code, 0, err)
        out, err, code = yield run_cli(["listen", "--as", "bob", "--count", "2", "--json"]
                                       + self.sock)
        self.assertEqual(code, 0, err)
        messages = [json.loads(line) for line in out.splitlines()]
        self.assertEqual([m["body"] for m in messages], ["hello bob", "line one\nline two"])
        self.assertEqual(messages[0]["data"], {"k": 2})
        self.assertEqual(messages[0]["thread"], "t-9")
        self.assertEqual(messages[0]["from"], "alice")
        db = sqlite3.connect("file:{}?mode=ro".format(self.daemon.db_path), uri=True)
        self.addCleanup(db.close)

        def acked():
            # The ACK reaches the file with the daemon's next batch.
            (status,) = db.execute("SELECT d.status FROM deliveries d JOIN messages m "
                                   "ON m.seq = d.message_seq WHERE m.send_id = ?",
                                   (first_id,)).fetchone()
            return status == "acked"
        yield wait_for(acked)

    @defer.inlineCallbacks
    def test_live_listen_topic_and_status(self):
        """A running relay listen (human format, with --topic) prints a direct
        message and a topic broadcast as they arrive; relay status lists it."""
        listener = spawn_cli(["listen", "--as", "bob", "--count", "2", "--topic", "news"]
                             + self.sock)

        @defer.inlineCallbacks
        def bob_subscribed():
            status = yield fetch_status(reactor, self.daemon.endpoint)
            return any(a["name"] == "bob" and "news" in a.get("topics", [])
                       for a in status["agents"])
        yield wait_for(bob_subscribed)
        out, err, code = yield run_cli(["status"] + self.sock)
        self.assertEqual(code, 0, err)
        self.assertIn("agents: 1", out)
        self.assertIn("bob", out)
        out, err, code = yield run_cli(["status", "--json"] + self.sock)
        self.assertEqual([a["name"] for a in json.loads(out)["agents"]], ["bob"])
        _, err, code = yield run_cli(["send", "--as", "alice", "--to", "bob", "direct"]
                                     + self.sock)
        self.assertEqual(code, 0, err)
        _, err, code = yield run_cli(["send", "--as", "alice", "--to", "*", "--topic", "news",
                                      "to subscribers"] + self.sock)
        self.assertEqual(code, 0, err)
        out, err, code = yield listener.ended
        self.assertEqual(code, 0, err)
        lines = out.splitlines()
        self.assertEqual(len(lines), 2, out)
        self.assertTrue(lines[0].endswith("alice -> bob: direct"), lines[0])
        self.assertTrue(lines[1].endswith("alice -> * #news: to subscribers"), lines[1])

    @defer.inlineCallbacks
    def test_control_characters_escaped(self):
        """
        A body full of terminal escapes, sent through the real daemon, is
        printed escaped by relay listen and relay history (no ESC, C1 or
        bidi control reaches stdout), and exactly by their --json forms.
        """
        args = ["send", "--as", "alice", "--to", "bob", "--topic", "t\x1b[1m"] + self.sock
        _, err, code = yield run_cli(args, stdin=HOSTILE.encode("utf-8"))
        self.assertEqual(code, 0, err)
        db = ["--db", self.daemon.db_path]
        raw = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e]")
        for command in (["history"] + db, ["listen", "--as", "bob", "--count", "1"] + self.sock):
            out, err, code = yield run_cli(command)
            self.assertEqual(code, 0, err)
            self.assertIsNone(raw.search(out.replace("\n", "")), (command[0], out))
            self.assertIn("hi\\x1b[2J\\x1b]0;pwned\\x07\\x9b5A\\u202eevil", out)
            self.assertIn("#t\\x1b[1m", out)
        out, err, code = yield run_cli(["history", "--json"] + db)
        self.assertEqual(json.loads(out)["body"], HOSTILE)
        _, err, code = yield run_cli(["send", "--as", "alice", "--to", "bob"] + self.sock,
                                     stdin=HOSTILE.encode("utf-8"))
        out, err, code = yield run_cli(["listen", "--as", "bob", "--count", "1", "--json"]
                                       + self.sock)
        self.assertEqual(code, 0, err)
        self.assertEqual(json.loads(out)["body"], HOSTILE)

    @defer.inlineCallbacks
    def test_history_while_running(self):
        """relay history reads the store while the daemon runs, with filters and
        --json, and the daemon keeps working afterwards."""
        for sender, to, body, thread in [("alice", "bob", "one", "t1"),
                                         ("bob", "alice", "two", "t1"),
                                         ("alice", "carol", "three", None)]:
            args = ["send", "--as", sender, "--to", to, body] + self.sock
            if thread:
                args += ["--thread", thread]
            _, err, code = yield run_cli(args)
            self.assertEqual(code, 0, err)
        db = ["--db", self.daemon.db_path]
        out, err, code = yield run_cli(["history"] + db)
        self.assertEqual(code, 0, err)
        lines = out.splitlines()
        self.assertEqual(len(lines), 3, out)
        self.assertIn("alice -> bob [t1]: one", lines[0])
        # bob's own `relay send` connection got it delivered (not ACKed).
        self.assertRegex(lines[0], r"\[bob (pending|delivered)\]$")
        out, _, code = yield run_cli(["history", "--json", "--from", "alice"] + db)
        self.assertEqual([json.loads(l)["body"] for l in out.splitlines()], ["one", "three"])
        out, _, _ = yield run_cli(["history", "--json", "--to", "alice"] + db)
        self.assertEqual([json.loads(l)["body"] for l in out.splitlines()], ["two"])
        out, _, _ = yield run_cli(["history", "--json", "--thread", "t1", "--limit", "1"] + db)
        self.assertEqual([json.loads(l)["body"] for l in out.splitlines()], ["two"])
        out, _, _ = yield run_cli(["history", "--json", "--since", "2999-01-01"] + db)
        self.assertEqual(out, "")
        out, _, _ = yield run_cli(["history", "--json", "--since", "2000-01-01T00:00Z"] + db)
        self.assertEqual(len(out.splitlines()), 3)
        _, err, code = yield run_cli(["send", "--as", "alice", "--to", "bob", "four"]
                                     + self.sock)
        self.assertEqual(code, 0, err)


class ErrorTests(unittest.TestCase):
    """One-line errors and the documented exit codes, without a daemon."""

    @defer.inlineCallbacks
    def test_unreachable(self):
        """No daemon: send, listen, status and bench exit 3 with one line."""
        missing = os.path.join(tempfile.mkdtemp(prefix="relay-cli-"), "none.sock")
        for args in (["send", "--as", "a", "--to", "b", "x"], ["listen", "--as", "a"],
                     ["status"], ["bench", "--messages", "1"]):
            out, err, code = yield run_cli(args + ["--socket", missing])
            self.assertEqual(code, 3, (args, err))
            self.assertEqual(len(err.strip().splitlines()), 1, err)
            self.assertIn("none.sock", err)
        # $RELAY_SOCKET is honoured.
        _, err, code = yield run_cli(["status"], env={"RELAY_SOCKET": missing})
        self.assertEqual(code, 3)
        self.assertIn(missing, err)

    @defer.inlineCallbacks
    def test_bad_usage(self):
        """Bad names, endpoints, JSON, times or a missing store: one line, exit 2 or 3."""
        cases = [
            (["send", "--as", "bad name", "--to", "b", "x"], 2, "invalid agent name"),
            (["send", "--as", "a", "--to", "b", "--data", "[1]", "x"], 2, "JSON object"),
            (["send", "--as", "a", "--to", "b", "--connect", "bogus:x", "x"], 2,
             "bad endpoint"),
            (["listen", "--as", "a", "--count", "0"], 2, "--count"),
            (["history"], 2, "--db"),
            (["history", "--db", "/nonexistent/relay.sqlite"], 3, "no store"),
            (["history", "--db", "/dev/null", "--since", "soon"], 2, "ISO 8601"),
        ]
        for args, expected, text in cases:
            _, err, code = yield run_cli(args, env={"RELAY_DB": ""})
            self.assertEqual(code, expected, (args, err))
            self.assertIn(text, err)
            self.assertEqual(len(err.strip().splitlines()), 1, err)

    @defer.inlineCallbacks
    def test_not_a_store(self):
        """A SQLite file without the relay tables is refused with exit 1."""
        path = os.path.abspath(self.mktemp())
        sqlite3.connect(path).execute("CREATE TABLE other (x)").connection.commit()
        _, err, code = yield run_cli(["history", "--db", path])
        self.assertEqual(code, 1, err)
        self.assertIn("not a relay store", err)
