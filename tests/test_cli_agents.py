# -*- test-case-name: tests.test_cli_agents -*-
"""
Tests for L{relay.cli.agents}' output (the command itself runs against
real daemons in L{tests.e2e.test_federation}).
"""

from twisted.trial import unittest

from relay.cli.agents import format_agents
from relay.cli.status import format_federation

ME = "11111111-0000-4000-8000-000000000001"
OTHER = "22222222-0000-4000-8000-000000000002"


class FormatTests(unittest.TestCase):

    def fed(self, directory, size=None):
        return {"daemon_id": ME, "state": "connected", "directory": directory,
                "directory_size": len(directory) if size is None else size}

    def test_table(self):
        """
        One row per name: its home ("here" for this daemon), online or
        offline, and since when; control characters in a name are escaped.
        """
        lines = format_agents(self.fed([
            {"name": "alice", "home": ME, "online": True, "since_ms": 100000, "version": 1},
            {"name": "b\x1b[2Jb", "home": OTHER, "online": False, "since_ms": 40000,
             "version": 2}]), now=160.0)
        self.assertEqual(lines[0], "2 agents in the workspace directory (daemon %s, connected)"
                         % (ME,))
        self.assertEqual(lines[1].split(), ["NAME", "HOME", "STATE", "SINCE"])
        self.assertEqual(lines[2].split(), ["alice", "here", "online", "1m00s", "ago"])
        self.assertEqual(lines[3].split(), ["b\\x1b[2Jb", OTHER, "offline", "2m00s", "ago"])

    def test_more_than_shown(self):
        lines = format_agents(self.fed([{"name": "a", "home": ME, "online": True,
                                         "since_ms": None, "version": 1}], size=5000), now=0)
        self.assertEqual(lines[-1], "(first 1 shown)")

    def test_status_lines(self):
        self.assertEqual(format_federation(None), ["federation: off"])
        lines = format_federation({"state": "unreachable", "daemon_id": ME,
                                   "ingest": "http://i", "connected": False,
                                   "last_error": "timeout", "inbound_cursor": 3,
                                   "received": 4, "handed_over": 5, "waiting_handover": 6,
                                   "directory_size": 7, "directory_version": 8})
        self.assertEqual(lines[0], "federation: unreachable as daemon %s through http://i "
                                   "(not connected: timeout)" % (ME,))
        self.assertEqual(lines[1], "  inbound cursor 3, received 4, handed over 5, waiting for "
                                   "hand-over 6, directory 7 names (version 8)")
