"""
The HTTP side (C{--http}, issue 11) against the real daemon process: every
route, bad parameters, unknown routes, auth on a network endpoint, a stuck
SSE client, /metrics parsed by prometheus_client's own parser, and
C{twist --log-format json}.
"""

import socket
import urllib.parse

import orjson
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer, reactor
from twisted.trial import unittest

from tests.support.daemon import connect_agent, send, wait_status
from tests.support.poll import poll_until
from tests.support.sync import KEY, WORKSPACE, IngestServer, wait_until
from tests.support.web import TwistDaemon, WebDaemon, basic, get, get_json


def metrics(text):
    """
    {sample name + sorted labels: value}, parsed by prometheus_client.
    """
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = sample.name + "".join(
                "{%s=%s}" % kv for kv in sorted(sample.labels.items()))
            out[key] = sample.value
    return out


class RouteTests(unittest.TestCase):
    """
    One daemon with C{--http} on loopback; each test asks one route.
    """

    timeout = 60

    @defer.inlineCallbacks
    def setUp(self):
        self.daemon = WebDaemon(self)
        yield self.daemon.start()
        self.url = self.daemon.url

    @defer.inlineCallbacks
    def exchange(self, *sends):
        """
        bob listens (acking), alice sends C{sends} with receipts; fires once
        bob has acked them all.
        """
        bob = yield connect_agent(self.daemon, "bob", cli="claude", model="opus", task="review")
        alice = yield connect_agent(self.daemon, "alice")
        alice.send_many(list(sends))
        yield alice.wait_type("ACK", len(sends))
        yield wait_status(self.daemon, lambda s: s["messages"]["acked"] >= len(sends))
        self.addCleanup(bob.transport.loseConnection)
        self.addCleanup(alice.transport.loseConnection)
        return alice, bob

    @defer.inlineCallbacks
    def test_page_and_files(self):
        """
        C{/} is the dashboard page, whose script and style come from the
        daemon itself (no CDN) under a policy that forbids inline scripts.
        """
        code, headers, body = yield get(self.url + "/")
        self.assertEqual(code, 200)
        self.assertIn(b"text/html", headers.getRawHeaders(b"content-type")[0])
        self.assertIn(b"script-src 'self'", headers.getRawHeaders(b"content-security-policy")[0])
        self.assertNotIn(b"http://", body)
        self.assertNotIn(b"https://", body)
        for path in (b"/static/app.js", b"/static/app.css"):
            self.assertIn(path, body)
            code, headers, asset = yield get(self.url + path.decode())
            self.assertEqual(code, 200, path)
            self.assertGreater(len(asset), 500)
        code, _, js = yield get(self.url + "/static/app.js")
        self.assertNotIn(b"innerHTML", js)

    @defer.inlineCallbacks
    def test_status(self):
        """
        C{/api/status} is the STATUS payload: connected agents with what
        their HELLO said, and the message counters.
        """
        yield self.exchange(send("bob", "hi", requires_ack=True))
        code, status = yield get_json(self.url + "/api/status")
        self.assertEqual(code, 200)
        agents = {a["name"]: a for a in status["agents"]}
        self.assertEqual(set(agents), {"alice", "bob"})
        self.assertEqual(agents["bob"]["info"], {"cli": "claude", "model": "opus",
                                                 "task": "review"})
        self.assertEqual(status["messages"]["accepted"], 1)
        self.assertEqual(status["messages"]["acked"], 1)
        self.assertEqual(status["http"]["sse_clients"], 0)

    @defer.inlineCallbacks
    def test_messages_filters(self):
        """
        C{/api/messages} reads the store with C{relay history}'s filters
        (from, to, thread, topic, since, limit), each recipient's status
        included.
        """
        yield self.exchange(
            send("bob", "one", requires_ack=True, thread="t1"),
            send("bob", "two", requires_ack=True, thread="t2"),
            send("bob", "three", requires_ack=True, thread="t1", topic="news"))
        base = self.url + "/api/messages"
        # The acks reach the store (which the API reads) with the next commit.
        items = yield self.poll(base, lambda items: all(
            m["deliveries"] == {"bob": "acked"} for m in items))
        self.assertEqual([m["body"] for m in items], ["one", "two", "three"])
        self.assertEqual(items[0]["deliveries"], {"bob": "acked"})
        cases = [("thread=t1", ["one", "three"]), ("topic=news", ["three"]),
                 ("from=alice&limit=1", ["three"]), ("to=bob&thread=t2", ["two"]),
                 ("from=bob", []), ("to=alice", []),
                 ("since=" + str(items[0]["ts"]), ["one", "two", "three"]),
                 ("since=" + str(items[2]["ts"] + 1), []),
                 ("since=" + urllib.parse.quote("2000-01-01T00:00"), ["one", "two", "three"]),
                 ("since=" + urllib.parse.quote("2999-01-01T00:00+01:00"), [])]
        for query, expected in cases:
            code, got = yield get_json(base + "?" + query)
            self.assertEqual((code, [m["body"] for m in got]), (200, expected), query)

    @defer.inlineCallbacks
    def test_bad_parameters(self):
        """
        A bad query parameter is a 400 whose JSON body says what is wrong.
        """
        cases = {
            "/api/messages?limit=x": "limit must be an integer",
            "/api/messages?limit=0": "between 1 and",
            "/api/messages?limit=100000": "between 1 and",
            "/api/messages?limit=-1": "between 1 and",
            "/api/messages?since=yesterday": "since must be an ISO 8601",
            "/api/messages?from=": "must not be empty",
            "/api/messages?thread=a&thread=b": "given 2 times",
            "/api/messages?color=red": "unknown parameter 'color'",
            "/api/messages?%FF=1": "UTF-8",
            "/api/dead-letters?limit=ten": "limit must be an integer",
            "/api/quarantine?limit=0": "between 1 and",
            "/api/status?x=1": "unknown parameter",
            "/api/events?x=1": "unknown parameter",
        }
        for path, reason in cases.items():
            code, body = yield get_json(self.url + path)
            self.assertEqual(code, 400, path)
            self.assertIn(reason, body["error"], path)

    @defer.inlineCallbacks
    def test_unknown_routes(self):
        """
        Unknown routes are 404 with a JSON error, under / and under /api
        and /static alike.
        """
        for path in ("/nope", "/api", "/api/", "/api/nope", "/api/status/more",
                     "/static/nope.js", "/static/", "/metrics2", "/static/../relay.sqlite"):
            code, body = yield get_json(self.url + path)
            self.assertEqual(code, 404, path)
            self.assertIn("no such route", body["error"], path)

    @defer.inlineCallbacks
    def test_dead_letters_and_quarantine(self):
        """
        C{/api/dead-letters} and C{/api/quarantine} answer JSON lists (empty
        on a fresh store).
        """
        for path in ("/api/dead-letters", "/api/quarantine?limit=5"):
            code, body = yield get_json(self.url + path)
            self.assertEqual((code, body), (200, []), path)

    @defer.inlineCallbacks
    def test_healthz(self):
        """
        C{/healthz} is 200 while the store commits and the listeners are up.
        """
        code, body = yield get_json(self.url + "/healthz")
        self.assertEqual((code, body), (200, {"ok": True}))

    @defer.inlineCallbacks
    def test_metrics(self):
        """
        C{/metrics} is Prometheus text that prometheus_client's parser reads,
        with the counters, gauges and the three histograms moving as a
        message goes through, and an INVALID NACK and a bad frame counted by
        code.
        """
        alice, bob = yield self.exchange(send("bob", "m1", requires_ack=True),
                                         send("bob", "m2", requires_ack=True))
        alice.send({"v": 1, "type": "SEND", "id": "bad", "to": "bob", "payload": "nope"})
        alice.write_raw(b"\x00\x00\x00\x02{]")
        yield alice.wait_type("ERROR")
        yield alice.wait_type("NACK")
        # The acks reach the store with the next commit.
        # (A commit may hold the rows as pending before their acks commit:
        # wait until neither status is left.)
        m = yield self.scrape(lambda m: m["relay_store_waiting_deliveries{status=delivered}"] == 0
                              and m["relay_store_waiting_deliveries{status=pending}"] == 0)
        self.assertEqual(m["relay_messages_accepted_total"], 2)
        self.assertEqual(m["relay_messages_delivered_total"], 2)
        self.assertEqual(m["relay_messages_acked_total"], 2)
        self.assertEqual(m["relay_messages_expired_total"], 0)
        self.assertEqual(m["relay_nacks_total{code=INVALID}"], 1)
        self.assertEqual(m["relay_nacks_total{code=BUSY}"], 0)
        self.assertEqual(m["relay_error_frames_total{code=BAD_REQUEST}"], 1)
        self.assertEqual(m["relay_busy_frames_total"], 0)
        self.assertEqual(m["relay_agents_connected"], 2)
        self.assertEqual(m["relay_queue_depth_frames{agg=sum}"], 0)
        self.assertEqual(m["relay_store_waiting_deliveries{status=pending}"], 0)
        self.assertEqual(m["relay_store_waiting_deliveries{status=delivered}"], 0)
        self.assertEqual(m["relay_send_to_deliver_seconds_count"], 2)
        self.assertEqual(m["relay_deliver_to_ack_seconds_count"], 2)
        self.assertGreaterEqual(m["relay_store_commit_seconds_count"], 1)
        self.assertGreater(m["relay_store_commit_seconds_sum"], 0)
        for name in m:
            self.assertTrue(name.startswith("relay_"), name)

    @defer.inlineCallbacks
    def test_metrics_waiting_in_store(self):
        """
        Messages for an agent that is away show in
        C{relay_store_waiting_deliveries}, read from the store.
        """
        alice = yield connect_agent(self.daemon, "alice")
        self.addCleanup(alice.transport.loseConnection)
        alice.send_many([send("carol", "wait %d" % i, requires_ack=True) for i in range(3)])
        yield alice.wait_type("ACK", 3)
        yield self.scrape(lambda m: m["relay_store_waiting_deliveries{status=pending}"] == 3)

    def poll(self, url, predicate, timeout=15.0):
        """
        GET C{url} (JSON) until C{predicate(body)} holds.
        """
        last = [None]

        def matches(result):
            code, body = last[0] = result
            self.assertEqual(code, 200)
            return body if predicate(body) else None
        return poll_until(lambda: get_json(url).addCallback(matches), timeout,
                          what=lambda: "%s to match: %r" % (url, last[0]))

    def scrape(self, predicate, timeout=15.0):
        """
        Scrape /metrics until C{predicate(parsed samples)} holds.
        """
        last = [None]

        def matches(result):
            code, headers, body = result
            self.assertEqual(code, 200)
            self.assertIn(b"text/plain", headers.getRawHeaders(b"content-type")[0])
            m = last[0] = metrics(body.decode())
            return m if predicate(m) else None
        return poll_until(lambda: get(self.url + "/metrics").addCallback(matches), timeout,
                          what=lambda: "metrics to match: %r" % (last[0],))

    @defer.inlineCallbacks
    def test_events_stream(self):
        """
        C{/api/events} streams what happens as Server-Sent Events: online,
        accepted (with the body), delivered and acked, in that order, gathered
        in C{batch} records.
        """
        stream = yield SSEReader.open(self.daemon.port)
        self.addCleanup(stream.close)
        yield stream.wait_for(b"event: hello")
        yield self.exchange(send("bob", "<b>hello</b>", requires_ack=True, thread="t"))
        yield stream.wait_for(b'["acked"')
        events = stream.events()
        kinds = [k for k, _ in events]
        self.assertIn("online", kinds)
        accepted = [d for k, d in events if k == "accepted"]
        self.assertEqual(len(accepted), 1)
        self.assertEqual((accepted[0]["body"], accepted[0]["from"], accepted[0]["to"],
                          accepted[0]["thread"], accepted[0]["recipients"]),
                         ("<b>hello</b>", "alice", "bob", "t", ["bob"]))
        self.assertLess(kinds.index("accepted"), kinds.index("delivered"))
        self.assertLess(kinds.index("delivered"), kinds.index("acked"))
        acked = [d for k, d in events if k == "acked"][0]
        self.assertEqual((acked["id"], acked["to"]), (accepted[0]["id"], "bob"))


