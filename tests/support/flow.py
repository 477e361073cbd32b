# -*- test-case-name: tests.test_flow,tests.test_retransmit -*-
"""
The flow-control harness of the unit tests: a router and factory over a
real store, with connections on L{StringTransport}s and the daemon's timers
on a L{task.Clock}.
"""

import os

from twisted.internet import defer, task
from twisted.internet.testing import StringTransport

from relay.frames import frame
from relay.protocol import RelayFactory
from relay.ratelimit import RateLimiter
from relay.router import Router
from relay.store import Store
from relay.testing import ThreadlessConnectionPool, settle
from tests.support.frames import decode_from


def frames_of(transport):
    """
    Every frame written to C{transport} since the last call (it is cleared).
    """
    frames, _ = decode_from(transport.value())
    transport.clear()
    return frames


class Harness:
    """
    A router and factory over a real store, with connections on
    StringTransports.
    """

    def __init__(self, testcase, rate=None, burst=None, policy="throttle", **kw):
        self.clock = task.Clock()
        path = os.path.abspath(testcase.mktemp())
        os.makedirs(path)
        self.store = Store(self.clock, os.path.join(path, "r.sqlite"), batch_delay=0.005,
                           pool_factory=ThreadlessConnectionPool.on(self.clock))
        self.store.open()
        testcase.addCleanup(lambda: settle(self.clock, self.store.close()))
        until.clock = self.clock
        limiter = RateLimiter(self.clock, rate=rate, burst=burst) if rate else None
        fonly = ("queue_high", "queue_low", "queue_max", "hold_max", "hold_bytes", "control_max",
                 "status_rate", "status_burst", "log_rate", "log_burst")
        fkw = {k: v for k, v in kw.items() if k in fonly + ("window",)}
        rkw = {k: v for k, v in kw.items() if k not in fonly}
        self.router = Router(self.clock, self.store, limiter=limiter, rate_policy=policy, **rkw)
        self.router.start()
        testcase.addCleanup(self.router.stop)
        self.factory = RelayFactory(self.router, self.clock, rate_policy=policy, **fkw)

    def connect(self, name):
        proto = self.factory.buildProtocol(None)
        transport = StringTransport()
        proto.makeConnection(transport)
        proto.dataReceived(frame({"v": 1, "type": "HELLO", "payload": {"agent": name}}))
        return proto, transport

    def send(self, proto, to, body, **meta):
        env = {"v": 1, "type": "SEND", "id": "s-" + body, "to": to,
               "payload": {"kind": "message", "body": body}}
        if meta:
            env["payload_meta"] = meta
        proto.dataReceived(frame(env))

    def flush(self):
        """
        Commit everything queued; a fired Deferred.
        """
        return settle(self.clock, self.store.flush())

    def query(self, d):
        """
        Run the store read C{d} (a Deferred from the store) to its end.
        """
        return settle(self.clock, d)


def until(predicate, turns=1000):
    """
    Turn the last L{Harness}'s clock (without moving time) until
    C{predicate()} holds; a fired Deferred.
    """
    for _ in range(turns):
        if predicate():
            return defer.succeed(None)
        until.clock.advance(0)
    raise AssertionError("condition not met in %d clock turns" % (turns,))
