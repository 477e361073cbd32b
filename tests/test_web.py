"""
Unit tests of the HTTP side's parts (issue 11): the event hub, the SSE
stream's bounded buffer (real twisted.web request on a StringTransport,
task.Clock), the event-fed histograms, /healthz's store check and the
C{--http} option checks.  The end-to-end tests are in tests.e2e.test_web.
"""

import orjson
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer, error, task
from twisted.internet.testing import StringTransport
from twisted.python import failure, usage
from twisted.trial import unittest
from twisted.web import server

from relay.events import FIELDS, EventHub
from relay.router import Router
from relay.status import StatusReporter
from relay.store import Store
from relay.tap import Options
from relay.web import is_loopback
from relay.web.metrics import Metrics
from relay.web.resources import BadRequest, Health, JSONDirectory, Events, message_filters
from relay.web.sse import EventStream, encode_events


class EventHubTests(unittest.TestCase):

    def test_nobody_listening(self):
        """
        With no subscriber, emit does nothing and the hub says nobody listens.
        """
        hub = EventHub()
        self.assertFalse(hub.listening)
        hub.emit("accepted", id="x")

    def test_subscribers_in_order_and_unsubscribe(self):
        """
        Subscribers get (kind, fields) in subscription order; one that
        raises is logged and does not stop the others; unsubscribing stops
        the calls.
        """
        hub = EventHub()
        seen = []

        def broken(kind, fields):
            raise ValueError("boom")
        hub.subscribe(lambda k, f: seen.append(("a", k, f)))
        hub.subscribe(broken)
        off = hub.subscribe(lambda k, f: seen.append(("b", k, f)))
        hub.emit("online", agent="bob")
        self.assertEqual(seen, [("a", "online", {"agent": "bob"}),
                                ("b", "online", {"agent": "bob"})])
        off()
        hub.emit("offline", agent="bob")
        self.assertEqual([s[0] for s in seen], ["a", "b", "a"])
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 2)


    def test_positional_and_named(self):
        """
        post() takes the fields positionally in FIELDS order: a positional
        subscriber gets that tuple, a named one a dictionary of FIELDS'
        names; emit() with named fields gives a positional subscriber the
        tuple in FIELDS order, None for a field not given.
        """
        hub = EventHub()
        seen = []
        hub.subscribe(lambda k, v: seen.append(("pos", k, v)), ("acked",), positional=True)
        hub.subscribe(lambda k, f: seen.append(("named", k, f)), ("acked",))
        hub.post("acked", "m-1", "bob", 1.5, 2.0)
        hub.emit("acked", at=3.0, id="m-2", to="carol")
        hub.post("online", "bob", "s-1", 1.0)
        self.assertEqual(FIELDS["acked"], ("id", "to", "sent_at", "at"))
        self.assertEqual(seen, [
            ("pos", "acked", ("m-1", "bob", 1.5, 2.0)),
            ("named", "acked", {"id": "m-1", "to": "bob", "sent_at": 1.5, "at": 2.0}),
            ("pos", "acked", ("m-2", "carol", None, 3.0)),
            ("named", "acked", {"at": 3.0, "id": "m-2", "to": "carol"})])


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


def accepted(n, body="hi"):
    return dict(id="m-%d" % n, seq=n, sender="alice", to="bob", topic=None,
                payload={"kind": "message", "body": body}, recipients=["bob"], ts=1000)


def records(data):
    """
    [(kind, fields)] of the SSE records in a chunked response body, a
    C{batch} record unpacked into its events.
    """
    out = []
    kind = None
    for line in data.split(b"\n"):
        line = line.rstrip(b"\r")
        if line.startswith(b"event: "):
            kind = line[7:].decode()
        elif line.startswith(b"data: ") and kind is not None:
            fields = orjson.loads(line[6:])
            if kind == "batch":
                out.extend(event(item) for item in fields)
            else:
                out.append((kind, fields))
            kind = None
    return out


def event(item):
    """
    (kind, fields) of one item of a batch record (an accepted event is a
    list of ACCEPTED_FIELDS values, another [kind, [values in FIELDS order]]).
    """
    from relay.events import FIELDS
    from relay.web.sse import ACCEPTED_FIELDS
    if item[0] == "accepted":
        return "accepted", dict(zip(ACCEPTED_FIELDS, item[1:]))
    assert len(item[1]) == len(FIELDS[item[0]]), item
    return item[0], dict(zip(FIELDS[item[0]], item[1]))


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


