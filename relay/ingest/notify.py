# -*- test-case-name: tests.test_ingest_notify,tests.e2e.test_ingest_federation -*-
"""
Waking held polls: PostgreSQL C{LISTEN}/C{NOTIFY} and the polls waiting for
it.

L{Waiters} holds the polls that found nothing, by workspace, and a
generation per workspace: a poll takes L{Waiters.generation} before its
query, and L{Waiters.wait} with it answers at once when a wake-up came in
between (no lost wake-up without holding anything during the query).
L{NotifyListener} keeps one dedicated txpostgres connection per ingest
instance listening on L{relay.ingest.federation_db.CHANNEL} and wakes the
workspace each notification names; when the connection is lost it
reconnects with a capped backoff and, once listening again, wakes every
poll (notifications sent meanwhile were lost), so they query again.
"""

from twisted.internet import defer
from twisted.logger import Logger

from relay.ingest import db
from relay.ingest.federation_db import CHANNEL


class Waiters:
    """
    Polls waiting for their workspace to change.

    @ivar waiting: how many polls wait now.
    """

    def __init__(self, clock, on_change=None):
        """
        @param clock: the L{twisted.internet.interfaces.IReactorTime} of the
            wait timers.
        @param on_change: L{None}, or a callable called with L{waiting}
            whenever it changes (the metrics gauge).
        """
        self.clock = clock
        self.waiting = 0
        self._on_change = on_change
        self._epoch = 0
        self._generations = {}
        self._waiters = {}

    def generation(self, workspace):
        """
        A token of the wake-ups of C{workspace} so far, to give to L{wait}.
        """
        return (self._epoch, self._generations.get(workspace, 0))

    def wait(self, workspace, since, seconds):
        """
        Wait until C{workspace} is woken after the generation C{since}, or
        C{seconds} pass.

        @return: a Deferred firing with C{True} when woken (at once when a
            wake-up came after C{since}), C{False} when the time ran out.
            Cancelling it removes the waiter and its timer.
        """
        if self.generation(workspace) != since:
            return defer.succeed(True)
        entry = []

        def cancel(d):
            self._remove(workspace, d, entry)

        d = defer.Deferred(cancel)
        timer = self.clock.callLater(seconds, self._expire, workspace, d, entry)
        entry.append(timer)
        self._waiters.setdefault(workspace, {})[d] = entry
        self._changed(1)
        return d

    def _remove(self, workspace, d, entry):
        waiters = self._waiters.get(workspace)
        if waiters is None or waiters.pop(d, None) is None:
            return False
        if not waiters:
            del self._waiters[workspace]
        timer = entry[0]
        if timer.active():
            timer.cancel()
        self._changed(-1)
        return True

    def _expire(self, workspace, d, entry):
        if self._remove(workspace, d, entry):
            d.callback(False)

    def wake(self, workspace):
        """
        C{workspace} changed: wake its waiting polls, and make a poll that
        took its generation before now answer at once.
        """
        self._generations[workspace] = self._generations.get(workspace, 0) + 1
        self._fire(list(self._waiters.get(workspace, {})), workspace)

    def wake_all(self):
        """
        Any workspace may have changed (notifications were lost): wake
        every poll.
        """
        self._epoch += 1
        for workspace in list(self._waiters):
            self._fire(list(self._waiters[workspace]), workspace)

    def _fire(self, ds, workspace):
        for d in ds:
            entry = self._waiters[workspace][d]
            self._remove(workspace, d, entry)
            d.callback(True)

    def _changed(self, delta):
        self.waiting += delta
        if self._on_change is not None:
            self._on_change(self.waiting)


def _backoff():
    """
    The delays between attempts to listen again: 0.25 s doubling to 5 s.
    """
    delay = 0.25
    while True:
        yield delay
        delay = min(delay * 2, 5.0)


class _ListenConnection(db.Connection):
    """
    A txpostgres connection that tells its L{NotifyListener} when it is
    lost (once).
    """

    on_lost = None

    def connectionLost(self, reason):
        db.Connection.connectionLost(self, reason)
        lost, self.on_lost = self.on_lost, None
        if lost is not None:
            lost(reason)


class NotifyListener:
    """
    One connection running C{LISTEN relay_federation}, kept up for the life
    of the service; each notification wakes its workspace in L{Waiters}.

    @ivar listening: whether the connection is up and listening now.
    """

    log = Logger()

    def __init__(self, dsn, reactor, waiters, connection_factory=None):
        """
        @param dsn: the libpq connection string.
        @param reactor: the reactor the connection and the retries run on.
        @param waiters: the L{Waiters} to wake.
        @param connection_factory: makes a txpostgres connection given the
            reactor (for tests); default L{_ListenConnection}.
        """
        self.dsn = dsn
        self.reactor = reactor
        self.waiters = waiters
        self.listening = False
        self._factory = connection_factory or (lambda r: _ListenConnection(reactor=r))
        self._connection = None
        self._retry = None
        self._delays = None
        self._stopped = True

    def start(self):
        """
        Connect and listen; retry in the background until it works.
        """
        self._stopped = False
        self._delays = _backoff()
        self._attempt()

    def stop(self):
        """
        Close the connection and stop retrying.
        """
        self._stopped = True
        self.listening = False
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        conn, self._connection = self._connection, None
        if conn is not None:
            conn.on_lost = None
            _close(conn)

    def _attempt(self):
        self._retry = None
        if self._stopped:
            return
        conn = self._factory(self.reactor)
        self._connection = conn
        d = conn.connect(self.dsn)
        d.addCallback(lambda _: conn.runOperation("LISTEN " + CHANNEL))
        d.addCallbacks(self._listening, self._failed, callbackArgs=(conn,),
                       errbackArgs=(conn,))
        d.addErrback(lambda f: self.log.failure("Listening for federation changes", f))

    def _listening(self, _, conn):
        if self._stopped or conn is not self._connection:
            _close(conn)
            return
        conn.addNotifyObserver(self._notified)
        conn.on_lost = lambda reason: self._lost(conn, reason)
        self.listening = True
        self._delays = _backoff()
        self.log.info("Listening on {channel} for federation changes", channel=CHANNEL)
        # Whatever was notified while not listening is lost: every poll
        # looks again.
        self.waiters.wake_all()

    def _failed(self, failure, conn):
        _close(conn)
        if self._stopped or conn is not self._connection:
            return
        self._connection = None
        delay = next(self._delays)
        self.log.warn("Cannot listen for federation changes ({error}); retrying in {delay}s",
                      error=failure.getErrorMessage().strip(), delay=delay)
        self._retry = self.reactor.callLater(delay, self._attempt)

    def _lost(self, conn, reason):
        if self._stopped or conn is not self._connection:
            return
        self.listening = False
        self._connection = None
        _close(conn)
        delay = next(self._delays)
        self.log.warn("Lost the federation LISTEN connection ({error}); again in {delay}s",
                      error=reason.getErrorMessage().strip(), delay=delay)
        self._retry = self.reactor.callLater(delay, self._attempt)

    def _notified(self, notify):
        self.waiters.wake(notify.payload)


def _close(conn):
    try:
        conn.close()
    except Exception:
        # Never connected, or already closed.
        pass

