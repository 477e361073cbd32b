# -*- test-case-name: tests.test_ingest_store,tests.e2e.test_ingest_http -*-
"""
Connections to PostgreSQL.

L{TxPostgresPool} is a pool of asynchronous txpostgres connections, each with
its own L{DeadConnectionDetector}: when PostgreSQL goes away a connection
fails fast with L{ConnectionDead} while it reconnects in the background with
a capped backoff.  L{threadPool} makes the blocking psycopg2 pool (through
L{twisted.enterprise.adbapi}) that the COPY strategy and migrations use.

L{isUnavailable} tells the HTTP layer which failures mean "PostgreSQL is not
available right now" (answered 503 with Retry-After) rather than a bug.
"""

import psycopg2
from psycopg2.extensions import make_dsn, parse_dsn
from twisted.enterprise import adbapi
from twisted.internet import defer
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.logger import Logger
from twisted.python.failure import Failure
from txpostgres import reconnection, retrying, txpostgres

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


def withKeepalives(dsn):
    """
    Return C{dsn} with L{KEEPALIVES} for the parameters it does not set.
    """
    given = parse_dsn(dsn)
    extra = {k: v for k, v in KEEPALIVES.items() if k not in given}
    return make_dsn(dsn, **extra) if extra else dsn


class Busy(Exception):
    """
    Too many database operations are already waiting: refused at once
    (answered 503 with Retry-After) instead of queued.
    """


class Admission:
    """
    At most C{size} operations at once and at most C{maxWaiting} waiting
    for a turn; beyond that L{run} fails at once with L{Busy}.

    The Deferred L{run} returns can always be cancelled safely: a waiting
    operation leaves the queue (and its arguments, the batch's rows, are
    dropped); a running one is left to finish on its own (cancelling a
    txpostgres query would make a blocking C{PQcancel} call in the reactor
    thread) and its late result is dropped.

    @ivar waiting: how many operations wait for a turn.
    @ivar running: how many run.
    @ivar refused: how many were refused with L{Busy} so far.
    """

    def __init__(self, size, maxWaiting, onChange=None):
        self.size = size
        self.maxWaiting = maxWaiting
        self.running = 0
        self.refused = 0
        self._queue = []
        self._onChange = onChange

    @property
    def waiting(self):
        return len(self._queue)

    def _changed(self):
        if self._onChange is not None:
            self._onChange(self)

    def run(self, f, *args, **kwargs):
        """
        Call C{f(*args, **kwargs)} when a turn is free.

        @return: a cancellable Deferred with C{f}'s result, or failing with
            L{Busy} when the queue is full.
        """
        if self.running < self.size:
            return self._start(f, args, kwargs)
        if len(self._queue) >= self.maxWaiting:
            self.refused += 1
            self._changed()
            return defer.fail(Busy("%d database operations are already waiting" % (
                len(self._queue),)))
        entry = []

        def cancel(d):
            if entry in self._queue:
                self._queue.remove(entry)
                del entry[:]
                self._changed()

        result = defer.Deferred(cancel)
        entry.extend([result, f, args, kwargs])
        self._queue.append(entry)
        self._changed()
        return result

    def _start(self, f, args, kwargs, result=None):
        self.running += 1
        self._changed()
        shield = result if result is not None else defer.Deferred()
        inner = defer.maybeDeferred(f, *args, **kwargs)

        def done(outcome):
            self.running -= 1
            self._next()
            if not shield.called:
                shield.callback(outcome)
            elif isinstance(outcome, Failure):
                _log.info("A database operation abandoned earlier failed: {error}",
                          error=outcome.getErrorMessage())

        inner.addBoth(done)
        return shield

    def _next(self):
        while self._queue and self.running < self.size:
            result, f, args, kwargs = self._queue.pop(0)
            # Running now: cancelling it from here on only drops its result.
            result._canceller = None
            self._start(f, args, kwargs, result)
        self._changed()


