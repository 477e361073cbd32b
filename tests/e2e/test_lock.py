# -*- test-case-name: tests.e2e.test_lock -*-
"""
Tests for L{relay.lock}: a restart comes up over the Unix socket lock of a
dead or zombie holder, and never takes a live daemon's.
"""

import os
import subprocess
import sys

from twisted.internet import defer
from twisted.python.lockfile import FilesystemLock
from twisted.trial import unittest

from relay import lock
from tests.support.daemon import DaemonProcess, connect_agent, send

# A child that takes the lock the way Twisted's Unix listener does, says so,
# and exits: until its parent (this test) reaps it, it is a zombie whose pid
# still answers kill(pid, 0).
HOLDER = ("import sys; from twisted.python.lockfile import FilesystemLock;"
          "assert FilesystemLock(sys.argv[1]).lock(); print('locked', flush=True)")


def zombie_holder(testcase, path):
    """
    A real zombie process holding the lock at C{path}; reaped at cleanup.
    """
    child = subprocess.Popen([sys.executable, "-c", HOLDER, path], stdout=subprocess.PIPE)
    testcase.assertEqual(child.stdout.readline(), b"locked\n")
    child.stdout.close()
    # Wait until it has exited, without reaping it (WNOWAIT).
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)
    testcase.addCleanup(child.wait)
    testcase.assertEqual(lock.process_state(child.pid), lock.ZOMBIE)
    return child


class FakeClock:
    def __init__(self):
        self.now = 0.0
        self.sleeps = []

    def monotonic(self):
        return self.now

    def sleep(self, secs):
        self.sleeps.append(secs)
        self.now += secs


class LockPathTests(unittest.TestCase):

    def test_lock_path(self):
        """
        The lock file is the socket path plus C{.lock}, only for Unix
        listeners with C{lockfile=1}.
        """
        self.assertEqual(lock.lock_path("unix:/tmp/a.sock:mode=600:lockfile=1"), "/tmp/a.sock.lock")
        self.assertEqual(lock.lock_path("unix:address=/tmp/b:lockfile=1"), "/tmp/b.lock")
        self.assertIsNone(lock.lock_path("unix:/tmp/a.sock:mode=600:lockfile=0"))
        self.assertIsNone(lock.lock_path("unix:/tmp/a.sock"))
        self.assertIsNone(lock.lock_path("tcp:7777"))


class BreakStaleLockTests(unittest.TestCase):

    def setUp(self):
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)
        self.path = os.path.join(self.dir, "r.sock.lock")
        self.clock = FakeClock()

    def brk(self, **kw):
        return lock.break_stale_lock(self.path, sleep=self.clock.sleep,
                                     monotonic=self.clock.monotonic, **kw)

    def test_no_lock(self):
        """
        Without a lock file nothing happens.
        """
        self.assertEqual(self.brk(), "free")
        self.assertEqual(self.clock.sleeps, [])

    def test_zombie_holder(self):
        """
        The lock of a real zombie (exited, not reaped) is removed at once,
        and FilesystemLock can then take it; it could not before.
        """
        zombie_holder(self, self.path)
        self.assertFalse(FilesystemLock(self.path).lock())
        self.assertEqual(self.brk(), "broken")
        self.assertEqual(self.clock.sleeps, [])
        self.assertTrue(FilesystemLock(self.path).lock())

    def test_dead_holder_left_to_filesystemlock(self):
        """
        A holder that is gone (reaped) is FilesystemLock's own business:
        the lock is reported free and left for it to clean.
        """
        child = zombie_holder(self, self.path)
        child.wait()
        self.assertEqual(self.brk(), "free")
        self.assertTrue(FilesystemLock(self.path).lock())

    def test_live_holder_never_taken(self):
        """
        A live holder's lock is left alone after waiting C{wait} seconds on
        the injected clock.
        """
        os.symlink(str(os.getpid()), self.path)
        self.assertEqual(self.brk(wait=1.0), "held")
        self.assertEqual(os.readlink(self.path), str(os.getpid()))
        self.assertAlmostEqual(sum(self.clock.sleeps), 1.0)
        self.assertFalse(FilesystemLock(self.path).lock())

    def test_holder_going_away(self):
        """
        A holder alive at first and exiting during the wait: the lock is
        taken once it is a zombie.
        """
        os.symlink("4242", self.path)
        states = iter([lock.ALIVE, lock.ALIVE, lock.ZOMBIE])
        self.assertEqual(self.brk(state=lambda pid: next(states)), "broken")
        self.assertEqual(len(self.clock.sleeps), 2)
        self.assertFalse(os.path.lexists(self.path))

    def test_not_a_pid(self):
        """
        A lock whose target is not a pid is not ours to remove.
        """
        os.symlink("garbage", self.path)
        self.assertEqual(self.brk(), "held")
        self.assertTrue(os.path.lexists(self.path))

    def test_process_state(self):
        """
        This process is alive; a pid that does not exist is gone.
        """
        self.assertEqual(lock.process_state(os.getpid()), lock.ALIVE)
        child = subprocess.Popen([sys.executable, "-c", "pass"])
        child.wait()
        self.assertEqual(lock.process_state(child.pid), lock.GONE)


class RestartTests(unittest.TestCase):

    @defer.inlineCallbacks
    def test_daemon_starts_over_zombie_lock(self):
        """
        The real daemon starts on a socket whose lock is held by a zombie
        (and whose socket file was left behind), and serves: before this
        it exited with "Cannot acquire lock".
        """
        daemon = DaemonProcess(self, ["--batch-delay-ms", "10"])
        yield daemon.start()
        yield daemon.kill()
        # The killed daemon was reaped by the reactor; put a real zombie in
        # its place, as a supervisor that reaps late would leave it.
        lock_file = daemon.socket_path + ".lock"
        self.assertTrue(os.path.exists(daemon.socket_path))
        if os.path.lexists(lock_file):
            os.remove(lock_file)
        zombie_holder(self, lock_file)
        yield daemon.start()
        agent = yield connect_agent(daemon, "alice")
        agent.send(send("alice", "after the zombie", requires_ack=True))
        yield agent.wait_type("ACK")
        yield daemon.stop()
        self.assertIn("flushed and closed", daemon.output())

    @defer.inlineCallbacks
    def test_live_daemon_lock_not_taken(self):
        """
        A second daemon on the socket of a live one still fails (after the
        brief wait) and the first keeps its lock and serves.
        """
        first = DaemonProcess(self, ["--batch-delay-ms", "10"])
        yield first.start()
        self.addCleanup(first.stop)
        lock_file = first.socket_path + ".lock"
        self.assertEqual(os.readlink(lock_file), str(first.pid))
        second = DaemonProcess(self, ["--batch-delay-ms", "10"])
        second.socket_path = first.socket_path
        # The first daemon's socket accepts, so start() may return at once:
        # wait for the second process itself to end.
        try:
            yield second.start()
        except AssertionError:
            pass
        yield second.proto.ended
        self.assertIn("Cannot acquire lock", second.output())
        self.assertEqual(second.exit_code, 1)
        self.assertEqual(os.readlink(lock_file), str(first.pid))
        agent = yield connect_agent(first, "bob")
        agent.send(send("bob", "still here", requires_ack=True))
        yield agent.wait_type("ACK")
