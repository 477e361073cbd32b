# -*- test-case-name: tests.test_web_resources,tests.e2e.test_web -*-
"""
The daemon's HTTP routes (C{--http}).

    /                 the dashboard (static/index.html, app.js, app.css)
    /static/...       the dashboard's files, from package data
    /metrics          Prometheus text (L{relay.web.metrics})
    /healthz          200 when the store commits and the listeners are up,
                      503 with the reasons otherwise
    /api/status       the STATUS payload
    /api/messages     stored messages: from, to, thread, topic, since, limit
    /api/dead-letters messages the sync target refused for good: limit
    /api/quarantine   rows SQLite refused: limit
    /api/events       Server-Sent Events (L{relay.web.sse})

Every answer but the page and its files is JSON; a bad query parameter is
a 400 and an unknown route a 404, both with C{{"error": "..."}}.
"""

import os

import orjson
from twisted.logger import Logger
from twisted.web import resource, server, static

from relay.cli.history import parse_since

STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")

# Everything the page loads comes from the daemon, and nothing inline runs.
CSP = (b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       b"connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")

MESSAGE_FILTERS = {"from": "sender", "to": "recipient", "thread": "thread", "topic": "topic"}
MAX_LIMIT = 1000


class BadRequest(Exception):
    pass


def _headers(request, content_type):
    request.setHeader(b"Content-Type", content_type)
    request.setHeader(b"Cache-Control", b"no-store")
    request.setHeader(b"X-Content-Type-Options", b"nosniff")
    request.setHeader(b"Content-Security-Policy", CSP)


def json_response(request, value, code=200):
    request.setResponseCode(code)
    _headers(request, b"application/json")
    return orjson.dumps(value, default=str)


def json_error(request, code, message):
    return json_response(request, {"error": message}, code)


def _query(request, allowed):
    """
    The query string as {name: text}, each name once; raises L{BadRequest}.
    """
    out = {}
    for key, values in (request.args or {}).items():
        try:
            name = key.decode("utf-8")
            texts = [v.decode("utf-8") for v in values]
        except UnicodeDecodeError:
            raise BadRequest("query parameters must be UTF-8")
        if name not in allowed:
            raise BadRequest("unknown parameter %r (accepted: %s)"
                             % (name[:64], ", ".join(sorted(allowed))))
        if len(texts) != 1:
            raise BadRequest("parameter %r given %d times" % (name, len(texts)))
        out[name] = texts[0]
    return out


def _limit(query, default=100):
    text = query.get("limit")
    if text is None:
        return default
    try:
        n = int(text)
    except ValueError:
        raise BadRequest("limit must be an integer, not %r" % (text[:64],))
    if not 1 <= n <= MAX_LIMIT:
        raise BadRequest("limit must be between 1 and %d, not %d" % (MAX_LIMIT, n))
    return n


def message_filters(query):
    """
    C{/api/messages}'s query as keyword arguments of
    L{relay.cli.history.query_messages}; raises L{BadRequest}.
    """
    filters = {MESSAGE_FILTERS[k]: v for k, v in query.items() if k in MESSAGE_FILTERS}
    for name, value in filters.items():
        if not value:
            raise BadRequest("%s must not be empty" % (name,))
    since = query.get("since")
    if since is not None:
        if since.isdigit():
            filters["since_ms"] = int(since)
        else:
            try:
                filters["since_ms"] = parse_since(since)
            except ValueError:
                raise BadRequest("since must be an ISO 8601 time or ms since the epoch, not %r"
                                 % (since[:64],))
    filters["limit"] = _limit(query)
    return filters


class NotFound(resource.Resource):
    isLeaf = True

    def render(self, request):
        return json_error(request, 404, "no such route: %s" % (
            request.path.decode("utf-8", "replace")[:200],))


class JSONDirectory(resource.Resource):
    """
    A resource whose unknown children are JSON 404s (a route such as
    C{/api/status/more} is not C{/api/status}).
    """

    def getChild(self, path, request):
        return NotFound()

    def render(self, request):
        return NotFound().render(request)


class Route(resource.Resource):
    """
    An endpoint: no children, and anything below it is a 404.
    """

    def getChild(self, path, request):
        return NotFound()


class Deferring(Route):
    """
    A GET answered from a Deferred of a JSON-able value.
    """

    log = Logger()
    allowed = frozenset()

    def compute(self, query):
        raise NotImplementedError

    def render_GET(self, request):
        try:
            d = self.compute(_query(request, self.allowed))
        except BadRequest as e:
            return json_error(request, 400, str(e))
        finished = []
        request.notifyFinish().addBoth(finished.append)

        def ok(value):
            if not finished:
                request.write(json_response(request, value))
                request.finish()

        def failed(failure):
            self.log.failure("HTTP {path} failed", failure, path=request.path)
            if not finished:
                request.write(json_error(request, 500, failure.getErrorMessage()))
                request.finish()
        d.addCallbacks(ok, failed)
        return server.NOT_DONE_YET


