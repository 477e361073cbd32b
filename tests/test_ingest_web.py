"""
Unit tests of the HTTP side of the ingest service, L{relay.ingest.web}:
L{IngestSite}/L{IngestRequest} driven over a L{StringTransport},
L{authenticate} and L{KeyCheck} with a stand-in service, and the resource
tree.  The service against the real PostgreSQL, through the real
C{twistd relay-ingest}, is tested in L{tests.test_ingest_http}.
"""

import gc
import uuid

import orjson
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial import unittest
from twisted.web.resource import Resource

from relay.ingest import keys
from relay.ingest.metrics import IngestMetrics
from relay.ingest.validate import BadRequest
from relay.ingest.web import (
    IngestSite,
    KeyCheck,
    SyncResource,
    Unavailable,
    authenticate,
    build_root,
)

WS = uuid.UUID("6f1d1c2e-8d8e-4a53-9a4b-0d5b3f3d6a01")
DAEMON = uuid.UUID("11111111-2222-4333-8444-555555555555")


class _Echo(Resource):
    """
    Answers a POST with the length of the body it read.
    """

    isLeaf = True

    def render_POST(self, request):
        return b"%d" % (len(request.content.body()),)


class _Service:
    """
    The attributes of L{relay.ingest.tap.IngestService} that
    L{authenticate} reads, with a pool that answers from a dict.
    """

    db_timeout = 5.0

    def __init__(self, rows=None, ready=True):
        self.reactor = Clock()
        self.ready = ready
        self.rows = rows or {}
        self.queries = []
        self.tx_pool = self

    def runQuery(self, sql, params):
        self.queries.append(params)
        row = self.rows.get(params[0])
        return defer.succeed([row] if row is not None else [])


def _request(body, headers=b""):
    return (b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n" % (len(body),)
            + headers + b"\r\n" + body)


class IngestRequestTests(unittest.TestCase):
    """
    L{IngestRequest}: the body lives in a bounded buffer that is given back
    to the site's budget however the request ends.
    """

    def connect(self):
        site = IngestSite(_Echo(), max_body_bytes=1000, max_inflated_bytes=1000,
                          max_buffered_bytes=10000, timeout=None)
        channel = site.buildProtocol(None)
        transport = StringTransport()
        channel.makeConnection(transport)
        return site, channel, transport

    def test_finished_request_releases_body_cleanly(self):
        """
        A request answered normally gives its body's bytes back to the
        budget, and its finish callback raises nothing (Twisted has already
        closed and removed the body when it fires: a callback that touched
        it left an unhandled error behind, reported later against whatever
        test was running).
        """
        site, channel, transport = self.connect()
        channel.dataReceived(_request(b"x" * 100, b"Authorization: Bearer k\r\n"))
        self.assertIn(b"\r\n\r\n100", transport.value())
        self.assertEqual(site.budget.used, 0)
        gc.collect()
        self.assertEqual(self.flushLoggedErrors(AttributeError), [])

    def test_lost_connection_releases_body(self):
        """
        A client that goes away half-way through its body gives the bytes
        held so far back to the budget.
        """
        site, channel, transport = self.connect()
        channel.dataReceived(_request(b"x" * 500, b"Authorization: Bearer k\r\n")[:-200])
        self.assertEqual(site.budget.used, 300)
        channel.connectionLost(Failure(ConnectionError("gone")))
        self.assertEqual(site.budget.used, 0)
        gc.collect()
        self.assertEqual(self.flushLoggedErrors(AttributeError), [])

    def test_no_credentials_keeps_nothing(self):
        """
        Without a bearer key the body is counted but never kept.
        """
        site, channel, transport = self.connect()
        channel.dataReceived(_request(b"x" * 500)[:-100])
        self.assertEqual(site.budget.used, 0)


