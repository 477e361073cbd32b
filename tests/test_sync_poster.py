# -*- test-case-name: tests.test_sync_poster -*-
"""
Tests for L{relay.sync.poster}: one POST with treq against a real
twisted.web server on loopback (plain and TLS), classified into outcomes.
"""

import gzip

import orjson
from twisted.internet import defer, reactor
from twisted.trial import unittest

from relay.sync import poster as P
from relay.sync.options import SYNC_PATH
from tests.support.sync import KEY, IngestServer, make_tls

BODY = orjson.dumps({"daemon_id": "d", "workspace_id": "w", "messages": [
    {"id": "m-{}".format(i), "body": "a status line that repeats " * 3} for i in range(20)]})


class PosterTests(unittest.TestCase):
    """
    Real HTTP exchanges and what they come to.
    """

    def setUp(self):
        self.server = IngestServer(reactor).start()
        self.addCleanup(self.server.stop)

    def poster(self, url=None, timeout=5.0, threshold=1024, ca=None, key=KEY):
        client, pool = P.make_treq_client(reactor, ca)
        poster = P.Poster(reactor, (url or self.server.url) + SYNC_PATH, key, timeout, threshold,
                          client, pool)
        self.addCleanup(poster.close)
        return poster

    @defer.inlineCallbacks
    def test_ok_with_gzip(self):
        """
        A body above the threshold goes gzipped with Content-Encoding,
        bearer key and JSON type; 200 gives OK with the server's counts.
        """
        outcome = yield self.poster(threshold=100).post(BODY, 20)
        self.assertEqual((outcome.kind, outcome.status), (P.OK, 200))
        self.assertEqual(outcome.data, {"synced": 20, "duplicates": 0})
        self.assertTrue(outcome.compressed)
        request = self.server.stub.requests[0]
        self.assertEqual(request["headers"]["content-encoding"], "gzip")
        self.assertEqual(request["headers"]["authorization"], "Bearer " + KEY)
        self.assertEqual(request["headers"]["content-type"], "application/json")
        self.assertEqual(gzip.decompress(request["raw"]), BODY)
        self.assertEqual(outcome.wire_bytes, len(request["raw"]))
        self.assertLess(outcome.wire_bytes, len(BODY))

    @defer.inlineCallbacks
    def test_small_body_plain(self):
        """
        A body at or under the threshold goes as it is, without
        Content-Encoding.
        """
        outcome = yield self.poster(threshold=len(BODY)).post(BODY, 20)
        self.assertEqual(outcome.kind, P.OK)
        self.assertFalse(outcome.compressed)
        request = self.server.stub.requests[0]
        self.assertNotIn("content-encoding", request["headers"])
        self.assertEqual(request["raw"], BODY)

    @defer.inlineCallbacks
    def test_statuses(self):
        """
        Each status class maps to its outcome; Retry-After is read.
        """
        stub = self.server.stub
        stub.script = [
            (503, {"error": "db down"}, {"Retry-After": "7"}),
            (429, {"error": "slow"}, {}),
            (413, {"error": "too big"}, {}),
            (400, {"error": "bad ts", "index": 3, "id": "m-3", "field": "ts"}, {}),
            (400, {"error": "not json"}, {}),
            (403, {"error": "no"}, {}),
            (404, {"error": "no such path"}, {}),
        ]
        poster = self.poster()
        got = []
        for _ in range(len(stub.script)):
            outcome = yield poster.post(BODY, 20)
            got.append((outcome.kind, outcome.status))
        self.assertEqual(got, [(P.RETRY, 503), (P.RETRY, 429), (P.TOO_LARGE, 413),
                               (P.BAD_MESSAGE, 400), (P.BAD_BATCH, 400), (P.UNAUTHORIZED, 403),
                               (P.RETRY, 404)])
        stub.script = [(503, {"error": "db down"}, {"Retry-After": "7"})]
        outcome = yield poster.post(BODY, 20)
        self.assertEqual(outcome.retry_after, 7.0)
        self.assertIn("db down", outcome.reason)

    @defer.inlineCallbacks
    def test_redirect_not_followed(self):
        """
        A 302 (or 307) to another server is REDIRECT, the batch is kept by
        the caller, and the other server never sees the POST.
        """
        other = IngestServer(reactor).start()
        self.addCleanup(other.stop)
        target = other.url + SYNC_PATH
        self.server.stub.script = [(302, {}, {"Location": target}),
                                   (307, {}, {"Location": target})]
        poster = self.poster()
        for status in (302, 307):
            outcome = yield poster.post(BODY, 20)
            self.assertEqual((outcome.kind, outcome.status), (P.REDIRECT, status))
            self.assertIn(target, outcome.reason)
        self.assertEqual(other.stub.requests, [])
        self.assertEqual(len(self.server.stub.requests), 2)

    @defer.inlineCallbacks
    def test_2xx_with_wrong_counts(self):
        """
        A 2xx is OK only when synced + duplicates is the number of messages
        sent: wrong sums, missing or non-integer counts and a non-JSON body
        are MISMATCH, with a reason naming what came back.
        """
        self.server.stub.script = [
            (200, {"synced": 19, "duplicates": 0}, {}),
            (200, {"synced": 20, "duplicates": 1}, {}),
            (204, {}, {}),
            (200, {"synced": "20", "duplicates": 0}, {}),
            (201, {"synced": True, "duplicates": 19}, {}),
            (200, {"duplicates": 20, "synced": -1}, {}),
        ]
        poster = self.poster()
        for _ in range(len(self.server.stub.script)):
            outcome = yield poster.post(BODY, 20)
            self.assertEqual(outcome.kind, P.MISMATCH, outcome.reason)
            self.assertIn("20 messages", outcome.reason)
        outcome = yield poster.post(BODY, 20)
        self.assertEqual(outcome.kind, P.OK)
        outcome = yield poster.post(BODY, 20)
        self.assertEqual(outcome.data, {"synced": 0, "duplicates": 20})
        self.assertEqual(outcome.kind, P.OK)

    @defer.inlineCallbacks
    def test_403_about_the_workspace(self):
        """
        The ingest's 403 naming the workspace field is WRONG_WORKSPACE; a
        403 without it stays UNAUTHORIZED.
        """
        self.server.stub.script = [
            (403, {"error": "this key does not belong to workspace x", "field": "workspace_id"}, {}),
            (403, {"error": "revoked"}, {})]
        poster = self.poster()
        outcome = yield poster.post(BODY, 20)
        self.assertEqual(outcome.kind, P.WRONG_WORKSPACE)
        outcome = yield poster.post(BODY, 20)
        self.assertEqual(outcome.kind, P.UNAUTHORIZED)

    @defer.inlineCallbacks
    def test_wrong_key(self):
        """
        A key the server does not know gives UNAUTHORIZED.
        """
        outcome = yield self.poster(key="wrong").post(BODY, 20)
        self.assertEqual((outcome.kind, outcome.status), (P.UNAUTHORIZED, 401))

    @defer.inlineCallbacks
    def test_refused(self):
        """
        A refused connection is an outcome to retry, not an exception.
        """
        yield self.server.refuse()
        outcome = yield self.poster().post(BODY, 20)
        self.assertEqual((outcome.kind, outcome.status), (P.RETRY, None))
        self.assertIn("ConnectionRefused", outcome.reason)

    @defer.inlineCallbacks
    def test_timeout(self):
        """
        A server that never answers is abandoned after the timeout.
        """
        self.server.stub.script.append("hold")
        outcome = yield self.poster(timeout=0.2).post(BODY, 20)
        self.assertEqual(outcome.kind, P.RETRY)
        self.assertIn("timeout", outcome.reason)


