# -*- test-case-name: tests.test_peercred -*-
"""
Tests for L{relay.peercred}: the credentials of a Unix socket's peer.
"""

import os
import socket

from twisted.internet.address import UNIXAddress
from twisted.internet.testing import StringTransport
from twisted.trial import unittest

from relay import auth, peercred

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

    def test_certificate_names(self):
        """
        CN and SANs (DNS, e-mail, URI) are the names a certificate gives.
        """
        from tests.support.tls import make_pki
        pki = make_pki(self.mktemp(), client_names=("alice",), client_sans=("alice-2",))
        from OpenSSL import crypto
        with open(pki.client_cert["alice"], "rb") as f:
            cert = crypto.load_certificate(crypto.FILETYPE_PEM, f.read())
        self.assertEqual(auth.certificate_names(cert), {"alice", "alice-2"})
        self.assertEqual(auth.certificate_names(None), set())
