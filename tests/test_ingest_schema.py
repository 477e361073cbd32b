"""
Tests for the versioned schema migrations in L{relay.ingest.schema}.
"""

import os

import psycopg2
from twisted.trial import unittest

from relay.ingest import schema
from tests.support.ingest import freshDatabase


class MigrationFilesTests(unittest.TestCase):
    """
    Finding migration files.
    """

    def test_packaged(self):
        """
        The package ships its migrations as .sql files, numbered from 1.
        """
        found = schema.migrations()
        self.assertEqual(found[0][:2], (1, "initial"))
        self.assertEqual([v for v, _, _ in found], list(range(1, len(found) + 1)))

    def test_bad_name(self):
        """
        A .sql file not named NNNN_name.sql is an error, not silently
        skipped.
        """
        d = self.mktemp()
        os.mkdir(d)
        with open(os.path.join(d, "1_oops.sql"), "w") as f:
            f.write("SELECT 1")
        self.assertRaises(ValueError, schema.migrations, d)

    def test_duplicate_version(self):
        """
        Two files with the same version are an error.
        """
        d = self.mktemp()
        os.mkdir(d)
        for name in ("0001_a.sql", "0001_b.sql"):
            with open(os.path.join(d, name), "w") as f:
                f.write("SELECT 1")
        self.assertRaises(ValueError, schema.migrations, d)


class MigrateTests(unittest.TestCase):
    """
    L{schema.migrate} on a real, initially empty database.
    """

    def setUp(self):
        self.dsn = freshDatabase(self)
        self.conn = psycopg2.connect(self.dsn)
        self.addCleanup(self.conn.close)

    def query(self, sql, params=()):
        with self.conn.cursor() as c:
            c.execute(sql, params)
            rows = c.fetchall()
        self.conn.rollback()
        return rows

    def test_creates_schema(self):
        """
        On an empty database the tables, the dedup key and the index are
        created, and a second run applies nothing.
        """
        self.assertEqual(schema.current_version(self.conn), 0)
        applied = schema.migrate(self.conn)
        self.assertEqual(applied, [v for v, _, _ in schema.migrations()])
        self.assertEqual(schema.migrate(self.conn), [])
        self.assertEqual(schema.current_version(self.conn), applied[-1])
        columns = dict(self.query(
            "SELECT column_name, data_type FROM information_schema.columns"
            " WHERE table_name = 'agent_messages'"))
        self.assertEqual(columns["id"], "bigint")
        self.assertEqual(columns["workspace_id"], "uuid")
        self.assertEqual(columns["original_id"], "character varying")
        self.assertEqual(columns["data"], "jsonb")
        self.assertEqual(columns["message_ts"], "timestamp with time zone")
        for name in ("from_agent", "to_agent", "body", "kind", "topic", "thread", "channel",
                     "is_broadcast", "is_urgent", "payload_meta", "expires_at",
                     "received_at", "daemon_id"):
            self.assertIn(name, columns)
        indexes = dict(self.query(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'agent_messages'"))
        self.assertIn("UNIQUE INDEX agent_messages_dedup ON public.agent_messages"
                      " USING btree (workspace_id, original_id)",
                      indexes["agent_messages_dedup"])
        self.assertIn("(workspace_id, message_ts)", indexes["agent_messages_workspace_ts"])
        key_columns = {r[0] for r in self.query(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'api_keys'")}
        self.assertEqual(key_columns, {"key_id", "key_hash", "workspace_id", "created_at",
                                       "revoked_at", "daemon_id"})

    def test_federation_tables(self):
        """
        Migration 3 makes the federation tables; a handed-over message is
        stored once per (message, recipient, target daemon), a routed row
        (no target) included, confirmed or not.
        """
        schema.migrate(self.conn)
        tables = {r[0] for r in self.query(
            "SELECT table_name FROM information_schema.tables WHERE table_name LIKE 'fed_%%'")}
        self.assertEqual(tables, {"fed_directory", "fed_daemons", "fed_inbound"})
        insert = ("INSERT INTO fed_inbound (workspace_id, message_id, recipient, target_daemon,"
                  " origin_daemon, message) VALUES (%s, 'm', 'bob', %s, %s, '{}')"
                  " ON CONFLICT DO NOTHING RETURNING seq")
        ws = "6f1d1c2e-8d8e-4a53-9a4b-0d5b3f3d6a01"
        d = "11111111-2222-4333-8444-555555555555"

        def run(sql, params=()):
            with self.conn.cursor() as c:
                c.execute(sql, params)
                rows = c.fetchall() if c.description else None
            self.conn.commit()
            return rows

        for target in (None, d):
            self.assertEqual(len(run(insert, (ws, target, d))), 1)
            run("UPDATE fed_inbound SET confirmed_at = now()")
            self.assertEqual(run(insert, (ws, target, d)), [])
        self.assertEqual(run("SELECT count(*) FROM fed_inbound"), [(2,)])

    def test_upgrade(self):
        """
        A database at version 1 is upgraded by applying only the newer
        migrations, in order.
        """
        d = self.mktemp()
        os.mkdir(d)
        for version, name, sql in schema.migrations():
            with open(os.path.join(d, "%04d_%s.sql" % (version, name)), "w") as f:
                f.write(sql)
        first = schema.migrate(self.conn, d)
        nxt = first[-1] + 1
        with open(os.path.join(d, "%04d_extra.sql" % (nxt,)), "w") as f:
            f.write("CREATE TABLE ingest_extra (x int);")
        with open(os.path.join(d, "%04d_more.sql" % (nxt + 1,)), "w") as f:
            f.write("ALTER TABLE ingest_extra ADD COLUMN y int;")
        self.assertEqual(schema.migrate(self.conn, d), [nxt, nxt + 1])
        self.assertEqual(self.query("SELECT count(*) FROM ingest_extra"), [(0,)])
        self.assertEqual(schema.current_version(self.conn), nxt + 1)

    def test_failed_migration_rolls_back(self):
        """
        A migration that fails leaves neither its changes nor its version
        row behind.
        """
        d = self.mktemp()
        os.mkdir(d)
        with open(os.path.join(d, "0001_bad.sql"), "w") as f:
            f.write("CREATE TABLE half_done (x int); SELECT no_such_function();")
        self.assertRaises(psycopg2.Error, schema.migrate, self.conn, d)
        self.assertEqual(self.query("SELECT to_regclass('half_done')"), [(None,)])
        self.assertEqual(schema.current_version(self.conn), 0)
