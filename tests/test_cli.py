# -*- test-case-name: tests.test_cli -*-
"""
Unit tests of L{relay.cli}: the parser and the escaping of terminal control characters.
"""

import re

from twisted.trial import unittest

from relay.cli import build_parser, printable
from relay.cli.history import format_dead_letter
from relay.cli.history import format_message as format_stored
from relay.cli.listen import format_message as format_delivery
from relay.client.message import Message
from tests.support.cli import HOSTILE


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
