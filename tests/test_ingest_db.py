"""
Tests for L{relay.ingest.db} that need no database: DSN keepalives and
which failures mean "PostgreSQL is unavailable".  The pools against a real
PostgreSQL (outages, hangs, reconnection) are tested end to end in
L{tests.test_ingest_http}, and the inserters on them in
L{tests.e2e.test_ingest_store}.
"""

import psycopg2
from twisted.internet import defer
from twisted.internet.error import ConnectionLost
from twisted.python.failure import Failure
from twisted.trial import unittest
from txpostgres import reconnection

from relay.ingest import db
from relay.ingest.admission import Busy


class KeepalivesTests(unittest.TestCase):
    """
    L{db.with_keepalives}.
    """

    def test_keepalives(self):
        """
        Keepalive settings are added to a DSN, without overriding its own.
        """
        from psycopg2.extensions import parse_dsn
        got = parse_dsn(db.with_keepalives("host=h dbname=d keepalives_idle=7"))
        self.assertEqual(got["keepalives_idle"], "7")
        self.assertEqual(got["keepalives_count"], "3")
        self.assertEqual((got["host"], got["dbname"]), ("h", "d"))


class _OperationalError(psycopg2.OperationalError):
    """
    A psycopg2 error with the SQLSTATE a server would give.
    """

    def __init__(self, pgcode):
        psycopg2.OperationalError.__init__(self, "x")
        self._pgcode = pgcode

    @property
    def pgcode(self):
        return self._pgcode


class FailureKindsTests(unittest.TestCase):
    """
    L{db.is_unavailable} (answered 503) and L{db.is_connection_failure}
    (reconnect) sort failures.
    """

    def test_unavailable(self):
        """
        A lost or dead connection, a timeout, a cancelled or refused
        operation mean "retry later"; a bug does not.
        """
        for error in (reconnection.ConnectionDead(), ConnectionLost(),
                      defer.TimeoutError(), defer.CancelledError(), Busy("full"),
                      psycopg2.InterfaceError()):
            self.assertTrue(db.is_unavailable(Failure(error)), error)
        for error in (ValueError("bug"), psycopg2.IntegrityError()):
            self.assertFalse(db.is_unavailable(Failure(error)), error)

    def test_connection_failure(self):
        """
        An error without SQLSTATE, or of class 08 or 57P, ends the session;
        a statement error (a deadlock, 40P01) leaves it usable.
        """
        for code in (None, "08006", "57P01"):
            self.assertTrue(db.is_connection_failure(Failure(_OperationalError(code))), code)
        self.assertFalse(db.is_connection_failure(Failure(_OperationalError("40P01"))))
        self.assertTrue(db.is_connection_failure(Failure(ConnectionLost())))
        self.assertFalse(db.is_connection_failure(Failure(ValueError("bug"))))
