# -*- test-case-name: tests.test_federation_client -*-
"""
Tests for L{relay.federation.client} against in-memory twisted.web
resources through L{treq.testing.StubTreq}.
"""

import gzip

import orjson
from treq.testing import StubTreq
from twisted.internet import defer, task
from twisted.trial import unittest
from twisted.web.resource import Resource

from relay.federation.client import FederationClient, Refused, Unreachable


class Answer(Resource):
    isLeaf = True

    def __init__(self, code, body):
        Resource.__init__(self)
        self.code = code
        self.body = body
        self.seen = []

    def render_POST(self, request):
        data = request.content.read()
        if request.getHeader(b"Content-Encoding") == b"gzip":
            data = gzip.decompress(data)
        self.seen.append((request.path, request.getHeader(b"Authorization"), orjson.loads(data)))
        request.setResponseCode(self.code)
        return self.body


class Hosts(Resource):
    """Two hosts: the URL's host picks the answer."""

    def __init__(self, answers):
        Resource.__init__(self)
        self.answers = answers

    def getChildWithDefault(self, name, request):
        return self.answers[request.getRequestHostname().decode()]


class ClientTests(unittest.TestCase):

    def client(self, answers, threshold=16 * 1024):
        self.clock = task.Clock()
        stub = StubTreq(Hosts(answers))
        return FederationClient(self.clock, ["http://one", "http://two"], "rlk_k", stub,
                                compress_threshold=threshold)

    @defer.inlineCallbacks
    def test_answer_and_request(self):
        """
        A 200 gives the decoded answer; the request carries the key and the
        JSON body, gzipped above the threshold.
        """
        one = Answer(200, b'{"stored": 1}')
        c = self.client({"one": one, "two": Answer(500, b"")}, threshold=10)
        answer = yield c.post("handover", {"daemon_id": "d", "items": ["x" * 50]}, 5)
        self.assertEqual(answer, {"stored": 1})
        [(path, auth, body)] = one.seen
        self.assertEqual(path, b"/api/federation/handover")
        self.assertEqual(auth, b"Bearer rlk_k")
        self.assertEqual(body["daemon_id"], "d")
        self.assertTrue(c.connected)

    @defer.inlineCallbacks
    def test_5xx_moves_to_the_next_instance(self):
        """
        A 5xx is L{Unreachable} and the next request goes to the next URL.
        """
        two = Answer(200, b"{}")
        c = self.client({"one": Answer(503, b'{"error": "down"}'), "two": two})
        yield self.assertFailure(c.post("poll", {}, 5), Unreachable)
        self.assertEqual(c.url, "http://two")
        self.assertFalse(c.connected)
        self.assertEqual(c.last_error, "HTTP 503")
        yield c.post("poll", {}, 5)
        self.assertEqual(len(two.seen), 1)

    @defer.inlineCallbacks
    def test_4xx_is_refused_and_stays(self):
        """
        A 4xx is L{Refused} with its status and body; the URL stays.
        """
        c = self.client({"one": Answer(403, b'{"error": "not your daemon"}'),
                         "two": Answer(200, b"{}")})
        e = yield self.assertFailure(c.post("poll", {}, 5), Refused)
        self.assertEqual(e.status, 403)
        self.assertEqual(e.body, {"error": "not your daemon"})
        self.assertEqual(c.url, "http://one")
        self.assertIn("not your daemon", c.last_error)

    @defer.inlineCallbacks
    def test_answer_not_an_object(self):
        """
        A 2xx whose body is not a JSON object is L{Unreachable}.
        """
        c = self.client({"one": Answer(200, b"[1]"), "two": Answer(200, b"{}")})
        yield self.assertFailure(c.post("poll", {}, 5), Unreachable)

    def test_timeout(self):
        """
        No answer within the timeout: L{Unreachable}, next URL.
        """
        self.clock = task.Clock()

        class Never:
            def post(self, *a, **kw):
                return defer.Deferred()
        c = FederationClient(self.clock, ["http://one", "http://two"], "rlk_k", Never())
        d = c.post("poll", {}, 5)
        self.clock.advance(5)
        self.failureResultOf(d, Unreachable)
        self.assertEqual(c.url, "http://two")
        self.assertIn("timeout", c.last_error)
