# -*- test-case-name: tests.test_web_sse,tests.e2e.test_web -*-
"""
C{GET /api/events}: the router's events (L{relay.events}) as Server-Sent
Events, so the dashboard is live without polling.

Events are gathered (each encoded to JSON as it comes) for L{FLUSH_DELAY}
and joined once into one C{batch} record (a JSON list of events, see
L{encode_events}), whatever the number of clients, and only while at least one client is connected (otherwise the
hub has no SSE subscriber at all).  The client is the streaming producer of its HTTP
connection: when the socket's send buffer is full (a slow or stuck
browser) Twisted pauses it, and what arrives meanwhile waits in a bounded
buffer (L{MAX_PENDING_BYTES}).  Past that bound the backlog is dropped and,
once the client reads again, it gets one C{resync} event telling it to
fetch C{/api/status} and the messages afresh: memory stays bounded and the
daemon never waits for a browser.
"""

from orjson import dumps
from twisted.internet import task
from twisted.logger import Logger
from zope.interface import implementer
from twisted.internet.interfaces import IPushProducer

from relay.events import KINDS

# Bytes of events one client may have waiting while its socket is full.
MAX_PENDING_BYTES = 512 * 1024
# Seconds events are gathered before one write.
FLUSH_DELAY = 0.05
# A comment line this often keeps proxies from closing an idle stream.
KEEPALIVE = 15.0
# Longest message body carried by an "accepted" event (the page fetches
# /api/messages for the rest).
MAX_BODY = 2000

RESYNC = b"event: resync\ndata: {}\n\n"

# Events gathered in one flush period beyond which they are dropped and
# every client is told to resync (a burst no page could draw anyway).
MAX_GATHERED = 50000


# A busy daemon sends a batch record as soon as it holds this many events
# or this many bytes of message bodies, rather than at the end of the
# flush period: few writes (each one is system calls), yet small enough
# that a connection's buffer stays small.
BATCH_EVENTS = 2048
BATCH_BODY_BYTES = 128 * 1024


# The fields of an "accepted" record, in order (a list, not an object:
# cheaper to build and to serialise at three events per message).
ACCEPTED_FIELDS = ("id", "seq", "from", "to", "topic", "thread", "kind", "body",
                   "recipients", "ts")


def encode_events(gathered):
    """
    One SSE record, C{event: batch}, whose C{data} line is the JSON list of
    the gathered events: C{["accepted", ...ACCEPTED_FIELDS values]}, or
    C{[kind, [values]]} for the others, their values in the order of
    L{relay.events.FIELDS} (no field names: fewer bytes to encode and write
    at three events per message).

    @param gathered: the events' JSON, each followed by a comma, as
        L{EventStream} gathers them: a C{bytearray}, which the garbage
        collector never tracks, rather than a tuple per event surviving
        collections of the young generation until the flush (measured: most
        of what a connected dashboard cost the daemon per message was
        collector time).
    """
    return b"event: batch\ndata: [" + gathered[:-1] + b"]\n\n"


