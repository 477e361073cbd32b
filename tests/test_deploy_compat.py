"""
L{relay.compat}: the ingest site behaves the same on the oldest and the
newest supported Twisted (C{.ci/run} runs this module on both).
"""

import orjson
import treq
from twisted import version as twisted_version
from twisted.internet import defer, endpoints, reactor
from twisted.trial import unittest
from twisted.web.resource import Resource

from relay import compat
from relay.ingest.web import IngestSite


class _Echo(Resource):
    isLeaf = True

    def render_POST(self, request):
        return orjson.dumps({
            "body": request.content.body().decode("latin-1"),
            "args": {k.decode("latin-1"): [v.decode("latin-1") for v in vs]
                     for k, vs in request.args.items()},
        })


class FormParsingTests(unittest.TestCase):
    """
    The ingest site never parses a POST body as a form, whatever Twisted.
    """

    def test_flag_matches_release(self):
        """
        C{site_takes_parse_post()} is true exactly from Twisted 25.5.0 on, the
        release that added C{Site(parsePOSTFormSubmission=...)}.
        """
        self.assertEqual(compat.site_takes_parse_post(),
                         (twisted_version.major, twisted_version.minor) >= (25, 5))
        expected = {"parsePOSTFormSubmission": False} if compat.site_takes_parse_post() else {}
        self.assertEqual(compat.site_without_form_parsing(), expected)

    @defer.inlineCallbacks
    def test_form_content_type_body_reaches_resource(self):
        """
        A POST sent as C{application/x-www-form-urlencoded} (what C{curl -d}
        sends by default) reaches the resource with its body whole and no
        form arguments taken out of it, through a real HTTP server.
        """
        site = IngestSite(_Echo(), maxBodyBytes=10000, maxInflatedBytes=10000)
        port = yield endpoints.TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(site)
        self.addCleanup(port.stopListening)
        url = "http://127.0.0.1:%d/x?q=1" % (port.getHost().port,)
        body = b'a=1&b=2&{"batch": []}'
        response = yield treq.post(url, data=body, headers={
            b"Content-Type": [b"application/x-www-form-urlencoded"],
            b"Authorization": [b"Bearer rlk_test"]}, persistent=False)
        self.assertEqual(response.code, 200)
        answer = orjson.loads((yield response.content()))
        self.assertEqual(answer["body"], body.decode("latin-1"))
        # Only the query string is parsed, never the body.
        self.assertEqual(answer["args"], {"q": ["1"]})
