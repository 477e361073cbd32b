# -*- test-case-name: tests.test_loops -*-
"""
Periodic work that cannot die: a L{LoopingCall} whose callable catches and
logs its own errors, so one failing iteration (a store error, a bug in one
session's bookkeeping) does not stop redelivery or expiry for the life of
the process (the mailbox server's "so a single error won't kill the loop").
"""

from twisted.internet import defer, task
from twisted.logger import Logger


class GuardedLoop:
    """
    Call C{fn()} every C{interval} seconds on C{clock}; an exception (or a
    failed Deferred) from one call is logged and the loop goes on.  A call
    returning a Deferred holds the next one back until it fires (no
    overlapping runs).

    @ivar errors: how many calls failed (STATUS, tests).
    """

    log = Logger()

    def __init__(self, clock, fn, name):
        self.fn = fn
        self.name = name
        self.errors = 0
        self._loop = task.LoopingCall(self._once)
        self._loop.clock = clock

    @property
    def running(self):
        return self._loop.running

    def start(self, interval, now=True):
        self._loop.start(interval, now=now)

    def stop(self):
        if self._loop.running:
            self._loop.stop()

    def _once(self):
        d = defer.maybeDeferred(self.fn)
        d.addErrback(self._failed)
        return d

    def _failed(self, failure):
        self.errors += 1
        self.log.failure("{name} loop: an iteration failed; the loop goes on", failure,
                         name=self.name)