class AuthenticateTests(unittest.TestCase):
    """
    L{authenticate} turns an C{Authorization} header into a workspace or
    a refusal, looking at the database only for well-formed keys.
    """

    def run_auth(self, service, header):
        return defer.Deferred.fromCoroutine(authenticate(service, header))

    def test_refusals_before_the_database(self):
        """
        A missing header, another scheme, a malformed or undecodable key are
        401 without a query.
        """
        service = _Service()
        for header in (None, b"", b"Basic abc", b"Bearer nope", b"Bearer \xff\xfe"):
            f = self.failureResultOf(self.run_auth(service, header), BadRequest)
            self.assertEqual(f.value.status, 401, header)
        self.assertEqual(service.queries, [])

    def test_good_unknown_and_revoked(self):
        """
        A stored key gives its workspace; an unknown id or a revoked key is
        401; the key id is what is looked up.
        """
        key_id, key = keys.generate_key()
        revoked_id, revoked = keys.generate_key()
        service = _Service({
            key_id: (keys.hash_key(key), str(WS), False),
            revoked_id: (keys.hash_key(revoked), str(WS), True),
        })
        self.assertEqual(
            self.successResultOf(self.run_auth(service, b"Bearer " + key.encode())),
            keys.Grant(WS, None))
        self.assertEqual(service.queries, [(key_id,)])
        for other in (revoked, keys.generate_key()[1]):
            f = self.failureResultOf(self.run_auth(service, b"bearer " + other.encode()),
                                     BadRequest)
            self.assertEqual(f.value.status, 401)

    def test_not_ready_is_unavailable(self):
        """
        Before the schema is ready a well-formed key cannot be checked:
        L{Unavailable} (answered 503), not 401.
        """
        key = keys.generate_key()[1]
        self.failureResultOf(self.run_auth(_Service(ready=False), b"Bearer " + key.encode()),
                             Unavailable)


class KeyCheckTests(unittest.TestCase):
    """
    L{KeyCheck} keeps the outcome of a key check as a value.
    """

    def test_good(self):
        """
        A good key's workspace is the result, for waiters before and after.
        """
        d = defer.Deferred()
        check = KeyCheck(d)
        early = check.wait()
        self.assertNoResult(early)
        d.callback(keys.Grant(WS, DAEMON))
        self.successResultOf(early)
        self.successResultOf(check.wait())
        self.assertEqual(check.workspace, WS)
        self.assertEqual(
            self.successResultOf(defer.Deferred.fromCoroutine(check.result())),
            keys.Grant(WS, DAEMON))

    def test_errors(self):
        """
        A refusal is kept as it is, a cancelled check is L{Unavailable}, and
        any other error is logged and kept as a 500; none is left unhandled.
        """
        for error, expected in ((BadRequest(401, "no"), BadRequest),
                                (defer.CancelledError(), Unavailable),
                                (KeyError("bug"), BadRequest)):
            check = KeyCheck(defer.fail(error))
            self.assertTrue(check.done)
            self.assertIsInstance(check.error, expected)
            self.failureResultOf(defer.Deferred.fromCoroutine(check.result()), expected)
        self.assertEqual(check.error.status, 500)
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)

    def test_cancel(self):
        """
        Cancelling a pending check cancels its lookup; a finished one is
        left alone.
        """
        cancelled = []
        check = KeyCheck(defer.Deferred(cancelled.append))
        check.cancel()
        self.assertEqual(len(cancelled), 1)
        self.assertIsInstance(check.error, Unavailable)
        done = KeyCheck(defer.succeed(keys.Grant(WS)))
        done.cancel()
        self.assertEqual(done.workspace, WS)


class BuildRootTests(unittest.TestCase):
    """
    L{build_root} serves the sync resource, health and metrics.
    """

    def test_paths(self):
        """
        The tree has C{/api/daemons/messages/sync}, C{/healthz} and
        C{/metrics} (the given resource).
        """
        metrics = Resource()
        root = build_root(object(), metrics)
        sync = root.children[b"api"].children[b"daemons"].children[b"messages"].children[b"sync"]
        self.assertIsInstance(sync, SyncResource)
        self.assertIn(b"healthz", root.children)
        self.assertIs(root.children[b"metrics"], metrics)

    def test_metrics_count_answers(self):
        """
        Every answer of the sync resource is counted by status.
        """
        service = _Service()
        service.metrics = IngestMetrics()
        resource = SyncResource(service)

        class _Request:
            _disconnected = False
            code = None

            def setResponseCode(self, code):
                self.code = code

            def setHeader(self, name, value):
                pass

            def write(self, data):
                self.body = orjson.loads(data)

            def finish(self):
                pass

        request = _Request()
        resource._answer(request, 400, {"error": "x"})
        self.assertEqual(request.code, 400)
        self.assertIn(b'relay_ingest_requests_total{status="400"} 1.0',
                      service.metrics.render())
