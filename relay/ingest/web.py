# -*- test-case-name: tests.test_ingest_web,tests.e2e.test_ingest_http -*-
"""
The HTTP side of the ingest service.

L{IngestRequest} never buffers more than the configured limits (its body is
a L{relay.ingest.body.BoundedBody}) and checks the API key as soon as the
headers are in.  L{SyncResource} answers
C{POST /api/daemons/messages/sync}; L{HealthResource} C{GET /healthz}; the
federation routes are in L{relay.ingest.federation}.
"""


import orjson
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import server
from twisted.web.resource import Resource

from relay import compat
from relay.ingest import keys
from relay.ingest.body import BoundedBody, MemoryBudget
from relay.ingest.admission import with_deadline
from relay.ingest.db import is_unavailable
from relay.ingest.validate import BadRequest, parse_batch

_log = Logger()

RETRY_AFTER_SECONDS = 2


class IngestRequest(server.Request):
    """
    A request whose body is a L{BoundedBody} with the site's limits, and
    whose API key is checked as soon as the headers are in, before the body
    is processed: while the key is looked up at most
    L{relay.ingest.body.HOLD_BYTES} of it
    are kept (then the transport is paused); a bad key (or a database that
    cannot say) drops the body as it arrives, so an unauthenticated request
    costs no more than that.  A client that goes away cancels its lookup.

    @ivar auth: a L{KeyCheck} started at header time, or None.
    """

    auth = None

    def gotLength(self, length):
        site = self.channel.site
        encoding = self.requestHeaders.getRawHeaders(b"Content-Encoding", [None])[0]
        if encoding is not None:
            encoding = encoding.strip().lower()
        header = self.requestHeaders.getRawHeaders(b"Authorization", [b""])[0]
        # Without credentials there is nothing to do with the body: count it
        # and drop it, whatever its size or encoding.
        self.content = BoundedBody(
            site.max_body_bytes,
            site.max_inflated_bytes,
            encoding,
            length,
            discard=not header[:7].lower() == b"bearer ",
            metrics=site.metrics,
            budget=site.budget,
        )
        self.notifyFinish().addBoth(self._finished)
        if site.service is None or self.content.discarding:
            return
        # (The method and path are not known yet: any request with a bearer
        # key has it checked; only the sync resource waits for the result.)
        self.auth = KeyCheck(defer.Deferred.fromCoroutine(authenticate(site.service, header)))
        if self.auth.done:
            self._checked()
            return
        self.content.hold()
        transport = self.channel.transport
        paused = []

        def pause():
            paused.append(True)
            transport.pauseProducing()

        self.content.on_hold_full = pause

        def checked(_):
            if self.content is None:
                # Answered (a 404, a GET) and cleaned up before the key
                # check ended: nothing is left to accept or refuse.
                return
            self.content.on_hold_full = None
            self._checked()
            if paused and not self._disconnected:
                transport.resumeProducing()

        self.auth.wait().addBoth(checked)

    def _checked(self):
        if self.auth.workspace is None:
            self.content.refuse()
        else:
            self.content.accept()

    def _finished(self, reason):
        # Twisted's own clean-up may have closed and dropped the body first.
        if self.content is not None:
            self.content.close()
        if isinstance(reason, Failure) and self.auth is not None:
            # The client went away: its key lookup leaves the queue.
            self.auth.cancel()


