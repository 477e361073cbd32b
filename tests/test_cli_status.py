# -*- test-case-name: tests.test_cli_status -*-
"""
Unit tests of C{relay status}'s output (L{relay.cli.status}).
"""

from twisted.trial import unittest

from relay.cli.history import parse_since
from relay.cli.status import format_status


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
        self.assertNotIn("retention", text, "an older daemon's reply has no retention section")

    def test_retention_line(self):
        """
        The retention section is one line of what it deleted and when its
        last pass ran; None is shown as off, no pass yet as such.
        """
        base = {"uptime_s": 1.0, "agents": [], "sync": None}
        text = "\n".join(format_status(dict(base, retention={
            "deleted_messages": 12, "deleted_deliveries": 14, "deleted_dead_letters": 1,
            "deleted_quarantine": 2, "vacuumed_pages": 300, "last_run_at": 1000.0,
            "last_run_s": 0.0125}), "unix:/x", now=1090.0))
        self.assertIn("retention: deleted 12 messages, 14 deliveries, 1 dead letters, "
                      "2 quarantined; 300 pages vacuumed; last pass 1m30s ago, 12 ms", text)
        self.assertIn("retention: off", format_status(dict(base, retention=None), "u", 0))
        self.assertIn("last pass not yet", "\n".join(format_status(
            dict(base, retention={"last_run_at": None}), "u", 0)))
