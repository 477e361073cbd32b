# -*- test-case-name: tests.test_ingest_schema -*-
"""
Versioned schema migrations, kept as C{NNNN_name.sql} files in
C{relay/ingest/migrations}.

L{migrate} runs on a plain (blocking) DB-API cursor: the service calls it on
an L{twisted.enterprise.adbapi} thread at startup, the C{relay keys} command
calls it directly.  Each migration runs in its own transaction together with
the row recording it, under an advisory lock, so two services starting at
once cannot apply the same migration twice.
"""

import os
import re

MIGRATIONS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "migrations")

# An arbitrary constant identifying "relay-ingest schema migration" among
# advisory locks.
_LOCK_KEY = 0x72656C6179


def migrations(directory=MIGRATIONS_DIR):
    """
    Return the migrations found in C{directory} as a sorted list of
    C{(version, name, sql)}.

    @raise ValueError: on a file name that does not look like
        C{NNNN_name.sql} or on a repeated version number.
    """
    found = {}
    for filename in os.listdir(directory):
        if not filename.endswith(".sql"):
            continue
        m = re.match(r"^(\d{4})_([a-z0-9_]+)\.sql$", filename)
        if m is None:
            raise ValueError("badly named migration file: %r" % (filename,))
        version = int(m.group(1))
        if version in found:
            raise ValueError("two migrations with version %d" % (version,))
        with open(os.path.join(directory, filename), encoding="utf-8") as f:
            found[version] = (version, m.group(2), f.read())
    return [found[v] for v in sorted(found)]


def migrate(connection, directory=MIGRATIONS_DIR):
    """
    Bring the schema up to date on a blocking psycopg2 connection.

    @return: the list of versions applied (empty when already current).
    """
    applied = []
    cursor = connection.cursor()
    try:
        for version, name, sql in migrations(directory):
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
            cursor.execute(
                "CREATE TABLE IF NOT EXISTS ingest_schema_migrations ("
                " version integer PRIMARY KEY,"
                " name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            cursor.execute(
                "SELECT 1 FROM ingest_schema_migrations WHERE version = %s",
                (version,),
            )
            if cursor.fetchone() is None:
                cursor.execute(sql)
                cursor.execute(
                    "INSERT INTO ingest_schema_migrations (version, name)"
                    " VALUES (%s, %s)",
                    (version, name),
                )
                applied.append(version)
            connection.commit()
    except BaseException:
        connection.rollback()
        raise
    finally:
        cursor.close()
    return applied


def current_version(connection):
    """
    Return the highest applied migration version, or 0 for an empty database.
    """
    cursor = connection.cursor()
    try:
        cursor.execute("SELECT to_regclass('ingest_schema_migrations') IS NOT NULL")
        if not cursor.fetchone()[0]:
            return 0
        cursor.execute("SELECT coalesce(max(version), 0) FROM ingest_schema_migrations")
        return cursor.fetchone()[0]
    finally:
        connection.rollback()
        cursor.close()
