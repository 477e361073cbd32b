"""
Tests for the federation routes of the ingest (L{relay.ingest.federation},
with L{relay.ingest.federation_db} and L{relay.ingest.notify}): the real
service and site in this process, on a real port, against the real
PostgreSQL, spoken to with treq; and the poll's wait on L{task.Clock} with a stand-in pool.
"""

import uuid

import orjson
import psycopg2
import treq
from twisted.internet import defer, reactor
from twisted.internet.task import Clock
from twisted.trial import unittest
from twisted.web.client import ResponseNeverReceived

from relay.ingest.federation_db import Page
from relay.ingest.keys import Grant
from tests.support.federation import (
    DAEMON_A,
    DAEMON_B,
    DAEMON_C,
    WS,
    FederationClient,
    InProcessIngest,
    create_key,
    item,
)
from tests.support.ingest import fetchAll, makeMessage, testDatabaseDSN, truncate
from tests.support.poll import poll_until


def online(*names):
    return [{"name": n, "online": True} for n in names]


def offline(*names):
    return [{"name": n, "online": False} for n in names]


class _IngestMixin:
    def setUp(self):
        self.dsn = testDatabaseDSN(self)
        truncate(self.dsn)
        self.ingest = InProcessIngest(self.dsn)
        self.addCleanup(self.ingest.stop)
        self.client = FederationClient("", create_key(self.dsn))
        return self.ingest.start().addCallback(self._started)

    def _started(self, _):
        self.client.url = self.ingest.url

    @defer.inlineCallbacks
    def ok(self, d):
        code, body, _ = yield d
        self.assertEqual(code, 200, body)
        return body


class PresenceTests(_IngestMixin, unittest.TestCase):
    """
    C{/api/federation/presence} keeps each name's home daemon.
    """

    @defer.inlineCallbacks
    def test_latest_hello_wins_and_only_the_home_says_offline(self):
        """
        The daemon that said HELLO last is the name's home; an offline from
        a daemon that is no longer the home changes nothing (its claim shows
        the real home); the home's offline keeps the home, offline.  A name
        nobody held has no home, version 0.
        """
        a = (yield self.ok(self.client.presence(DAEMON_A, online("bob"))))["claims"][0]
        self.assertEqual((a["name"], a["home"], a["online"]), ("bob", DAEMON_A, True))
        b = (yield self.ok(self.client.presence(DAEMON_B, online("bob"))))["claims"][0]
        self.assertEqual((b["home"], b["online"]), (DAEMON_B, True))
        self.assertGreater(b["version"], a["version"])
        stale = (yield self.ok(self.client.presence(DAEMON_A, offline("bob"))))["claims"][0]
        self.assertEqual(stale, b)
        gone = (yield self.ok(self.client.presence(DAEMON_B, offline("bob"))))["claims"][0]
        self.assertEqual((gone["home"], gone["online"]), (DAEMON_B, False))
        self.assertGreater(gone["version"], b["version"])
        never = (yield self.ok(self.client.presence(DAEMON_A, offline("nobody"))))["claims"][0]
        self.assertEqual(never, {"name": "nobody", "home": None, "online": False, "version": 0})

    @defer.inlineCallbacks
    def test_events_apply_in_order(self):
        """
        The events of one request apply in order, one claim each, as the
        row is after that event.
        """
        body = yield self.ok(self.client.presence(
            DAEMON_A, online("x") + offline("x") + online("x", "y")))
        claims = body["claims"]
        self.assertEqual([(c["name"], c["online"]) for c in claims],
                         [("x", True), ("x", False), ("x", True), ("y", True)])
        versions = [c["version"] for c in claims]
        self.assertEqual(versions, sorted(set(versions)))

    @defer.inlineCallbacks
    def test_directory_changes_of_a_workspace_commit_one_at_a_time(self):
        """
        A presence change waits for the workspace's directory lock, so
        versions become visible in their order (a daemon that read version
        V can never later miss a change below V).
        """
        from relay.ingest.federation_db import DIRECTORY_LOCK
        conn = psycopg2.connect(self.dsn)
        conn.autocommit = True
        self.addCleanup(conn.close)
        with conn.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", (DIRECTORY_LOCK, WS))
        d = self.client.presence(DAEMON_A, online("bob"))

        def blocked():
            return fetchAll(self.dsn, "SELECT count(*) FROM pg_locks WHERE locktype ="
                            " 'advisory' AND NOT granted")[0][0] == 1

        yield poll_until(blocked, 10, clock=reactor, what="presence waiting for the lock")
        self.assertNoResult(d)
        with conn.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", (DIRECTORY_LOCK, WS))
        yield self.ok(d)


