# -*- test-case-name: tests.test_ingest_web,tests.test_ingest_http -*-
"""
The HTTP side of the ingest service.

L{IngestRequest} never buffers more than the configured limits: the body is
counted (and gzip inflated, incrementally, with
C{zlib.decompressobj(wbits=31)} and C{max_length}) as it arrives, and once a
limit is passed the rest is discarded.  L{SyncResource} answers
C{POST /api/daemons/messages/sync}; L{HealthResource} C{GET /healthz}.
"""

import zlib

import orjson
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import server
from twisted.web.resource import Resource

from relay import compat
from relay.ingest import keys
from relay.ingest.db import isUnavailable, withDeadline
from relay.ingest.validate import BadRequest, parseBatch

_log = Logger()

RETRY_AFTER_SECONDS = 2


class BoundedBody:
    """
    Stands in for C{request.content}: keeps the (inflated) body in memory
    up to the limits, and records the first problem as a L{BadRequest}.

    @ivar error: L{None}, or the L{BadRequest} to answer with.
    @ivar received: bytes received on the wire for this body.
    """

    def __init__(self, maxBodyBytes, maxInflatedBytes, encoding, declaredLength,
                 discard=False, metrics=None):
        self.maxBodyBytes = maxBodyBytes
        self.maxInflatedBytes = maxInflatedBytes
        self.received = 0
        self.inflated = 0
        self.error = None
        self._chunks = []
        self._metrics = metrics
        self._discard = discard
        self._inflater = None
        if encoding in (None, b"identity"):
            pass
        elif encoding in (b"gzip", b"x-gzip"):
            self._inflater = zlib.decompressobj(wbits=31)
        else:
            self._fail(415, "unsupported Content-Encoding %r (use gzip or none)"
                       % (encoding.decode("latin-1"),))
        if declaredLength is not None and declaredLength > maxBodyBytes:
            self._tooLarge()

    def _fail(self, status, message):
        if self.error is None:
            self.error = BadRequest(status, message)
        self._chunks = []
        self._inflater = None

    def _tooLarge(self):
        self._fail(413, "request body is larger than %d bytes" % (self.maxBodyBytes,))

    def _inflatedTooLarge(self):
        self._fail(413, "inflated request body is larger than %d bytes"
                   % (self.maxInflatedBytes,))

    def write(self, data):
        self.received += len(data)
        if self._metrics is not None:
            self._metrics.bytesIn.inc(len(data))
        if self.error is not None or self._discard:
            return
        if self.received > self.maxBodyBytes:
            self._tooLarge()
            return
        if self._inflater is None:
            self._chunks.append(data)
            return
        try:
            self._inflate(data)
        except zlib.error as e:
            self._fail(400, "the gzip body is corrupt: %s" % (e,))

    def _inflate(self, data):
        while data:
            room = self.maxInflatedBytes - self.inflated
            out = self._inflater.decompress(data, room + 1)
            self.inflated += len(out)
            if self.inflated > self.maxInflatedBytes:
                self._inflatedTooLarge()
                return
            if out:
                self._chunks.append(out)
            if self._inflater.eof:
                # Another gzip member may follow (concatenated gzip files).
                data = self._inflater.unused_data
                if data:
                    self._inflater = zlib.decompressobj(wbits=31)
            else:
                data = self._inflater.unconsumed_tail

    def body(self):
        """
        The complete (inflated) body, or raise the recorded L{BadRequest}.
        """
        if self.error is not None:
            raise self.error
        if self._inflater is not None and not self._inflater.eof:
            raise BadRequest(400, "the gzip body is truncated")
        return b"".join(self._chunks)

    # The parts of the file interface twisted.web.http.Request uses.

    def tell(self):
        return self.received

    def seek(self, offset, whence=0):
        pass

    def read(self, size=-1):
        return b""

    def close(self):
        self._chunks = []


class IngestRequest(server.Request):
    """
    A request whose body is a L{BoundedBody} with the site's limits.
    """

    def gotLength(self, length):
        site = self.channel.site
        encoding = self.requestHeaders.getRawHeaders(b"Content-Encoding", [None])[0]
        if encoding is not None:
            encoding = encoding.strip().lower()
        # Without credentials there is nothing to do with the body: count it
        # and drop it, whatever its size or encoding.
        auth = self.requestHeaders.getRawHeaders(b"Authorization", [b""])[0]
        self.content = BoundedBody(
            site.maxBodyBytes,
            site.maxInflatedBytes,
            encoding,
            length,
            discard=not auth[:7].lower() == b"bearer ",
            metrics=site.metrics,
        )


class IngestSite(server.Site):
    """
    The site of the ingest service, carrying the body limits.
    """

    requestFactory = IngestRequest

    def __init__(self, resource, maxBodyBytes, maxInflatedBytes, metrics=None, **kw):
        kw.update(compat.site_without_form_parsing())
        server.Site.__init__(self, resource, **kw)
        self.maxBodyBytes = maxBodyBytes
        self.maxInflatedBytes = maxInflatedBytes
        self.metrics = metrics


