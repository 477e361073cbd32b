# -*- test-case-name: tests.test_federation_service -*-
"""
Tests for L{relay.federation.service}, L{relay.federation.inbound} and
L{relay.federation.storage}: the daemon's side of federation on a real
SQLite store (its real adbapi writer on a threadless pool), the real
router and outboxes, a L{task.Clock}, and an ingest played by the test
(each POST is answered by hand).
"""

import os
import sqlite3

from twisted.internet import defer, task
from twisted.trial import unittest

from relay.federation.client import Unreachable
from relay.federation.service import FederationService
from relay.router import Router
from relay.store import Store
from relay.testing import FakeConnection, ThreadlessConnectionPool, settle

ME = "11111111-0000-4000-8000-000000000001"
OTHER = "22222222-0000-4000-8000-000000000002"
THIRD = "33333333-0000-4000-8000-000000000003"


class PlayedIngest:
    """
    A L{relay.federation.client.FederationClient} whose every POST waits
    for the test to answer it.
    """

    url = "http://ingest.test"
    connected = True
    last_error = None

    def __init__(self):
        self.requests = []

    def post(self, route, body, timeout):
        import orjson
        if isinstance(body, bytes):
            body = orjson.loads(body)
        d = defer.Deferred()
        self.requests.append((route, body, d))
        return d

    def take(self, route):
        for i, (r, body, d) in enumerate(self.requests):
            if r == route:
                del self.requests[i]
                return body, d
        raise AssertionError("no %s request among %r" % (route, [r for r, _, _ in self.requests]))

    def pending(self, route):
        return [body for r, body, _ in self.requests if r == route]

    def close(self):
        return defer.succeed(None)


def message(mid, sender="alice", to="bob", body="hi", topic=None, ts=1000, expires=10 ** 13):
    return {"id": mid, "send_id": None, "ts": ts, "from": sender, "to": to, "topic": topic,
            "thread": None, "kind": "message", "expires_at": expires,
            "payload": {"body": body, "kind": "message"}}


class FederationTestCase(unittest.TestCase):

    def setUp(self):
        self.clock = task.Clock()
        self.clock.advance(1000)
        path = os.path.join(os.path.abspath(self.mktemp()))
        os.makedirs(path)
        self.path = os.path.join(path, "relay.sqlite")
        self.store = Store(self.clock, self.path, batch_delay=0.01,
                           pool_factory=ThreadlessConnectionPool.on(self.clock))
        self.store.open()
        self.addCleanup(lambda: settle(self.clock, self.store.close()))
        self.router = Router(self.clock, self.store, ack_timeout=5.0)
        self.router.start()
        self.addCleanup(self.router.stop)
        self.ingest = PlayedIngest()
        self.fed = FederationService(self.clock, self.router, self.store, self.ingest,
                                     lambda: defer.succeed(ME), "ws", wait=5, page=100)
        self.fed.startService()
        self.addCleanup(self.fed.stopService)
        self.turn()

    def turn(self, seconds=0.05):
        for _ in range(20):
            self.clock.advance(seconds / 20)

    def answer(self, route, value):
        body, d = self.ingest.take(route)
        d.callback(value)
        self.turn()
        return body

    def poll_answer(self, items=(), directory=()):
        return self.answer("poll", {"items": list(items), "directory": list(directory),
                                    "directory_version": 0, "more": False})

    def rows(self, sql, *args):
        conn = sqlite3.connect(self.path)
        try:
            return conn.execute(sql, args).fetchall()
        finally:
            conn.close()

    def agent(self, name):
        conn = FakeConnection(self.router, self.clock)
        conn.hello(name)
        self.turn()
        return conn

    def claim(self, name, version, home=ME):
        body = self.answer("presence", {"claims": [{"name": name, "home": home, "online": True,
                                                    "version": version}]})
        self.assertEqual(body["events"], [{"name": name, "online": True}])
        self.assertEqual(body["daemon_id"], ME)


