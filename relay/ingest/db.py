# -*- test-case-name: tests.test_ingest_db,tests.e2e.test_ingest_store,tests.e2e.test_ingest_http -*-
"""
Connections to PostgreSQL.

L{TxPostgresPool} is a pool of asynchronous txpostgres connections, each with
its own L{DeadConnectionDetector}: when PostgreSQL goes away a connection
fails fast with L{ConnectionDead} while it reconnects in the background with
a capped backoff.  L{thread_pool} makes the blocking psycopg2 pool (through
L{twisted.enterprise.adbapi}) that the COPY strategy and migrations use.

Both pools queue their operations through an
L{relay.ingest.admission.Admission}.  L{is_unavailable} tells the HTTP layer which failures mean "PostgreSQL is not
available right now" (answered 503 with Retry-After) rather than a bug.
"""

import psycopg2
from psycopg2.extensions import make_dsn, parse_dsn
from twisted.enterprise import adbapi
from twisted.internet import defer
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.logger import Logger
from txpostgres import reconnection, retrying, txpostgres

from relay.ingest.admission import Admission, Busy

DEFAULT_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"

_log = Logger()


# TCP keepalives, unless the DSN sets its own: a server that vanishes without
# closing its connections (a host gone, a network partition) is noticed in
# about a minute instead of the kernel's retransmission timeout.
KEEPALIVES = {
    "keepalives": "1",
    "keepalives_idle": "30",
    "keepalives_interval": "10",
    "keepalives_count": "3",
}


def with_keepalives(dsn):
    """
    Return C{dsn} with L{KEEPALIVES} for the parameters it does not set.
    """
    given = parse_dsn(dsn)
    extra = {k: v for k, v in KEEPALIVES.items() if k not in given}
    return make_dsn(dsn, **extra) if extra else dsn


def is_unavailable(failure):
    """
    Whether C{failure} means the database cannot be reached or went away.
    """
    return failure.check(
        psycopg2.OperationalError,
        psycopg2.InterfaceError,
        reconnection.ConnectionDead,
        txpostgres.RollbackFailed,
        adbapi.ConnectionLost,
        ConnectionDone,
        ConnectionLost,
        defer.TimeoutError,
        defer.CancelledError,
        Busy,
    ) is not None


def is_connection_failure(failure):
    """
    Whether C{failure} means the connection itself is gone (so it must be
    reconnected), as opposed to an error in one statement (a deadlock, a
    bad value) after which the connection is still usable.

    psycopg2 gives server-side errors an SQLSTATE; losing the connection
    has none, and classes 08 (connection exception) and 57P (the server
    shutting down) mean the session is over.
    """
    if failure.check(psycopg2.InterfaceError, txpostgres.RollbackFailed,
                     ConnectionDone, ConnectionLost):
        return True
    if failure.check(psycopg2.OperationalError):
        code = getattr(failure.value, "pgcode", None)
        return code is None or code.startswith("08") or code.startswith("57P")
    return False


class _Detector(reconnection.DeadConnectionDetector):
    """
    A L{reconnection.DeadConnectionDetector} that reconnects only when the
    connection is really gone, and whose reconnection can be stopped.
    """

    _reconnecting = None
    stopped = False

    def __init__(self, reactor):
        reconnection.DeadConnectionDetector.__init__(
            self, deathChecker=is_connection_failure, reconnectionIterator=_backoff,
            reactor=reactor)

    def checkForDeadConnection(self, f):
        if self.stopped:
            # closing the connection on purpose is not a reason to reconnect
            return f
        return reconnection.DeadConnectionDetector.checkForDeadConnection(self, f)

    def startReconnecting(self, f):
        _log.warn("Lost the PostgreSQL connection ({error}); reconnecting",
                  error=f.getErrorMessage().strip())
        call = retrying.RetryingCall(self.reconnect)
        call.reactor = self.reactor
        d = self._reconnecting = call.start(self.reconnectionIterator())
        d.addCallback(lambda _: self.connectionRecovered())
        d.addErrback(self._stopped)

    def connectionRecovered(self):
        _log.info("Reconnected to PostgreSQL")
        return reconnection.DeadConnectionDetector.connectionRecovered(self)

    def _stopped(self, f):
        if not f.check(defer.CancelledError):
            _log.failure("Reconnecting to PostgreSQL", f)

    def stop(self):
        self.stopped = True
        if self._reconnecting is not None and not self._reconnecting.called:
            self._reconnecting.cancel()


