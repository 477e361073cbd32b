# -*- test-case-name: tests.test_client_errors -*-
"""
Tests for L{relay.client.errors}: one-line reasons for a failed connection.
"""

import errno

from twisted.internet import error
from twisted.trial import unittest

from relay.client.errors import ConnectFailed, RelayClientError, describe_connect_failure


class DescribeConnectFailureTests(unittest.TestCase):
    """Each kind of connection failure gets its reason and one line naming the endpoint."""

    def check(self, failure_value, reason, words):
        e = describe_connect_failure(failure_value, "unix:/tmp/x.sock")
        self.assertIsInstance(e, ConnectFailed)
        self.assertIsInstance(e, RelayClientError)
        self.assertEqual(e.reason, reason)
        self.assertIn("unix:/tmp/x.sock", str(e))
        self.assertIn(words, str(e))
        self.assertNotIn("\n", str(e))

    def test_refused(self):
        """A refused connection asks whether the daemon runs."""
        self.check(error.ConnectionRefusedError(), "refused", "is the daemon running")

    def test_missing_socket(self):
        """No socket file: the daemon is not there."""
        self.check(error.ConnectError(osError=errno.ENOENT), "missing", "no daemon socket")

    def test_permission(self):
        """A socket of another user's mode 600."""
        self.check(error.ConnectError(osError=errno.EACCES), "permission", "permission denied")

    def test_timeout(self):
        """A connection that timed out."""
        self.check(error.TimeoutError(), "timeout", "timed out")

    def test_other(self):
        """Anything else keeps the original text."""
        self.check(ValueError("odd"), "other", "odd")
