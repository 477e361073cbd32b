"""
C{twistd -ny etc/relay.tac}: the classic application file runs the same
daemon as C{twistd relay}, end to end through the real process.
"""

import json
import os
import sqlite3

from twisted.internet import defer, reactor, utils
from twisted.trial import unittest

from tests.support.daemon import REPO, TWISTD, DaemonProcess, send, send_receipted

TAC = os.path.join(REPO, "etc", "relay.tac")


class TacDaemon(DaemonProcess):
    """
    L{DaemonProcess}, started from the .tac file with its options in
    C{RELAY_OPTIONS}.
    """

    def __init__(self, testcase, options=()):
        DaemonProcess.__init__(self, testcase)
        self.env["RELAY_OPTIONS"] = " ".join(
            ["--listen", "unix:%s:mode=600" % (self.socket_path,), "--db", self.db_path]
            + list(options))

    def args(self):
        return [TWISTD, "--pidfile=", "-ny", TAC]


class TacTests(unittest.TestCase):
    """
    The .tac file builds its application with C{relay.tap.makeService}.
    """

    timeout = 60

    @defer.inlineCallbacks
    def test_tac_runs_the_daemon(self):
        """
        Started from the .tac with options from RELAY_OPTIONS, the daemon
        listens where told, receipts a message only once it is stored in
        the given store (the group-commit option passed through is
        honoured), and SIGTERM flushes and exits 0.
        """
        daemon = TacDaemon(self, ["--batch-delay-ms", "5"])
        yield daemon.start()
        self.assertTrue(os.path.exists(daemon.db_path))
        yield send_receipted(daemon, "alice", [send("bob", "from the tac", requires_ack=True)])
        yield daemon.stop()
        self.assertEqual(daemon.exit_code, 0, daemon.output())
        self.assertIn("flushed and closed", daemon.output())
        db = sqlite3.connect(daemon.db_path)
        try:
            bodies = [json.loads(p)["body"] for (p,) in db.execute("SELECT payload FROM messages")]
        finally:
            db.close()
        self.assertEqual(bodies, ["from the tac"])

    @defer.inlineCallbacks
    def test_tac_bad_option_is_one_line(self):
        """
        A bad option in RELAY_OPTIONS stops C{twistd -ny etc/relay.tac} with
        the option's one-line message and a non-zero status.
        """
        env = dict(os.environ, PYTHONPATH=REPO, RELAY_OPTIONS="--heartbeat-ms -5")
        out, err, code = yield utils.getProcessOutputAndValue(
            TWISTD, ["--pidfile=", "-ny", TAC], env=env, path=REPO,
            reactor=reactor)
        output = (out + err).decode("utf-8", "replace")
        self.assertNotEqual(code, 0, output)
        lines = [line for line in output.splitlines() if "--heartbeat-ms must be positive" in line]
        self.assertEqual(len(lines), 1, output)
        self.assertIn("relay.tac:", lines[0])
        self.assertNotIn("Traceback", output)