class EventStream:
    """
    The SSE clients of one daemon.  The hub's events are gathered (their
    JSON, one C{orjson.dumps} each) for L{FLUSH_DELAY}, joined once into
    one C{batch} record, and handed to every client.
    """

    log = Logger()

    def __init__(self, reactor, events, max_pending=MAX_PENDING_BYTES, flush_delay=FLUSH_DELAY):
        self.reactor = reactor
        self.events = events
        self.max_pending = max_pending
        self.flush_delay = flush_delay
        self.clients = set()
        self.resyncs = 0
        # The gathered events' JSON, each followed by a comma (see
        # encode_events), how many, and how many bytes of bodies.
        self.gathered = bytearray()
        self.gathered_count = 0
        self.gathered_bytes = 0
        self._overflow = False
        self._soon = False
        self._flush = None
        self._unsubscribe = None
        # Below this many gathered events (and bytes) an event needs no
        # check beyond the flush being scheduled (see _due).
        self._check_at = min(BATCH_EVENTS, MAX_GATHERED + 1)
        self._keepalive = task.LoopingCall(self._ping)
        self._keepalive.clock = reactor

    def add(self, request):
        client = SSEClient(self, request)
        self.clients.add(client)
        if self._unsubscribe is None:
            offs = (self.events.subscribe(self._accepted, ("accepted",), positional=True),
                    self.events.subscribe(self._event, [k for k in KINDS if k != "accepted"],
                                          positional=True))
            self._unsubscribe = lambda: [off() for off in offs]
            self._keepalive.start(KEEPALIVE, now=False)
        return client

    def remove(self, client):
        self.clients.discard(client)
        if not self.clients and self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
            self._clear()
            self._soon = False
            if self._keepalive.running:
                self._keepalive.stop()
            if self._flush is not None and self._flush.active():
                self._flush.cancel()
            self._flush = None

    def _accepted(self, kind, values):
        mid, seq, sender, to, topic, payload, recipients, ts = values
        body = payload.get("body")
        if isinstance(body, str):
            if len(body) > MAX_BODY:
                body = body[:MAX_BODY]
            self.gathered_bytes += len(body)
        gathered = self.gathered
        gathered += dumps((
            "accepted", mid, seq, sender, to, topic, payload.get("thread"),
            payload.get("kind", "message"), body, recipients, ts), default=str)
        gathered += b","
        self.gathered_count += 1
        if (self._flush is None or self.gathered_count >= self._check_at
                or self.gathered_bytes >= BATCH_BODY_BYTES):
            self._due()

    def _event(self, kind, values):
        # The hub's tuple as it is: [kind, [values]].
        gathered = self.gathered
        gathered += dumps((kind, values), default=str)
        gathered += b","
        self.gathered_count += 1
        if self._flush is None or self.gathered_count >= self._check_at:
            self._due()

    def _due(self):
        count = self.gathered_count
        if self._flush is None:
            self._flush = self.reactor.callLater(self.flush_delay, self._send)
        elif not self._soon and (count >= BATCH_EVENTS
                                 or self.gathered_bytes >= BATCH_BODY_BYTES):
            # Send at the end of this reactor turn.
            self._soon = True
            self._flush.reset(0)
        if count > MAX_GATHERED:
            self._clear()
            self._overflow = True

    def _clear(self):
        self.gathered = bytearray()
        self.gathered_count = 0
        self.gathered_bytes = 0

    def _send(self):
        self._flush = None
        self._soon = False
        gathered = self.gathered
        self._clear()
        if self._overflow:
            self._overflow = False
            for client in list(self.clients):
                client.drop()
        if not gathered:
            return
        data = encode_events(gathered)
        for client in list(self.clients):
            client.push(data)

    def _ping(self):
        for client in list(self.clients):
            client.push(b": keepalive\n\n")

    def stop(self):
        for client in list(self.clients):
            client.finish()

    def pending_bytes(self):
        return sum(c.pending_bytes for c in self.clients)


@implementer(IPushProducer)
class SSEClient:
    """
    One connected C{/api/events} request.
    """

    def __init__(self, stream, request):
        self.stream = stream
        self.request = request
        self.pending = []
        self.pending_bytes = 0
        self.paused = False
        self.overflowed = False
        self.closed = False
        self._flush = None
        request.setHeader(b"Content-Type", b"text/event-stream; charset=utf-8")
        request.setHeader(b"Cache-Control", b"no-cache")
        request.setHeader(b"X-Accel-Buffering", b"no")
        request.registerProducer(self, True)
        request.notifyFinish().addBoth(self._gone)
        request.write(b"retry: 2000\nevent: hello\ndata: {}\n\n")

    def push(self, data):
        """
        Hand C{data} to the connection now, or keep it (bounded) while the
        connection is paused.
        """
        if self.closed:
            return
        if not self.paused:
            if self.overflowed:
                data = RESYNC + data
                self.overflowed = False
            self.request.write(data)
            return
        if self.overflowed:
            # The backlog is gone already: the page will re-fetch.
            return
        self.pending.append(data)
        self.pending_bytes += len(data)
        if self.pending_bytes > self.stream.max_pending:
            self.drop()

    def drop(self):
        """
        Never buffer without bound: drop the backlog and tell the page to
        resynchronise once it reads again.
        """
        self.pending = []
        self.pending_bytes = 0
        if not self.overflowed:
            self.overflowed = True
            self.stream.resyncs += 1

    def _write(self):
        self._flush = None
        if self.closed or self.paused:
            return
        out = b"".join(self.pending)
        if self.overflowed:
            out = RESYNC + out
            self.overflowed = False
        self.pending = []
        self.pending_bytes = 0
        if out:
            self.request.write(out)

    # IPushProducer: the HTTP connection's transport calls these.
    def pauseProducing(self):
        self.paused = True

    def resumeProducing(self):
        self.paused = False
        if (self.pending or self.overflowed) and self._flush is None and not self.closed:
            self._flush = self.stream.reactor.callLater(0, self._write)

    def stopProducing(self):
        self._gone(None)

    def finish(self):
        if not self.closed:
            self._gone(None)
            self.request.unregisterProducer()
            self.request.finish()

    def _gone(self, _):
        if self.closed:
            return
        self.closed = True
        self.pending = []
        self.pending_bytes = 0
        if self._flush is not None and self._flush.active():
            self._flush.cancel()
        self._flush = None
        self.stream.remove(self)
