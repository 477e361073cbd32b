# -*- test-case-name: tests.test_web_sse -*-
"""
Tests for L{relay.web.sse}: the bounded Server-Sent Events stream.
"""

from twisted.internet import error, task
from twisted.internet.testing import StringTransport
from twisted.python import failure
from twisted.trial import unittest
from twisted.web import server

from relay.events import FIELDS, EventHub
from relay.web.resources import JSONDirectory, Events
from relay.web.sse import EventStream, encode_events
from tests.support.sse import accepted, records


class SSEHarness:
    """
    A real twisted.web Site with C{/api/events}, one HTTP connection over a
    StringTransport, on a task.Clock.
    """

    def __init__(self, max_pending=10000):
        self.clock = task.Clock()
        self.hub = EventHub()
        self.stream = EventStream(self.clock, self.hub, max_pending=max_pending)
        root = JSONDirectory()
        root.putChild(b"events", Events(self.stream))
        self.site = server.Site(root, reactor=self.clock)
        self.channel = self.site.buildProtocol(None)
        self.transport = StringTransport()
        self.channel.makeConnection(self.transport)
        self.channel.dataReceived(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")

    def received(self):
        data = self.transport.value()
        self.transport.clear()
        return data


class SSETests(unittest.TestCase):

    def test_gathered_and_written_at_once(self):
        """
        Events are gathered for the flush delay and written in one batch
        record, in order; the hub has a subscriber only while a client is
        connected.
        """
        h = SSEHarness()
        first = h.received()
        self.assertIn(b"text/event-stream", first)
        self.assertEqual(records(first), [("hello", {})])
        self.assertTrue(h.hub.listening)
        h.hub.emit("accepted", **accepted(1, "<script>x</script>"))
        h.hub.emit("acked", id="m-1", to="bob", sent_at=1.0, at=2.0)
        self.assertEqual(h.received(), b"")
        h.clock.advance(0.05)
        data = h.received()
        self.assertEqual(data.count(b"event: batch"), 1)
        got = records(data)
        self.assertEqual([k for k, _ in got], ["accepted", "acked"])
        self.assertEqual(got[0][1]["body"], "<script>x</script>")
        self.assertEqual(got[0][1]["from"], "alice")
        h.channel.connectionLost(failure.Failure(error.ConnectionDone()))
        self.assertFalse(h.hub.listening)
        self.assertEqual(h.stream.clients, set())

    def test_paused_client_bounded_then_resync(self):
        """
        While the connection is paused (the browser does not read), batches
        wait in a buffer that never exceeds its bound: past it the backlog
        is dropped; on resume the client gets one resync event, then the
        events after it.
        """
        h = SSEHarness(max_pending=10000)
        h.received()
        h.transport.producer.pauseProducing()
        (client,) = h.stream.clients
        for n in range(200):
            h.hub.emit("accepted", **accepted(n, "x" * 200))
            h.clock.advance(0.05)
            self.assertLessEqual(client.pending_bytes, 10000)
        self.assertEqual(h.received(), b"")
        self.assertEqual(h.stream.resyncs, 1)
        h.transport.producer.resumeProducing()
        h.clock.advance(0)
        h.hub.emit("acked", id="m-5", to="bob", sent_at=None, at=3.0)
        h.clock.advance(0.05)
        got = records(h.received())
        self.assertEqual(got[0], ("resync", {}))
        self.assertEqual(got, [("resync", {}),
                               ("acked", {"id": "m-5", "to": "bob", "sent_at": None, "at": 3.0})])
        self.assertEqual(h.stream.resyncs, 1)

    def test_paused_within_bound_keeps_everything(self):
        """
        A short pause within the bound loses nothing and needs no resync.
        """
        h = SSEHarness(max_pending=100000)
        h.received()
        h.transport.producer.pauseProducing()
        for n in range(10):
            h.hub.emit("accepted", **accepted(n))
            h.clock.advance(0.05)
        self.assertEqual(h.received(), b"")
        h.transport.producer.resumeProducing()
        h.clock.advance(0)
        got = records(h.received())
        self.assertEqual([f["id"] for k, f in got], ["m-%d" % n for n in range(10)])
        self.assertEqual(h.stream.resyncs, 0)

    def test_burst_beyond_gathering_bound(self):
        """
        More events in one flush period than the stream gathers are dropped
        and every client is told to resync; the events after that arrive.
        """
        from relay.web import sse
        self.patch(sse, "MAX_GATHERED", 5)
        h = SSEHarness()
        h.received()
        for n in range(20):
            h.hub.emit("accepted", **accepted(n))
        h.clock.advance(0.05)
        h.hub.emit("acked", id="m-19", to="bob", sent_at=None, at=3.0)
        h.clock.advance(0.05)
        got = records(h.received())
        self.assertEqual(got[0], ("resync", {}))
        self.assertEqual(got[-1][0], "acked")
        self.assertLessEqual(len(got), 1 + 5 + 1)

    def test_gathered_untracked_by_gc(self):
        """
        What waits for the next flush is bytes in one buffer, nothing the
        garbage collector tracks (a tuple per event, surviving young
        collections until the flush, was most of a dashboard's cost per
        message); the batch record is still the JSON list of the events.
        """
        import gc
        h = SSEHarness()
        h.received()
        for n in range(50):
            h.hub.emit("accepted", **accepted(n))
            h.hub.emit("delivered", id="m-%d" % n, seq=n, to="bob", attempts=1, at=2.0)
        self.assertEqual(h.stream.gathered_count, 100)
        self.assertFalse(gc.is_tracked(h.stream.gathered))
        h.clock.advance(0.05)
        got = records(h.received())
        self.assertEqual(len(got), 100)
        self.assertEqual(got[1], ("delivered", {"id": "m-0", "seq": 0, "to": "bob",
                                                "attempts": 1, "at": 2.0}))
        self.assertEqual(h.stream.gathered_count, 0)

    def test_long_body_cut(self):
        """
        An accepted event carries at most 2000 characters of the body.
        """
        stream = EventStream(task.Clock(), EventHub())
        fields = accepted(1, "y" * 5000)
        stream._accepted("accepted", tuple(fields[f] for f in FIELDS["accepted"]))
        data = encode_events(stream.gathered)
        ((kind, record),) = records(data)
        self.assertEqual(record["body"], "y" * 2000)
