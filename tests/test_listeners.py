# -*- test-case-name: tests.test_listeners -*-
"""
Tests for L{relay.listeners}: Unix socket defaults (mode 600, a lock
file) and the option-time check that a C{--listen} endpoint parses.
"""

from twisted.python import usage
from twisted.trial import unittest

from relay import listeners


class UnixAddressTests(unittest.TestCase):
    """
    L{listeners.unix_address} finds the socket path of a C{unix:} endpoint.
    """

    def test_forms(self):
        """
        The positional and the C{address=} spellings give the path; other
        endpoints and unparsable ones give C{(None, None)}.
        """
        self.assertEqual(listeners.unix_address("unix:/tmp/a.sock")[0], "/tmp/a.sock")
        path, kwargs = listeners.unix_address("unix:address=/tmp/b.sock:mode=660")
        self.assertEqual((path, kwargs["mode"]), ("/tmp/b.sock", "660"))
        self.assertEqual(listeners.unix_address("tcp:7777"), (None, None))
        self.assertEqual(listeners.unix_address("unix:a\\"), (None, None))


class UnixDefaultsTests(unittest.TestCase):
    """
    L{listeners.unix_defaults} adds C{mode=600} and C{lockfile=1} where
    they are not given, and leaves other endpoints alone.
    """

    def test_added(self):
        """
        Both are added to a bare Unix endpoint.
        """
        self.assertEqual(listeners.unix_defaults("unix:/tmp/a.sock"),
                         "unix:/tmp/a.sock:mode=600:lockfile=1")

    def test_given_kept(self):
        """
        A mode or lockfile given is kept as given, not doubled.
        """
        self.assertEqual(listeners.unix_defaults("unix:/tmp/a.sock:mode=660:lockfile=0"),
                         "unix:/tmp/a.sock:mode=660:lockfile=0")

    def test_other_endpoints(self):
        """
        TCP and TLS endpoints are returned unchanged.
        """
        for endpoint in ("tcp:7777:interface=127.0.0.1", "ssl:7778:privateKey=k.pem"):
            self.assertEqual(listeners.unix_defaults(endpoint), endpoint)

    def test_default_is_private(self):
        """
        The default endpoint is a Unix socket of mode 600.
        """
        self.assertEqual(listeners.unix_address(listeners.DEFAULT_LISTEN)[1]["mode"], "600")


class CheckEndpointTests(unittest.TestCase):
    """
    L{listeners.check_endpoint} parses without binding, and refuses with
    one line what does not parse.
    """

    def assertRefused(self, endpoint, words, environ=None):
        e = self.assertRaises(usage.UsageError, listeners.check_endpoint, endpoint, environ or {})
        self.assertIn(words, str(e))
        self.assertNotIn("\n", str(e))

    def test_good(self):
        """
        Good endpoints pass (nothing is bound: the port may be in use).
        """
        listeners.check_endpoint("tcp:0:interface=127.0.0.1", {})
        listeners.check_endpoint("unix:/nonexistent-dir/a.sock:mode=600", {})

    def test_unknown_type(self):
        """
        An unknown endpoint type is refused, naming the endpoint.
        """
        self.assertRefused("carrier-pigeon:42", "bad --listen endpoint 'carrier-pigeon:42'")

    def test_bad_port(self):
        """
        A port that is not a number is refused.
        """
        self.assertRefused("tcp:http-ish", "bad --listen endpoint")

    def test_missing_certificate(self):
        """
        An ssl: endpoint whose key file cannot be read is refused.
        """
        self.assertRefused("ssl:7778:privateKey=/nonexistent/k.pem", "bad --listen endpoint")

    def test_systemd_name_not_inherited(self):
        """
        A systemd endpoint naming a socket that was not passed in names
        what was passed (LISTEN_FDNAMES).
        """
        self.assertRefused("systemd:domain=UNIX:name=relay", "no inherited socket named",
                           environ={"LISTEN_FDNAMES": "other"})