class HandoverTests(_IngestMixin, unittest.TestCase):
    """
    C{/api/federation/handover} stores each message once and queues it for
    its home daemon.
    """

    @defer.inlineCallbacks
    def test_stored_once_on_retry_also_after_confirm(self):
        """
        The same items handed over again are duplicates, before and after
        their home confirmed them; the stored message is the one handed
        over, verbatim.
        """
        yield self.ok(self.client.presence(DAEMON_B, online("bob")))
        items = [item(1), item(2, data={"k": [1, "\u00e9"]})]
        self.assertEqual((yield self.ok(self.client.handover(DAEMON_A, items))),
                         {"stored": 2, "duplicates": 0})
        self.assertEqual((yield self.ok(self.client.handover(DAEMON_A, items))),
                         {"stored": 0, "duplicates": 2})
        page = yield self.ok(self.client.poll(DAEMON_B))
        self.assertEqual([i["message"] for i in page["items"]], [i["message"] for i in items])
        self.assertEqual([i["recipient"] for i in page["items"]], ["bob", "bob"])
        seqs = [i["seq"] for i in page["items"]]
        page = yield self.ok(self.client.poll(DAEMON_B, confirm=seqs))
        self.assertEqual(page["items"], [])
        self.assertEqual((yield self.ok(self.client.handover(DAEMON_A, items))),
                         {"stored": 0, "duplicates": 2})
        self.assertEqual((yield self.ok(self.client.poll(DAEMON_B)))["items"], [])
        rows = fetchAll(self.dsn, "SELECT confirmed_by::text FROM fed_inbound")
        self.assertEqual(rows, [(DAEMON_B,), (DAEMON_B,)])
        values = yield self.client.metrics()
        self.assertEqual(values["relay_ingest_federation_stored_total"], 2)
        self.assertEqual(values["relay_ingest_federation_duplicates_total"], 4)
        self.assertEqual(values["relay_ingest_federation_confirmed_total"], 2)

    @defer.inlineCallbacks
    def test_handed_back_by_its_confirmer_is_routed_again(self):
        """
        The daemon that confirmed a row hands it back (its agent moved on):
        the row is open again and goes to the name's home now; a hand-over
        of it by anyone else stays a duplicate.
        """
        yield self.ok(self.client.presence(DAEMON_B, online("bob")))
        yield self.ok(self.client.handover(DAEMON_A, [item(1)]))
        page = yield self.ok(self.client.poll(DAEMON_B))
        yield self.ok(self.client.poll(DAEMON_B, confirm=[i["seq"] for i in page["items"]]))
        yield self.ok(self.client.presence(DAEMON_C, online("bob")))
        self.assertEqual((yield self.ok(self.client.handover(DAEMON_A, [item(1)]))),
                         {"stored": 0, "duplicates": 1})
        self.assertEqual((yield self.ok(self.client.poll(DAEMON_C)))["items"], [])
        self.assertEqual((yield self.ok(self.client.handover(DAEMON_B, [item(1)]))),
                         {"stored": 1, "duplicates": 0})
        page = yield self.ok(self.client.poll(DAEMON_C))
        self.assertEqual([i["message"]["id"] for i in page["items"]], [item(1)["message"]["id"]])

    @defer.inlineCallbacks
    def test_gzip_body(self):
        """
        A gzip request body is inflated as for sync.
        """
        body = yield self.ok(self.client.handover(DAEMON_A, [item(1)], gzipped=True))
        self.assertEqual(body["stored"], 1)

    @defer.inlineCallbacks
    def test_broadcast_fans_out_to_every_other_daemon(self):
        """
        A topic broadcast makes one row for each other daemon the workspace
        has seen (not the sender): each gets it once.
        """
        for daemon in (DAEMON_A, DAEMON_B, DAEMON_C):
            yield self.ok(self.client.poll(daemon))
        cast = item(1, recipient="*", topic="news")
        self.assertEqual((yield self.ok(self.client.handover(DAEMON_A, [cast]))),
                         {"stored": 2, "duplicates": 0})
        self.assertEqual((yield self.ok(self.client.handover(DAEMON_A, [cast]))),
                         {"stored": 0, "duplicates": 2})
        for daemon, expected in ((DAEMON_A, []), (DAEMON_B, [cast["message"]]),
                                 (DAEMON_C, [cast["message"]])):
            page = yield self.ok(self.client.poll(daemon))
            self.assertEqual([i["message"] for i in page["items"]], expected, daemon)
            self.assertTrue(all(i["recipient"] == "*" for i in page["items"]))


