# -*- test-case-name: tests.e2e.test_ingest_store -*-
"""
Helpers for the ingest tests: a PostgreSQL database of their own, and sample
messages.

The server is found through C{RELAY_TEST_POSTGRES_DSN} (default: the local
server).  The first test that needs it creates a uniquely named database,
which is dropped when the test process exits.  When no server is reachable
the tests skip with a loud reason, unless C{RELAY_REQUIRE_POSTGRES=1}, in
which case they fail.
"""

import atexit
import os
import uuid

import psycopg2
from psycopg2.extensions import make_dsn
from twisted.trial.unittest import SkipTest

from relay.ingest.schema import migrate

DEFAULT_TEST_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test"

_database = {}


def serverDSN():
    return os.environ.get("RELAY_TEST_POSTGRES_DSN") or DEFAULT_TEST_DSN


def _unavailable(testCase, reason):
    message = (
        "!!! PostgreSQL is not reachable at %r (%s): the ingest tests need a "
        "real server; set RELAY_TEST_POSTGRES_DSN !!!" % (serverDSN(), reason)
    )
    if os.environ.get("RELAY_REQUIRE_POSTGRES") == "1":
        testCase.fail(message + " (RELAY_REQUIRE_POSTGRES=1, so this is a failure)")
    raise SkipTest(message)


def _dropDatabase(admin, name):
    try:
        conn = psycopg2.connect(admin, connect_timeout=5)
        conn.autocommit = True
        with conn.cursor() as cursor:
            cursor.execute('DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % (name,))
        conn.close()
    except psycopg2.Error:
        pass


def testDatabaseDSN(testCase):
    """
    Return the DSN of this test run's database (created and migrated on
    first use), or skip/fail C{testCase} when PostgreSQL is unreachable.
    """
    if "dsn" in _database:
        return _database["dsn"]
    if "error" in _database:
        _unavailable(testCase, _database["error"])
    admin = serverDSN()
    # The name is made only of hex digits and a fixed prefix, never input.
    name = "relay_ingest_test_%d_%s" % (os.getpid(), uuid.uuid4().hex[:8])
    try:
        conn = psycopg2.connect(admin, connect_timeout=5)
    except psycopg2.OperationalError as e:
        _database["error"] = str(e).strip()
        _unavailable(testCase, _database["error"])
    conn.autocommit = True
    with conn.cursor() as cursor:
        cursor.execute('CREATE DATABASE "%s"' % (name,))
    conn.close()
    atexit.register(_dropDatabase, admin, name)
    dsn = make_dsn(admin, dbname=name)
    conn = psycopg2.connect(dsn)
    migrate(conn)
    conn.close()
    _database["dsn"] = dsn
    _database["name"] = name
    return dsn


def freshDatabase(testCase):
    """
    Create an empty, unmigrated database for one test (dropped in its
    cleanup) and return its DSN.
    """
    testDatabaseDSN(testCase)
    admin = serverDSN()
    name = "%s_f%s" % (_database["name"], uuid.uuid4().hex[:6])
    conn = psycopg2.connect(admin, connect_timeout=5)
    conn.autocommit = True
    with conn.cursor() as cursor:
        cursor.execute('CREATE DATABASE "%s"' % (name,))
    conn.close()
    testCase.addCleanup(_dropDatabase, admin, name)
    return make_dsn(admin, dbname=name)


def truncate(dsn):
    """
    Empty the ingest tables.
    """
    conn = psycopg2.connect(dsn)
    with conn.cursor() as cursor:
        cursor.execute("TRUNCATE agent_messages, api_keys, fed_directory, fed_daemons,"
                       " fed_inbound RESTART IDENTITY")
    conn.commit()
    conn.close()


def fetchAll(dsn, sql, params=()):
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall()
    finally:
        conn.close()


BASE_TS = 1767225600000  # 2026-01-01T00:00:00Z in ms


def makeMessage(i, **overrides):
    """
    A valid wire message with id C{"m-<i>"}.
    """
    m = {
        "id": "m-%d" % (i,),
        "ts": BASE_TS + i,
        "from": "agent-a",
        "to": "agent-b",
        "topic": None,
        "thread": None,
        "kind": "message",
        "body": "hello %d" % (i,),
        "data": None,
        "payload_meta": None,
        "is_broadcast": False,
        "is_urgent": False,
    }
    m.update(overrides)
    return m


def makeRow(i, **overrides):
    """
    The validated row tuple for L{makeMessage}C{(i, **overrides)}.
    """
    from relay.ingest.validate import parse_message
    return parse_message(i, makeMessage(i, **overrides))
