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

from relay.cli import build_parser, printable
from relay.cli.history import format_dead_letter, parse_since
from relay.cli.history import format_message as format_stored
from relay.cli.listen import format_message as format_delivery
from relay.client.message import Message
from relay.cli.status import format_status
from relay.client import fetch_status
from tests.support.cli import run_cli, spawn_cli, wait_for
from tests.support.daemon import DaemonProcess


class HelpTests(unittest.TestCase):
    """Every command documents itself."""

    def test_help_has_examples_and_exit_codes(self):
        """Each sub-command's --help has examples and its exit codes."""
        parser = build_parser()
        actions = [a for a in parser._actions if a.dest == "command"]
        choices = actions[0].choices
        for name in ("send", "listen", "history", "status", "bench"):
            text = choices[name].format_help()
            self.assertIn("examples:", text, name)
            self.assertIn("exit codes:", text, name)


class FormatTests(unittest.TestCase):
    """Pure formatting and parsing helpers."""

    def test_since(self):
        """--since takes ISO 8601; without an offset it means UTC."""
        self.assertEqual(parse_since("1970-01-01T00:00:01"), 1000)
        self.assertEqual(parse_since("1970-01-01T01:00:00+01:00"), 0)
        self.assertEqual(parse_since("1970-01-01T00:00:00Z"), 0)
        self.assertRaises(ValueError, parse_since, "yesterday")

    def test_status_lines(self):
        """A STATUS_REPLY is shown with agents, store, rate limit and sync."""
        lines = format_status({
            "uptime_s": 125.0,
            "agents": [{"name": "bob", "session_id": "0123456789", "connected_at": 1000.0,
                        "queue_depth": 3, "inflight": 2, "backpressured": True,
                        "paused": [], "sent": 5, "delivered": 7}],
            "store": {"batches": 2, "rows": 10, "bytes": 2048,
                      "flushes_by_cause": {"size": 1, "time": 1}, "last_flush_ms": 1.5,
                      "pending_rows": 0},
            "rate_limit": {"enabled": True, "rate": 500, "burst": 1000,
                           "policy": "throttle", "throttled_agents": ["eve"]},
            "sync": None}, "unix:/x", now=1060.0)
        text = "\n".join(lines)
        self.assertIn("up 2m05s", text)
        self.assertIn("bob", text)
        self.assertIn("01234567", text)
        self.assertIn("1m00s", text)
        self.assertIn("backpressured", text)
        self.assertIn("2 batches, 10 rows, 2.0 KiB", text)
        self.assertIn("throttled: eve", text)
        self.assertIn("sync: off", text)


HOSTILE = "hi\x1b[2J\x1b]0;pwned\x07\x9b5A\u202eevil\rover\x00\ttab"


class PrintableTests(unittest.TestCase):
    """
    Human output shows terminal control characters as visible escapes;
    tab, newline and ordinary text (accents included) are kept.
    """

    def assertSafe(self, text):
        self.assertIsNone(re.search("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e]", text),
                          repr(text))

    def test_printable(self):
        """
        ESC, BEL, CR, NUL, DEL, 0x9b and U+202E become \\x.. or \\u....
        (the control characters in hex, even CR);
        the rest is unchanged.
        """
        self.assertEqual(printable(HOSTILE),
                         "hi\\x1b[2J\\x1b]0;pwned\\x07\\x9b5A\\u202eevil\\x0dover\\x00\ttab")
        self.assertEqual(printable("caf\u00e9\nline \u00fcber \\ ok"),
                         "caf\u00e9\nline \u00fcber \\ ok")
        self.assertEqual(printable("\x7f\u2066\ud800"), "\\x7f\\u2066\\ud800")

    def test_listen_format(self):
        """
        relay listen's line escapes the body, topic, thread, kind and
        sender, and still indents the body's own lines.
        """
        line = format_delivery(Message({
            "id": "m1", "from": "al\x1bice", "to": "bob", "topic": "t\x1b[1m",
            "ts": 0, "payload": {"kind": "x\x1b", "body": HOSTILE + "\nsecond",
                                 "thread": "th\x9b", "data": {"k": "\x1b"}}}))
        self.assertSafe(line)
        self.assertIn("\\x1b[2J", line)
        self.assertIn("\n    second", line)
        self.assertIn('"k": "\\u001b"', line)

    def test_history_format(self):
        """
        relay history's lines (messages and dead letters) escape every
        text field.
        """
        item = {"sender": "alice", "recipient": "bob", "topic": "\x1b]0;t\x07",
                "thread": "\u202e", "kind": "message", "body": HOSTILE, "time": "T",
                "deliveries": {"bob": "pending"}, "data": {"k": "\x9b"}}
        line = format_stored(item)
        self.assertSafe(line)
        self.assertIn("\\x1b[2J", line)
        dead = format_dead_letter(dict(item, dead_time="T", reason="refused \x1b[31m"))
        self.assertSafe(dead)
        self.assertIn("\\x1b[31m", dead)