class PollTests(_IngestMixin, unittest.TestCase):
    """
    C{/api/federation/poll} answers a daemon's inbound rows and the
    directory changes.
    """

    @defer.inlineCallbacks
    def test_rows_go_to_the_current_home(self):
        """
        A row for a name goes to whoever is its home when it is fetched: a
        name home nowhere keeps it waiting; once it says HELLO somewhere,
        that daemon gets it; when it moves before the row is confirmed, the
        new home gets it and the old one no longer does.
        """
        yield self.ok(self.client.handover(DAEMON_C, [item(1, recipient="bob")]))
        for daemon in (DAEMON_A, DAEMON_B):
            self.assertEqual((yield self.ok(self.client.poll(daemon)))["items"], [])
        yield self.ok(self.client.presence(DAEMON_A, online("bob")))
        page = yield self.ok(self.client.poll(DAEMON_A))
        self.assertEqual([i["message"]["id"] for i in page["items"]], ["f-1"])
        yield self.ok(self.client.presence(DAEMON_B, online("bob")))
        self.assertEqual((yield self.ok(self.client.poll(DAEMON_A)))["items"], [])
        page = yield self.ok(self.client.poll(DAEMON_B))
        self.assertEqual([i["message"]["id"] for i in page["items"]], ["f-1"])
        yield self.ok(self.client.poll(DAEMON_B, confirm=[page["items"][0]["seq"]]))
        self.assertEqual((yield self.ok(self.client.poll(DAEMON_B)))["items"], [])

    @defer.inlineCallbacks
    def test_pages_and_directory_after(self):
        """
        Items come by seq, at most C{limit}, with C{more} when the page is
        full; the directory lists what changed after C{directory_after},
        by version, and C{directory_version} is the highest listed (or the
        one given when nothing changed).
        """
        yield self.ok(self.client.presence(DAEMON_B, online("bob", "carol")))
        yield self.ok(self.client.handover(DAEMON_A, [item(i) for i in range(3)]))
        page = yield self.ok(self.client.poll(DAEMON_B, limit=2))
        self.assertEqual([i["message"]["id"] for i in page["items"]], ["f-0", "f-1"])
        self.assertTrue(page["more"])
        self.assertEqual([(d["name"], d["home"], d["online"]) for d in page["directory"]],
                         [("bob", DAEMON_B, True), ("carol", DAEMON_B, True)])
        self.assertEqual(page["directory_version"], page["directory"][-1]["version"])
        self.assertIsInstance(page["directory"][0]["since_ms"], int)
        version = page["directory_version"]
        page = yield self.ok(self.client.poll(
            DAEMON_B, confirm=[i["seq"] for i in page["items"]], directory_after=version))
        self.assertEqual([i["message"]["id"] for i in page["items"]], ["f-2"])
        self.assertEqual((page["directory"], page["directory_version"], page["more"]),
                         ([], version, False))
        yield self.ok(self.client.presence(DAEMON_A, online("carol")))
        page = yield self.ok(self.client.poll(DAEMON_B, directory_after=version))
        self.assertEqual([(d["name"], d["home"]) for d in page["directory"]],
                         [("carol", DAEMON_A)])

    @defer.inlineCallbacks
    def test_held_poll_is_woken_by_a_handover(self):
        """
        A poll that finds nothing is held (it keeps no body bytes in the
        site's budget meanwhile) until a handover for its daemon commits,
        then answers with it.
        """
        yield self.ok(self.client.presence(DAEMON_B, online("bob")))
        held = self.client.poll(DAEMON_B, wait=30, directory_after=10 ** 12)
        waiters = self.ingest.service.waiters
        yield poll_until(lambda: waiters.waiting == 1, 10, clock=reactor, what="a held poll")
        self.assertEqual(self.ingest.site.budget.used, 0)
        self.assertNoResult(held)
        yield self.ok(self.client.handover(DAEMON_A, [item(7)]))
        page = yield self.ok(held)
        self.assertEqual([i["message"]["id"] for i in page["items"]], ["f-7"])
        self.assertEqual(waiters.waiting, 0)
        values = yield self.client.metrics()
        self.assertEqual(values['relay_ingest_federation_polls_total{outcome="woken"}'], 1)
        self.assertEqual(values["relay_ingest_federation_waiting"], 0)

    @defer.inlineCallbacks
    def test_wait_runs_out(self):
        """
        A poll whose wait runs out answers what it finds then: nothing.
        """
        page = yield self.ok(self.client.poll(DAEMON_B, wait=0.2, directory_after=10 ** 12))
        self.assertEqual((page["items"], page["directory"], page["more"]), ([], [], False))
        values = yield self.client.metrics()
        self.assertEqual(values['relay_ingest_federation_polls_total{outcome="timeout"}'], 1)

    @defer.inlineCallbacks
    def test_client_going_away_cancels_its_waiter(self):
        """
        A client that drops its held poll takes its waiter (and timer)
        along.
        """
        held = self.client.poll(DAEMON_B, wait=30, directory_after=10 ** 12)
        waiters = self.ingest.service.waiters
        yield poll_until(lambda: waiters.waiting == 1, 10, clock=reactor, what="a held poll")
        held.cancel()
        self.failureResultOf(held, defer.CancelledError, ResponseNeverReceived)
        yield poll_until(lambda: waiters.waiting == 0, 10, clock=reactor,
                         what="the waiter to go")

    @defer.inlineCallbacks
    def test_listener_reconnects_and_wakes_polls(self):
        """
        When PostgreSQL drops the LISTEN connection the service listens
        again, and a poll held afterwards is woken by a handover.
        """
        listener = self.ingest.service.listener
        conn = psycopg2.connect(self.dsn)
        conn.autocommit = True
        try:
            with conn.cursor() as cursor:
                cursor.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                               " WHERE datname = current_database() AND query LIKE 'LISTEN%%'")
                self.assertEqual(len(cursor.fetchall()), 1)
        finally:
            conn.close()
        yield poll_until(lambda: not listener.listening, 10, clock=reactor,
                         what="the LISTEN connection to be noticed lost")
        yield poll_until(lambda: listener.listening, 10, clock=reactor,
                         what="listening again")
        yield self.ok(self.client.presence(DAEMON_B, online("bob")))
        held = self.client.poll(DAEMON_B, wait=30, directory_after=10 ** 12)
        waiters = self.ingest.service.waiters
        yield poll_until(lambda: waiters.waiting == 1, 10, clock=reactor, what="a held poll")
        yield self.ok(self.client.handover(DAEMON_A, [item(1)]))
        page = yield self.ok(held)
        self.assertEqual(len(page["items"]), 1)


