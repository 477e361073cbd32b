# -*- test-case-name: tests.test_web -*-
"""
Unit tests of L{relay.web}: the C{--http} option checks and the history
filters of C{/api/messages}.  The stream, metrics, health and event hub
have their own modules (tests.test_web_sse, test_web_metrics,
test_web_resources, test_events); the end-to-end tests are in
tests.e2e.test_web.
"""

from twisted.python import usage
from twisted.trial import unittest

from relay.tap import Options
from relay.web import is_loopback


class OptionTests(unittest.TestCase):

    def parse(self, *args):
        options = Options()
        options.parseOptions(list(args))
        return options

    def test_http_repeatable_off_by_default(self):
        """
        --http is off by default and may be given more than once.
        """
        self.assertEqual(self.parse()["http"], [])
        self.assertEqual(self.parse("--http", "tcp:8765:interface=127.0.0.1",
                                    "--http", "unix:/tmp/x.sock")["http"],
                         ["tcp:8765:interface=127.0.0.1", "unix:/tmp/x.sock"])

    def test_network_needs_auth(self):
        """
        An --http endpoint reachable from the network needs --auth.
        """
        for endpoint in ("tcp:8765", "tcp:8765:interface=0.0.0.0", "tcp:8765:interface=\\:\\:",
                         "tcp:8765:interface=10.1.2.3"):
            e = self.assertRaises(usage.UsageError, self.parse, "--http", endpoint)
            self.assertIn("reachable from the network: give --auth", str(e))
            self.parse("--http", endpoint, "--auth", "memory:alice:pw", "--trust-unix-peers")

    def test_bad_endpoint(self):
        """
        An --http endpoint that does not parse is a usage error naming it.
        """
        e = self.assertRaises(usage.UsageError, self.parse, "--http", "tcp:notaport")
        self.assertIn("bad --http endpoint 'tcp:notaport'", str(e))

    def test_loopback(self):
        """
        Loopback interfaces and Unix sockets count as local; others not.
        """
        for endpoint, expected in [
                ("tcp:1:interface=127.0.0.1", True), ("tcp:1:interface=127.5.0.1", True),
                ("tcp:1:interface=\\:\\:1", True), ("tcp:1:interface=localhost", True),
                ("unix:/tmp/s", True), ("tcp:1", False), ("tcp:1:interface=0.0.0.0", False),
                ("tcp:1:interface=192.168.1.2", False), ("tcp:1:interface=example.com", False)]:
            self.assertEqual(is_loopback(endpoint), expected, endpoint)
