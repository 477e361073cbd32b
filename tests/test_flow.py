# -*- test-case-name: tests.test_flow -*-
"""
Flow control through the protocol and router, with StringTransport
connections and a task.Clock for the daemon's timers; the store is a real
SQLite file (its writer thread runs on the real reactor).
"""

import os

import orjson
from twisted.internet import defer, reactor, task
from twisted.internet.testing import StringTransport
from twisted.trial import unittest

from relay.frames import frame
from relay.protocol import RelayFactory
from relay.ratelimit import RateLimiter
from relay.router import Router
from relay.store import Store


def frames_of(transport):
    data = transport.value()
    transport.clear()
    out = []
    while data:
        n = int.from_bytes(data[:4], "big")
        out.append(orjson.loads(data[4:4 + n]))
        data = data[4 + n:]
    return out


class Harness:
    """
    A router and factory over a real store, with connections on
    StringTransports.
    """

    def __init__(self, testcase, rate=None, burst=None, policy="throttle", **kw):
        self.clock = task.Clock()
        path = os.path.abspath(testcase.mktemp())
        os.makedirs(path)
        self.store = Store(reactor, os.path.join(path, "r.sqlite"), batch_delay=0.005)
        self.store.open()
        testcase.addCleanup(self.store.close)
        limiter = RateLimiter(self.clock, rate=rate, burst=burst) if rate else None
        fkw = {k: v for k, v in kw.items() if k in ("queue_high", "queue_low", "queue_max", "window")}
        rkw = {k: v for k, v in kw.items() if k not in ("queue_high", "queue_low", "queue_max")}
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


@defer.inlineCallbacks
def until(predicate, timeout=10.0):
    deadline = reactor.seconds() + timeout
    while not predicate():
        if reactor.seconds() > deadline:
            raise AssertionError("condition not met in %ss" % timeout)
        yield task.deferLater(reactor, 0.01, lambda: None)


class BackpressureTests(unittest.TestCase):

    @defer.inlineCallbacks
    def test_sender_paused_and_resumed(self):
        """
        A direct sender is paused (its transport stops producing, one BUSY
        frame) when its recipient's queue reaches the high mark, and
        resumed once the recipient drains to the low mark.
        """
        h = Harness(self, queue_high=3, queue_low=1, queue_max=5, window=1)
        rx, rx_t = h.connect("rx")
        yield until(lambda: h.router.sessions["rx"].live)
        tx, tx_t = h.connect("tx")
        frames_of(tx_t)
        frames_of(rx_t)
        for i in range(4):
            h.send(tx, "rx", str(i))
        # One written (window 1), three queued: the high mark.
        self.assertTrue(rx.outbox.backpressured)
        self.assertEqual(tx_t.producerState, "paused")
        busy = [f for f in frames_of(tx_t) if f["type"] == "BUSY"]
        self.assertEqual(len(busy), 1)
        self.assertEqual(busy[0]["payload"]["queue_depth"], 3)
        # More data from the paused sender is not processed.
        h.send(tx, "rx", "held")
        self.assertEqual(h.router.counters["accepted"], 4)
        delivered = [f for f in frames_of(rx_t) if f["type"] == "DELIVER"]
        self.assertEqual([d["payload"]["body"] for d in delivered], ["0"])
        for body in ("0", "1"):
            mid = delivered[-1]["id"]
            rx.dataReceived(frame({"v": 1, "type": "ACK", "payload": {"ack_id": mid}}))
            delivered = [f for f in frames_of(rx_t) if f["type"] == "DELIVER"]
        self.assertFalse(rx.outbox.backpressured)
        h.clock.advance(0)
        self.assertEqual(tx_t.producerState, "producing")
        self.assertEqual(h.router.counters["accepted"], 5)

    @defer.inlineCallbacks
    def test_overflow_to_store_and_back_in_order(self):
        """
        A broadcast member whose queue is at --queue-max gets nothing more
        in memory; its deliveries wait in the store and are sent in order,
        with their original ids, once its queue drains.
        """
        h = Harness(self, queue_high=3, queue_low=1, queue_max=4, window=100)
        rx, rx_t = h.connect("rx")
        yield until(lambda: h.router.sessions["rx"].live)
        tx, tx_t = h.connect("tx")
        rx.outbox.pauseProducing()
        for i in range(10):
            h.send(tx, "*", "%02d" % i)
        self.assertEqual(rx.outbox.depth(), 4)
        self.assertFalse(h.router.sessions["rx"].live)
        # The broadcast sender is not paused for one slow member.
        self.assertEqual(tx_t.producerState, "producing")
        frames_of(rx_t)
        rx.outbox.resumeProducing()
        yield until(lambda: h.router.sessions["rx"].live)
        got = [f for f in frames_of(rx_t) if f["type"] == "DELIVER"]
        self.assertEqual([f["payload"]["body"] for f in got], ["%02d" % i for i in range(10)])
        ids = yield h.store.pool.runQuery("SELECT id FROM messages ORDER BY seq")
        self.assertEqual([f["id"] for f in got], [r[0] for r in ids])
        self.assertEqual([f["delivery"]["seq"] for f in got], list(range(1, 11)))

    @defer.inlineCallbacks
    def test_store_overload_pauses_all_readers(self):
        """
        When the batcher's pending bytes pass its limit, every connection
        stops being read until a flush brings them back under.
        """
        h = Harness(self)
        a, a_t = h.connect("a")
        b, b_t = h.connect("b")
        h.store.batcher.overload_bytes = 10
        h.send(a, "b", "x" * 100)
        self.assertEqual(a_t.producerState, "paused")
        self.assertEqual(b_t.producerState, "paused")
        yield h.store.batcher.flush()
        h.clock.advance(0)
        self.assertEqual(a_t.producerState, "producing")
        self.assertEqual(b_t.producerState, "producing")