class RefusalTests(_IngestMixin, unittest.TestCase):
    """
    Keys bound to a daemon, bad shapes and unknown routes.
    """

    @defer.inlineCallbacks
    def test_bound_key_speaks_for_its_daemon_only(self):
        """
        A key bound to daemon A may call every route for A and none for B
        (403 naming daemon_id), sync included.
        """
        key = create_key(self.dsn, daemon=DAEMON_A)
        for route, body in (("presence", {"events": online("bob")}),
                            ("handover", {"items": [item(1)]}),
                            ("poll", {"wait": 0})):
            code, answer, _ = yield self.client.post(route, dict(body, daemon_id=DAEMON_B),
                                                     key=key)
            self.assertEqual((code, answer["field"]), (403, "daemon_id"), route)
            code, answer, _ = yield self.client.post(route, dict(body, daemon_id=DAEMON_A),
                                                     key=key)
            self.assertEqual(code, 200, (route, answer))
        sync = {"daemon_id": DAEMON_B, "workspace_id": WS, "messages": [makeMessage(1)]}
        response = yield treq.post(self.ingest.url + "/api/daemons/messages/sync",
                                   data=orjson.dumps(sync), pool=self.client.pool,
                                   headers={b"Authorization": [b"Bearer " + key.encode()]})
        self.assertEqual(response.code, 403)
        self.assertEqual(orjson.loads((yield response.content()))["field"], "daemon_id")
        self.assertEqual(fetchAll(self.dsn, "SELECT count(*) FROM agent_messages"), [(0,)])

    @defer.inlineCallbacks
    def test_bad_bodies_are_400(self):
        """
        Bodies of wrong shapes are 400 with the field (and index) at fault;
        a bad key is 401; an unknown route is 404.
        """
        cases = [
            ("poll", b"not json", None, None),
            ("poll", [], None, None),
            ("poll", {"wait": 0}, "daemon_id", None),
            ("presence", {"daemon_id": DAEMON_A, "events": online("")}, "name", 0),
            ("handover", {"daemon_id": DAEMON_A, "items": [item(1), {"recipient": "x"}]},
             "message", 1),
            ("handover", {"daemon_id": DAEMON_A, "items": [item(1, recipient="*")]},
             "topic", 0),
            ("poll", {"daemon_id": DAEMON_A, "wait": True}, "wait", None),
            ("poll", {"daemon_id": DAEMON_A, "limit": 0}, "limit", None),
            ("poll", {"daemon_id": DAEMON_A, "confirm": ["1"]}, "confirm", 0),
        ]
        for route, body, field, index in cases:
            code, answer, _ = yield self.client.post(route, body)
            self.assertEqual(code, 400, (route, body, answer))
            self.assertEqual((answer.get("field"), answer.get("index")), (field, index),
                             (route, body, answer))
        code, _, _ = yield self.client.post("poll", {"daemon_id": DAEMON_A},
                                            key="rlk_0000000000000000_" + "x" * 43)
        self.assertEqual(code, 401)
        code, _, _ = yield self.client.post("nope", {"daemon_id": DAEMON_A})
        self.assertEqual(code, 404)
        self.assertEqual(fetchAll(self.dsn, "SELECT count(*) FROM fed_inbound"), [(0,)])


