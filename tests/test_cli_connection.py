# -*- test-case-name: tests.test_cli_connection -*-
"""
Tests for L{relay.cli.connection}: the connection options the CLI commands
share, the endpoint they resolve to, and the token they read.  (C{run_job}
runs the global reactor; the real commands of C{tests.e2e.test_cli} prove it.)
"""

import argparse
import os
import pwd

from twisted.trial import unittest

from relay.cli import connection


class EndpointTests(unittest.TestCase):
    """
    --connect wins over --socket, which wins over $RELAY_SOCKET, which wins
    over the default socket.
    """

    def parse(self, *argv):
        parser = argparse.ArgumentParser()
        connection.add_connection_options(parser)
        return parser.parse_args(list(argv))

    def test_order(self):
        """
        Each source in turn, from the strongest.
        """
        env = {"RELAY_SOCKET": "/run/r.sock"}
        args = self.parse("--connect", "tcp:host=h:port=1")
        self.assertEqual(connection.endpoint_from_args(args, env), "tcp:host=h:port=1")
        args = self.parse("--socket", "/tmp/s.sock")
        self.assertEqual(connection.endpoint_from_args(args, env), "unix:/tmp/s.sock")
        args = self.parse()
        self.assertEqual(connection.endpoint_from_args(args, env), "unix:/run/r.sock")
        self.assertEqual(connection.endpoint_from_args(args, {}), "unix:/tmp/agent-relay.sock")

    def test_socket_and_connect_exclusive(self):
        """
        --socket and --connect together are a usage error.
        """
        self.assertRaises(SystemExit, self.parse, "--socket", "/a", "--connect", "unix:/b")

    def test_trust_user(self):
        """
        --trust-user takes a uid or a user name, and refuses an unknown user.
        """
        self.assertEqual(self.parse("--trust-user", "1234").trust_uid, 1234)
        self.assertEqual(self.parse("--trust-user", "root").trust_uid, pwd.getpwnam("root").pw_uid)
        self.assertRaises(argparse.ArgumentTypeError, connection.user_id, "no-such-user-xyz")


class TokenTests(unittest.TestCase):
    """
    The token comes from the first line of --token-file, else $RELAY_TOKEN.
    """

    def args(self, path=None):
        return argparse.Namespace(token_file=path)

    def test_file_first_line(self):
        """
        The first line of the file, without its line end, wins over the
        environment.
        """
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("tok-1\r\nsecond line\n")
        self.assertEqual(connection.token_from_args(self.args(path), {"RELAY_TOKEN": "e"}),
                         "tok-1")

    def test_environment_or_none(self):
        """
        Without a file, $RELAY_TOKEN, else None.
        """
        self.assertEqual(connection.token_from_args(self.args(), {"RELAY_TOKEN": "e"}), "e")
        self.assertIsNone(connection.token_from_args(self.args(), {}))

    def test_bad_files(self):
        """
        A missing or empty file is a one-line ValueError naming it.
        """
        missing = os.path.abspath(self.mktemp())
        e = self.assertRaises(ValueError, connection.token_from_args, self.args(missing), {})
        self.assertIn("cannot read --token-file " + missing, str(e))
        empty = self.mktemp()
        open(empty, "w").close()
        e = self.assertRaises(ValueError, connection.token_from_args, self.args(empty), {})
        self.assertIn("is empty", str(e))