class RateLimitProtocolTests(unittest.TestCase):

    @defer.inlineCallbacks
    def test_throttle_holds_frames_in_order(self):
        """
        Over its budget, an agent is not refused: its socket stops being
        read, one BUSY frame says for how long, held frames are processed
        in order when a token is due.
        """
        h = Harness(self, rate=10, burst=2)
        rx, rx_t = h.connect("rx")
        tx, tx_t = h.connect("tx")
        yield until(lambda: h.router.sessions["rx"].live)
        frames_of(tx_t)
        frames_of(rx_t)
        data = b"".join(frame({"v": 1, "type": "SEND", "id": str(i), "to": "rx",
                               "payload": {"kind": "message", "body": str(i)}})
                        for i in range(5))
        tx.dataReceived(data)
        self.assertEqual(h.router.counters["accepted"], 2)
        self.assertEqual(tx_t.producerState, "paused")
        busy = [f for f in frames_of(tx_t) if f["type"] == "BUSY"]
        self.assertEqual([b["payload"]["retry_after_ms"] for b in busy], [100])
        h.clock.advance(0.1)
        h.clock.advance(0)
        self.assertEqual(h.router.counters["accepted"], 3)
        for _ in range(4):
            h.clock.advance(0.1)
            h.clock.advance(0)
        self.assertEqual(h.router.counters["accepted"], 5)
        self.assertEqual(tx_t.producerState, "producing")
        got = [f["payload"]["body"] for f in frames_of(rx_t) if f["type"] == "DELIVER"]
        self.assertEqual(got, ["0", "1", "2", "3", "4"])
        self.assertEqual([f for f in frames_of(tx_t) if f["type"] in ("NACK", "BUSY")], [])

    @defer.inlineCallbacks
    def test_reject_nacks_with_retry_after(self):
        """
        With the reject policy an over-budget SEND gets NACK BUSY with
        retry_after_ms and is not stored.
        """
        h = Harness(self, rate=4, burst=1, policy="reject")
        tx, tx_t = h.connect("tx")
        frames_of(tx_t)
        h.send(tx, "rx", "a")
        h.send(tx, "rx", "b")
        nacks = [f for f in frames_of(tx_t) if f["type"] == "NACK"]
        self.assertEqual(len(nacks), 1)
        self.assertEqual(nacks[0]["payload"]["ack_id"], "s-b")
        self.assertEqual(nacks[0]["payload"]["code"], "BUSY")
        self.assertEqual(nacks[0]["payload"]["retry_after_ms"], 250)
        self.assertEqual(tx_t.producerState, "producing")
        yield h.store.batcher.flush()
        n = yield h.store.count("SELECT count(*) FROM messages")
        self.assertEqual(n, 1)