def event(item):
    """
    (kind, fields) of one item of a batch record (an accepted event is a
    list of ACCEPTED_FIELDS values, another [kind, [values in FIELDS order]]).
    """
    from relay.events import FIELDS
    from relay.web.sse import ACCEPTED_FIELDS
    if item[0] == "accepted":
        return "accepted", dict(zip(ACCEPTED_FIELDS, item[1:]))
    assert len(item[1]) == len(FIELDS[item[0]]), item
    return item[0], dict(zip(FIELDS[item[0]], item[1]))


class SSEReader:
    """
    A raw HTTP client of C{/api/events} on a blocking socket read from the
    reactor (non-blocking reads, polled).
    """

    def __init__(self, sock):
        self.sock = sock
        self.data = b""

    @classmethod
    def open(cls, port, read=True, rcvbuf=None):
        sock = socket.socket()
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.connect(("127.0.0.1", port))
        sock.sendall(b"GET /api/events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
        sock.setblocking(False)
        return defer.succeed(cls(sock))

    def _read(self):
        while True:
            try:
                chunk = self.sock.recv(65536)
            except BlockingIOError:
                return
            if not chunk:
                return
            self.data += chunk

    def wait_for(self, needle, timeout=15.0):
        def found():
            self._read()
            return needle in self.data
        return wait_until(reactor, found, timeout=timeout, what=repr(needle))

    def events(self):
        """
        [(kind, data)] from the chunked body received so far.
        """
        out = []
        for block in self.data.split(b"\n\n"):
            kind = data = None
            for line in block.split(b"\n"):
                if line.startswith(b"event: "):
                    kind = line[7:].decode()
                elif line.startswith(b"data: "):
                    data = orjson.loads(line[6:])
            if kind == "batch":
                out.extend(event(item) for item in data)
            elif kind is not None and data is not None:
                out.append((kind, data))
        return out

    def close(self):
        self.sock.close()


def rss_kib(pid):
    with open("/proc/%d/status" % (pid,)) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS for pid %d" % (pid,))


class StuckClientTests(unittest.TestCase):
    """
    A browser that stops reading its event stream must not cost the daemon
    memory or speed.
    """

    timeout = 180

    @defer.inlineCallbacks
    def load(self, stuck_client):
        """
        A fresh daemon (with an SSE client that never reads when
        C{stuck_client}) relays 4000 receipted messages of 2 KB from alice
        to bob; fires with (RSS growth in KiB, status, the client).
        """
        daemon = WebDaemon(self, extra_args=["--no-rate-limit"])
        yield daemon.start()
        stuck = None
        if stuck_client:
            stuck = yield SSEReader.open(daemon.port, rcvbuf=4096)
            self.addCleanup(stuck.close)
            yield stuck.wait_for(b"event: hello")
        bob = yield connect_agent(daemon, "bob")
        alice = yield connect_agent(daemon, "alice")
        self.addCleanup(bob.transport.loseConnection)
        self.addCleanup(alice.transport.loseConnection)
        rss_before = rss_kib(daemon.pid)
        body = "x" * 2000
        total = 4000
        for start in range(0, total, 500):
            alice.send_many([send("bob", body, requires_ack=True, n=i)
                             for i in range(start, start + 500)])
            yield alice.wait_type("ACK", start + 500, timeout=60)
        yield bob.wait_type("DELIVER", total, timeout=60)
        yield wait_status(daemon, lambda s: s["messages"]["acked"] == total)
        code, status = yield get_json(daemon.url + "/api/status")
        self.assertEqual(status["messages"]["accepted"], total)
        return rss_kib(daemon.pid) - rss_before, status, stuck

    @defer.inlineCallbacks
    def test_client_that_never_reads(self):
        """
        With an SSE client that never reads, 4000 messages of 2 KB (about
        10 MB of events) still all reach their recipient and are acked; the
        client's backlog stays within its bound (the daemon drops it and
        counts a resync); the daemon's memory grows by less than 3 MiB more
        than a daemon's with no client at all; and the client, once it
        reads, is told to resync.
        """
        control, _, _ = yield self.load(False)
        grown, status, stuck = yield self.load(True)
        http = status["http"]
        self.assertEqual(http["sse_clients"], 1)
        self.assertGreaterEqual(http["sse_resyncs"], 1)
        self.assertLessEqual(http["sse_pending_bytes"], http["sse_max_pending_bytes"])
        self.assertLess(grown - control, 3 * 1024,
                        "RSS grew by %d KiB with a stuck client, %d KiB without"
                        % (grown, control))
        yield stuck.wait_for(b"event: resync", timeout=60)


class AuthTests(unittest.TestCase):
    """
    An HTTP endpoint reachable from the network needs the daemon's --auth
    users (HTTP Basic, the same twisted.cred checkers as agents' HELLO).
    """

    timeout = 60

    @defer.inlineCallbacks
    def test_network_endpoint_needs_auth(self):
        """
        Without --auth, C{--http} on all interfaces stops startup with a
        one-line reason and a non-zero exit.
        """
        daemon = WebDaemon(self, interface=None)
        yield self.assertFailure(daemon.start(), AssertionError)
        yield daemon.proto.ended
        self.assertNotEqual(daemon.exit_code, 0)
        self.assertIn("--http tcp:%d is reachable from the network: give --auth"
                      % (daemon.port,), daemon.output())
        self.assertNotIn("Traceback", daemon.output())

    @defer.inlineCallbacks
    def test_basic_auth(self):
        """
        With --auth, every route on a network endpoint answers 401 (with a
        Basic challenge) to no or wrong credentials and serves an --auth user.
        """
        daemon = WebDaemon(self, interface=None, extra_args=[
            "--auth", "memory:alice:s3cret", "--trust-unix-peers"])
        yield daemon.start()
        for path in ("/", "/metrics", "/healthz", "/api/status", "/api/messages",
                     "/api/events", "/static/app.js", "/nope"):
            for headers in (None, basic("alice", "wrong"), basic("mallory", "s3cret")):
                code, response_headers, _ = yield get(daemon.url + path, headers)
                self.assertEqual(code, 401, (path, headers))
                self.assertIn(b"basic", response_headers.getRawHeaders(
                    b"www-authenticate")[0].lower())
        code, body = yield get_json(daemon.url + "/api/status", basic("alice", "s3cret"))
        self.assertEqual(code, 200)
        self.assertIn("agents", body)
        code, _, page = yield get(daemon.url + "/", basic("alice", "s3cret"))
        self.assertEqual(code, 200)
        self.assertIn(b"<title>relay</title>", page)


class HealthTests(unittest.TestCase):
    """
    C{/healthz} says 503, with the reason, when something the daemon needs
    has stopped.
    """

    timeout = 60

    @defer.inlineCallbacks
    def test_sync_refused(self):
        """
        A sync target that refuses the daemon's key (401) stops sync, and
        /healthz turns 503 naming it.
        """
        server = IngestServer(reactor).start()
        self.addCleanup(server.stop)
        daemon = WebDaemon(self, extra_args=[
            "--sync-url", server.url, "--workspace-id", WORKSPACE,
            "--sync-batch-delay-ms", "20"], env={"RELAY_SYNC_KEY": "not-" + KEY})
        yield daemon.start()
        alice = yield connect_agent(daemon, "alice")
        self.addCleanup(alice.transport.loseConnection)
        alice.send(send("bob", "to sync", requires_ack=True))
        yield alice.wait_type("ACK")
        code, body = yield poll_until(
            lambda: get_json(daemon.url + "/healthz").addCallback(
                lambda result: result if result[0] != 200 else None),
            20, what="/healthz to stop answering 200")
        self.assertEqual(code, 503)
        self.assertFalse(body["ok"])
        self.assertTrue(any(r.startswith("sync unauthorized") for r in body["reasons"]),
                        body)


class JSONLogTests(unittest.TestCase):
    """
    C{twist --log-format json relay ...} writes one JSON object per line,
    each log event with its structured keys.
    """

    timeout = 60

    @defer.inlineCallbacks
    def test_json_logs(self):
        """
        The daemon's own events (store opened, store flushed and closed)
        come out as JSON with their template and their keys (path, n), and
        every stdout line is JSON.
        """
        daemon = TwistDaemon(self, twist_args=["--log-format", "json"])
        yield daemon.start()
        yield daemon.stop()
        lines = [l for l in daemon.output().splitlines() if l.strip()]
        events = [orjson.loads(l) for l in lines]
        opened = [e for e in events
                  if e.get("log_format") == "relay store {path}: {n} messages so far"]
        self.assertEqual(len(opened), 1, lines)
        self.assertEqual(opened[0]["path"], daemon.db_path)
        self.assertEqual(opened[0]["n"], 0)
        self.assertEqual(opened[0]["log_namespace"], "relay.service.RelayService")
        self.assertEqual(opened[0]["log_level"]["name"], "info")
        closed = [e for e in events
                  if e.get("log_format") == "relay store {path}: flushed and closed"]
        self.assertEqual([e["path"] for e in closed], [daemon.db_path])