class Connection(txpostgres.Connection):
    """
    A txpostgres connection whose idle socket, when the server goes away,
    reports the loss as the reason for disconnection instead of raising
    out of C{doRead} (which the reactor logs as an unhandled error with a
    traceback).  L{_Detector} logs the loss in one line and reconnects.
    """

    def doRead(self):
        try:
            return txpostgres.Connection.doRead(self)
        except (psycopg2.OperationalError, psycopg2.InterfaceError) as e:
            return e


def _backoff():
    return retrying.simpleBackoffIterator(
        initialDelay=0.25, maxDelay=5.0, factor=2.0, maxRetries=0, now=True
    )


class TxPostgresPool:
    """
    A fixed-size pool of reconnecting txpostgres connections.

    Interactions prefer a live connection; when every connection is dead
    they fail at once with L{reconnection.ConnectionDead}.  At most
    C{max_waiting} wait for a connection (L{Admission}); more fail at once
    with L{Busy}.

    It answers C{runInteraction} and C{runQuery} as an
    L{adbapi.ConnectionPool} does, so the inserters take either.
    """

    def __init__(self, dsn, size, reactor, max_waiting=None, on_change=None):
        """
        @param dsn: the libpq connection string.
        @param size: how many connections to keep.
        @param reactor: the reactor the connections (and their reconnection
            backoff) run on.
        @param max_waiting: how many operations may wait for a connection
            (default: four per connection).
        @param on_change: given to the L{Admission} (see there).
        """
        self.dsn = dsn
        self.reactor = reactor
        self._idle = []
        self._all = []
        for _ in range(size):
            detector = _Detector(reactor)
            conn = Connection(reactor=reactor, detector=detector)
            self._all.append(conn)
            self._idle.append(conn)
        if max_waiting is None:
            max_waiting = size * 4
        self.admission = Admission(size, max_waiting, on_change)
        self._closed = False

    def start(self):
        """
        Connect every connection.  A connection that cannot connect starts
        reconnecting in the background; the returned Deferred fires once
        every connection has either connected or started retrying.
        """
        ds = []
        for conn in self._all:
            d = conn.connect(self.dsn)
            d.addErrback(self._initial_failure, conn)
            ds.append(d)
        return defer.gatherResults(ds)

    def _initial_failure(self, failure, conn):
        _log.warn("PostgreSQL connection failed, will retry: {error}",
                  error=failure.getErrorMessage())
        conn.detector.checkForDeadConnection(failure)

    def runInteraction(self, interaction, *args, **kwargs):
        """
        Run C{interaction(cursor, ...)} inside one transaction.
        """
        return self.admission.run(self._run, "runInteraction", interaction, *args, **kwargs)

    def runQuery(self, *args, **kwargs):
        """
        Run one statement and return its rows, as L{adbapi.ConnectionPool.runQuery}.
        """
        return self.admission.run(self._run, "runQuery", *args, **kwargs)

    def _run(self, method, *args, **kwargs):
        if self._closed:
            return defer.fail(reconnection.ConnectionDead())
        live = [c for c in self._idle if self._usable(c)]
        if not live:
            return defer.fail(reconnection.ConnectionDead())
        conn = live[0]
        self._idle.remove(conn)

        def put_back(result):
            self._idle.append(conn)
            return result

        d = defer.maybeDeferred(getattr(conn, method), *args, **kwargs)
        return d.addBoth(put_back)

    @staticmethod
    def _usable(conn):
        return not conn.detector.connectionIsDead and conn._connection is not None

    def close(self):
        """
        Close every connection and stop reconnecting; later operations fail
        with L{reconnection.ConnectionDead}.
        """
        self._closed = True
        for conn in self._all:
            conn.detector.stop()
            try:
                conn.close()
            except Exception:
                pass


def _on_thread_connect(connection):
    # The COPY strategy stages rows in a temporary table; let it stay in
    # memory (this only takes effect before the session's first temp table).
    with connection.cursor() as cursor:
        cursor.execute("SET temp_buffers = '64MB'")
    connection.commit()


def thread_pool(dsn, size, reactor):
    """
    A blocking psycopg2 pool on threads, for COPY and migrations.

    @param dsn: the libpq connection string.
    @param size: the most connections (and threads) at once.
    @param reactor: the reactor the pool reports to.
    @return: an L{adbapi.ConnectionPool}.
    """
    return adbapi.ConnectionPool(
        "psycopg2",
        dsn,
        cp_min=1,
        cp_max=size,
        cp_reconnect=True,
        cp_noisy=False,
        cp_openfun=_on_thread_connect,
        cp_reactor=reactor,
    )
