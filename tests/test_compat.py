# -*- test-case-name: tests.test_compat -*-
"""
L{relay.compat}: the ingest site behaves the same on the oldest and the
newest supported Twisted (C{.ci/run} runs this module on both).
"""

import orjson
import treq
from twisted import version as twisted_version
from twisted.internet import defer, endpoints, reactor
from twisted.trial import unittest
from twisted.web.resource import Resource

from relay import compat
from relay.ingest.web import IngestSite


class _Echo(Resource):
    isLeaf = True

    def render_POST(self, request):
        return orjson.dumps({
            "body": request.content.body().decode("latin-1"),
            "args": {k.decode("latin-1"): [v.decode("latin-1") for v in vs]
                     for k, vs in request.args.items()},
        })


class FormParsingTests(unittest.TestCase):
    """
    The ingest site never parses a POST body as a form, whatever Twisted.
    """

    def test_flag_matches_release(self):
        """
        C{site_takes_parse_post()} is true exactly from Twisted 25.5.0 on, the
        release that added C{Site(parsePOSTFormSubmission=...)}.
        """
        self.assertEqual(compat.site_takes_parse_post(),
                         (twisted_version.major, twisted_version.minor) >= (25, 5))
        expected = {"parsePOSTFormSubmission": False} if compat.site_takes_parse_post() else {}
        self.assertEqual(compat.site_without_form_parsing(), expected)

    @defer.inlineCallbacks
    def test_form_content_type_body_reaches_resource(self):
        """
        A POST sent as C{application/x-www-form-urlencoded} (what C{curl -d}
        sends by default) reaches the resource with its body whole and no
        form arguments taken out of it, through a real HTTP server.
        """
        site = IngestSite(_Echo(), max_body_bytes=10000, max_inflated_bytes=10000)
        port = yield endpoints.TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(site)
        self.addCleanup(port.stopListening)
        url = "http://127.0.0.1:%d/x?q=1" % (port.getHost().port,)
        body = b'a=1&b=2&{"batch": []}'
        response = yield treq.post(url, data=body, headers={
            b"Content-Type": [b"application/x-www-form-urlencoded"],
            b"Authorization": [b"Bearer rlk_test"]}, persistent=False)
        self.assertEqual(response.code, 200)
        answer = orjson.loads((yield response.content()))
        self.assertEqual(answer["body"], body.decode("latin-1"))
        # Only the query string is parsed, never the body.
        self.assertEqual(answer["args"], {"q": ["1"]})


class _Parent(dict):
    subCommand = "relay"


class UsageErrorTests(unittest.TestCase):
    """
    L{compat.ExitOnUsageError}: a bad option under twistd is one line and
    status 1 whatever the Twisted; alone, the options still raise.
    """

    def test_alone_raises_usage_error(self):
        """
        Parsed on their own (tests, the relay CLI), bad options raise
        L{usage.UsageError} as before.
        """
        from twisted.python import usage

        from relay import tap
        self.assertRaises(usage.UsageError, tap.Options().parseOptions, ["--heartbeat-ms", "-5"])

    def test_under_twistd_exits(self):
        """
        As a twistd sub-command (the options have a parent), a bad option is
        a L{SystemExit} carrying one line that names the plugin.
        """
        from relay import tap
        options = tap.Options()
        options.parent = _Parent()
        e = self.assertRaises(SystemExit, options.parseOptions, ["--heartbeat-ms", "-5"])
        self.assertEqual(str(e.code).splitlines(),
                         ["twistd relay: --heartbeat-ms must be positive, not -5"])


class OwnerTests(unittest.TestCase):
    """
    The (uid, gid) the daemon hands its Unix sockets to comes from twistd's
    own C{-u}/C{-g}.
    """

    def owner(self, parent):
        from relay import startup, tap
        options = tap.Options()
        if parent is not None:
            options.parent = parent
        return startup.twistd_owner(options)

    def test_no_switch(self):
        """
        No twistd parent, or neither C{-u} nor C{-g}: no owner, nothing is
        chowned.
        """
        self.assertIsNone(self.owner(None))
        self.assertIsNone(self.owner({"uid": None, "gid": None}))

    def test_uid_alone_takes_its_group(self):
        """
        C{-u} alone: the user's own group, as twistd itself then uses.
        """
        import pwd
        self.assertEqual(self.owner({"uid": 0, "gid": None}), (0, pwd.getpwuid(0).pw_gid))

    def test_gid_alone(self):
        """
        C{-g} alone: the group only (uid -1 leaves the owner as it is).
        """
        self.assertEqual(self.owner({"uid": None, "gid": 65534}), (-1, 65534))


class ExitSignalTests(unittest.TestCase):
    """
    L{compat.exit_zero_after_clean_stop} clears the signal twistd would
    re-raise.
    """

    def test_clears_exit_signal(self):
        """
        A reactor stopped by SIGTERM has C{_exitSignal} 15; after the call
        it is None (twistd then exits 0); a reactor without it is left
        alone.
        """
        from twisted.internet.testing import MemoryReactorClock

        stopped = MemoryReactorClock()
        stopped._exitSignal = 15
        compat.exit_zero_after_clean_stop(stopped)
        self.assertIsNone(stopped._exitSignal)
        plain = object()
        compat.exit_zero_after_clean_stop(plain)
        self.assertFalse(hasattr(plain, "_exitSignal"))

    def test_real_reactor_has_the_attribute(self):
        """
        The attribute twistd reads exists on this Twisted's reactor (the
        call would silently do nothing if a release renamed it).
        """
        from twisted.internet import reactor as real
        self.assertTrue(hasattr(real, "_exitSignal"))


class PemCertificatesTests(unittest.TestCase):
    """relay.compat.load_pem_certificates on either cryptography."""

    def _pem(self):
        from tests.support.tls import make_pki
        pki = make_pki(self.mktemp())
        with open(pki.ca_cert, "rb") as f:
            ca = f.read()
        with open(pki.server_cert, "rb") as f:
            server = f.read()
        return ca, server

    def test_every_certificate_loaded(self):
        """A file of two certificates gives both, in order, on both loaders."""
        from cryptography import x509
        ca, server = self._pem()
        want = [x509.load_pem_x509_certificate(ca), x509.load_pem_x509_certificate(server)]
        self.assertEqual(compat.load_pem_certificates(ca + server), want)
        # The fallback (cryptography < 39) gives the same.
        if hasattr(x509, "load_pem_x509_certificates"):
            self.patch(x509, "load_pem_x509_certificates", None)
        self.assertEqual(compat.load_pem_certificates(ca + server), want)

    def test_no_certificate(self):
        """Text without a certificate is a ValueError, for either loader."""
        from cryptography import x509
        self.assertRaises(ValueError, compat.load_pem_certificates, b"nothing here")
        if hasattr(x509, "load_pem_x509_certificates"):
            self.patch(x509, "load_pem_x509_certificates", None)
        self.assertRaises(ValueError, compat.load_pem_certificates, b"nothing here")