class KeyCheck:
    """
    The outcome of one API key check, kept as a value (a check nobody waits
    for any more, because the client went away, leaves no unhandled
    failure behind).

    @ivar workspace: the key's workspace (L{uuid.UUID}) once it is good.
    @ivar grant: the key's L{keys.Grant} (workspace and daemon binding)
        once it is good.
    @ivar error: the exception (L{BadRequest} or L{Unavailable}) once it is not.
    """

    def __init__(self, d):
        """
        @param d: the Deferred of L{authenticate}'s coroutine.
        """
        self.done = False
        self.workspace = None
        self.grant = None
        self.error = None
        self._waiters = []
        self._d = d
        d.addCallbacks(self._good, self._bad)

    def cancel(self):
        """
        Nobody needs the answer any more.
        """
        if not self.done:
            self._d.cancel()

    def _good(self, grant):
        self.grant = grant
        self.workspace = grant.workspace
        self._fire()

    def _bad(self, failure):
        if failure.check(BadRequest, Unavailable):
            self.error = failure.value
        elif failure.check(defer.CancelledError):
            self.error = Unavailable()
        else:
            _log.failure("Unexpected error while checking an API key", failure)
            self.error = BadRequest(500, "internal error")
        self._fire()

    def _fire(self):
        self.done = True
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.callback(None)

    def wait(self):
        """
        @return: a Deferred that fires (with None) once the check is done.
        """
        if self.done:
            return defer.succeed(None)
        d = defer.Deferred()
        self._waiters.append(d)
        return d

    async def result(self):
        """
        The key's L{keys.Grant}, or raise the check's error.
        """
        await self.wait()
        if self.error is not None:
            raise self.error
        return self.grant


class IngestSite(server.Site):
    """
    The site of the ingest service, carrying the body limits, the memory
    budget of all bodies together and the service that checks keys.
    """

    requestFactory = IngestRequest

    def __init__(self, resource, max_body_bytes, max_inflated_bytes, metrics=None, service=None,
                 max_buffered_bytes=None, **kw):
        """
        @param resource: the root resource (L{build_root}).
        @param max_body_bytes: the most bytes of one body as sent.
        @param max_inflated_bytes: the most bytes of one body once inflated.
        @param metrics: an L{relay.ingest.metrics.IngestMetrics}, or L{None}.
        @param service: the L{relay.ingest.tap.IngestService} that checks
            keys, or L{None} to check none at header time.
        @param max_buffered_bytes: the most body bytes all requests together
            hold (L{MemoryBudget}), or L{None} for no shared bound.
        @param kw: the other arguments of L{server.Site}.
        """
        kw.update(compat.site_without_form_parsing())
        server.Site.__init__(self, resource, **kw)
        self.max_body_bytes = max_body_bytes
        self.max_inflated_bytes = max_inflated_bytes
        self.metrics = metrics
        self.service = service
        self.budget = MemoryBudget(max_buffered_bytes) if max_buffered_bytes else None


def respond(request, status, body, retry_after=False):
    """
    Answer C{request} with C{status} and C{body} (a value to encode as
    JSON, or L{bytes} of JSON already encoded), and a C{Retry-After} header
    if asked, unless its client is gone.
    """
    if request._disconnected:
        return
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", b"application/json")
    if retry_after:
        request.setHeader(b"Retry-After", str(RETRY_AFTER_SECONDS).encode("ascii"))
    request.write(body if isinstance(body, bytes) else orjson.dumps(body))
    request.finish()


class Unavailable(Exception):
    """
    PostgreSQL cannot be used right now (answered 503 with Retry-After).
    """


async def authenticate(service, header):
    """
    Check an C{Authorization} header value against the keys in PostgreSQL.

    @param service: the L{relay.ingest.tap.IngestService} (its C{ready},
        C{tx_pool}, C{db_timeout} and C{reactor}).
    @param header: the header's value (L{bytes}), or L{None}.
    @return: the key's L{keys.Grant}: its workspace and the daemon it is
        bound to, if any.
    @raise BadRequest: 401 for a missing, malformed, unknown or revoked key.
    @raise Unavailable: PostgreSQL cannot say now.
    """
    header = header or b""
    if header[:7].lower() != b"bearer ":
        raise BadRequest(401, "missing Authorization: Bearer <key> header")
    try:
        key = header[7:].strip().decode("ascii")
    except UnicodeDecodeError:
        key = ""
    key_id = keys.parse_key(key)
    if key_id is None:
        raise BadRequest(401, "invalid API key")
    if not service.ready:
        raise Unavailable()
    try:
        rows = await with_deadline(
            service.tx_pool.runQuery(keys.LOOKUP_SQL, (key_id,)),
            service.db_timeout, service.reactor)
    except Exception:
        f = Failure()
        if is_unavailable(f):
            raise Unavailable()
        raise
    grant = keys.check_grant(key, rows[0] if rows else None)
    if grant is None:
        raise BadRequest(401, "invalid or revoked API key")
    return grant


