"""
Tests for the C{relay keys} command (L{relay.cli.keys}) and the database
helpers of L{relay.ingest.keys} it calls, against the real PostgreSQL.
"""

import contextlib
import io
import uuid

import psycopg2
from twisted.trial import unittest

from relay.cli import main
from relay.ingest import keys
from tests.support.ingest import fetchAll, testDatabaseDSN, truncate

WS = "6f1d1c2e-8d8e-4a53-9a4b-0d5b3f3d6a01"


def run(*argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(list(argv))
    return rc, out.getvalue(), err.getvalue()


class KeysCommandTests(unittest.TestCase):
    """
    C{relay keys create|list|revoke} against the real PostgreSQL.
    """

    def setUp(self):
        self.dsn = testDatabaseDSN(self)
        truncate(self.dsn)

    def test_create(self):
        """
        create prints the key alone on the last line; only its hash is
        stored, with the workspace.
        """
        rc, out, err = run("keys", "create", "--workspace", WS, "--postgres", self.dsn)
        self.assertEqual(rc, 0, err)
        key = out.splitlines()[-1]
        key_id = keys.parse_key(key)
        self.assertIsNotNone(key_id)
        rows = fetchAll(self.dsn, "SELECT key_id, key_hash, workspace_id::text,"
                        " revoked_at FROM api_keys")
        self.assertEqual(len(rows), 1)
        self.assertEqual(rows[0][0], key_id)
        self.assertEqual(bytes(rows[0][1]), keys.hash_key(key))
        self.assertEqual(rows[0][2:], (WS, None))
        # The secret is all that follows "<prefix><key id>_" (it may hold
        # "_" itself: token_urlsafe).
        secret = key.split(key_id + "_", 1)[1]
        self.assertNotIn(secret, repr(rows))

    def test_list_and_revoke(self):
        """
        list shows keys with their revocation; revoke revokes once, says so
        a second time, and fails on an unknown id.
        """
        key = run("keys", "create", "--workspace", WS, "--postgres", self.dsn)[1].splitlines()[-1]
        key_id = keys.parse_key(key)
        rc, out, _ = run("keys", "list", "--postgres", self.dsn)
        self.assertEqual(rc, 0)
        line = [l for l in out.splitlines() if l.startswith(key_id)][0]
        self.assertTrue(line.endswith("-"))
        self.assertNotIn(key, out)
        rc, out, _ = run("keys", "revoke", key_id, "--postgres", self.dsn)
        self.assertEqual((rc, out.strip()), (0, "Revoked key %s." % (key_id,)))
        rc, out, _ = run("keys", "revoke", key, "--postgres", self.dsn)
        self.assertEqual(rc, 0)
        self.assertIn("already", out)
        rc, out, _ = run("keys", "list", "--workspace", WS, "--postgres", self.dsn)
        line = [l for l in out.splitlines() if l.startswith(key_id)][0]
        self.assertFalse(line.endswith("-"))
        rc, _, err = run("keys", "revoke", "0" * 16, "--postgres", self.dsn)
        self.assertEqual(rc, 1)
        self.assertIn("no key", err)

    def test_bad_usage(self):
        """
        A workspace that is not a UUID, or no action, exits 2.
        """
        self.assertEqual(run("keys", "create", "--workspace", "nope",
                             "--postgres", self.dsn)[0], 2)
        self.assertEqual(run("keys")[0], 2)

    def test_unreachable(self):
        """
        An unreachable PostgreSQL exits 3 with a message.
        """
        rc, _, err = run("keys", "list", "--postgres",
                         "host=127.0.0.1 port=1 user=postgres dbname=x connect_timeout=2")
        self.assertEqual(rc, 3)
        self.assertIn("cannot connect", err)

    def test_database_error(self):
        """
        A database error (here: a role that may not create the schema) is
        one line on stderr and exit 1, not a traceback.
        """
        from tests.support.ingest import freshDatabase
        dsn = freshDatabase(self)
        # Roles are shared by the whole server: a unique name.
        role = "relay_keys_nobody_%s" % (uuid.uuid4().hex[:8],)
        conn = psycopg2.connect(dsn)
        conn.autocommit = True
        with conn.cursor() as c:
            c.execute('CREATE ROLE "%s" LOGIN' % (role,))
            c.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
        conn.close()
        self.addCleanup(self._drop_role, dsn, role)
        from psycopg2.extensions import make_dsn
        rc, out, err = run("keys", "list", "--postgres", make_dsn(dsn, user=role))
        self.assertEqual(rc, 1)
        self.assertIn("PostgreSQL error", err)
        self.assertEqual(len(err.strip().splitlines()), 1)

    def _drop_role(self, dsn, role):
        conn = psycopg2.connect(dsn)
        conn.autocommit = True
        with conn.cursor() as c:
            c.execute('DROP OWNED BY "%s"' % (role,))
            c.execute('DROP ROLE "%s"' % (role,))
        conn.close()

    def test_create_migrates(self):
        """
        create works on a database that has no schema yet.
        """
        from tests.support.ingest import freshDatabase
        dsn = freshDatabase(self)
        rc, out, err = run("keys", "create", "--workspace", WS, "--postgres", dsn)
        self.assertEqual(rc, 0, err)
        conn = psycopg2.connect(dsn)
        with conn.cursor() as c:
            c.execute("SELECT count(*) FROM api_keys")
            self.assertEqual(c.fetchone()[0], 1)
        conn.close()

    def test_create_bound_to_a_daemon(self):
        """
        create --daemon binds the key to that daemon (stored with it, shown
        by list); a key without --daemon is listed unbound; a bad --daemon
        is a usage error that stores nothing.
        """
        daemon = "11111111-2222-4333-8444-555555555555"
        rc, out, err = run("keys", "create", "--workspace", WS, "--daemon", daemon,
                           "--postgres", self.dsn)
        self.assertEqual(rc, 0, err)
        self.assertIn(daemon, out)
        key_id = keys.parse_key(out.splitlines()[-1])
        free_id = keys.parse_key(run("keys", "create", "--workspace", WS, "--postgres",
                                     self.dsn)[1].splitlines()[-1])
        self.assertEqual(fetchAll(self.dsn, "SELECT daemon_id::text FROM api_keys"
                                  " WHERE key_id = %s", (key_id,)), [(daemon,)])
        rc, out, _ = run("keys", "list", "--postgres", self.dsn)
        self.assertIn("DAEMON", out.splitlines()[0])
        bound = [l for l in out.splitlines() if l.startswith(key_id)][0]
        self.assertEqual(bound.split()[2], daemon)
        free = [l for l in out.splitlines() if l.startswith(free_id)][0]
        self.assertEqual(free.split()[2], "-")
        rc, _, err = run("keys", "create", "--workspace", WS, "--daemon", "nope",
                         "--postgres", self.dsn)
        self.assertEqual(rc, 2)
        self.assertIn("--daemon", err)
        self.assertEqual(fetchAll(self.dsn, "SELECT count(*) FROM api_keys"), [(2,)])