class Messages(Deferring):
    allowed = frozenset(MESSAGE_FILTERS) | {"since", "limit"}

    def __init__(self, reader):
        Deferring.__init__(self)
        self.reader = reader

    def compute(self, query):
        return self.reader.messages(**message_filters(query))


class DeadLetters(Deferring):
    allowed = frozenset(["limit"])

    def __init__(self, reader):
        Deferring.__init__(self)
        self.reader = reader

    def compute(self, query):
        return self.reader.dead_letters(_limit(query))


class Quarantine(Deferring):
    allowed = frozenset(["limit"])

    def __init__(self, reader):
        Deferring.__init__(self)
        self.reader = reader

    def compute(self, query):
        return self.reader.quarantine(_limit(query))


class Status(Route):

    def __init__(self, status, stream):
        Route.__init__(self)
        self.status = status
        self.stream = stream

    def render_GET(self, request):
        try:
            _query(request, ())
        except BadRequest as e:
            return json_error(request, 400, str(e))
        status = self.status.report()
        status["http"] = {"sse_clients": len(self.stream.clients),
                          "sse_resyncs": self.stream.resyncs,
                          "sse_pending_bytes": self.stream.pending_bytes(),
                          "sse_max_pending_bytes": self.stream.max_pending}
        return json_response(request, status)


class Events(Route):

    def __init__(self, stream):
        Route.__init__(self)
        self.stream = stream

    def render_GET(self, request):
        try:
            _query(request, ())
        except BadRequest as e:
            return json_error(request, 400, str(e))
        self.stream.add(request)
        return server.NOT_DONE_YET


class Health(Route):
    """
    C{/healthz}: 200 C{{"ok": true}}, or 503 C{{"ok": false, "reasons": [...]}}.
    """


    def __init__(self, service, status, store):
        Route.__init__(self)
        self.service = service
        self.status = status
        self.store = store
        self._failures_at_commit = store.stats().get("failures", 0)
        store.add_batch_listener(self._committed)

    def _committed(self, seconds, rows):
        self._failures_at_commit = self.store.stats().get("failures", 0)

    def problems(self):
        reasons = []
        if not self.store.is_open():
            reasons.append("store: not open")
        elif self.store.stats().get("failures", 0) > self._failures_at_commit:
            reasons.append("store: commits are failing (rows kept, retrying)")
        for child in self.service:
            endpoint = getattr(child, "relay_endpoint", None)
            if endpoint is not None and not child.running:
                reasons.append("listener %s is down" % (endpoint,))
        sync = self.status.sync_stats() if self.status.sync_stats else None
        if sync is not None and sync.get("state") in ("unauthorized", "failed", "stopped"):
            reasons.append("sync %s: %s" % (sync.get("state"), sync.get("last_error")))
        return reasons

    def render_GET(self, request):
        reasons = self.problems()
        if reasons:
            return json_response(request, {"ok": False, "reasons": reasons}, 503)
        return json_response(request, {"ok": True})


class MetricsPage(Route):
    log = Logger()

    def __init__(self, metrics, reader):
        Route.__init__(self)
        self.metrics = metrics
        self.reader = reader

    def render_GET(self, request):
        from relay.web.metrics import CONTENT_TYPE
        finished = []
        request.notifyFinish().addBoth(finished.append)

        def waiting(counts):
            self.metrics.collector.waiting = counts

        def failed(failure):
            self.log.failure("metrics: counting waiting deliveries failed", failure)

        def render(_):
            if not finished:
                request.setHeader(b"Content-Type", CONTENT_TYPE.encode("ascii"))
                request.write(self.metrics.render())
                request.finish()
        d = self.reader.waiting()
        d.addCallbacks(waiting, failed)
        d.addCallback(render)
        return server.NOT_DONE_YET


class Index(Route):

    def render_GET(self, request):
        with open(os.path.join(STATIC, "index.html"), "rb") as f:
            page = f.read()
        _headers(request, b"text/html; charset=utf-8")
        return page


class StaticFiles(static.File):
    def render_GET(self, request):
        request.setHeader(b"Content-Security-Policy", CSP)
        request.setHeader(b"X-Content-Type-Options", b"nosniff")
        return static.File.render_GET(self, request)

    def directoryListing(self):
        return NotFound()

    def createSimilarFile(self, path):
        f = StaticFiles(path, self.defaultType, self.ignoredExts, self.registry)
        f.processors = self.processors
        f.indexNames = self.indexNames[:]
        f.childNotFound = NotFound()
        return f


def make_root(status, store, service, metrics, reader, stream):
    root = JSONDirectory()
    root.putChild(b"", Index())
    files = StaticFiles(STATIC)
    files.indexNames = []
    files.childNotFound = NotFound()
    root.putChild(b"static", files)
    root.putChild(b"metrics", MetricsPage(metrics, reader))
    root.putChild(b"healthz", Health(service, status, store))
    api = JSONDirectory()
    api.putChild(b"status", Status(status, stream))
    api.putChild(b"messages", Messages(reader))
    api.putChild(b"dead-letters", DeadLetters(reader))
    api.putChild(b"quarantine", Quarantine(reader))
    api.putChild(b"events", Events(stream))
    root.putChild(b"api", api)
    return root
