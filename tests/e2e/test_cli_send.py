# -*- test-case-name: tests.e2e.test_cli_send -*-
"""
End-to-end tests of C{relay send} (L{relay.cli.send}) against the real daemon.
"""

from twisted.internet import defer
from twisted.trial import unittest

from tests.support.cli import run_cli
from tests.support.daemon import DaemonProcess


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
