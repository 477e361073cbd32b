# -*- test-case-name: tests.test_tls -*-
"""
Tests for L{relay.tls}: client certificates for C{ssl:} listeners.
"""

from twisted.python import usage
from twisted.trial import unittest

from relay import tls


class CertificateTests(unittest.TestCase):
    """The names a certificate gives, and loading the CA file."""

    def test_certificate_names(self):
        """
        CN and SANs (DNS, e-mail, URI) are the names a certificate gives.
        """
        from tests.support.tls import make_pki
        pki = make_pki(self.mktemp(), client_names=("alice",), client_sans=("alice-2",))
        from OpenSSL import crypto
        with open(pki.client_cert["alice"], "rb") as f:
            cert = crypto.load_certificate(crypto.FILETYPE_PEM, f.read())
        self.assertEqual(tls.certificate_names(cert), {"alice", "alice-2"})
        self.assertEqual(tls.certificate_names(None), set())

    def test_load_ca(self):
        """
        The CA file's certificates load; a missing file is a usage error
        naming the option.
        """
        from tests.support.tls import make_pki
        pki = make_pki(self.mktemp())
        self.assertEqual(len(tls.load_ca(pki.ca_cert)), 1)
        e = self.assertRaises(usage.UsageError, tls.load_ca, self.mktemp())
        self.assertIn("--tls-client-ca", str(e))