def withDeadline(d, seconds, reactor):
    """
    Fire with C{d}'s result, or fail with L{defer.TimeoutError} after
    C{seconds} if C{d} has not fired by then; then C{d} is cancelled (give
    only Deferreds from L{Admission.run}, whose cancellation never blocks:
    a waiting operation leaves its queue with its rows, a running one
    finishes on its own).  Cancelling the returned Deferred cancels C{d}
    too.  A late result of C{d} is dropped (a batch that
    commits after its request got 503 is counted as duplicates when the
    sender retries it).
    """
    def cancel(_):
        # The caller gave up (its client went away): so does C{d}.
        if timer.active():
            timer.cancel()
        d.cancel()

    result = defer.Deferred(cancel)

    def expire():
        result.errback(defer.TimeoutError("no answer from PostgreSQL in %gs" % (seconds,)))
        d.cancel()

    timer = reactor.callLater(seconds, expire)

    def fire(outcome):
        if timer.active():
            timer.cancel()
            result.callback(outcome)
        elif isinstance(outcome, Failure) and not outcome.check(defer.CancelledError):
            _log.info("A late database operation failed: {error}",
                      error=outcome.getErrorMessage())

    d.addBoth(fire)
    return result


def isUnavailable(failure):
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


def isConnectionFailure(failure):
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
            self, deathChecker=isConnectionFailure, reconnectionIterator=_backoff,
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


class _Connection(txpostgres.Connection):
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
    C{maxWaiting} wait for a connection (L{Admission}); more fail at once
    with L{Busy}.
    """

    def __init__(self, dsn, size, reactor, maxWaiting=None, onChange=None):
        self.dsn = dsn
        self.reactor = reactor
        self._idle = []
        self._all = []
        for _ in range(size):
            detector = _Detector(reactor)
            conn = _Connection(reactor=reactor, detector=detector)
            self._all.append(conn)
            self._idle.append(conn)
        self.admission = Admission(size, size * 4 if maxWaiting is None else maxWaiting, onChange)
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
            d.addErrback(self._initialFailure, conn)
            ds.append(d)
        return defer.gatherResults(ds)

    def _initialFailure(self, failure, conn):
        _log.warn("PostgreSQL connection failed, will retry: {error}",
                  error=failure.getErrorMessage())
        conn.detector.checkForDeadConnection(failure)

    def isAlive(self):
        return any(self._usable(c) for c in self._all)

    def runInteraction(self, interaction, *args, **kwargs):
        """
        Run C{interaction(cursor, ...)} inside one transaction.
        """
        return self.admission.run(self._run, "runInteraction", interaction, *args, **kwargs)

    def runQuery(self, *args, **kwargs):
        return self.admission.run(self._run, "runQuery", *args, **kwargs)

    def _run(self, method, *args, **kwargs):
        if self._closed:
            return defer.fail(reconnection.ConnectionDead())
        live = [c for c in self._idle if self._usable(c)]
        if not live:
            return defer.fail(reconnection.ConnectionDead())
        conn = live[0]
        self._idle.remove(conn)

        def putBack(result):
            self._idle.append(conn)
            return result

        d = defer.maybeDeferred(getattr(conn, method), *args, **kwargs)
        return d.addBoth(putBack)

    @staticmethod
    def _usable(conn):
        return not conn.detector.connectionIsDead and conn._connection is not None

    def close(self):
        self._closed = True
        for conn in self._all:
            conn.detector.stop()
            try:
                conn.close()
            except Exception:
                pass


def _onThreadConnect(connection):
    # The COPY strategy stages rows in a temporary table; let it stay in
    # memory (this only takes effect before the session's first temp table).
    with connection.cursor() as cursor:
        cursor.execute("SET temp_buffers = '64MB'")
    connection.commit()


def threadPool(dsn, size, reactor):
    """
    A blocking psycopg2 pool on threads, for COPY and migrations.
    """
    return adbapi.ConnectionPool(
        "psycopg2",
        dsn,
        cp_min=1,
        cp_max=size,
        cp_reconnect=True,
        cp_noisy=False,
        cp_openfun=_onThreadConnect,
        cp_reactor=reactor,
    )
