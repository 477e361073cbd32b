# -*- test-case-name: tests.e2e.test_cli_listen -*-
"""
End-to-end tests of C{relay listen} (L{relay.cli.listen}) against the real daemon.
"""

import json

from twisted.internet import defer
from twisted.trial import unittest

from tests.support.cli import run_cli, spawn_cli, wait_for
from tests.support.daemon import DaemonProcess


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