class HandoverTests(FederationTestCase):

    def test_send_to_a_name_at_home_elsewhere(self):
        """
        A SEND to a name the directory places on another daemon is stored
        with a 'remote' delivery, handed over after its commit (the item
        carries the stored message) and marked 'handed' once the ingest
        answered; a local recipient is not involved.
        """
        self.poll_answer(directory=[{"name": "bob", "home": OTHER, "online": True,
                                     "since_ms": 5, "version": 3}])
        alice = self.agent("alice")
        self.claim("alice", 4)
        self.router.send(alice.session, {"v": 1, "type": "SEND", "id": "s1", "to": "bob",
                                         "payload": {"body": "over there"}}, 40)
        self.turn()
        body = self.ingest.pending("handover")[0]
        self.assertEqual(body["daemon_id"], ME)
        [item] = body["items"]
        self.assertEqual(item["recipient"], "bob")
        self.assertEqual(item["message"]["payload"], {"body": "over there"})
        self.assertEqual(item["message"]["from"], "alice")
        self.assertEqual(self.rows("SELECT recipient, status FROM deliveries"),
                         [("bob", "remote")])
        self.answer("handover", {"stored": 1, "duplicates": 0})
        self.turn()
        self.assertEqual(self.rows("SELECT recipient, status FROM deliveries"),
                         [("bob", "handed")])
        self.assertEqual(self.fed.stats()["handed_over"], 1)
        self.assertEqual(self.fed.stats()["waiting_handover"], 0)

    def test_unreachable_ingest_keeps_it_remote_and_retries(self):
        """
        A hand-over that gets no answer leaves the delivery 'remote' and is
        tried again later.
        """
        self.poll_answer(directory=[{"name": "bob", "home": OTHER, "online": True,
                                     "since_ms": 5, "version": 3}])
        alice = self.agent("alice")
        self.router.send(alice.session, {"v": 1, "type": "SEND", "to": "bob",
                                         "payload": {"body": "x"}}, 40)
        self.turn()
        _, d = self.ingest.take("handover")
        d.errback(Unreachable("down"))
        self.turn()
        self.assertEqual(self.rows("SELECT status FROM deliveries"), [("remote",)])
        self.assertEqual(self.ingest.pending("handover"), [])
        self.turn(15)
        self.assertEqual(len(self.ingest.pending("handover")), 1)

    def test_name_moves_its_waiting_deliveries_follow(self):
        """
        Deliveries waiting here for an offline name go to the daemon that
        becomes its home (rehome, then hand-over).
        """
        alice = self.agent("alice")
        for i in range(3):
            self.router.send(alice.session, {"v": 1, "type": "SEND", "to": "carol",
                                             "payload": {"body": "w%d" % i}}, 40)
        self.turn()
        self.assertEqual(self.rows("SELECT DISTINCT status FROM deliveries"), [("pending",)])
        self.poll_answer(directory=[{"name": "carol", "home": OTHER, "online": True,
                                     "since_ms": 5, "version": 9}])
        self.turn()
        body = self.ingest.pending("handover")[0]
        self.assertEqual([i["message"]["payload"]["body"] for i in body["items"]],
                         ["w0", "w1", "w2"])


class PresenceTests(FederationTestCase):

    def test_newer_hello_elsewhere_evicts(self):
        """
        A directory change newer than this connection's claim closes it
        with the fatal ERROR of a newer connection; an older one does not.
        """
        bob = self.agent("bob")
        self.claim("bob", 10)
        self.poll_answer(directory=[{"name": "bob", "home": OTHER, "online": True,
                                     "since_ms": 5, "version": 7}])
        self.assertIsNone(bob.closed_with)
        self.poll_answer(directory=[{"name": "bob", "home": OTHER, "online": True,
                                     "since_ms": 5, "version": 11}])
        self.assertEqual(bob.closed_with["type"], "ERROR")
        self.assertTrue(bob.closed_with["payload"]["fatal"])
        self.assertIn("replaced by a newer connection", bob.closed_with["payload"]["message"])
        self.assertEqual(self.ingest.pending("presence"),
                         [{"daemon_id": ME, "events": [{"name": "bob", "online": False}]}])

    def test_eviction_waits_for_the_claim(self):
        """
        A change that arrives before this connection's claim is decided
        once the claim is known.
        """
        bob = self.agent("bob")
        self.poll_answer(directory=[{"name": "bob", "home": OTHER, "online": True,
                                     "since_ms": 5, "version": 11}])
        self.assertIsNone(bob.closed_with)
        self.claim("bob", 10)
        self.assertEqual(bob.closed_with["type"], "ERROR")

    def test_stale_online_entry_of_an_earlier_run_is_put_offline(self):
        """
        The directory says a name is online here, but nobody of that name
        is connected (an earlier run of this daemon): it is reported offline.
        """
        self.poll_answer(directory=[{"name": "ghost", "home": ME, "online": True,
                                     "since_ms": 5, "version": 2}])
        self.assertEqual(self.ingest.pending("presence"),
                         [{"daemon_id": ME, "events": [{"name": "ghost", "online": False}]}])