class _Pool:
    """
    Answers each C{runInteraction} with a Deferred the test fires.
    """

    def __init__(self):
        self.calls = []

    def runQuery(self, sql, params):
        from relay.ingest import federation_db
        label = {federation_db._SEEN_CONFIRM_SQL: "confirm", federation_db._ITEMS_SQL: "items",
                 federation_db._DIRECTORY_SQL: "directory"}[sql]
        d = defer.Deferred()
        self.calls.append((label, d))
        return d

    def answer(self, label, rows):
        """Answer the first unanswered query C{label} with C{rows}."""
        for i, (name, d) in enumerate(self.calls):
            if name == label and not d.called:
                d.callback(rows)
                return i
        raise AssertionError("no %s query waiting: %r" % (label, self.calls))

    def empty_page(self):
        self.answer("items", [])
        self.answer("directory", [])


class _Service:
    db_timeout = 30.0
    ready = True

    def __init__(self):
        from relay.ingest.metrics import IngestMetrics
        from relay.ingest.notify import Waiters
        self.reactor = Clock()
        self.metrics = IngestMetrics()
        self.waiters = Waiters(self.reactor)
        self.tx_pool = _Pool()


class _Request:
    _disconnected = False

    def notifyFinish(self):
        return defer.Deferred()


class PollWaitTests(unittest.TestCase):
    """
    L{PollResource} takes the workspace's generation before its first
    query, so a change that lands while the query runs is not lost; a wait
    that runs out queries once more and answers.
    """

    def setUp(self):
        from relay.ingest.federation import PollResource
        self.service = _Service()
        self.resource = PollResource(self.service)
        self.grant = Grant(uuid.UUID(WS))

    def start(self, wait=30):
        return defer.Deferred.fromCoroutine(self.resource.answer(
            _Request(), self.grant, {"daemon_id": DAEMON_B, "wait": wait}))

    def test_change_during_the_first_query_is_not_lost(self):
        """
        A wake-up between the start of the first query and its empty answer
        makes the poll query again at once instead of waiting.
        """
        d = self.start()
        pool = self.service.tx_pool
        pool.answer("confirm", [(0,)])
        self.service.waiters.wake(WS)
        pool.empty_page()
        self.assertEqual(self.service.waiters.waiting, 0)
        self.assertEqual([name for name, _ in pool.calls[3:]], ["items", "directory"])
        pool.answer("items", [(5, "bob", '{"id":"x"}')])
        pool.answer("directory", [])
        body = orjson.loads(self.successResultOf(d))
        self.assertEqual(body["items"], [{"seq": 5, "recipient": "bob", "message": {"id": "x"}}])

    def test_wait_runs_out_on_the_clock(self):
        """
        With nothing there the poll waits C{wait} seconds on the service's
        clock, then answers what a second query finds.
        """
        d = self.start(wait=20)
        pool = self.service.tx_pool
        pool.answer("confirm", [(0,)])
        pool.empty_page()
        self.assertEqual(self.service.waiters.waiting, 1)
        self.service.reactor.advance(19.9)
        self.assertEqual(len(pool.calls), 3)
        self.service.reactor.advance(0.1)
        pool.empty_page()
        body = orjson.loads(self.successResultOf(d))
        self.assertEqual((body["items"], body["directory_version"], body["more"]), ([], 0, False))
