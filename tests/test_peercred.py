# -*- test-case-name: tests.test_peercred -*-
"""
Tests for L{relay.peercred}: the credentials of a Unix socket's peer.
"""

import os
import socket

from twisted.internet.address import UNIXAddress
from twisted.internet.testing import StringTransport
from twisted.trial import unittest

from relay import peercred

SECRET = "s3cret-token-value"


class PeerCredTests(unittest.TestCase):

    def test_socketpair(self):
        """
        C{SO_PEERCRED} of a real Unix socket gives this process's pid, uid
        and gid; a TCP peer has none.
        """
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(a.close)
        self.addCleanup(b.close)

        class T:
            def getPeer(self):
                return UNIXAddress(None)

            def getHandle(self):
                return a
        self.assertEqual(peercred.peer_credentials(T()),
                         {"pid": os.getpid(), "uid": os.getuid(), "gid": os.getgid()})
        self.assertIsNone(peercred.peer_credentials(StringTransport()))
