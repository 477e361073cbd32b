# -*- test-case-name: tests.test_support -*-
"""
The one polling helper of the tests, for conditions no event announces
(a file appearing, a row in another process's database, a daemon's
STATUS).  Where an event exists, wait on its L{Deferred} instead.
"""

from twisted.internet import defer, reactor as _global_reactor, task


@defer.inlineCallbacks
def poll_until(condition, timeout=15.0, interval=0.05, what="condition", clock=None):
    """
    Call C{condition()} every C{interval} seconds until its result is true.

    @param condition: returns a value or a L{Deferred} of one; an exception
        it raises fails the wait at once.
    @param timeout: seconds (on C{clock}) before the wait fails.
    @param what: what is awaited, or a callable returning that text, for the
        failure message (called when the time is up, so it may describe the
        last state seen).
    @param clock: an L{IReactorTime}; the global reactor by default.
    @return: a L{Deferred} firing with the first true result, or failing
        with L{AssertionError} after C{timeout}.
    """
    clock = clock if clock is not None else _global_reactor
    deadline = clock.seconds() + timeout
    while True:
        value = yield defer.maybeDeferred(condition)
        if value:
            return value
        if clock.seconds() >= deadline:
            text = what() if callable(what) else what
            raise AssertionError("timed out after {}s waiting for {}".format(timeout, text))
        yield task.deferLater(clock, interval, lambda: None)
