# -*- test-case-name: tests.test_ingest_federation,tests.e2e.test_ingest_federation -*-
"""
The federation endpoints of the ingest (issue 10): daemons of one workspace
deliver each other's messages through the ingest and PostgreSQL.

C{POST /api/federation/presence} (L{PresenceResource}) keeps the directory
of agent names' home daemons; C{POST /api/federation/handover}
(L{HandoverResource}) stores messages for other daemons once each;
C{POST /api/federation/poll} (L{PollResource}) confirms what a daemon has
stored and answers its inbound messages and the directory changes, holding
the request (L{relay.ingest.notify.Waiters}) while there is nothing.  The
bodies are checked by L{relay.ingest.federation_validate}, the SQL is
L{relay.ingest.federation_db}.

Keys are checked as for sync (L{relay.ingest.web.IngestRequest}); a key
bound to a daemon speaks for that daemon only (403).
"""

import orjson
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import server
from twisted.web.resource import Resource

from relay.ingest import federation_db
from relay.ingest.admission import with_deadline
from relay.ingest.db import is_unavailable
from relay.ingest.federation_validate import parse_handover, parse_poll, parse_presence
from relay.ingest.validate import BadRequest
from relay.ingest.web import Unavailable, request_grant, respond


class _FederationResource(Resource):
    """
    One federation route: checks the key, decodes the JSON body (then gives
    its memory back: a held poll keeps nothing of it) and answers what
    L{answer} returns, or the error.

    @ivar service: the L{relay.ingest.tap.IngestService} (pools, waiters,
        metrics, reactor).
    @cvar route: the route's name, for the metrics.
    """

    isLeaf = True
    route = None
    log = Logger()

    def __init__(self, service):
        Resource.__init__(self)
        self.service = service

    def render_POST(self, request):
        d = defer.Deferred.fromCoroutine(self._handle(request))
        d.addErrback(self._unexpected, request)
        return server.NOT_DONE_YET

    def _unexpected(self, failure, request):
        self.log.failure("Unexpected error while handling a federation {route} request",
                         failure, route=self.route)
        self._answer(request, 500, {"error": "internal error"})

    def _answer(self, request, status, body, retry_after=False):
        self.service.metrics.federation_requests.labels(self.route, str(status)).inc()
        respond(request, status, body, retry_after)

    async def _handle(self, request):
        try:
            grant = await request_grant(self.service, request)
            raw = request.content.body()
            try:
                decoded = orjson.loads(raw)
            except orjson.JSONDecodeError as e:
                raise BadRequest(400, "the body is not valid JSON: %s" % (e,))
            del raw
            # The body is decoded: its bytes leave the shared budget now,
            # not when a held poll ends.
            request.content.close()
            answer = await self.answer(request, grant, decoded)
        except BadRequest as e:
            self._answer(request, e.status, e.to_json(), retry_after=e.status == 503)
            return
        except Unavailable:
            self._answer(request, 503, {"error": "the database is unavailable, retry later"},
                         retry_after=True)
            return
        if answer is not None:
            self._answer(request, 200, answer)

    async def run(self, d):
        """
        Wait for the database operation C{d} (bounded by the service's
        C{db_timeout}).

        @raise Unavailable: PostgreSQL cannot answer now.
        """
        try:
            return await with_deadline(d, self.service.db_timeout, self.service.reactor)
        except Exception:
            f = Failure()
            if is_unavailable(f):
                self.log.warn("Federation {route} failed, PostgreSQL unavailable: {error}",
                              route=self.route, error=f.getErrorMessage())
                raise Unavailable()
            raise

    def pool(self):
        """
        The txpostgres pool, once the schema is ready.

        @raise Unavailable: not ready yet.
        """
        if not self.service.ready:
            raise Unavailable()
        return self.service.tx_pool

    async def answer(self, request, grant, body):
        """
        The answer (a JSON-able value or L{bytes}) to a request with a good
        key, or L{None} when the client went away.

        @param grant: the key's L{relay.ingest.keys.Grant}.
        @param body: the decoded JSON body.
        @raise BadRequest: refused.
        @raise Unavailable: PostgreSQL cannot answer now.
        """
        raise NotImplementedError()


class PresenceResource(_FederationResource):
    """
    C{POST /api/federation/presence}: agents saying HELLO to a daemon, and
    leaving it.
    """

    route = "presence"

    async def answer(self, request, grant, body):
        presence = parse_presence(body, grant)
        claims = await self.run(federation_db.presence(
            self.pool(), str(grant.workspace), str(presence.daemon_id), presence.events))
        return {"claims": [{"name": name, "home": home, "online": online, "version": version}
                           for name, home, online, version in claims]}


class HandoverResource(_FederationResource):
    """
    C{POST /api/federation/handover}: messages for agents of other daemons.
    """

    route = "handover"

    async def answer(self, request, grant, body):
        handover = parse_handover(body, grant)
        stored, duplicates = await self.run(federation_db.handover(
            self.pool(), str(grant.workspace), str(handover.daemon_id), handover.items))
        metrics = self.service.metrics
        metrics.federation_stored.inc(stored)
        metrics.federation_duplicates.inc(duplicates)
        return {"stored": stored, "duplicates": duplicates}


class PollResource(_FederationResource):
    """
    C{POST /api/federation/poll}: a daemon's inbound messages and directory
    changes, held up to C{wait} seconds while there are none.
    """

    route = "poll"

    async def answer(self, request, grant, body):
        poll = parse_poll(body, grant)
        workspace, daemon = str(grant.workspace), str(poll.daemon_id)
        waiters = self.service.waiters
        # Taken before the query: a change committed after the query's
        # snapshot wakes this generation, so it cannot be missed.
        since = waiters.generation(workspace)
        page = await self.run(federation_db.poll(
            self.pool(), workspace, daemon, poll.confirm, poll.directory_after, poll.limit))
        metrics = self.service.metrics
        metrics.federation_confirmed.inc(page.confirmed)
        outcome = "at_once"
        if page.empty and poll.wait > 0:
            if request._disconnected:
                return None
            woken = waiters.wait(workspace, since, poll.wait)
            # A client that goes away takes its waiter (and timer) along.
            request.notifyFinish().addErrback(lambda _: woken.cancel())
            try:
                outcome = "woken" if await woken else "timeout"
            except defer.CancelledError:
                return None
            page = await self.run(federation_db.fetch(
                self.pool(), workspace, daemon, poll.directory_after, poll.limit))
        metrics.federation_polls.labels(outcome).inc()
        return poll_answer(page, poll.directory_after)


def poll_answer(page, after):
    """
    The body (L{bytes}) of a poll's answer: each item's message as it was
    stored (verbatim JSON), the directory changes, the highest directory
    version answered (or C{after}) and whether a page was full.

    @param page: the L{relay.ingest.federation_db.Page} found.
    @param after: the poll's C{directory_after}.
    """
    items = [{"seq": seq, "recipient": recipient, "message": orjson.Fragment(message)}
             for seq, recipient, message in page.items]
    directory = [{"name": name, "home": home, "online": online, "since_ms": since_ms,
                  "version": version}
                 for name, home, online, since_ms, version in page.directory]
    return orjson.dumps({
        "items": items,
        "directory": directory,
        "directory_version": directory[-1]["version"] if directory else after,
        "more": page.full,
    })


def build_federation(service):
    """
    The C{/api/federation/} resource, with its three routes.
    """
    federation = Resource()
    federation.putChild(b"presence", PresenceResource(service))
    federation.putChild(b"handover", HandoverResource(service))
    federation.putChild(b"poll", PollResource(service))
    return federation
