# -*- test-case-name: tests.test_federation_client -*-
"""
JSON POSTs to the ingest's C{/api/federation/} routes, with treq.

Several ingest instances may serve one PostgreSQL: the client is given
their base URLs and, when one does not answer (refused, timed out, 5xx),
moves on to the next for the following request.
"""

import orjson
import treq
from twisted.internet import defer
from twisted.logger import Logger

from relay.sync.wire import maybe_compress

MAX_ANSWER_BYTES = 64 * 1024 * 1024


class Unreachable(Exception):
    """
    No answer, or a 5xx: try again (the client has moved to the next URL).
    """


class Refused(Exception):
    """
    A 4xx answer: this request will not succeed as it is.

    @ivar status: the HTTP status.
    @ivar body: the decoded error body, or None.
    """

    def __init__(self, status, body):
        Exception.__init__(self, "HTTP %d: %s" % (status, (body or {}).get("error", "")))
        self.status = status
        self.body = body


class FederationClient:
    """
    @param reactor: provides C{callLater} (timeouts).
    @param urls: the ingest base URLs (C{http[s]://host:port}), first
        preferred.
    @param key: the API key.
    @param client: a treq C{HTTPClient}.
    """

    log = Logger()

    def __init__(self, reactor, urls, key, client, pool=None, compress_threshold=16 * 1024):
        self.reactor = reactor
        self.urls = list(urls)
        self.current = 0
        self._auth = b"Bearer " + key.encode("ascii")
        self._client = client
        self._pool = pool
        self.compress_threshold = compress_threshold
        self.connected = False
        self.last_error = None

    @property
    def url(self):
        return self.urls[self.current]

    def _next(self, why):
        self.connected = False
        self.last_error = why
        if len(self.urls) > 1:
            old = self.url
            self.current = (self.current + 1) % len(self.urls)
            self.log.info("federation: {old} failed ({why}); next: {new}",
                          old=old, why=why, new=self.url)

    def post(self, route, body, timeout):
        """
        POST C{body} (a JSON-able object, or already encoded bytes) to
        C{route} (e.g. C{"poll"}).

        @return: a Deferred firing with the decoded answer of a 2xx;
            failing with L{Unreachable} or L{Refused}.
        """
        if not isinstance(body, bytes):
            body = orjson.dumps(body)
        data, compressed = maybe_compress(body, self.compress_threshold)
        headers = {b"Authorization": [self._auth], b"Content-Type": [b"application/json"]}
        if compressed:
            headers[b"Content-Encoding"] = [b"gzip"]
        url = self.url + "/api/federation/" + route
        return defer.ensureDeferred(self._post(url, data, headers, timeout))

    async def _post(self, url, data, headers, timeout):
        d = self._client.post(url, data=data, headers=headers, allow_redirects=False)
        d.addCallback(lambda response: treq.content(response).addCallback(
            lambda content: (response.code, content)))
        timer = self.reactor.callLater(timeout, d.cancel)
        try:
            code, content = await d
        except defer.CancelledError:
            if not timer.active():
                self._next("timeout after %gs" % (timeout,))
                raise Unreachable("timeout")
            raise
        except Exception as e:
            self._next("%s: %s" % (type(e).__name__, e))
            raise Unreachable(str(e))
        finally:
            if timer.active():
                timer.cancel()
        try:
            answer = orjson.loads(content[:MAX_ANSWER_BYTES]) if content else None
        except orjson.JSONDecodeError:
            answer = None
        if code >= 500 or code in (408, 429):
            self._next("HTTP %d" % (code,))
            raise Unreachable("HTTP %d" % (code,))
        if not 200 <= code < 300:
            self.connected = False
            self.last_error = "HTTP %d: %s" % (code, (answer or {}).get("error", "")
                                              if isinstance(answer, dict) else "")
            raise Refused(code, answer if isinstance(answer, dict) else None)
        if not isinstance(answer, dict):
            self._next("HTTP %d with a body that is not a JSON object" % (code,))
            raise Unreachable("bad answer")
        self.connected = True
        self.last_error = None
        return answer

    def close(self):
        if self._pool is not None:
            return self._pool.closeCachedConnections()
        return defer.succeed(None)