class TLSTests(unittest.TestCase):
    """
    HTTPS verifies the certificate chain and the hostname.
    """

    def setUp(self):
        self.ca, pem = make_tls(self.mktemp(), "localhost")
        self.server = IngestServer(reactor, tls=pem).start()
        self.addCleanup(self.server.stop)

    def poster(self, url, ca):
        client, pool = P.make_treq_client(reactor, ca)
        poster = P.Poster(reactor, url + SYNC_PATH, KEY, 5.0, 1024, client, pool)
        self.addCleanup(poster.close)
        return poster

    @defer.inlineCallbacks
    def test_private_ca(self):
        """
        With --sync-ca-file naming the private CA, the POST goes through.
        """
        outcome = yield self.poster(self.server.url, self.ca).post(BODY, 20)
        self.assertEqual(outcome.kind, P.OK)
        self.assertEqual(len(self.server.stub.unique), 20)

    @defer.inlineCallbacks
    def test_unknown_ca_refused(self):
        """
        Without the CA (platform trust only) the certificate is refused and
        nothing reaches the server.
        """
        outcome = yield self.poster(self.server.url, None).post(BODY, 20)
        self.assertEqual(outcome.kind, P.RETRY)
        self.assertIn("certificate verify failed", outcome.reason)
        self.assertEqual(self.server.stub.requests, [])

    @defer.inlineCallbacks
    def test_wrong_hostname_refused(self):
        """
        A certificate for another name is refused even from the trusted CA.
        """
        url = "https://127.0.0.1:{}".format(self.server.number)
        outcome = yield self.poster(url, self.ca).post(BODY, 20)
        self.assertEqual(outcome.kind, P.RETRY)
        self.assertIn("VerificationError", outcome.reason)
        self.assertEqual(self.server.stub.requests, [])
