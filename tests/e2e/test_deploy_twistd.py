"""
Classic twistd daemons, end to end through real processes: daemonized (no
C{-n}) with C{--pidfile} and C{--logfile}, dropping privileges with
C{-u nobody -g nogroup} after the listeners are bound.
"""

import grp
import json
import os
import pwd
import shutil
import signal
import sqlite3
import tempfile

from twisted.internet import defer, reactor, utils
from twisted.trial import unittest

from tests.support.daemon import REPO, TWISTD, connect_agent, send
from tests.support.deploy import launch


def _unavailable():
    if os.geteuid() != 0:
        return "needs root to switch to nobody/nogroup"
    try:
        pwd.getpwnam("nobody")
        grp.getgrnam("nogroup")
    except KeyError:
        return "no user nobody or group nogroup"
    if not os.path.exists("/proc/self"):
        return "the subreaper launcher needs Linux"
    return None


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class ClassicDaemonTests(unittest.TestCase):
    """
    C{twistd --pidfile P --logfile L -u nobody -g nogroup relay ...}.
    """

    timeout = 120

    def setUp(self):
        # Short paths (Unix socket names are limited), every directory on
        # the way readable by nobody.
        self.top = tempfile.mkdtemp(prefix="relay-d-")
        self.addCleanup(shutil.rmtree, self.top, True)
        os.chmod(self.top, 0o755)
        self.run_dir = os.path.join(self.top, "run")     # socket and pid file
        self.state = os.path.join(self.top, "state")     # the store
        os.mkdir(self.run_dir)
        os.mkdir(self.state)
        self.nobody = pwd.getpwnam("nobody").pw_uid
        self.nogroup = grp.getgrnam("nogroup").gr_gid
        os.chown(self.run_dir, self.nobody, self.nogroup)
        self.pidfile = os.path.join(self.run_dir, "relay.pid")
        self.logfile = os.path.join(self.top, "relay.log")
        self.socket = os.path.join(self.run_dir, "r.sock")
        self.db = os.path.join(self.state, "relay.sqlite")

    def launch(self):
        launcher = launch(self.command(), self.pidfile, self.top)

        def cleanup():
            self._kill_leftover()
            if not launcher.ended.called:
                launcher.transport.signalProcess("KILL")
            return launcher.ended
        self.addCleanup(cleanup)
        return launcher

    def command(self):
        return [TWISTD, "--pidfile", self.pidfile, "--logfile", self.logfile,
                "-u", "nobody", "-g", "nogroup",
                "relay", "--listen", "unix:%s:mode=600" % (self.socket,), "--db", self.db,
                # A message stays in the open batch until SIGTERM flushes it.
                "--batch-delay-ms", "600000", "--batch-size", "100000"]

    def _kill_leftover(self):
        try:
            with open(self.pidfile) as f:
                pid = int(f.read().strip())
        except (OSError, ValueError):
            return
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)

    def log(self):
        with open(self.logfile, encoding="utf-8", errors="replace") as f:
            return f.read()

    @defer.inlineCallbacks
    def test_daemon_drops_privileges_and_term_flushes(self):
        """
        The daemonized relay binds its socket as root, then runs as nobody:
        the socket, its lock and the store belong to nobody/nogroup and the
        process' uid and gid are nobody's.  A second daemon on the same pid
        file refuses with Twisted's message.  C{kill -TERM $(cat pidfile)}
        flushes a message that was still in the open batch (it is in the
        store afterwards), the log says so, the pid file and the socket are
        removed, and the daemon exits 0.
        """
        os.chown(self.state, self.nobody, self.nogroup)
        launcher = self.launch()
        rc = yield launcher.wait_for("launcher-rc")
        self.assertEqual(rc, 0, launcher.stderr() + "\n".join(launcher.lines))
        pid = yield launcher.wait_for("daemon-pid")
        with open("/proc/%d/status" % (pid,)) as f:
            status = dict(line.split(":", 1) for line in f.read().splitlines() if ":" in line)
        self.assertEqual(int(status["Uid"].split()[0]), self.nobody)
        self.assertEqual(int(status["Gid"].split()[0]), self.nogroup)
        for path, follow in [(self.socket, True), (self.socket + ".lock", False),
                             (self.db, True)]:
            st = os.stat(path) if follow else os.lstat(path)
            self.assertEqual((st.st_uid, st.st_gid), (self.nobody, self.nogroup), path)
        self.assertEqual(os.stat(self.socket).st_mode & 0o777, 0o600)

        # A second daemon on the same pid file: Twisted's refusal, exit 1.
        out, err, code = yield utils.getProcessOutputAndValue(
            TWISTD, self.command()[1:], env=dict(os.environ, PYTHONPATH=REPO),
            path=self.top, reactor=reactor)
        output = (out + err).decode("utf-8", "replace")
        self.assertEqual(code, 1, output)
        self.assertIn("Another twistd server is running, PID %d" % (pid,), output)
        self.assertTrue(_alive(pid))

        bob = yield connect_agent("unix:" + self.socket, "bob")
        alice = yield connect_agent("unix:" + self.socket, "alice")
        alice.send(send("bob", "before the TERM"))
        yield bob.wait_type("DELIVER")
        self.assertEqual(bob.of_type("DELIVER")[0]["payload"]["body"], "before the TERM")

        with open(self.pidfile) as f:
            os.kill(int(f.read().strip()), signal.SIGTERM)
        code = yield launcher.wait_for("daemon-exit")
        self.assertEqual(code, 0, repr(launcher.lines) + self.log())
        log = self.log()
        self.assertIn("flushed and closed", log)
        self.assertIn("Server Shut Down", log)
        self.assertNotIn("Traceback", log)
        self.assertFalse(os.path.exists(self.pidfile))
        self.assertFalse(os.path.exists(self.socket))
        db = sqlite3.connect(self.db)
        try:
            rows = [(sender, recipient, json.loads(payload)["body"]) for sender, recipient, payload
                    in db.execute("SELECT sender, recipient, payload FROM messages")]
        finally:
            db.close()
        self.assertEqual(rows, [("alice", "bob", "before the TERM")])

    @defer.inlineCallbacks
    def test_unwritable_store_is_one_line_error(self):
        """
        A store in a directory nobody cannot write: the command that
        started the daemon exits 1 at once (it does not wait for a child
        that is gone) with Twisted's report naming the store, the log file
        holds the reason on one line and no traceback, no daemon is left
        and the pid file is removed.
        """
        launcher = self.launch()
        rc = yield launcher.wait_for("launcher-rc")
        self.assertEqual(rc, 1, launcher.stderr())
        self.assertIn("cannot open store", launcher.stderr())
        self.assertIn("An error has occurred", launcher.stderr())
        yield launcher.ended
        lines = [line for line in self.log().splitlines() if "cannot open store" in line]
        self.assertEqual(len(lines), 1, self.log())
        self.assertIn("relay: cannot open store %s" % (self.db,), lines[0])
        self.assertNotIn("Traceback", self.log())
        self.assertFalse(os.path.exists(self.pidfile))
        self.assertFalse(os.path.exists(self.db))


_reason = _unavailable()
if _reason is not None:
    ClassicDaemonTests.skip = _reason