class CommandTests(unittest.TestCase):
    """The commands against one running daemon."""

    @defer.inlineCallbacks
    def setUp(self):
        self.daemon = DaemonProcess(self)
        yield self.daemon.start()
        self.sock = ["--socket", self.daemon.socket_path]

    def tearDown(self):
        return self.daemon.stop()

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

    @defer.inlineCallbacks
    def test_bench(self):
        """relay bench runs the load generator against the daemon and exits 0
        when nothing was lost; without a terminal it prints plain progress lines."""
        out, err, code = yield run_cli(["bench", "--messages", "300", "--window", "50"]
                                       + self.sock)
        self.assertEqual(code, 0, err)
        self.assertIn("delivered/sent   300/300", out)
        self.assertIn("latency p99", out)
        self.assertIn("300/300 settled", err)
        self.assertNotIn("\r", err)
        out, err, code = yield run_cli(["bench", "--messages", "100", "--json"] + self.sock)
        self.assertEqual(code, 0, err)
        result = json.loads(out)
        self.assertEqual((result["delivered"], result["lost"]), (100, 0))


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


class NackExitTests(unittest.TestCase):
    """relay send exits 1 with the reason when the daemon refuses the message."""

    @defer.inlineCallbacks
    def test_nack(self):
        """Over the rate limit with the reject policy, send exits 1 saying BUSY."""
        daemon = DaemonProcess(self, extra_args=[
            "--rate-limit-policy", "reject", "--rate-limit", "0.01", "--rate-burst", "1"])
        yield daemon.start()
        sock = ["--socket", daemon.socket_path]
        codes = []
        for body in ("one", "two", "three"):
            _, err, code = yield run_cli(["send", "--as", "alice", "--to", "bob", body] + sock)
            codes.append(code)
        self.assertEqual(codes[0], 0)
        self.assertIn(1, codes, "no send was refused")
        self.assertIn("BUSY", err)
        yield daemon.stop()


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


class BrokenOutputTests(unittest.TestCase):
    """relay listen whose output goes away."""

    @defer.inlineCallbacks
    def test_broken_pipe_loses_nothing(self):
        """When listen's stdout is closed, it exits 1 saying so, and the message
        it could not print is not ACKed: the next listen gets it."""
        daemon = DaemonProcess(self)
        yield daemon.start()
        sock = ["--socket", daemon.socket_path]
        _, err, code = yield run_cli(["send", "--as", "alice", "--to", "bob", "first"] + sock)
        self.assertEqual(code, 0, err)
        listener = spawn_cli(["listen", "--as", "bob"] + sock)
        yield wait_for(lambda: b"first" in b"".join(listener.out))
        listener.transport.closeChildFD(1)
        _, err, code = yield run_cli(["send", "--as", "alice", "--to", "bob", "second"] + sock)
        self.assertEqual(code, 0, err)
        _, err, code = yield listener.ended
        self.assertEqual(code, 1, err)
        self.assertIn("cannot write the output", err)
        self.assertNotIn("Traceback", err)
        out, err, code = yield run_cli(["listen", "--as", "bob", "--count", "1", "--json"]
                                       + sock)
        self.assertEqual(code, 0, err)
        self.assertEqual(json.loads(out)["body"], "second")
        yield daemon.stop()


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
