# -*- test-case-name: tests.test_sync_poster -*-
"""
One sync POST to the ingest service, with treq, classified into an
L{Outcome} the pipeline acts on.

The poster never raises for what the network or the server does: refused
connections, timeouts (scheduled on the injected reactor, covering the
whole exchange, body included) and every status code become an L{Outcome}.

Only a 2xx whose body counts every message sent (C{synced + duplicates}
equal to the number posted) is L{OK}: a 2xx from something that is not the
ingest service (a proxy's login page, a wrong C{--sync-url}) is
L{MISMATCH}, and a redirect is never followed (L{REDIRECT}); both keep the
batch.  What the service does with each kind is L{relay.sync.decide}.
"""

import attr
import orjson
import treq
from treq.client import HTTPClient
from twisted.internet import defer
from twisted.internet.ssl import Certificate, trustRootFromCertificates
from twisted.logger import Logger
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool

from relay.sync.backoff import parse_retry_after
from relay.sync.wire import maybe_compress

#: Outcome kinds.
OK = "ok"
RETRY = "retry"
UNAUTHORIZED = "unauthorized"
TOO_LARGE = "too_large"
BAD_MESSAGE = "bad_message"
BAD_BATCH = "bad_batch"
#: A 403 saying the body's workspace is not the key's (C{field: workspace_id}).
WRONG_WORKSPACE = "wrong_workspace"
#: A 2xx whose counts do not add up to the messages sent.
MISMATCH = "mismatch"
#: A 3xx: not followed (the data would go where nobody configured).
REDIRECT = "redirect"

#: Every kind, for exhaustive tests of the decision table.
KINDS = (OK, RETRY, UNAUTHORIZED, WRONG_WORKSPACE, TOO_LARGE, BAD_MESSAGE, BAD_BATCH,
         MISMATCH, REDIRECT)

#: The most response body read from the ingest service.
MAX_RESPONSE_BYTES = 64 * 1024


@attr.s(slots=True)
class Outcome:
    """
    What one POST came to.

    @ivar kind: one of L{KINDS}.
    @ivar status: the HTTP status, or None when no response arrived.
    @ivar reason: a one-line description (for logs and C{last_error}).
    @ivar data: the decoded JSON response body (a dict, possibly empty).
    @ivar retry_after: seconds the server asked us to wait, or None.
    @ivar wire_bytes: bytes of request body put on the wire.
    @ivar compressed: whether the body was gzipped.
    """

    kind = attr.ib()
    status = attr.ib(default=None)
    reason = attr.ib(default="")
    data = attr.ib(factory=dict)
    retry_after = attr.ib(default=None)
    wire_bytes = attr.ib(default=0)
    compressed = attr.ib(default=False)


