"""
End-to-end tests of the ingest service over HTTP: the real
C{twistd -n relay-ingest} process (found next to C{sys.executable}, with the
plugin from this tree) against the real PostgreSQL.
"""

import gzip
import io
import os
import zlib

import orjson
import psycopg2
import treq
from psycopg2.extensions import make_dsn, parse_dsn
from twisted.internet import defer, endpoints, protocol, reactor, task
from twisted.trial import unittest

from relay.cli import main as cliMain
from relay.ingest import keys
from tests.support.ingest_process import CuttableProxy, IngestProcess
from tests.support.ingest import fetchAll, makeMessage, testDatabaseDSN, truncate

WS = "6f1d1c2e-8d8e-4a53-9a4b-0d5b3f3d6a01"
OTHER_WS = "0b9a1c2e-8d8e-4a53-9a4b-0d5b3f3d6a02"
DAEMON = "11111111-2222-4333-8444-555555555555"
SYNC = "/api/daemons/messages/sync"

MiB = 1024 * 1024
# Small limits keep the tests fast; the bomb below inflates to far more.
LIMIT_ARGS = ["--max-body-bytes", str(2 * MiB), "--max-inflated-bytes", str(8 * MiB)]

_bomb = {}


def gzip_bomb(inflated_bytes=512 * MiB):
    """
    A gzip body that inflates to C{inflated_bytes} zero bytes (about 1000
    times its own size).
    """
    if inflated_bytes not in _bomb:
        c = zlib.compressobj(9, zlib.DEFLATED, 31)
        block = b"\0" * MiB
        parts = [c.compress(block) for _ in range(inflated_bytes // MiB)]
        parts.append(c.flush())
        _bomb[inflated_bytes] = b"".join(parts)
    return _bomb[inflated_bytes]


def batch(messages, workspace=WS, daemon=DAEMON):
    return {"daemon_id": daemon, "workspace_id": workspace, "messages": messages}


def with_captured_stdout(f, *args):
    import contextlib
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = f(*args)
    return rc, out.getvalue()


class _ServiceMixin:
    extraArgs = LIMIT_ARGS

    def setUp(self):
        self.dsn = testDatabaseDSN(self)
        truncate(self.dsn)
        self.key = self.create_key(WS)
        self.service = IngestProcess(reactor, self.service_dsn(), self.extraArgs)
        self.addCleanup(self.service.stop)
        return self.service.start()

    def service_dsn(self):
        return self.dsn

    def create_key(self, workspace):
        conn = psycopg2.connect(self.dsn)
        try:
            return keys.create_key(conn, workspace)[1]
        finally:
            conn.close()

    def count(self):
        return fetchAll(self.dsn, "SELECT count(*) FROM agent_messages")[0][0]

    @defer.inlineCallbacks
    def post(self, body, key=None, gzipped=False, headers=None, path=SYNC):
        """
        POST C{body} (bytes, or a value to encode as JSON) and return
        C{(code, decoded JSON or raw bytes, response headers)}.
        """
        if not isinstance(body, bytes):
            body = orjson.dumps(body)
        h = {b"Content-Type": [b"application/json"]}
        if gzipped:
            body = gzip.compress(body)
            h[b"Content-Encoding"] = [b"gzip"]
        if key is None:
            key = self.key
        if key is not False:
            h[b"Authorization"] = [b"Bearer " + key.encode("ascii")]
        h.update(headers or {})
        response = yield treq.post(self.service.url + path, data=body, headers=h, timeout=60,
                                   pool=self.service.httpPool)
        content = yield response.content()
        try:
            content = orjson.loads(content)
        except orjson.JSONDecodeError:
            pass
        return response.code, content, response.headers

    @defer.inlineCallbacks
    def metrics(self):
        response = yield treq.get(self.service.url + "/metrics", timeout=10,
                                  pool=self.service.httpPool)
        text = yield response.text()
        values = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                values[name] = float(value)
        return values


class SyncTests(_ServiceMixin, unittest.TestCase):
    """
    The sync endpoint of a running C{twistd relay-ingest}.
    """

    @defer.inlineCallbacks
    def test_collisions_stored_and_reported(self):
        """
        Issue 13 point 17: ids already stored, sent again with other content
        (from another daemon, as after a restore or a copy) are stored under
        disambiguated ids and reported in the response ("collisions", part
        of "synced") and the metrics; the same content again is a duplicate.
        Through COPY as well as the small-batch strategy.
        """
        code, body, _ = yield self.post(batch([makeMessage(i) for i in range(1100)]))
        self.assertEqual((code, body), (200, {"synced": 1100, "duplicates": 0}))
        other = "22222222-3333-4444-8555-666666666666"
        reused = [makeMessage(i, body="after restore %d" % (i,)) for i in range(3)]
        code, body, _ = yield self.post(batch(reused, daemon=other))
        self.assertEqual((code, body), (200, {"synced": 3, "duplicates": 0, "collisions": 3}))
        code, body, _ = yield self.post(batch(reused, daemon=other))
        self.assertEqual((code, body), (200, {"synced": 0, "duplicates": 3}))
        big = [makeMessage(i, body="copied %d" % (i,)) for i in range(1100, 1105)] + \
            [makeMessage(i) for i in range(5, 1100)]
        code, body, _ = yield self.post(batch(big, daemon=other), gzipped=True)
        self.assertEqual(code, 200)
        self.assertEqual(body, {"synced": 5, "duplicates": 1095})
        big[0] = makeMessage(7, body="copied and collided")
        code, body, _ = yield self.post(batch(big, daemon=other), gzipped=True)
        self.assertEqual(body, {"synced": 1, "duplicates": 1099, "collisions": 1})
        self.assertEqual(self.count(), 1109)
        m = yield self.metrics()
        self.assertEqual(m["relay_ingest_collisions_total"], 4)
        stored = fetchAll(self.dsn, "SELECT body FROM agent_messages WHERE collision_of = 'm-1'")
        self.assertEqual(stored, [("after restore 1",)])

    @defer.inlineCallbacks
    def test_plain_gzip_and_copy(self):
        """
        A plain JSON body and a gzip one are both stored, with exact counts
        of new rows and duplicates; a batch over the COPY threshold goes
        through COPY; the metrics count it all.
        """
        code, body, _ = yield self.post(batch([makeMessage(i) for i in range(10)]))
        self.assertEqual((code, body), (200, {"synced": 10, "duplicates": 0}))
        code, body, _ = yield self.post(batch([makeMessage(i) for i in range(5, 15)]),
                                        gzipped=True)
        self.assertEqual((code, body), (200, {"synced": 5, "duplicates": 5}))
        big = [makeMessage(i) for i in range(1200)] + [makeMessage(3)]
        code, body, _ = yield self.post(batch(big), gzipped=True)
        self.assertEqual((code, body), (200, {"synced": 1185, "duplicates": 16}))
        self.assertEqual(self.count(), 1200)
        m = yield self.metrics()
        self.assertEqual(m['relay_ingest_requests_total{status="200"}'], 3)
        self.assertEqual(m["relay_ingest_rows_inserted_total"], 1200)
        self.assertEqual(m["relay_ingest_duplicates_total"], 21)
        self.assertEqual(m['relay_ingest_insert_seconds_count{strategy="copy"}'], 1)
        self.assertGreater(m["relay_ingest_bytes_in_total"], 1000)

    @defer.inlineCallbacks
    def test_stored_fields(self):
        """
        The stored row carries the key's workspace, the daemon, and every
        field of the message.
        """
        m = makeMessage(1, body="h\u00e9llo\n\tworld", topic="t", thread="th",
                        channel="#c", data={"a": {"b": [1, None]}},
                        payload_meta={"size": 3}, is_broadcast=True, is_urgent=True,
                        expires_at=1767225700000, to="*")
        code, body, _ = yield self.post(batch([m]))
        self.assertEqual(code, 200)
        rows = fetchAll(
            self.dsn,
            "SELECT workspace_id::text, daemon_id::text, original_id, from_agent, to_agent,"
            " body, kind, topic, thread, channel, is_broadcast, is_urgent, data,"
            " payload_meta, (extract(epoch from message_ts) * 1000)::bigint,"
            " (extract(epoch from expires_at) * 1000)::bigint FROM agent_messages")
        self.assertEqual(rows, [(
            WS, DAEMON, "m-1", "agent-a", "*", "h\u00e9llo\n\tworld", "message", "t",
            "th", "#c", True, True, {"a": {"b": [1, None]}}, {"size": 3},
            1767225600001, 1767225700000)])

    @defer.inlineCallbacks
    def test_auth(self):
        """
        A missing, malformed, unknown, wrong-secret or revoked key gets 401
        and stores nothing; a key of another workspace claiming this one
        gets 403.
        """
        payload = batch([makeMessage(1)])
        key_id = keys.parse_key(self.key)
        wrong_secret = self.key[:-4] + ("AAAA" if not self.key.endswith("AAAA") else "BBBB")
        unknown = "rlk_%s_%s" % ("0" * 16, self.key.rsplit("_", 1)[1][-43:])
        for key in [False, "", "not-a-key", unknown, wrong_secret]:
            code, body, _ = yield self.post(payload, key=key)
            self.assertEqual(code, 401, (key, body))
            self.assertIn("error", body)
        conn = psycopg2.connect(self.dsn)
        self.assertEqual(keys.revoke_key(conn, key_id), "revoked")
        conn.close()
        code, body, _ = yield self.post(payload)
        self.assertEqual(code, 401)
        other = self.create_key(OTHER_WS)
        code, body, _ = yield self.post(payload, key=other)
        self.assertEqual(code, 403)
        self.assertEqual(self.count(), 0)
        code, body, _ = yield self.post(batch([makeMessage(1)], workspace=OTHER_WS), key=other)
        self.assertEqual((code, body), (200, {"synced": 1, "duplicates": 0}))

    @defer.inlineCallbacks
    def test_key_from_command_line(self):
        """
        The last line printed by C{relay keys create} is a key the service
        accepts.
        """
        rc, out = with_captured_stdout(
            cliMain, ["keys", "create", "--workspace", WS, "--postgres", self.dsn])
        self.assertEqual(rc, 0)
        key = out.splitlines()[-1]
        code, body, _ = yield self.post(batch([makeMessage(1)]), key=key)
        self.assertEqual((code, body), (200, {"synced": 1, "duplicates": 0}))

    @defer.inlineCallbacks
    def test_gzip_bomb(self):
        """
        A small gzip body that would inflate to 512 MiB gets 413 once it
        passes --max-inflated-bytes (8 MiB here), and the process's peak
        memory stays far below what inflating it would take.
        """
        bomb = gzip_bomb()
        self.assertLess(len(bomb), 2 * MiB)
        code, body, _ = yield self.post(
            bomb, headers={b"Content-Encoding": [b"gzip"]})
        self.assertEqual(code, 413)
        self.assertIn("inflated", body["error"])
        self.assertLess(self.service.peakMemoryBytes(), 200 * MiB)

    @defer.inlineCallbacks
    def test_body_over_limit(self):
        """
        A body over --max-body-bytes gets 413, plain or gzip-compressed.
        """
        big = batch([makeMessage(i, body="x" * 2000) for i in range(1200)])
        raw = orjson.dumps(big)
        self.assertGreater(len(raw), 2 * MiB)
        code, body, _ = yield self.post(raw)
        self.assertEqual(code, 413)
        noise = io.BytesIO()
        with gzip.GzipFile(fileobj=noise, mode="wb") as g:
            g.write(os.urandom(3 * MiB))
        code, body, _ = yield self.post(noise.getvalue(), headers={b"Content-Encoding": [b"gzip"]})
        self.assertEqual(code, 413)
        self.assertEqual(self.count(), 0)

    @defer.inlineCallbacks
    def test_malformed_bodies(self):
        """
        Bodies that are not JSON, not an object, have no messages list,
        are truncated or corrupt gzip, or use an unknown encoding get a 4xx
        error without an index.
        """
        cases = [
            (b"{not json", {}, 400),
            (b"[1, 2]", {}, 400),
            (orjson.dumps({"daemon_id": DAEMON, "workspace_id": WS}), {}, 400),
            (orjson.dumps({"daemon_id": "nope", "workspace_id": WS, "messages": []}), {}, 400),
            (gzip.compress(b'{"a": 1}')[:-6], {b"Content-Encoding": [b"gzip"]}, 400),
            (b"this is not gzip", {b"Content-Encoding": [b"gzip"]}, 400),
            (b"{}", {b"Content-Encoding": [b"br"]}, 415),
        ]
        for raw, headers, status in cases:
            code, body, _ = yield self.post(raw, headers=headers)
            self.assertEqual(code, status, (raw[:40], body))
            self.assertIsInstance(body["error"], str)
            self.assertNotIn("index", body)

    @defer.inlineCallbacks
    def test_bad_message(self):
        """
        A message missing its id, or with a NUL in its body, gets 400
        naming that message's index, id and field; nothing of the batch is
        stored.
        """
        missing_id = makeMessage(1)
        del missing_id["id"]
        code, body, _ = yield self.post(batch([makeMessage(0), missing_id, makeMessage(2)]))
        self.assertEqual(code, 400)
        self.assertEqual((body["index"], body["id"], body["field"]), (1, None, "id"))
        nul = makeMessage(7, body="a\u0000b")
        code, body, _ = yield self.post(batch([makeMessage(0), makeMessage(1), nul]),
                                        gzipped=True)
        self.assertEqual(code, 400)
        self.assertEqual((body["index"], body["id"], body["field"]), (2, "m-7", "body"))
        self.assertEqual(self.count(), 0)

    @defer.inlineCallbacks
    def test_health_and_metrics(self):
        """
        /healthz answers 200 and /metrics serves Prometheus text including
        the request counter by status.
        """
        response = yield treq.get(self.service.url + "/healthz", pool=self.service.httpPool)
        self.assertEqual(response.code, 200)
        yield response.content()
        yield self.post(b"nope", key=False)
        m = yield self.metrics()
        self.assertEqual(m['relay_ingest_requests_total{status="401"}'], 1)


class _ProxiedServiceMixin(_ServiceMixin):
    """
    The service reaches PostgreSQL through a L{CuttableProxy} the test can
    cut, restore or freeze.
    """

    def setUp(self):
        self.dsn = testDatabaseDSN(self)
        parts = parse_dsn(self.dsn)
        self.proxy = CuttableProxy(reactor, parts.get("host", "127.0.0.1"),
                                   int(parts.get("port", 5432)))
        self.proxy.start()
        self.addCleanup(self.proxy.stop)
        return _ServiceMixin.setUp(self)

    def service_dsn(self):
        return make_dsn(self.dsn, host="127.0.0.1", port=str(self.proxy.port))


class PostgresOutageTests(_ProxiedServiceMixin, unittest.TestCase):
    """
    PostgreSQL going away and coming back while the service runs.

    The machine's PostgreSQL is shared with other tests, so it is not
    stopped: the service reaches it through a loopback TCP proxy
    (L{twisted.protocols.portforward}) that the test cuts (stops listening
    and aborts every connection) and restores, which the service sees
    exactly as the server going away and starting again.
    """

    @defer.inlineCallbacks
    def test_stop_and_start(self):
        """
        While PostgreSQL is away, sync requests and /healthz get 503 with
        Retry-After and nothing is half-written; once it is back the service
        reconnects by itself and the same batches are stored in full.
        """
        code, body, _ = yield self.post(batch([makeMessage(i) for i in range(10)]))
        self.assertEqual(code, 200)
        yield self.proxy.cut()
        small = batch([makeMessage(i) for i in range(10, 60)])
        large = batch([makeMessage(i) for i in range(60, 1600)])
        for payload in [small, large, small]:
            code, body, headers = yield self.post(payload, gzipped=True)
            self.assertEqual(code, 503, body)
            self.assertTrue(headers.getRawHeaders(b"Retry-After"))
        response = yield treq.get(self.service.url + "/healthz", pool=self.service.httpPool)
        self.assertEqual(response.code, 503)
        self.assertTrue(response.headers.getRawHeaders(b"Retry-After"))
        yield response.content()
        self.assertEqual(self.count(), 10)

        self.proxy.restore()
        deadline = reactor.seconds() + 30
        while True:
            code, body, _ = yield self.post(small, gzipped=True)
            if code == 200 or reactor.seconds() > deadline:
                break
            self.assertEqual(code, 503, body)
            yield task.deferLater(reactor, 0.2, lambda: None)
        self.assertEqual((code, body), (200, {"synced": 50, "duplicates": 0}))
        # The COPY path's thread pool reconnects as well.
        deadline = reactor.seconds() + 30
        while True:
            code, body, _ = yield self.post(large, gzipped=True)
            if code == 200 or reactor.seconds() > deadline:
                break
            self.assertEqual(code, 503, body)
            yield task.deferLater(reactor, 0.2, lambda: None)
        self.assertEqual((code, body), (200, {"synced": 1540, "duplicates": 0}))
        self.assertEqual(self.count(), 1600)


class PostgresHungTests(_ProxiedServiceMixin, unittest.TestCase):
    """
    PostgreSQL that stops answering without closing its connections,
    simulated by freezing the loopback proxy of L{PostgresOutageTests}.
    """

    extraArgs = LIMIT_ARGS + ["--db-timeout", "1", "--pool-size", "2"]

    @defer.inlineCallbacks
    def test_hung_database(self):
        """
        While PostgreSQL does not answer, requests get 503 with Retry-After
        after --db-timeout instead of hanging; once it answers again, the
        batch is accepted, exactly once.
        """
        code, _, _ = yield self.post(batch([makeMessage(0)]))
        self.assertEqual(code, 200)
        self.proxy.freeze()
        started = reactor.seconds()
        code, body, headers = yield self.post(batch([makeMessage(i) for i in range(1, 20)]))
        self.assertEqual(code, 503, body)
        self.assertTrue(headers.getRawHeaders(b"Retry-After"))
        self.assertLess(reactor.seconds() - started, 10)
        response = yield self.service.getHealth()
        self.assertEqual(response.code, 503)
        self.proxy.thaw()
        deadline = reactor.seconds() + 30
        while True:
            code, body, _ = yield self.post(batch([makeMessage(i) for i in range(1, 20)]))
            if code == 200 or reactor.seconds() > deadline:
                break
            yield task.deferLater(reactor, 0.2, lambda: None)
        self.assertEqual(code, 200, body)
        self.assertEqual(body["synced"] + body["duplicates"], 19)
        self.assertEqual(self.count(), 20)


class _Unfinished(protocol.Protocol):
    """
    Sends a request head and part of its body, then never finishes it.
    """

    def __init__(self, head, body):
        self.head = head
        self.body = body
        self.received = b""

    def connectionMade(self):
        self.transport.write(self.head)
        self.transport.write(self.body)

    def dataReceived(self, data):
        self.received += data


@defer.inlineCallbacks
def open_unfinished(service, key, body, declared):
    """
    Open one connection to C{service} that POSTs C{body} (gzip) under
    C{key}, declaring C{declared} bytes, and never sends the rest.
    """
    head = (b"POST " + SYNC.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Encoding: gzip\r\n"
            b"Authorization: Bearer " + key.encode("ascii") + b"\r\n"
            b"Content-Length: " + str(declared).encode() + b"\r\n\r\n")
    proto = _Unfinished(head, body)
    endpoint = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", service.port)
    yield endpoints.connectProtocol(endpoint, proto)
    return proto


class MemoryBoundTests(_ServiceMixin, unittest.TestCase):
    """
    Issue 13 point 6: request bodies cannot make the real ingest process
    grow (the key is checked before the body is kept, and all bodies
    together are bounded by --max-buffered-bytes).
    """

    extraArgs = ["--max-body-bytes", str(64 * MiB), "--max-inflated-bytes", str(64 * MiB),
                 "--max-buffered-bytes", str(8 * MiB)]

    @defer.inlineCallbacks
    def unfinished_growth(self, key):
        """
        Four unfinished requests under C{key}, each with a gzip body that
        inflates to 60 MiB; return how much the process's RSS grew once it
        has read every byte of them.
        """
        code, _, _ = yield self.post(batch([makeMessage(0)]))
        self.assertEqual(code, 200)
        before = self.service.memoryBytes()
        m = yield self.metrics()
        seen = m.get("relay_ingest_bytes_in_total", 0)
        bomb = gzip_bomb(60 * MiB)
        conns = []
        for _ in range(4):
            conn = yield open_unfinished(self.service, key, bomb, len(bomb) + MiB)
            conns.append(conn)
        self.addCleanup(lambda: [c.transport.abortConnection() for c in conns])
        deadline = reactor.seconds() + 30
        while True:
            m = yield self.metrics()
            if m.get("relay_ingest_bytes_in_total", 0) - seen >= 4 * len(bomb):
                break
            self.assertLess(reactor.seconds(), deadline, "the service never read the bodies")
            yield task.deferLater(reactor, 0.1, lambda: None)
        return self.service.memoryBytes() - before

    @defer.inlineCallbacks
    def test_fake_key_costs_no_memory(self):
        """
        Four unfinished requests with a well-formed but unknown key (each
        body inflating to 60 MiB) do not grow the process by more than a
        few MiB (before: +253 MiB); a valid request is served meanwhile.
        """
        fake = keys.generate_key()[1]
        growth = yield self.unfinished_growth(fake)
        self.assertLess(growth, 24 * MiB)
        code, body, _ = yield self.post(batch([makeMessage(i) for i in range(1, 4)]))
        self.assertEqual((code, body), (200, {"synced": 3, "duplicates": 0}))

    @defer.inlineCallbacks
    def test_valid_key_bounded_together(self):
        """
        The same four requests under a valid key are bounded together by
        --max-buffered-bytes (8 MiB here): the growth stays small, and once
        they are refused a valid request is served.
        """
        growth = yield self.unfinished_growth(self.key)
        self.assertLess(growth, 32 * MiB)
        code, body, _ = yield self.post(batch([makeMessage(i) for i in range(1, 4)]))
        self.assertEqual((code, body), (200, {"synced": 3, "duplicates": 0}))

    @defer.inlineCallbacks
    def test_over_budget_is_503(self):
        """
        A complete body larger than --max-buffered-bytes gets 503 with
        Retry-After (the sender keeps it and retries), not a 413.
        """
        big = batch([makeMessage(i, body="x" * 100000) for i in range(100)])
        code, body, headers = yield self.post(big)
        self.assertEqual(code, 503, body)
        self.assertTrue(headers.getRawHeaders(b"Retry-After"))
        self.assertEqual(self.count(), 0)


class PostgresQueueTests(_ProxiedServiceMixin, unittest.TestCase):
    """
    Issue 13 point 15: during a PostgreSQL hang the operations waiting for a
    connection are bounded (--max-waiting) and leave the queue when their
    request is answered 503.
    """

    extraArgs = LIMIT_ARGS + ["--db-timeout", "1", "--pool-size", "2", "--max-waiting", "2"]

    @defer.inlineCallbacks
    def test_waiters_bounded_and_cancelled(self):
        """
        Eight requests during a hang: never more than two wait, the rest
        get 503 with Retry-After at once (counted as busy), every request is
        answered 503, the queue is empty afterwards, and once PostgreSQL
        answers a new batch is stored at once and nothing of the refused
        ones is.
        """
        code, _, _ = yield self.post(batch([makeMessage(0)]))
        self.assertEqual(code, 200)
        self.proxy.freeze()
        posts = [self.post(batch([makeMessage(100 + 10 * n + i) for i in range(5)]))
                 for n in range(8)]
        done = defer.DeferredList(posts, consumeErrors=True)
        peaks = []
        while not done.called:
            m = yield self.metrics()
            peaks.append(m["relay_ingest_db_waiting"])
            yield task.deferLater(reactor, 0.05, lambda: None)
        results = yield done
        for ok, result in results:
            self.assertTrue(ok, result)
            code, body, headers = result
            self.assertEqual(code, 503, body)
            self.assertTrue(headers.getRawHeaders(b"Retry-After"))
        self.assertLessEqual(max(peaks), 2)
        m = yield self.metrics()
        self.assertEqual(m["relay_ingest_db_waiting"], 0)
        self.assertGreaterEqual(m["relay_ingest_db_busy_total"], 4)
        self.proxy.thaw()
        deadline = reactor.seconds() + 30
        while True:
            code, body, _ = yield self.post(batch([makeMessage(i) for i in range(1, 20)]))
            if code == 200 or reactor.seconds() > deadline:
                break
            yield task.deferLater(reactor, 0.2, lambda: None)
        self.assertEqual(code, 200, body)
        self.assertEqual(self.count(), 20)


class ClientGoneTests(_ProxiedServiceMixin, unittest.TestCase):
    """
    Issue 13 point 15: a request whose client goes away during a PostgreSQL
    hang takes its waiting database operation out of the queue at once,
    not after --db-timeout.
    """

    extraArgs = LIMIT_ARGS + ["--db-timeout", "60", "--pool-size", "1", "--max-waiting", "4"]

    @defer.inlineCallbacks
    def wait_gauge(self, value):
        deadline = reactor.seconds() + 20
        while True:
            m = yield self.metrics()
            if m["relay_ingest_db_waiting"] == value:
                return
            self.assertLess(reactor.seconds(), deadline,
                            "db_waiting stayed %s, not %s" % (m["relay_ingest_db_waiting"], value))
            yield task.deferLater(reactor, 0.05, lambda: None)

    @defer.inlineCallbacks
    def test_gone_client_leaves_the_queue(self):
        """
        One request holds the only (hung) connection, three more wait; when
        their clients disconnect the queue empties well before the 60 s
        timeout, and after the hang a new batch is served.
        """
        code, _, _ = yield self.post(batch([makeMessage(0)]))
        self.assertEqual(code, 200)
        self.proxy.freeze()
        first = self.post(batch([makeMessage(1)]))
        first.addErrback(lambda f: None)
        yield self.wait_gauge(0)
        body = gzip.compress(orjson.dumps(batch([makeMessage(2)])))
        conns = []
        for _ in range(3):
            conn = yield open_unfinished(self.service, self.key, body, len(body))
            conns.append(conn)
        yield self.wait_gauge(3)
        for conn in conns:
            conn.transport.abortConnection()
        yield self.wait_gauge(0)
        self.proxy.thaw()
        yield first
        deadline = reactor.seconds() + 30
        while True:
            code, body, _ = yield self.post(batch([makeMessage(i) for i in range(3, 6)]))
            if code == 200 or reactor.seconds() > deadline:
                break
            yield task.deferLater(reactor, 0.2, lambda: None)
        self.assertEqual(code, 200, body)


class PostgresDownAtStartTests(_ServiceMixin, unittest.TestCase):
    """
    The service started while PostgreSQL is unreachable (through the same
    cut proxy as L{PostgresOutageTests}).
    """

    def setUp(self):
        self.dsn = testDatabaseDSN(self)
        truncate(self.dsn)
        parts = parse_dsn(self.dsn)
        self.proxy = CuttableProxy(reactor, parts.get("host", "127.0.0.1"),
                                   int(parts.get("port", 5432)))
        self.addCleanup(self.proxy.stop)
        self.key = self.create_key(WS)
        self.service = IngestProcess(reactor, self.service_dsn(), self.extraArgs)
        self.addCleanup(self.service.stop)
        self.service.spawn()

    def service_dsn(self):
        return make_dsn(self.dsn, host="127.0.0.1", port=str(self.proxy.port))

    @defer.inlineCallbacks
    def test_starts_without_postgres(self):
        """
        The service comes up and answers 503 with Retry-After (health and
        sync) while PostgreSQL is away, then prepares its schema and serves
        by itself once PostgreSQL is reachable.
        """
        response = yield self.service.waitHealth(503)
        self.assertTrue(response.headers.getRawHeaders(b"Retry-After"))
        code, body, headers = yield self.post(batch([makeMessage(1)]))
        self.assertEqual(code, 503, body)
        self.assertTrue(headers.getRawHeaders(b"Retry-After"))
        self.proxy.start()
        yield self.service.waitHealthy()
        code, body, _ = yield self.post(batch([makeMessage(1)]))
        self.assertEqual((code, body), (200, {"synced": 1, "duplicates": 0}))


def self_signed_certificate(directory):
    """
    Write a key and a self-signed certificate for "localhost" into
    C{directory}; return C{(key_path, cert_path, cert_pem)}.
    """
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    os.makedirs(directory)
    key_path = os.path.join(directory, "key.pem")
    cert_path = os.path.join(directory, "cert.pem")
    with open(key_path, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.TraditionalOpenSSL,
                                  serialization.NoEncryption()))
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    with open(cert_path, "wb") as f:
        f.write(cert_pem)
    return key_path, cert_path, cert_pem


class TLSTests(_ServiceMixin, unittest.TestCase):
    """
    C{--listen ssl:...} serves the same API over TLS (pyOpenSSL).
    """

    def setUp(self):
        from twisted.internet import ssl
        from twisted.web.client import Agent, BrowserLikePolicyForHTTPS
        self.dsn = testDatabaseDSN(self)
        truncate(self.dsn)
        self.key = self.create_key(WS)
        key_path, cert_path, cert_pem = self_signed_certificate(os.path.abspath(self.mktemp()))
        policy = BrowserLikePolicyForHTTPS(trustRoot=ssl.Certificate.loadPEM(cert_pem))
        from twisted.web.client import HTTPConnectionPool
        self.agent = Agent(reactor, contextFactory=policy,
                           pool=HTTPConnectionPool(reactor, persistent=False))
        self.service = IngestProcess(reactor, self.dsn, LIMIT_ARGS,
                                     tls=(key_path, cert_path), agent=self.agent)
        self.addCleanup(self.service.stop)
        return self.service.start()

    @defer.inlineCallbacks
    def test_sync_over_tls(self):
        """
        A gzip batch posted over HTTPS to an ssl: listener is stored.
        """
        body = gzip.compress(orjson.dumps(batch([makeMessage(i) for i in range(3)])))
        response = yield treq.post(
            self.service.url + SYNC, data=body, agent=self.agent, timeout=30,
            headers={b"Content-Type": [b"application/json"],
                     b"Content-Encoding": [b"gzip"],
                     b"Authorization": [b"Bearer " + self.key.encode("ascii")]})
        result = yield response.json()
        self.assertEqual((response.code, result), (200, {"synced": 3, "duplicates": 0}))
        self.assertEqual(self.count(), 3)
