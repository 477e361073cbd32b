# -*- test-case-name: tests.test_outbox -*-
"""
The per-connection write queue as a streaming producer on a transport.
"""

from twisted.internet.testing import StringTransport
from twisted.trial import unittest

from relay.outbox import Outbox


class Recorder:
    def __init__(self):
        self.written = []
        self.marks = []

    def on_write(self, delivery):
        self.written.append(delivery)

    def on_backpressure(self, outbox, on):
        self.marks.append(on)


def make(high=3, low=1, maximum=5, window=100):
    transport = StringTransport()
    rec = Recorder()
    box = Outbox(transport, high=high, low=low, maximum=maximum, window=window,
                 on_write=rec.on_write, on_backpressure=rec.on_backpressure)
    return transport, box, rec


class OutboxTests(unittest.TestCase):

    def test_registered_as_streaming_producer(self):
        """
        The queue registers itself with its transport as a streaming
        (push) producer, as Twisted's own test_registerProducers checks.
        """
        transport, box, _ = make()
        self.assertIs(transport.producer, box)
        self.assertTrue(transport.streaming)
        self.assertEqual(transport.producerState, "producing")

    def test_writes_straight_through_when_idle(self):
        """
        With nothing queued and the transport not paused, a frame is
        written at once and its delivery reported written.
        """
        transport, box, rec = make()
        box.push(b"one", "d1")
        self.assertEqual(transport.value(), b"one")
        self.assertEqual(rec.written, ["d1"])
        self.assertEqual(box.depth(), 0)

    def test_paused_transport_gets_no_writes(self):
        """
        After Twisted calls pauseProducing (the transport's buffer is full),
        nothing is written, control frames included, until
        resumeProducing; then everything goes out in order, control first.
        """
        transport, box, rec = make(high=100, maximum=100)
        box.pauseProducing()
        box.push(b"a", "da")
        box.push_control(b"C")
        box.push(b"b", "db")
        self.assertEqual(transport.value(), b"")
        self.assertEqual(rec.written, [])
        self.assertEqual(box.depth(), 3)
        box.resumeProducing()
        self.assertEqual(transport.value(), b"Cab")
        self.assertEqual(rec.written, ["da", "db"])

    def test_water_marks(self):
        """
        Reaching the high mark signals backpressure once; draining to the
        low mark releases it once.
        """
        transport, box, rec = make(high=3, low=1)
        box.pauseProducing()
        box.push(b"1", 1)
        box.push(b"2", 2)
        self.assertEqual(rec.marks, [])
        box.push(b"3", 3)
        self.assertEqual(rec.marks, [True])
        self.assertTrue(box.backpressured)
        box.push(b"4", 4)
        self.assertEqual(rec.marks, [True])
        box.resumeProducing()
        self.assertEqual(rec.marks, [True, False])
        self.assertFalse(box.backpressured)

    def test_full_at_maximum(self):
        """
        The queue reports full at C{maximum} deliveries, so that the router
        keeps further ones in the store.
        """
        transport, box, _ = make(high=2, low=1, maximum=3)
        box.pauseProducing()
        for i in range(3):
            self.assertFalse(box.full())
            box.push(b"x", i)
        self.assertTrue(box.full())

    def test_window_holds_deliveries_until_acked(self):
        """
        At most C{window} deliveries are written and unacknowledged; the
        rest wait in the queue (control frames do not wait), and each ACK
        lets the next one out.
        """
        transport, box, rec = make(high=10, maximum=10, window=2)
        for i in range(4):
            box.push(b"%d" % i, i)
        box.push_control(b"P")
        self.assertEqual(transport.value(), b"01P")
        self.assertEqual(box.depth(), 2)
        box.acked()
        self.assertEqual(transport.value(), b"01P2")
        box.acked()
        box.acked()
        self.assertEqual(transport.value(), b"01P23")
        self.assertEqual(rec.written, [0, 1, 2, 3])

    def test_pause_during_write(self):
        """
        When the transport pauses the producer in the middle of a drain (its
        buffer filled up), the drain stops at once.
        """
        transport, box, rec = make(high=10, maximum=10)
        box.pauseProducing()
        for i in range(5):
            box.push(b"%d" % i, i)
        original = transport.write

        def write(data):
            original(data)
            if data == b"1":
                box.pauseProducing()
        transport.write = write
        box.resumeProducing()
        self.assertEqual(transport.value(), b"01")
        self.assertEqual(box.depth(), 3)

    def test_stop_clears_without_writing(self):
        """
        When the connection goes away the queue is dropped (deliveries are
        in the store already) and later pushes are ignored.
        """
        transport, box, rec = make()
        box.pauseProducing()
        box.push(b"a", 1)
        box.stopProducing()
        self.assertEqual(box.depth(), 0)
        box.push(b"b", 2)
        box.push_control(b"c")
        self.assertEqual(transport.value(), b"")

    def test_control_bytes_capped(self):
        """
        Queued control bytes are counted; above control_max the outbox says
        so once (the connection stops reading its peer), and again once
        the peer has read them down to half of it (issue 13.5).
        """
        transport = StringTransport()
        calls = []
        box = Outbox(transport, control_max=10, on_control_full=calls.append)
        box.pauseProducing()
        for _ in range(5):
            box.push_control(b"xyz")
        self.assertEqual(box.control_bytes, 15)
        self.assertEqual(calls, [True])
        box.resumeProducing()
        self.assertEqual(transport.value(), b"xyz" * 5)
        self.assertEqual(box.control_bytes, 0)
        self.assertEqual(calls, [True, False])
        box.pauseProducing()
        box.push_control(b"abc")
        box.stopProducing()
        self.assertEqual(box.control_bytes, 0)
