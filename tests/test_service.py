# -*- test-case-name: tests.test_service -*-
"""
Tests for L{relay.service.RelayService}: the store opens before anything
listens, a failure to open or to bind stops startup with one line, and
stopping flushes and closes the store.  (The real C{twistd} runs of
C{tests.e2e.test_tap.CommandLineTests} prove the same through the process.)
"""

import os
import shutil
import tempfile

from twisted.internet import defer
from twisted.logger import Logger
from twisted.trial import unittest

from relay import service, tap
from relay.startup import StartupError


class RelayServiceTests(unittest.TestCase):
    """
    L{service.RelayService} built by L{tap.makeService} from real options,
    on a real store file and real Unix listeners.
    """

    def setUp(self):
        # A short directory: a Unix socket path holds at most 107 bytes.
        self.directory = tempfile.mkdtemp(prefix="relay-service-")
        self.addCleanup(shutil.rmtree, self.directory, True)
        self.db = os.path.join(self.directory, "relay.sqlite")
        self.events = []
        self.patch(service.RelayService, "log", Logger(observer=self.events.append))

    def make(self, *args):
        o = tap.Options()
        o.parseOptions(["--db", self.db] + list(args))
        top = tap.makeService(o)
        self.assertIsInstance(top, service.RelayService)
        return top

    def test_store_failure_is_one_line(self):
        """
        A store that cannot be opened stops startup with SystemExit and a
        one-line reason naming the file.
        """
        o = tap.Options()
        o.parseOptions(["--listen", "unix:%s" % (os.path.abspath(self.mktemp()),),
                        "--db", "/nonexistent-dir/relay.sqlite"])
        top = tap.makeService(o)
        e = self.assertRaises(SystemExit, top.startService)
        self.assertIn("relay: cannot open store /nonexistent-dir/relay.sqlite", str(e))
        self.assertNotIn("\n", str(e))
        self.assertFalse(top.running)

    def test_bind_failure_is_one_line(self):
        """
        A listener that cannot bind stops startup with a L{StartupError}
        naming its endpoint, in one line.
        """
        top = self.make("--listen", "unix:/nonexistent-dir/r.sock")
        e = self.assertRaises(StartupError, top.privilegedStartService)
        self.assertIn("relay: cannot listen on unix:/nonexistent-dir/r.sock", str(e))
        self.assertNotIn("\n", str(e))
        self.assertEqual(e.code.__class__, str)

    def test_other_users_socket_refused_before_binding(self):
        """
        A socket path left by another user is refused before any listener
        binds (the first, good, listener is not bound either).
        """
        good = os.path.join(self.directory, "good.sock")
        bad = os.path.join(self.directory, "bad.sock")
        open(bad, "w").close()
        os.chown(bad, 65534, -1)
        top = self.make("--listen", "unix:" + good, "--listen", "unix:" + bad)
        e = self.assertRaises(StartupError, top.privilegedStartService)
        self.assertIn("refusing to listen on " + bad, str(e))
        self.assertFalse(os.path.exists(good))

    @defer.inlineCallbacks
    def test_start_then_stop_flushes_and_closes(self):
        """
        Started, the service has created the store 0600 and bound its
        socket; stopped, it unbinds and logs that the store was flushed
        and closed.
        """
        sock = os.path.join(self.directory, "r.sock")
        top = self.make("--listen", "unix:" + sock)
        top.privilegedStartService()
        top.startService()
        self.assertTrue(top.running)
        self.assertTrue(os.path.exists(sock))
        self.assertEqual(os.stat(self.db).st_mode & 0o777, 0o600)
        yield top.stopService()
        self.assertFalse(top.running)
        self.assertFalse(os.path.exists(sock))
        texts = [e.get("log_format", "") for e in self.events]
        self.assertTrue(any("messages so far" in t for t in texts), texts)
        self.assertTrue(any("flushed and closed" in t for t in texts), texts)