def load_trust_root(path):
    """
    Read every certificate in the PEM file at C{path} as a trust root.

    @raise ValueError: one line saying what is wrong with the file.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ValueError("cannot read {}: {}".format(path, e.strerror))
    marker = b"-----BEGIN CERTIFICATE-----"
    chunks = [marker + c for c in data.split(marker)[1:]]
    if not chunks:
        raise ValueError("{} holds no PEM certificate".format(path))
    try:
        certs = [Certificate.loadPEM(c) for c in chunks]
    except Exception as e:
        raise ValueError("{} holds a certificate that does not parse: {}".format(path, e))
    return trustRootFromCertificates(certs)


def make_treq_client(reactor, ca_file=None):
    """
    A treq client with a persistent connection pool.  HTTPS verifies the
    certificate chain and the hostname (service_identity), against
    C{ca_file} when given, else the platform's trust store.
    """
    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = 2
    pool.retryAutomatically = False
    if ca_file:
        policy = BrowserLikePolicyForHTTPS(trustRoot=load_trust_root(ca_file))
    else:
        policy = BrowserLikePolicyForHTTPS()
    return HTTPClient(Agent(reactor, contextFactory=policy, pool=pool)), pool


def _count(data, field):
    value = data.get(field, 0)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def _status_outcome(status, headers, body, now, sent):
    try:
        data = orjson.loads(body) if body else {}
    except orjson.JSONDecodeError:
        data = {}
    if not isinstance(data, dict):
        data = {}
    error = data.get("error")
    detail = " ({})".format(str(error)[:200]) if error else ""
    if 200 <= status < 300:
        synced, duplicates = _count(data, "synced"), _count(data, "duplicates")
        if "synced" not in data or synced is None or duplicates is None \
                or synced + duplicates != sent:
            return Outcome(MISMATCH, status, "HTTP {} but the body does not count the {} messages "
                           "sent (synced {!r}, duplicates {!r}): is --sync-url the ingest "
                           "service?".format(status, sent, data.get("synced"),
                                             data.get("duplicates")), data)
        return Outcome(OK, status, "HTTP {}".format(status), data)
    if 300 <= status < 400:
        location = headers.getRawHeaders(b"location", [b""])[0].decode("latin-1")[:200]
        return Outcome(REDIRECT, status, "HTTP {} redirect to {!r}, not followed: check "
                       "--sync-url".format(status, location), data)
    if status == 403 and data.get("field") == "workspace_id":
        return Outcome(WRONG_WORKSPACE, status, "HTTP 403{}".format(detail), data)
    if status in (401, 403):
        return Outcome(UNAUTHORIZED, status, "HTTP {}{}".format(status, detail), data)
    if status == 413:
        return Outcome(TOO_LARGE, status, "HTTP 413{}".format(detail), data)
    if status == 400:
        index = data.get("index")
        mid = data.get("id")
        if (isinstance(index, int) and not isinstance(index, bool)) or isinstance(mid, str):
            return Outcome(BAD_MESSAGE, status, "HTTP 400{}".format(detail), data)
        return Outcome(BAD_BATCH, status, "HTTP 400{}".format(detail), data)
    retry_after = parse_retry_after(headers.getRawHeaders(b"retry-after", [None])[0], now)
    return Outcome(RETRY, status, "HTTP {}{}".format(status, detail), data, retry_after)


class Poster:
    """
    Posts batch bodies to one ingest endpoint.

    @param reactor: provides C{callLater} and C{seconds} (the timeout clock).
    @param url: the full URL posted to.
    @param key: the API key, sent as C{Authorization: Bearer <key>}.
    @param client: a treq C{HTTPClient} (or C{treq.testing.StubTreq}).
    """

    log = Logger()

    def __init__(self, reactor, url, key, timeout, compress_threshold, client, pool=None):
        self._reactor = reactor
        self.url = url
        self._auth = b"Bearer " + key.encode("ascii")
        self.timeout = timeout
        self.compress_threshold = compress_threshold
        self._client = client
        self._pool = pool

    def post(self, body, count):
        """
        POST C{body} (uncompressed JSON bytes) holding C{count} messages.

        @return: a cancellable Deferred firing with an L{Outcome}; it errbacks
            only with L{defer.CancelledError} when the caller cancels it.
        """
        data, compressed = maybe_compress(body, self.compress_threshold)
        headers = {
            b"Authorization": [self._auth],
            b"Content-Type": [b"application/json"],
        }
        if compressed:
            headers[b"Content-Encoding"] = [b"gzip"]
        timed_out = []

        # Never follow a redirect: a POST re-sent elsewhere (or turned into a
        # GET by a 303) could be "accepted" by something that stores nothing.
        d = self._client.post(self.url, data=data, headers=headers, allow_redirects=False)

        def got_response(response):
            return treq.content(response).addCallback(lambda body: (response, body))

        d.addCallback(got_response)

        def on_timeout():
            timed_out.append(True)
            d.cancel()

        timer = self._reactor.callLater(self.timeout, on_timeout)

        def done(result):
            if timer.active():
                timer.cancel()
            return result

        d.addBoth(done)

        def classify(result):
            response, rbody = result
            outcome = _status_outcome(response.code, response.headers, rbody[:MAX_RESPONSE_BYTES],
                                      self._reactor.seconds(), count)
            return outcome

        def failed(failure):
            if timed_out:
                return Outcome(RETRY, None, "timeout after {:g}s".format(self.timeout))
            if failure.check(defer.CancelledError):
                return failure
            reason = failure.getErrorMessage() or failure.type.__name__
            return Outcome(RETRY, None, "{}: {}".format(failure.type.__name__, reason)[:300])

        d.addCallbacks(classify, failed)

        def stamp(outcome):
            if isinstance(outcome, Outcome):
                outcome.wire_bytes = len(data)
                outcome.compressed = compressed
            return outcome

        d.addCallback(stamp)
        return d

    def close(self):
        """
        Drop cached connections; fires when they are closed.
        """
        if self._pool is not None:
            return self._pool.closeCachedConnections()
        return defer.succeed(None)
