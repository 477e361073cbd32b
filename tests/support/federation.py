# -*- test-case-name: tests.test_ingest_federation,tests.e2e.test_ingest_federation -*-
"""
Helpers for the federation tests of the ingest: the real ingest service
(L{relay.ingest.tap.IngestService} and L{relay.ingest.web.IngestSite}) run
in the test process on a real port against the real PostgreSQL, a client
of the federation routes, and sample handover items.
"""

import gzip

import orjson
import psycopg2
import treq
from twisted.internet import defer, reactor, task
from twisted.web.client import HTTPConnectionPool

from relay.ingest import keys, tap, web
from relay.ingest import metrics as metrics_module
from tests.support.poll import poll_until

WS = "6f1d1c2e-8d8e-4a53-9a4b-0d5b3f3d6a01"
DAEMON_A = "aaaaaaaa-0000-4000-8000-000000000001"
DAEMON_B = "bbbbbbbb-0000-4000-8000-000000000002"
DAEMON_C = "cccccccc-0000-4000-8000-000000000003"


def create_key(dsn, workspace=WS, daemon=None):
    """
    Store a new key (bound to C{daemon} if given) and return it.
    """
    conn = psycopg2.connect(dsn)
    try:
        return keys.create_key(conn, workspace, daemon)[1]
    finally:
        conn.close()


def item(i, recipient="bob", sender="alice", topic=None, **extra):
    """
    A handover item: message C{"f-<i>"} for C{recipient}.
    """
    message = {"id": "f-%d" % (i,), "from": sender, "to": recipient, "topic": topic,
               "body": "hello %d" % (i,)}
    message.update(extra)
    return {"recipient": recipient, "message": message}


class FederationClient:
    """
    POSTs to the federation routes of an ingest at C{url}.
    """

    def __init__(self, url, key):
        self.url = url
        self.key = key
        # Non-persistent, so no connection outlives a test.
        self.pool = HTTPConnectionPool(reactor, persistent=False)

    @defer.inlineCallbacks
    def post(self, route, body, key=None, gzipped=False, timeout=90):
        """
        POST C{body} (bytes, or a value to encode as JSON) to
        C{/api/federation/<route>}; fire with C{(code, decoded JSON or raw
        bytes, headers)}.
        """
        if not isinstance(body, bytes):
            body = orjson.dumps(body)
        headers = {b"Content-Type": [b"application/json"],
                   b"Authorization": [b"Bearer " + (key or self.key).encode("ascii")]}
        if gzipped:
            body = gzip.compress(body, mtime=0)
            headers[b"Content-Encoding"] = [b"gzip"]
        response = yield treq.post(self.url + "/api/federation/" + route, data=body,
                                   headers=headers, timeout=timeout, pool=self.pool)
        content = yield response.content()
        try:
            content = orjson.loads(content)
        except orjson.JSONDecodeError:
            pass
        return response.code, content, response.headers

    def presence(self, daemon, events, **kw):
        return self.post("presence", {"daemon_id": daemon, "events": events}, **kw)

    def handover(self, daemon, items, **kw):
        return self.post("handover", {"daemon_id": daemon, "items": items}, **kw)

    def poll(self, daemon, wait=0, **fields):
        body = {"daemon_id": daemon, "wait": wait}
        body.update(fields)
        return self.post("poll", body)

    @defer.inlineCallbacks
    def metrics(self):
        """
        The ingest's metrics as a C{{"name{labels}": value}} dict.
        """
        response = yield treq.get(self.url + "/metrics", timeout=10, pool=self.pool)
        text = yield response.text()
        values = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                values[name] = float(value)
        return values


class InProcessIngest:
    """
    The ingest service and its site, in this process, on a free port of
    127.0.0.1.

    @ivar service: the L{tap.IngestService}.
    @ivar site: the L{web.IngestSite}.
    @ivar url: the base URL.
    """

    def __init__(self, dsn, args=()):
        config = tap.Options()
        config.parseOptions(["--postgres", dsn] + list(args))
        self.metrics = metrics_module.IngestMetrics()
        self.service = tap.IngestService(config, reactor, self.metrics)
        self.site = web.IngestSite(
            web.build_root(self.service, metrics_module.MetricsResource(self.metrics)),
            max_body_bytes=config["max-body-bytes"],
            max_inflated_bytes=config["max-inflated-bytes"],
            metrics=self.metrics, service=self.service,
            max_buffered_bytes=config["max-buffered-bytes"])
        self.channels = set()
        build = self.site.buildProtocol

        def tracked(addr):
            channel = build(addr)
            self.channels.add(channel)
            return channel

        self.site.buildProtocol = tracked
        self.port = None
        self.url = None

    @defer.inlineCallbacks
    def start(self):
        """
        Start the service, listen, and wait until the schema is ready and
        the LISTEN connection is up.
        """
        self.service.startService()
        self.port = reactor.listenTCP(0, self.site, interface="127.0.0.1")
        self.url = "http://127.0.0.1:%d" % (self.port.getHost().port,)
        yield poll_until(lambda: self.service.ready and self.service.listener.listening,
                         30, interval=0.02, clock=reactor, what="the ingest to be ready")

    @defer.inlineCallbacks
    def stop(self):
        """
        Stop listening, drop every connection, stop the service.
        """
        if self.port is not None:
            yield self.port.stopListening()
        for channel in list(self.channels):
            transport = getattr(channel, "transport", None)
            if transport is not None and transport.connected:
                transport.abortConnection()
        self.service.stopService()
        # Let the aborted connections and closed database connections be
        # noticed before the reactor is checked for leftovers.
        yield task.deferLater(reactor, 0.05, lambda: None)
