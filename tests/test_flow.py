# -*- test-case-name: tests.test_flow -*-
"""
Flow control through the protocol and router, with StringTransport
connections and one task.Clock for everything: the daemon's timers and a
real SQLite store whose adbapi pool runs on clock turns
(L{relay.testing.ThreadlessConnectionPool}).
"""

from twisted.internet import defer
from twisted.internet.testing import StringTransport
from twisted.trial import unittest

from relay.frames import frame
from tests.support.flow import Harness, frames_of, until


class BackpressureTests(unittest.TestCase):

    @defer.inlineCallbacks
    def test_sender_paused_and_resumed(self):
        """
        A direct sender is paused (its SENDs are held, one BUSY frame) when
        its recipient's queue reaches the high mark, and resumed once the
        recipient drains to the low mark.  Its socket is still read
        (issue 13.4: reading stopped its ACKs too).
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
        self.assertEqual(tx_t.producerState, "producing")
        self.assertEqual(tx.pause_reasons, {("queue", "rx")})
        busy = [f for f in frames_of(tx_t) if f["type"] == "BUSY"]
        self.assertEqual(len(busy), 1)
        self.assertEqual(busy[0]["payload"]["queue_depth"], 3)
        # A SEND from the paused sender is held, not routed.
        h.send(tx, "rx", "held")
        self.assertEqual(h.router.counters["accepted"], 4)
        self.assertEqual(len(tx.held), 1)
        delivered = [f for f in frames_of(rx_t) if f["type"] == "DELIVER"]
        self.assertEqual([d["payload"]["body"] for d in delivered], ["0"])
        for body in ("0", "1"):
            mid = delivered[-1]["id"]
            rx.dataReceived(frame({"v": 1, "type": "ACK", "payload": {"ack_id": mid}}))
            delivered = [f for f in frames_of(rx_t) if f["type"] == "DELIVER"]
        self.assertFalse(rx.outbox.backpressured)
        h.clock.advance(0)
        self.assertEqual(tx.pause_reasons, set())
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
        ids = yield h.query(h.store.pool.runQuery("SELECT id FROM messages ORDER BY seq"))
        self.assertEqual([f["id"] for f in got], [r[0] for r in ids])
        self.assertEqual([f["delivery"]["seq"] for f in got], list(range(1, 11)))

    @defer.inlineCallbacks
    def test_store_overload_pauses_all_readers(self):
        """
        When the batcher's pending bytes pass its limit, every connection's
        SENDs are held (its socket still read) until a flush brings them
        back under; then they are routed in order.
        """
        h = Harness(self)
        a, a_t = h.connect("a")
        b, b_t = h.connect("b")
        h.store.batcher.overload_bytes = 10
        h.send(a, "b", "x" * 100)
        h.send(b, "a", "y")
        self.assertEqual(a.pause_reasons, {"store"})
        self.assertEqual(b.pause_reasons, {"store"})
        self.assertEqual(len(b.held), 1)
        self.assertEqual(a_t.producerState, "producing")
        self.assertEqual(b_t.producerState, "producing")
        yield h.flush()
        h.clock.advance(0)
        # (b's SEND, routed now, may put the tiny limit over again.)
        self.assertEqual(len(b.held), 0)
        self.assertEqual(h.router.counters["accepted"], 2)


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
        self.assertEqual(len(tx.held), 3)
        self.assertEqual(tx_t.producerState, "producing")
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
        yield h.flush()
        n = yield h.query(h.store.count("SELECT count(*) FROM messages"))
        self.assertEqual(n, 1)


def ack_all(proto, frames):
    for f in frames:
        if f["type"] == "DELIVER":
            proto.dataReceived(frame({"v": 1, "type": "ACK",
                                      "payload": {"ack_id": f["id"], "seq": f["delivery"]["seq"]}}))


class HoldTests(unittest.TestCase):
    """
    Issue 13.4: a slowed sender's SENDs are held in bounded memory, its
    other frames are read and acted on at once.
    """

    @defer.inlineCallbacks
    def test_mutual_block_drains_through_acks(self):
        """
        a and b are each blocked on the other's queue; their ACKs are still
        read, drain the queues, and every SEND both ways is delivered.
        """
        h = Harness(self, queue_high=3, queue_low=1, queue_max=6, window=1)
        a, a_t = h.connect("a")
        b, b_t = h.connect("b")
        yield until(lambda: h.router.sessions["a"].live and h.router.sessions["b"].live)
        frames_of(a_t)
        frames_of(b_t)
        for i in range(10):
            h.send(a, "b", "a%d" % i)
            h.send(b, "a", "b%d" % i)
        self.assertTrue(a.pause_reasons and b.pause_reasons)
        got = {"a": [], "b": []}
        for _ in range(200):
            for name, proto, t in (("a", a, a_t), ("b", b, b_t)):
                fs = frames_of(t)
                got[name] += [f["payload"]["body"] for f in fs if f["type"] == "DELIVER"]
                ack_all(proto, fs)
            h.clock.advance(0)
            if len(got["a"]) == 10 and len(got["b"]) == 10:
                break
        self.assertEqual(got["a"], ["b%d" % i for i in range(10)])
        self.assertEqual(got["b"], ["a%d" % i for i in range(10)])

    @defer.inlineCallbacks
    def test_full_hold_behind_slow_recipient_overflows_to_store(self):
        """
        Beyond --max-held-sends, with only a slow recipient holding the
        sender, the oldest held SEND is routed (in order, into the store
        once the recipient's queue is full): no NACK, the socket still
        read, and the recipient gets all of them in order once it reads.
        """
        h = Harness(self, queue_high=3, queue_low=1, queue_max=4, window=1, hold_max=5)
        rx, rx_t = h.connect("rx")
        yield until(lambda: h.router.sessions["rx"].live)
        tx, tx_t = h.connect("tx")
        frames_of(tx_t)
        rx.outbox.pauseProducing()
        for i in range(30):
            h.send(tx, "rx", "%02d" % i)
        self.assertEqual(len(tx.held), 5)
        self.assertEqual(h.router.counters["accepted"], 25)
        self.assertEqual(tx_t.producerState, "producing")
        self.assertEqual([f for f in frames_of(tx_t) if f["type"] == "NACK"], [])
        rx.outbox.resumeProducing()
        got = []
        for _ in range(400):
            fs = frames_of(rx_t)
            got += [f["payload"]["body"] for f in fs if f["type"] == "DELIVER"]
            ack_all(rx, fs)
            h.clock.advance(0)
            if len(got) >= 30:
                break
        self.assertEqual(got, ["%02d" % i for i in range(30)])

    def test_full_hold_under_rate_limit_nacks_busy(self):
        """
        Beyond the hold, with the rate limit holding the sender, a SEND
        gets NACK BUSY with a retry_after_ms that covers the held ones;
        held SENDs are all routed later, none is lost.
        """
        h = Harness(self, rate=10, burst=1, hold_max=3)
        tx, tx_t = h.connect("tx")
        frames_of(tx_t)
        for i in range(6):
            h.send(tx, "rx", str(i))
        self.assertEqual(h.router.counters["accepted"], 1)
        self.assertEqual(len(tx.held), 3)
        nacks = [f["payload"] for f in frames_of(tx_t) if f["type"] == "NACK"]
        self.assertEqual([n["ack_id"] for n in nacks], ["s-4", "s-5"])
        self.assertEqual({n["code"] for n in nacks}, {"BUSY"})
        self.assertEqual({n["retry_after_ms"] for n in nacks}, {400})
        for _ in range(5):
            h.clock.advance(0.1)
            h.clock.advance(0)
        self.assertEqual(h.router.counters["accepted"], 4)
        self.assertEqual(len(tx.held), 0)

    def test_full_hold_with_store_behind_stops_reading(self):
        """
        Beyond the hold, while the store writer is behind, the SEND is kept
        and the socket is not read until the store has caught up (that
        wait depends on no agent); no NACK.
        """
        h = Harness(self, hold_max=2)
        tx, tx_t = h.connect("tx")
        frames_of(tx_t)
        tx.pause_reading("store")
        data = b"".join(frame({"v": 1, "type": "SEND", "id": str(i), "to": "rx",
                               "payload": {"kind": "message", "body": str(i)}})
                        for i in range(5))
        tx.dataReceived(data)
        self.assertEqual(len(tx.held), 3)
        self.assertEqual(tx_t.producerState, "paused")
        self.assertEqual([f for f in frames_of(tx_t) if f["type"] == "NACK"], [])
        tx.resume_reading("store")
        h.clock.advance(0)
        self.assertEqual(tx_t.producerState, "producing")
        self.assertEqual(h.router.counters["accepted"], 5)

    def test_bye_routes_held_sends_then_closes(self):
        """
        BYE from a sender with held SENDs: they are routed, then the
        connection closes with BYE.
        """
        h = Harness(self)
        tx, tx_t = h.connect("tx")
        tx.pause_reading("store")
        h.send(tx, "rx", "a")
        h.send(tx, "rx", "b")
        self.assertEqual(h.router.counters["accepted"], 0)
        tx.dataReceived(frame({"v": 1, "type": "BYE"}))
        self.assertEqual(h.router.counters["accepted"], 2)
        self.assertEqual(frames_of(tx_t)[-1]["type"], "BYE")
        self.assertTrue(tx_t.disconnecting)

    @defer.inlineCallbacks
    def test_lost_connection_routes_held_sends(self):
        """
        A connection lost with SENDs held: they were read, so they are
        stored (and delivered), not dropped.
        """
        h = Harness(self)
        tx, tx_t = h.connect("tx")
        tx.pause_reading(("queue", "rx"))
        h.send(tx, "rx", "kept")
        tx.connectionLost(None)
        self.assertEqual(h.router.counters["accepted"], 1)
        yield h.flush()
        n = yield h.query(h.store.count("SELECT count(*) FROM messages"))
        self.assertEqual(n, 1)

    def test_pong_and_ping_while_held(self):
        """
        PING is answered and PONG counts as life while SENDs are held.
        """
        h = Harness(self)
        tx, tx_t = h.connect("tx")
        frames_of(tx_t)
        tx.pause_reading(("queue", "rx"))
        h.send(tx, "rx", "held")
        tx.dataReceived(frame({"v": 1, "type": "PING", "payload": {"nonce": "n1"}}))
        pongs = [f for f in frames_of(tx_t) if f["type"] == "PONG"]
        self.assertEqual([p["payload"]["nonce"] for p in pongs], ["n1"])
        h.clock.advance(100)
        tx.dataReceived(frame({"v": 1, "type": "PONG", "payload": {"nonce": "1"}}))
        self.assertEqual(tx.last_rx, h.clock.seconds())


class ConnectionMemoryTests(unittest.TestCase):
    """
    Issue 13.5: what one connection can make the daemon hold is bounded.
    """

    def test_control_cap_stops_reading_until_drained(self):
        """
        A peer that does not read: its control frames queue up to
        control_max bytes, then its socket is not read; once it reads its
        queue down to half, reading resumes.
        """
        h = Harness(self, control_max=2000)
        p, t = h.connect("p")
        p.outbox.pauseProducing()
        ping = frame({"v": 1, "type": "PING", "payload": {"nonce": "x" * 50}})
        p.dataReceived(ping * 100)
        self.assertEqual(t.producerState, "paused")
        self.assertLessEqual(p.outbox.control_bytes, 2000 + len(ping) + 100)
        answered = p.outbox.depth()
        self.assertLess(answered, 100)
        p.outbox.resumeProducing()
        h.clock.advance(0)
        self.assertEqual(t.producerState, "producing")
        pongs = [f for f in frames_of(t) if f["type"] == "PONG"]
        self.assertEqual(len(pongs), 100)

    def test_status_rate_limited_per_connection(self):
        """
        STATUS is answered status_burst times at once, then with a small
        non-fatal ERROR carrying retry_after_ms, and again once a token is
        due; before HELLO too.
        """
        h = Harness(self, status_rate=2.0, status_burst=3)
        proto = h.factory.buildProtocol(None)
        t = StringTransport()
        proto.makeConnection(t)
        proto.dataReceived(frame({"v": 1, "type": "STATUS", "id": "q"}) * 10)
        fs = frames_of(t)
        self.assertEqual([f["type"] for f in fs], ["STATUS_REPLY"] * 3 + ["ERROR"] * 7)
        self.assertEqual({f["payload"]["fatal"] for f in fs[3:]}, {False})
        self.assertEqual(fs[3]["payload"]["retry_after_ms"], 500)
        self.assertEqual(fs[3]["id"], "q")
        h.clock.advance(0.5)
        proto.dataReceived(frame({"v": 1, "type": "STATUS", "id": "q"}))
        self.assertEqual([f["type"] for f in frames_of(t)], ["STATUS_REPLY"])
        self.assertFalse(t.disconnecting)

    def test_log_lines_rate_limited_and_cut(self):
        """
        LOG lines reach the log at most log_burst at once (then log_rate a
        second), each cut to LOG_LINE_MAX characters; the dropped ones are
        counted in one line.
        """
        from twisted.logger import globalLogPublisher
        from relay.protocol import LOG_LINE_MAX
        seen = []

        def observer(event):
            if event.get("log_namespace", "").startswith("relay.protocol"):
                seen.append(event)

        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        h = Harness(self, log_rate=1.0, log_burst=2)
        p, t = h.connect("p")
        p.dataReceived(frame({"v": 1, "type": "LOG", "payload": {"data": "y" * 10000}}) * 5)
        lines = [e for e in seen if "data" in e]
        self.assertEqual(len(lines), 2)
        self.assertEqual(len(lines[0]["data"]), LOG_LINE_MAX)
        h.clock.advance(1.0)
        p.dataReceived(frame({"v": 1, "type": "LOG", "payload": {"data": ["z"] * 5000}}))
        dropped = [e for e in seen if e.get("n") == 3]
        self.assertEqual(len(dropped), 1)
        self.assertLessEqual(len([e for e in seen if "data" in e][-1]["data"]), LOG_LINE_MAX)
        self.assertEqual([f for f in frames_of(t) if f["type"] == "ERROR"], [])