class InboundTests(FederationTestCase):

    def test_page_stored_delivered_and_confirmed(self):
        """
        A poll's items are stored under their ids, delivered to the agent
        connected here with stream seqs counting up, and confirmed by the
        next poll once committed.
        """
        bob = self.agent("bob")
        self.claim("bob", 1)
        self.poll_answer(items=[{"seq": 7, "recipient": "bob", "message": message("m-a")},
                                {"seq": 8, "recipient": "bob", "message": message("m-b")}])
        self.turn()
        delivered = bob.delivered()
        self.assertEqual([d["id"] for d in delivered], ["m-a", "m-b"])
        self.assertEqual([d["delivery"]["seq"] for d in delivered], [1, 2])
        self.assertEqual(delivered[0]["from"], "alice")
        body = self.ingest.pending("poll")[0]
        self.assertEqual(body["confirm"], [7, 8])
        self.assertEqual(self.rows("SELECT id FROM messages ORDER BY seq"), [("m-a",), ("m-b",)])

    def test_page_fetched_twice_changes_nothing(self):
        """
        The same page again (its confirm was lost) stores and delivers
        nothing more.
        """
        bob = self.agent("bob")
        items = [{"seq": 7, "recipient": "bob", "message": message("m-a")}]
        self.poll_answer(items=items)
        self.poll_answer(items=items)
        self.turn()
        self.assertEqual(len(bob.delivered()), 1)
        self.assertEqual(self.rows("SELECT count(*) FROM messages"), [(1,)])
        self.assertEqual(self.rows("SELECT count(*) FROM deliveries"), [(1,)])

    def test_handed_over_delivery_that_comes_back_is_reopened(self):
        """
        A delivery handed over (its name had moved) that comes back (the
        name is at home here again) is pending again and delivered.
        """
        alice = self.agent("alice")
        self.poll_answer(directory=[{"name": "bob", "home": OTHER, "online": True,
                                     "since_ms": 5, "version": 3}])
        self.router.send(alice.session, {"v": 1, "type": "SEND", "to": "bob",
                                         "payload": {"body": "round trip"}}, 40)
        self.turn()
        body = self.answer("handover", {"stored": 1, "duplicates": 0})
        self.turn()
        returned = body["items"][0]["message"]
        bob = self.agent("bob")
        self.poll_answer(items=[{"seq": 3, "recipient": "bob", "message": returned}])
        self.turn()
        self.assertEqual([d["payload"]["body"] for d in bob.delivered()], ["round trip"])
        self.assertEqual(self.rows("SELECT status FROM deliveries"), [("delivered",)])

    def test_broadcast_item_reaches_local_subscribers(self):
        """
        A topic broadcast from another daemon reaches this daemon's
        subscribers of the topic, not others.
        """
        sub = self.agent("sub")
        self.router.subscribe(sub.session, "news")
        other = self.agent("other")
        self.poll_answer(items=[{"seq": 1, "recipient": "*",
                                 "message": message("m-n", to="*", topic="news")}])
        self.turn()
        [d] = sub.delivered()
        self.assertEqual(d["delivery"]["originalTo"], "*")
        self.assertEqual(other.delivered(), [])

    def test_bad_item_refused_loudly_and_confirmed(self):
        """
        An item no daemon hands over (no payload object) is counted and
        logged as an error, and confirmed so the queue moves on.
        """
        self.poll_answer(items=[{"seq": 4, "recipient": "bob",
                                 "message": {"id": "x", "from": "a", "to": "bob"}}])
        self.turn()
        self.assertEqual(self.fed.inbound.refused, 1)
        self.assertEqual(len(self.flushLoggedErrors()), 0)
        self.assertEqual(self.ingest.pending("poll")[0]["confirm"], [4])