def _respond(request, status, body, retryAfter=False):
    if request._disconnected:
        return
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", b"application/json")
    if retryAfter:
        request.setHeader(b"Retry-After", str(RETRY_AFTER_SECONDS).encode("ascii"))
    request.write(orjson.dumps(body))
    request.finish()


class Unavailable(Exception):
    """
    PostgreSQL cannot be used right now (answered 503 with Retry-After).
    """


class SyncResource(Resource):
    """
    C{POST /api/daemons/messages/sync}.

    @ivar service: the L{relay.ingest.tap.IngestService} holding the
        database pools, the insert strategies and the metrics.
    """

    isLeaf = True

    def __init__(self, service):
        Resource.__init__(self)
        self.service = service

    def render_POST(self, request):
        d = defer.Deferred.fromCoroutine(self._sync(request))
        d.addErrback(self._unexpected, request)
        return server.NOT_DONE_YET

    def _unexpected(self, failure, request):
        _log.failure("Unexpected error while handling a sync request", failure)
        self._answer(request, 500, {"error": "internal error"})

    def _answer(self, request, status, body, retryAfter=False):
        self.service.metrics.requests.labels(str(status)).inc()
        _respond(request, status, body, retryAfter)

    async def _sync(self, request):
        service = self.service
        try:
            workspace = await self._authenticate(request)
            raw = request.content.body()
            try:
                decoded = orjson.loads(raw)
            except orjson.JSONDecodeError as e:
                raise BadRequest(400, "the body is not valid JSON: %s" % (e,))
            batch = parseBatch(decoded, workspace)
            del raw, decoded
            if not service.ready:
                raise Unavailable()
            inserter = service.inserter.choose(batch.rows)
            started = service.reactor.seconds()
            try:
                synced, duplicates = await withDeadline(
                    inserter.insert(batch.workspace_id, batch.daemon_id, batch.rows),
                    service.dbTimeout, service.reactor)
            except Exception:
                f = Failure()
                if isUnavailable(f):
                    _log.warn("Insert failed, PostgreSQL unavailable: {error}",
                              error=f.getErrorMessage())
                    raise Unavailable()
                raise
            service.metrics.insertSeconds.labels(inserter.name).observe(
                service.reactor.seconds() - started)
        except BadRequest as e:
            self._answer(request, e.status, e.toJSON())
            return
        except Unavailable:
            self._answer(request, 503, {"error": "the database is unavailable, retry later"},
                         retryAfter=True)
            return
        service.metrics.rowsInserted.inc(synced)
        service.metrics.duplicates.inc(duplicates)
        self._answer(request, 200, {"synced": synced, "duplicates": duplicates})

    async def _authenticate(self, request):
        header = request.getHeader(b"Authorization") or b""
        if header[:7].lower() != b"bearer ":
            raise BadRequest(401, "missing Authorization: Bearer <key> header")
        try:
            key = header[7:].strip().decode("ascii")
        except UnicodeDecodeError:
            key = ""
        keyId = keys.parseKey(key)
        if keyId is None:
            raise BadRequest(401, "invalid API key")
        if not self.service.ready:
            raise Unavailable()
        try:
            rows = await withDeadline(
                self.service.txPool.runQuery(keys.LOOKUP_SQL, (keyId,)),
                self.service.dbTimeout, self.service.reactor)
        except Exception:
            f = Failure()
            if isUnavailable(f):
                raise Unavailable()
            raise
        workspace = keys.checkKey(key, rows[0] if rows else None)
        if workspace is None:
            raise BadRequest(401, "invalid or revoked API key")
        return workspace


class HealthResource(Resource):
    """
    C{GET /healthz}: 200 when PostgreSQL answers and the schema is current,
    503 (with Retry-After) otherwise.
    """

    isLeaf = True

    def __init__(self, service):
        Resource.__init__(self)
        self.service = service

    def render_GET(self, request):
        service = self.service
        if not service.ready:
            _respond(request, 503, {"status": "unavailable", "error": "schema not ready"},
                     retryAfter=True)
            return server.NOT_DONE_YET
        d = withDeadline(service.txPool.runQuery("SELECT 1"),
                         min(service.dbTimeout, 5.0), service.reactor)
        d.addCallbacks(
            lambda _: _respond(request, 200, {"status": "ok"}),
            lambda f: _respond(request, 503, {"status": "unavailable",
                                              "error": f.getErrorMessage()},
                               retryAfter=True),
        )
        return server.NOT_DONE_YET


def buildRoot(service, metricsResource):
    """
    The resource tree: /api/daemons/messages/sync, /healthz, /metrics.
    """
    root = Resource()
    api = Resource()
    daemons = Resource()
    messages = Resource()
    root.putChild(b"api", api)
    api.putChild(b"daemons", daemons)
    daemons.putChild(b"messages", messages)
    messages.putChild(b"sync", SyncResource(service))
    root.putChild(b"healthz", HealthResource(service))
    root.putChild(b"metrics", metricsResource)
    return root
