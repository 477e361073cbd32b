# -*- test-case-name: tests.test_startup -*-
"""
Tests for L{relay.startup}: the checks the daemon makes about the files it
is about to own (socket paths, the store file, the C{twistd -u/-g} owner).
"""

import os
import shutil
import socket
import stat
import tempfile

from twisted.trial import unittest

from relay import startup


class SocketOwnerTests(unittest.TestCase):
    """
    L{startup.check_socket_path} refuses a socket path, or its lock file, that
    belongs to another user, with a one-line reason.
    """

    def setUp(self):
        # A short directory: a Unix socket path holds at most 107 bytes.
        self.directory = tempfile.mkdtemp(prefix="relay-startup-")
        self.addCleanup(shutil.rmtree, self.directory, True)
        self.path = os.path.join(self.directory, "r.sock")

    def test_missing_or_ours(self):
        """
        A path that does not exist, or that is ours, is fine.
        """
        startup.check_socket_path(self.path)
        open(self.path, "w").close()
        startup.check_socket_path(self.path)

    def test_other_users_socket(self):
        """
        A socket file of uid 65534 (nobody) is refused, naming the path and
        the owner, in one line.
        """
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(listener.close)
        listener.bind(self.path)
        os.chown(self.path, 65534, -1)
        e = self.assertRaises(SystemExit, startup.check_socket_path, self.path)
        self.assertIn("refusing to listen on %s" % (self.path,), str(e))
        self.assertIn("uid 65534", str(e))
        self.assertNotIn("\n", str(e))

    def test_other_users_lock(self):
        """
        The lock file next to the socket counts too: another user holding
        it could keep the daemon from replacing a socket it put there.
        """
        os.symlink("12345", self.path + ".lock")
        os.lchown(self.path + ".lock", 65534, -1)
        e = self.assertRaises(SystemExit, startup.check_socket_path, self.path)
        self.assertIn(".lock", str(e))

    def test_uid_injectable(self):
        """
        The expected uid can be given: our own file is then another user's.
        """
        open(self.path, "w").close()
        self.assertRaises(SystemExit, startup.check_socket_path, self.path, uid=os.geteuid() + 1)


class PrivateStoreTests(unittest.TestCase):
    """
    L{startup.private_store} creates a missing store 0600 whatever the umask,
    and warns about (without changing) an existing one others can read.
    """

    def test_created_owner_only(self):
        """
        With a umask of 0 the new, empty store file is still 0600.
        """
        path = os.path.abspath(self.mktemp())
        old = os.umask(0)
        try:
            startup.private_store(path)
        finally:
            os.umask(old)
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        self.assertEqual(os.path.getsize(path), 0)

    def test_existing_readable_warned(self):
        """
        An existing 0644 store is left 0644, and one warning names it.
        """
        from twisted.logger import Logger
        path = os.path.abspath(self.mktemp())
        with open(path, "wb") as f:
            f.write(b"data")
        os.chmod(path, 0o644)
        events = []
        startup.private_store(path, Logger(observer=events.append))
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o644)
        self.assertEqual(len(events), 1)
        self.assertEqual(events[0]["path"], path)
        with open(path, "rb") as f:
            self.assertEqual(f.read(), b"data")
