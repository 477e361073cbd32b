# -*- test-case-name: tests.e2e.test_cli_bench -*-
"""
End-to-end tests of C{relay bench} (L{relay.cli.bench}) against the real
daemon.
"""

import json

from twisted.internet import defer
from twisted.trial import unittest

from tests.support.cli import DaemonMixin, run_cli


class BenchCommandTests(DaemonMixin, unittest.TestCase):
    """relay bench against one running daemon."""

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
