# -*- test-case-name: tests.test_ingest_admission -*-
"""
Bounding the wait for PostgreSQL.

L{Admission} lets a few database operations run and a few more wait, and
refuses the rest at once with L{Busy} (answered 503 with Retry-After);
L{with_deadline} gives up on an operation after a while.  Both cancel
safely: a waiting operation leaves its queue (and its rows are dropped), a
running one finishes on its own.
"""

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

_log = Logger()


class Busy(Exception):
    """
    Too many database operations are already waiting: refused at once
    (answered 503 with Retry-After) instead of queued.
    """


class Admission:
    """
    At most C{size} operations at once and at most C{max_waiting} waiting
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

    def __init__(self, size, max_waiting, on_change=None):
        """
        @param size: how many operations may run at once.
        @param max_waiting: how many may wait for a turn.
        @param on_change: L{None}, or a callable called with this
            L{Admission} whenever L{waiting}, C{running} or C{refused}
            changes (the metrics gauge).
        """
        self.size = size
        self.max_waiting = max_waiting
        self.running = 0
        self.refused = 0
        self._queue = []
        self._on_change = on_change

    @property
    def waiting(self):
        """
        How many operations wait for a turn.
        """
        return len(self._queue)

    def _changed(self):
        if self._on_change is not None:
            self._on_change(self)

    def run(self, f, *args, **kwargs):
        """
        Call C{f(*args, **kwargs)} when a turn is free.

        @return: a cancellable Deferred with C{f}'s result, or failing with
            L{Busy} when the queue is full.
        """
        if self.running < self.size:
            return self._start(f, args, kwargs)
        if len(self._queue) >= self.max_waiting:
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


def with_deadline(d, seconds, reactor):
    """
    Fire with C{d}'s result, or fail with L{defer.TimeoutError} after
    C{seconds} if C{d} has not fired by then; then C{d} is cancelled (give
    only Deferreds from L{Admission.run}, whose cancellation never blocks:
    a waiting operation leaves its queue with its rows, a running one
    finishes on its own).  Cancelling the returned Deferred cancels C{d}
    too.  A late result of C{d} is dropped (a batch that commits after its
    request got 503 is counted as duplicates when the sender retries it).

    @param d: the L{defer.Deferred} of the operation.
    @param seconds: how long to wait for it.
    @param reactor: the L{IReactorTime} that measures C{seconds}.
    @return: a cancellable L{defer.Deferred} with C{d}'s result.
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