class MetricsTests(unittest.TestCase):

    def setUp(self):
        self.clock = task.Clock()
        self.store = Store(self.clock, self.mktemp())
        self.hub = EventHub()
        self.router = Router(self.clock, self.store, events=self.hub)
        self.metrics = Metrics(self.router, self.store, self.hub)

    def samples(self):
        out = {}
        for family in text_string_to_metric_families(self.metrics.render().decode()):
            for s in family.samples:
                out[s.name + "".join("{%s=%s}" % kv for kv in sorted(s.labels.items()))] = s.value
        return out

    def test_histograms_from_events(self):
        """
        SEND-to-DELIVER is measured on first deliveries from the accept
        time, DELIVER-to-ACK from the write time; acks of deliveries of an
        earlier connection (no write time) and resends are not observed.
        """
        self.hub.emit("accepted", **dict(accepted(7), ts=10000))
        self.hub.emit("delivered", id="m-7", seq=7, to="bob", attempts=1, at=10.25)
        self.hub.emit("delivered", id="m-7", seq=7, to="bob", attempts=2, at=15.0)
        self.hub.emit("acked", id="m-7", to="bob", sent_at=10.25, at=10.75)
        self.hub.emit("acked", id="m-1", to="bob", sent_at=None, at=11.0)
        m = self.samples()
        self.assertEqual(m["relay_send_to_deliver_seconds_count"], 1)
        self.assertEqual(m["relay_send_to_deliver_seconds_sum"], 0.25)
        self.assertEqual(m["relay_send_to_deliver_seconds_bucket{le=0.25}"], 1)
        self.assertEqual(m["relay_send_to_deliver_seconds_bucket{le=0.1}"], 0)
        self.assertEqual(m["relay_deliver_to_ack_seconds_count"], 1)
        self.assertEqual(m["relay_deliver_to_ack_seconds_sum"], 0.5)

    def test_counters_read_on_scrape(self):
        """
        Counters are the router's own, read when scraped: no per-message work.
        """
        self.router.counters["accepted"] = 41
        self.router.nacks["BUSY"] = 3
        self.router.errors["BAD_REQUEST"] = 2
        m = self.samples()
        self.assertEqual(m["relay_messages_accepted_total"], 41)
        self.assertEqual(m["relay_nacks_total{code=BUSY}"], 3)
        self.assertEqual(m["relay_error_frames_total{code=BAD_REQUEST}"], 2)
        self.assertEqual(m["relay_agents_connected"], 0)

    def test_commit_time(self):
        """
        Each batch commit's duration lands in relay_store_commit_seconds.
        """
        for listener in self.store.batcher.commit_listeners:
            listener(0.003, 10)
        m = self.samples()
        self.assertEqual(m["relay_store_commit_seconds_count"], 1)
        self.assertEqual(m["relay_store_commit_seconds_bucket{le=0.005}"], 1)


class HealthTests(unittest.TestCase):

    def test_store_failing(self):
        """
        /healthz turns 503 while store commits fail (the rows are kept and
        retried) and back to 200 once a commit succeeds.
        """
        clock = task.Clock()
        store = Store(clock, self.mktemp())
        router = Router(clock, store)
        results = []

        def write(batch):
            d = defer.Deferred()
            results.append(d)
            return d
        store.batcher._write = write
        store.pool = object()
        health = Health([], StatusReporter(clock, router, store), store)
        self.assertEqual(health.problems(), [])
        store.batcher.add("meta", ("k", "v"))
        store.batcher.flush()
        results.pop().errback(OSError("disk full"))
        self.flushLoggedErrors(OSError)
        self.assertEqual(health.problems(), ["store: commits are failing (rows kept, retrying)"])
        clock.advance(1)
        results.pop().callback(None)
        self.assertEqual(health.problems(), [])

    def test_store_not_open(self):
        """
        A store that is not open is a problem.
        """
        clock = task.Clock()
        store = Store(clock, self.mktemp())
        health = Health([], StatusReporter(clock, Router(clock, store), store), store)
        self.assertEqual(health.problems(), ["store: not open"])


class OptionTests(unittest.TestCase):

    def parse(self, *args):
        options = Options()
        options.parseOptions(list(args))
        return options

    def test_http_repeatable_off_by_default(self):
        """
        --http is off by default and may be given more than once.
        """
        self.assertEqual(self.parse()["http"], [])
        self.assertEqual(self.parse("--http", "tcp:8765:interface=127.0.0.1",
                                    "--http", "unix:/tmp/x.sock")["http"],
                         ["tcp:8765:interface=127.0.0.1", "unix:/tmp/x.sock"])

    def test_network_needs_auth(self):
        """
        An --http endpoint reachable from the network needs --auth.
        """
        for endpoint in ("tcp:8765", "tcp:8765:interface=0.0.0.0", "tcp:8765:interface=\\:\\:",
                         "tcp:8765:interface=10.1.2.3"):
            e = self.assertRaises(usage.UsageError, self.parse, "--http", endpoint)
            self.assertIn("reachable from the network: give --auth", str(e))
            self.parse("--http", endpoint, "--auth", "memory:alice:pw", "--trust-unix-peers")

    def test_bad_endpoint(self):
        """
        An --http endpoint that does not parse is a usage error naming it.
        """
        e = self.assertRaises(usage.UsageError, self.parse, "--http", "tcp:notaport")
        self.assertIn("bad --http endpoint 'tcp:notaport'", str(e))

    def test_loopback(self):
        """
        Loopback interfaces and Unix sockets count as local; others not.
        """
        for endpoint, expected in [
                ("tcp:1:interface=127.0.0.1", True), ("tcp:1:interface=127.5.0.1", True),
                ("tcp:1:interface=\\:\\:1", True), ("tcp:1:interface=localhost", True),
                ("unix:/tmp/s", True), ("tcp:1", False), ("tcp:1:interface=0.0.0.0", False),
                ("tcp:1:interface=192.168.1.2", False), ("tcp:1:interface=example.com", False)]:
            self.assertEqual(is_loopback(endpoint), expected, endpoint)


class FilterTests(unittest.TestCase):

    def test_filters(self):
        """
        /api/messages' parameters map onto relay history's filters.
        """
        self.assertEqual(message_filters({}), {"limit": 100})
        self.assertEqual(message_filters({"from": "a", "to": "b", "thread": "t", "topic": "x",
                                          "since": "1000", "limit": "5"}),
                         {"sender": "a", "recipient": "b", "thread": "t", "topic": "x",
                          "since_ms": 1000, "limit": 5})
        self.assertEqual(message_filters({"since": "1970-01-01T00:00:01"})["since_ms"], 1000)

    def test_bad(self):
        """
        Values of every wrong shape are refused with a reason.
        """
        for query in ({"limit": "0"}, {"limit": "1001"}, {"limit": "1.5"}, {"limit": ""},
                      {"since": "soon"}, {"since": "-5"}, {"from": ""}):
            self.assertRaises(BadRequest, message_filters, query)