async def request_grant(service, request):
    """
    The L{keys.Grant} of C{request}'s key: the check started at header time
    (L{IngestRequest.auth}), or a check made now.

    @raise BadRequest: as L{authenticate}.
    @raise Unavailable: as L{authenticate}.
    """
    if request.auth is not None:
        return await request.auth.result()
    return await authenticate(service, request.getHeader(b"Authorization"))


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

    def _answer(self, request, status, body, retry_after=False):
        self.service.metrics.requests.labels(str(status)).inc()
        respond(request, status, body, retry_after)

    async def _sync(self, request):
        service = self.service
        try:
            grant = await request_grant(service, request)
            raw = request.content.body()
            try:
                decoded = orjson.loads(raw)
            except orjson.JSONDecodeError as e:
                raise BadRequest(400, "the body is not valid JSON: %s" % (e,))
            batch = parse_batch(decoded, grant.workspace, grant.daemon)
            del raw, decoded
            if not service.ready:
                raise Unavailable()
            inserter = service.inserter.choose(batch.rows)
            started = service.reactor.seconds()
            try:
                daemon_id = batch.daemon_id
                insert = inserter.insert(batch.workspace_id, daemon_id, batch.rows)
                # A client that goes away takes its waiting insert (and its
                # rows) out of the queue.
                request.notifyFinish().addErrback(lambda _: insert.cancel())
                del batch
                counts = await with_deadline(insert, service.db_timeout, service.reactor)
            except Exception:
                f = Failure()
                if is_unavailable(f):
                    _log.warn("Insert failed, PostgreSQL unavailable: {error}",
                              error=f.getErrorMessage())
                    raise Unavailable()
                raise
            service.metrics.insert_seconds.labels(inserter.name).observe(
                service.reactor.seconds() - started)
        except BadRequest as e:
            self._answer(request, e.status, e.to_json(), retry_after=e.status == 503)
            return
        except Unavailable:
            self._answer(request, 503, {"error": "the database is unavailable, retry later"},
                         retry_after=True)
            return
        synced, duplicates = counts
        collided = getattr(counts, "collisions", 0)
        service.metrics.rows_inserted.inc(synced)
        service.metrics.duplicates.inc(duplicates)
        answer = {"synced": synced, "duplicates": duplicates}
        if collided:
            # Stored under disambiguated ids (and counted in synced).
            service.metrics.collisions.inc(collided)
            answer["collisions"] = collided
            _log.warn("{n} messages from daemon {daemon} reused ids already stored with other "
                      "content; stored under disambiguated ids", n=collided, daemon=daemon_id)
        self._answer(request, 200, answer)


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
            respond(request, 503, {"status": "unavailable", "error": "schema not ready"},
                     retry_after=True)
            return server.NOT_DONE_YET
        d = with_deadline(service.tx_pool.runQuery("SELECT 1"),
                         min(service.db_timeout, 5.0), service.reactor)
        d.addCallbacks(
            lambda _: respond(request, 200, {"status": "ok"}),
            lambda f: respond(request, 503, {"status": "unavailable",
                                              "error": f.getErrorMessage()},
                               retry_after=True),
        )
        return server.NOT_DONE_YET


def build_root(service, metrics_resource):
    """
    The resource tree: /api/daemons/messages/sync, /api/federation/
    (L{relay.ingest.federation}), /healthz, /metrics.
    """
    from relay.ingest.federation import build_federation
    root = Resource()
    api = Resource()
    daemons = Resource()
    messages = Resource()
    root.putChild(b"api", api)
    api.putChild(b"daemons", daemons)
    daemons.putChild(b"messages", messages)
    messages.putChild(b"sync", SyncResource(service))
    api.putChild(b"federation", build_federation(service))
    root.putChild(b"healthz", HealthResource(service))
    root.putChild(b"metrics", metrics_resource)
    return root
