# -*- test-case-name: tests.test_testing -*-
"""
Test doubles for the daemon's seams, so that the layers above them run on
a L{twisted.internet.task.Clock} alone: no thread, no global reactor.

  - L{ThreadlessConnectionPool}: a real L{adbapi.ConnectionPool} whose
    "thread" is a turn of the clock (synapse's threadless pool): one
    C{clock.advance(0)} runs every transaction queued so far, in order,
    on the real SQLite file.
  - L{settle}: turn the clock until a Deferred has fired.
"""

from twisted.enterprise import adbapi
from twisted.python import failure


class _ClockThreadPool:
    """
    The part of L{twisted.python.threadpool.ThreadPool} adbapi uses, run on
    the clock: work queued now runs at the next C{clock.advance}.
    """

    def __init__(self, clock):
        self.clock = clock

    def start(self):
        pass

    def stop(self):
        pass

    def callInThreadWithCallback(self, on_result, fn, *args, **kwargs):
        def run():
            try:
                result = fn(*args, **kwargs)
            except BaseException:
                on_result(False, failure.Failure())
            else:
                on_result(True, result)
        self.clock.callLater(0, run)


class _ClockReactor:
    """
    The reactor surface adbapi uses (startup and shutdown triggers,
    C{callFromThread}), over a clock: the "thread" is the clock's, so a
    result is handed back at once.
    """

    def __init__(self, clock):
        self.clock = clock

    def callWhenRunning(self, fn, *args, **kwargs):
        return None

    def addSystemEventTrigger(self, phase, event, fn, *args, **kwargs):
        return (phase, event, fn)

    def removeSystemEventTrigger(self, trigger):
        pass

    def callFromThread(self, fn, *args, **kwargs):
        fn(*args, **kwargs)


class ThreadlessConnectionPool(adbapi.ConnectionPool):
    """
    An adbapi ConnectionPool whose interactions run in the reactor thread,
    one clock turn after they are asked for.

    Use as C{Store(clock, path, pool_factory=ThreadlessConnectionPool.on(clock))}.
    """

    def __init__(self, clock, *args, **kwargs):
        kwargs["cp_reactor"] = _ClockReactor(clock)
        adbapi.ConnectionPool.__init__(self, *args, **kwargs)
        self.threadpool = _ClockThreadPool(clock)
        self.start()

    @classmethod
    def on(cls, clock):
        """
        A pool factory (callable(**kwargs) -> pool) for C{clock}.
        """
        return lambda *args, **kwargs: cls(clock, *args, **kwargs)


def settle(clock, d, turns=1000):
    """
    Turn C{clock} (without moving time) until C{d} has fired; return C{d}.

    @raise AssertionError: C{d} has not fired after C{turns} turns (it
        waits on time, or on nothing).
    """
    fired = []
    d.addBoth(lambda r: (fired.append(True), r)[1])
    for _ in range(turns):
        if fired:
            return d
        clock.advance(0)
    if not fired:
        raise AssertionError("Deferred %r did not fire in %d clock turns" % (d, turns))
    return d
