# -*- test-case-name: tests.test_router -*-
"""
Unit tests for L{relay.router.Router}: routing, stream seqs, receipts,
redelivery and expiry, with connections on L{StringTransport}s and one
L{task.Clock} for the timers and a real L{relay.store.Store} on a temporary
SQLite file (threadless pool); L{MemoryStoreRouterTests} run the router on
L{relay.testing.MemoryStore} and L{relay.testing.FakeConnection} alone.
"""

from twisted.internet import defer, task
from twisted.trial import unittest

from relay.router import Router
from relay.testing import FakeConnection, MemoryStore
from tests.support.frames import hello, send
from tests.support.protocol import Relay


def bodies(frames):
    return [f["payload"]["body"] for f in frames]


class RoutingTests(unittest.TestCase):

    @defer.inlineCallbacks
    def setUp(self):
        self.relay = Relay(self)
        self.alice = yield self.relay.agent("alice")
        self.bob = yield self.relay.agent("bob")
        self.carol = yield self.relay.agent("carol")

    @defer.inlineCallbacks
    def test_direct(self):
        """
        A SEND to a name reaches that agent only, as a DELIVER from the
        sender to it, with the daemon's message id, seq 1 and the
        recipient's session id; the message and its delivery are stored.
        """
        env = send("bob", "for bob")
        self.alice.feed(env)
        [deliver] = self.bob.of_type("DELIVER")
        self.assertEqual(deliver["from"], "alice")
        self.assertEqual(deliver["to"], "bob")
        self.assertEqual(deliver["payload"], {"kind": "message", "body": "for bob"})
        self.assertEqual(deliver["delivery"]["seq"], 1)
        self.assertEqual(deliver["delivery"]["session_id"],
                         self.relay.router.sessions["bob"].session_id)
        self.assertNotIn("originalTo", deliver["delivery"])
        self.assertNotEqual(deliver["id"], env["id"])
        self.assertEqual(self.carol.of_type("DELIVER"), [])
        self.assertEqual(self.alice.of_type("DELIVER"), [])
        yield self.relay.flush()
        self.assertEqual(
            self.relay.rows("SELECT id, send_id, sender, recipient FROM messages"),
            [(deliver["id"], env["id"], "alice", "bob")])
        self.assertEqual(self.relay.rows("SELECT recipient, stream_seq FROM deliveries"),
                         [("bob", 1)])

    @defer.inlineCallbacks
    def test_broadcast(self):
        """
        C{to: "*"} without a topic reaches every connected agent but the
        sender, with one id for all, C{originalTo: "*"}, each with its own
        session id; one message row and one delivery row per recipient
        are stored.
        """
        self.alice.feed(send("*", "all"))
        [b] = self.bob.of_type("DELIVER")
        [c] = self.carol.of_type("DELIVER")
        self.assertEqual(self.alice.of_type("DELIVER"), [])
        self.assertEqual(b["id"], c["id"])
        self.assertEqual((b["to"], c["to"]), ("bob", "carol"))
        self.assertEqual(b["delivery"]["originalTo"], "*")
        self.assertEqual(c["delivery"]["originalTo"], "*")
        self.assertNotEqual(b["delivery"]["session_id"], c["delivery"]["session_id"])
        yield self.relay.flush()
        self.assertEqual(self.relay.rows("SELECT recipient FROM messages"), [("*",)])
        self.assertEqual(
            self.relay.rows("SELECT recipient FROM deliveries ORDER BY recipient"),
            [("bob",), ("carol",)])

    def test_topic(self):
        """
        C{to: "*"} with a topic reaches the topic's subscribers but the
        sender (also when it is subscribed), carrying the topic; after
        UNSUBSCRIBE an agent no longer gets them.
        """
        for peer in (self.alice, self.bob):
            peer.feed({"v": 1, "type": "SUBSCRIBE", "topic": "builds"})
        self.alice.feed(send("*", "green", topic="builds"))
        [d] = self.bob.of_type("DELIVER")
        self.assertEqual(d["topic"], "builds")
        self.assertEqual(d["delivery"]["originalTo"], "*")
        self.assertEqual(self.carol.of_type("DELIVER"), [])
        self.assertEqual(self.alice.of_type("DELIVER"), [])
        self.carol.feed(send("*", "red", topic="builds"))
        self.assertEqual(bodies(self.alice.of_type("DELIVER")), ["red"])
        self.assertEqual(bodies(self.bob.of_type("DELIVER")), ["green", "red"])
        self.bob.feed({"v": 1, "type": "UNSUBSCRIBE", "topic": "builds"})
        self.carol.feed(send("*", "again", topic="builds"))
        self.assertEqual(bodies(self.bob.of_type("DELIVER")), ["green", "red"])
        self.assertEqual(bodies(self.alice.of_type("DELIVER")), ["red", "again"])

    def test_topic_nobody_subscribed(self):
        """
        A topic broadcast with no subscribers is accepted and delivered to
        nobody (not to every agent).
        """
        self.alice.feed(send("*", "void", topic="empty", requires_ack=False))
        self.assertEqual(self.bob.of_type("DELIVER") + self.carol.of_type("DELIVER"), [])
        self.assertEqual(self.alice.of_type("NACK"), [])

    def test_subscribe_needs_topic(self):
        """
        SUBSCRIBE without a string topic gets a non-fatal ERROR
        BAD_REQUEST.
        """
        self.bob.new()
        self.bob.feed({"v": 1, "type": "SUBSCRIBE"})
        self.bob.feed({"v": 1, "type": "SUBSCRIBE", "topic": 3})
        errors = self.bob.new()
        self.assertEqual([(e["type"], e["payload"]["code"], e["payload"]["fatal"])
                          for e in errors], [("ERROR", "BAD_REQUEST", False)] * 2)

    def test_seq_per_stream(self):
        """
        DELIVER seq counts from 1 per (topic or default, sender) stream for
        each recipient: separate counters for another sender and for a
        topic.
        """
        self.bob.feed({"v": 1, "type": "SUBSCRIBE", "topic": "t"})
        self.alice.feed(send("bob", "a1"))
        self.alice.feed(send("bob", "a2"))
        self.alice.feed(send("*", "t1", topic="t"))
        self.carol.feed(send("bob", "c1"))
        self.alice.feed(send("bob", "a3"))
        self.alice.feed(send("*", "t2", topic="t"))
        self.alice.feed(send("*", "all"))
        got = [(d["payload"]["body"], d["delivery"]["seq"]) for d in self.bob.of_type("DELIVER")]
        self.assertEqual(got, [("a1", 1), ("a2", 2), ("t1", 1), ("c1", 1), ("a3", 3),
                               ("t2", 2), ("all", 4)])
        self.assertEqual([d["delivery"]["seq"] for d in self.carol.of_type("DELIVER")], [1])

    @defer.inlineCallbacks
    def test_receipt_after_commit(self):
        """
        With requires_ack the sender gets ACK (ack_id = its SEND id, seq 0)
        only once the message is committed, never before; without it, no
        receipt.
        """
        self.alice.new()
        env = send("bob", "durable", requires_ack=True)
        self.alice.feed(env)
        self.alice.feed(send("bob", "fire and forget"))
        self.assertEqual(self.alice.new(), [])
        self.assertEqual(self.relay.rows("SELECT count(*) FROM messages"), [(0,)])
        yield self.relay.flush()
        acks = self.alice.new()
        self.assertEqual([(a["type"], a["payload"]) for a in acks],
                         [("ACK", {"ack_id": env["id"], "seq": 0})])
        self.assertEqual(self.relay.rows("SELECT count(*) FROM messages"), [(2,)])

    @defer.inlineCallbacks
    def test_unknown_fields_preserved(self):
        """
        Unknown envelope fields, unknown payload fields and payload_meta are
        forwarded in the DELIVER, live and from the store.
        """
        env = send("bob", "x", meta={"importance": 90, "replyTo": "thread-1"},
                   x_trace={"span": "abc"}, x_flag=True)
        env["payload"]["data"] = {"k": [1, 2]}
        env["payload"]["thread"] = "th"
        env["payload"]["x_custom"] = "kept"
        self.alice.feed(env)
        offline = dict(env, to="dave", id="s-dave")
        self.alice.feed(offline)
        [d] = self.bob.of_type("DELIVER")
        yield self.relay.flush()
        dave = yield self.relay.agent("dave")
        [stored] = dave.of_type("DELIVER")
        for got in (d, stored):
            self.assertEqual(got["x_trace"], {"span": "abc"})
            self.assertIs(got["x_flag"], True)
            self.assertEqual(got["payload"], env["payload"])
            self.assertEqual(got["payload_meta"], env["payload_meta"])
            self.assertEqual(got["type"], "DELIVER")
            self.assertEqual(got["from"], "alice")

    def test_known_fields_not_overridable(self):
        """
        A SEND cannot forge the daemon's fields: C{from}, C{id}, C{type} in
        the DELIVER are the daemon's, whatever the SEND said.
        """
        env = send("bob", "x")
        env["from"] = "mallory"
        self.alice.feed(env)
        [d] = self.bob.of_type("DELIVER")
        self.assertEqual(d["from"], "alice")
        self.assertNotEqual(d["id"], env["id"])

    @defer.inlineCallbacks
    def test_duplicate_name(self):
        """
        A second connection with a name in use replaces the first: the old
        one gets a fatal ERROR and is closed, new messages go to the new
        one, and the old one's unacked deliveries are sent to the new one
        with the same ids.
        """
        self.alice.feed(send("bob", "unacked"))
        [first] = self.bob.of_type("DELIVER")
        bob2 = yield self.relay.agent("bob")
        errors = self.bob.of_type("ERROR")
        self.assertEqual(len(errors), 1)
        self.assertIs(errors[0]["payload"]["fatal"], True)
        self.assertTrue(self.bob.closed)
        self.assertFalse(bob2.closed)
        self.assertIs(self.relay.router.sessions["bob"].conn, bob2.proto)
        self.alice.feed(send("bob", "new"))
        got = bob2.of_type("DELIVER")
        self.assertEqual(bodies(got), ["unacked", "new"])
        self.assertEqual(got[0]["id"], first["id"])
        self.assertEqual(got[0]["delivery"]["seq"], 1)
        self.assertEqual(len(self.bob.of_type("DELIVER")), 1)


class StoreAndForwardTests(unittest.TestCase):

    def setUp(self):
        self.relay = Relay(self, ack_timeout=5.0)

    @defer.inlineCallbacks
    def test_offline_recipient(self):
        """
        A message to an agent that is not connected waits in the store and
        is delivered, with its stored id and seq, at its HELLO.
        """
        alice = yield self.relay.agent("alice")
        alice.feed(send("carol", "later 1", requires_ack=True))
        alice.feed(send("carol", "later 2", requires_ack=True))
        yield self.relay.flush()
        self.assertEqual(len(alice.of_type("ACK")), 2)
        ids = [r[0] for r in self.relay.rows("SELECT id FROM messages ORDER BY seq")]
        carol = yield self.relay.agent("carol")
        got = carol.of_type("DELIVER")
        self.assertEqual(bodies(got), ["later 1", "later 2"])
        self.assertEqual([d["id"] for d in got], ids)
        self.assertEqual([d["delivery"]["seq"] for d in got], [1, 2])
        # Live messages after the stored ones keep counting the stream.
        alice.feed(send("carol", "now"))
        self.assertEqual(carol.of_type("DELIVER")[-1]["delivery"]["seq"], 3)

    @defer.inlineCallbacks
    def test_reconnect_redelivers_in_order(self):
        """
        Deliveries not ACKed when an agent disconnects are sent again when
        it reconnects, in send order, with the same ids and seqs; ACKed ones
        are not.
        """
        alice = yield self.relay.agent("alice")
        bob = yield self.relay.agent("bob")
        for i in range(5):
            alice.feed(send("bob", "m%d" % i))
        first = bob.of_type("DELIVER")
        bob.ack(first[1])
        bob.ack(first[3])
        bob.transport.loseConnection()
        yield self.relay.flush()
        bob2 = yield self.relay.agent("bob")
        again = bob2.of_type("DELIVER")
        self.assertEqual(bodies(again), ["m0", "m2", "m4"])
        self.assertEqual([(d["id"], d["delivery"]["seq"]) for d in again],
                         [(first[i]["id"], first[i]["delivery"]["seq"]) for i in (0, 2, 4)])
        self.assertEqual(again[0]["delivery"]["session_id"],
                         self.relay.router.sessions["bob"].session_id)

    @defer.inlineCallbacks
    def test_statuses_stored(self):
        """
        The store follows each delivery: pending while the recipient is
        away, delivered once written, acked once ACKed.
        """
        alice = yield self.relay.agent("alice")
        alice.feed(send("bob", "one"))
        yield self.relay.flush()
        status = lambda: self.relay.rows("SELECT status FROM deliveries")[0][0]
        self.assertEqual(status(), "pending")
        bob = yield self.relay.agent("bob")
        yield self.relay.flush()
        self.assertEqual(status(), "delivered")
        bob.ack(bob.of_type("DELIVER")[0])
        yield self.relay.flush()
        self.assertEqual(status(), "acked")
        self.assertEqual(self.relay.router.counters["acked"], 1)


class RedeliveryTests(unittest.TestCase):

    @defer.inlineCallbacks
    def setUp(self):
        self.relay = Relay(self, ack_timeout=5.0)
        self.clock = self.relay.clock
        self.alice = yield self.relay.agent("alice")
        self.bob = yield self.relay.agent("bob")

    def ping(self, peer):
        peer.feed({"v": 1, "type": "PING", "payload": {"nonce": "x"}})

    def test_ack_timeout_redelivers(self):
        """
        A DELIVER not ACKed within the ack timeout is sent again to a
        connection that is alive, with the same id and seq; after its ACK
        it is not sent again.
        """
        self.alice.feed(send("bob", "again?"))
        [d] = self.bob.of_type("DELIVER")
        self.clock.advance(1.0)
        self.ping(self.bob)
        self.clock.advance(3.0)
        self.assertEqual(len(self.bob.of_type("DELIVER")), 1)
        self.clock.advance(1.0)
        delivers = self.bob.of_type("DELIVER")
        self.assertEqual(len(delivers), 2)
        self.assertEqual(delivers[1], d)
        self.assertEqual(self.relay.router.counters["redelivered"], 1)
        self.bob.ack(d)
        self.clock.pump([1.0] * 20)
        self.assertEqual(len(self.bob.of_type("DELIVER")), 2)

    def test_redelivery_keeps_order(self):
        """
        Several unacked deliveries are resent in their send order.
        """
        for i in range(3):
            self.alice.feed(send("bob", "m%d" % i))
        self.clock.advance(1.0)
        self.ping(self.bob)
        self.clock.pump([1.0] * 5)
        self.assertEqual(bodies(self.bob.of_type("DELIVER")),
                         ["m0", "m1", "m2", "m0", "m1", "m2"])

    def test_silent_peer_not_flooded(self):
        """
        A connection that has sent nothing since a DELIVER was written gets
        no second copy of it (it is not reading; the copy would only queue
        up behind the first).
        """
        self.alice.feed(send("bob", "once"))
        self.clock.pump([1.0] * 20)
        self.assertEqual(len(self.bob.of_type("DELIVER")), 1)

    @defer.inlineCallbacks
    def test_attempts_stored(self):
        """
        Each attempt is counted in the store's delivery row.
        """
        self.alice.feed(send("bob", "count me"))
        self.clock.advance(1.0)
        self.ping(self.bob)
        self.clock.pump([1.0] * 5)
        yield self.relay.flush()
        self.assertEqual(self.relay.rows("SELECT status, attempts FROM deliveries"),
                         [("delivered", 2)])


class ExpiryTests(unittest.TestCase):

    @defer.inlineCallbacks
    def setUp(self):
        self.relay = Relay(self, ack_timeout=5.0, message_ttl=3600.0)
        self.clock = self.relay.clock
        self.alice = yield self.relay.agent("alice")

    def statuses(self):
        return self.relay.rows("SELECT m.payload ->> '$.body', d.status FROM deliveries d"
                               " JOIN messages m ON m.seq = d.message_seq ORDER BY m.seq")

    @defer.inlineCallbacks
    def test_stored_ttl_expiry(self):
        """
        A waiting message whose ttl_ms has run out is marked expired by the
        periodic sweep of the store, never deleted; one with time left
        stays pending.
        """
        self.alice.feed(send("carol", "short", meta={"ttl_ms": 1000}))
        self.alice.feed(send("carol", "long"))
        yield self.relay.flush()
        self.clock.advance(59.0)
        yield self.relay.flush()
        self.assertEqual(self.statuses(), [("short", "pending"), ("long", "pending")])
        self.clock.advance(1.0)
        yield self.relay.flush()
        self.assertEqual(self.statuses(), [("short", "expired"), ("long", "pending")])
        self.assertEqual(self.relay.rows("SELECT count(*) FROM messages"), [(2,)])

    @defer.inlineCallbacks
    def test_expired_not_delivered_on_hello(self):
        """
        An agent connecting after a waiting message's TTL ran out does not
        get it, and the store marks it expired.
        """
        self.alice.feed(send("carol", "stale", meta={"ttl_ms": 500}))
        self.alice.feed(send("carol", "fresh"))
        yield self.relay.flush()
        self.clock.advance(1.0)
        carol = yield self.relay.agent("carol")
        self.assertEqual(bodies(carol.of_type("DELIVER")), ["fresh"])
        yield self.relay.flush()
        self.assertEqual(self.statuses(), [("stale", "expired"), ("fresh", "delivered")])
        self.assertEqual(self.relay.router.counters["expired"], 1)

    @defer.inlineCallbacks
    def test_unacked_expires(self):
        """
        A written but unacked delivery whose TTL runs out is not resent any
        more and is marked expired in the store.
        """
        bob = yield self.relay.agent("bob")
        self.alice.feed(send("bob", "hurry", meta={"ttl_ms": 3000}))
        self.clock.advance(1.0)
        bob.feed({"v": 1, "type": "PING", "payload": {"nonce": "1"}})
        self.clock.pump([1.0] * 10)
        self.assertEqual(len(bob.of_type("DELIVER")), 1)
        yield self.relay.flush()
        self.assertEqual(self.statuses(), [("hurry", "expired")])


class EarlierConnectionAckTests(unittest.TestCase):

    # A bad value reaching the store would make flushes wait forever.
    timeout = 20

    def setUp(self):
        self.relay = Relay(self)

    @defer.inlineCallbacks
    def test_ack_from_earlier_connection(self):
        """
        An ACK sent on a new connection for a delivery written on an earlier
        one (the id says which message) marks it acked in the store, and a
        later 'delivered' status does not undo that.
        """
        alice = yield self.relay.agent("alice")
        bob = yield self.relay.agent("bob")
        alice.feed(send("bob", "ack me later"))
        [d] = bob.of_type("DELIVER")
        bob.transport.loseConnection()
        yield self.relay.flush()
        bob2 = self.relay.connect()
        bob2.feed(hello("bob"))
        bob2.ack(d)
        yield self.relay.live("bob")
        yield self.relay.flush()
        self.assertEqual(self.relay.rows("SELECT status FROM deliveries"), [("acked",)])
        bob3 = yield self.relay.agent("bob")
        self.assertEqual(bob3.of_type("DELIVER"), [])

    @defer.inlineCallbacks
    def test_ack_ids_that_are_no_message(self):
        """
        ACKs whose id has the store's prefix but names no message (a seq
        beyond any given, too large for SQLite, non-ASCII digits) are
        ignored: no error, the connection stays open and the store keeps
        committing.
        """
        alice = yield self.relay.agent("alice")
        bob = yield self.relay.agent("bob")
        prefix = self.relay.store.id_prefix
        bob.new()
        for seq in ("9" * 30, "123456", "\u00b2", "", "-1"):
            bob.feed({"v": 1, "type": "ACK", "payload": {"ack_id": "%s-%s" % (prefix, seq),
                                                         "seq": 1}})
        self.assertEqual(bob.new(), [])
        self.assertFalse(bob.closed)
        env = send("bob", "after", requires_ack=True)
        alice.feed(env)
        yield self.relay.flush()
        self.assertEqual([a["payload"]["ack_id"] for a in alice.of_type("ACK")], [env["id"]])
        self.assertEqual(self.relay.store.stats()["failures"], 0)


class DerivedIdTests(unittest.TestCase):
    """
    A SEND carrying an id gets a message id derived from what it is, so a
    retransmission after a crash is delivered under the id the recipient
    already saw (issue 13 point 2).
    """

    @defer.inlineCallbacks
    def test_same_send_same_id_in_a_new_run(self):
        """
        The same SEND (sender, id, recipient, payload) accepted by a second
        daemon run on a store that never got the first one (it died before
        the commit) is delivered under the same message id; without an id
        the message gets a run-prefixed id.
        """
        from relay.dedupe import derived_id
        relay = Relay(self)
        alice = yield relay.agent("alice")
        bob = yield relay.agent("bob")
        env = send("bob", "same", requires_ack=True)
        alice.feed(env)
        [first] = bob.of_type("DELIVER")
        self.assertEqual(first["id"], derived_id("alice", env["id"], "bob", None,
                                                 b'{"kind":"message","body":"same"}'))
        other = Relay(self)
        alice2 = yield other.agent("alice")
        bob2 = yield other.agent("bob")
        alice2.feed(env)
        [again] = bob2.of_type("DELIVER")
        self.assertEqual(again["id"], first["id"])
        no_id = dict(env)
        del no_id["id"]
        alice2.feed(no_id)
        self.assertTrue(bob2.of_type("DELIVER")[-1]["id"].startswith(other.store.id_prefix))

    @defer.inlineCallbacks
    def test_same_send_after_window_forgot_is_the_stored_message(self):
        """
        The same SEND again once the dedupe window has forgotten it (here a
        window of one entry per sender) goes out live under the stored
        message's id (a client holding that id drops it) and the store does
        not keep it twice; within the window it is a retransmission and not
        delivered at all.
        """
        relay = Relay(self, dedupe_per_sender=1)
        alice = yield relay.agent("alice")
        bob = yield relay.agent("bob")
        env = send("bob", "again")
        alice.feed(env)
        alice.feed(env)
        self.assertEqual(relay.router.counters["retransmits"], 1)
        yield relay.flush()
        alice.feed(send("bob", "pushes it out"))
        alice.feed(env)
        yield relay.flush()
        ids = [d["id"] for d in bob.of_type("DELIVER")]
        self.assertEqual(bodies(bob.of_type("DELIVER")), ["again", "pushes it out", "again"])
        self.assertEqual(ids[2], ids[0])
        self.assertEqual(relay.rows("SELECT id FROM messages ORDER BY seq"), [(ids[0],), (ids[1],)])
        self.assertEqual(relay.rows("SELECT count(*) FROM quarantine"), [(0,)])
        self.assertEqual(relay.store.stats()["known_sends"], 1)


class SendUnitTests(unittest.TestCase):

    @defer.inlineCallbacks
    def test_failure_inside_a_send_does_not_stop_the_store(self):
        """
        An exception raised while a SEND's rows are being queued takes
        that SEND's rows back (nothing half stored, nor remembered as sent:
        its retransmission is stored) and closes the store's unit: later
        SENDs are stored and flushed as usual.
        """
        relay = Relay(self)
        alice = yield relay.agent("alice")
        store = relay.store
        real = store.add_delivery

        def broken(*args):
            store.add_delivery = real
            raise RuntimeError("boom")

        store.add_delivery = broken
        self.assertRaises(RuntimeError, relay.router.send, relay.router.sessions["alice"],
                          send("bob", "first"), 100)
        self.assertIsNone(store.batcher._group)
        self.assertEqual(store.batcher.current.count, 0)
        self.assertEqual(len(relay.router.dedupe), 0)
        alice.feed(send("bob", "second"))
        yield relay.flush()
        self.assertEqual(relay.rows("SELECT json_extract(payload, '$.body') FROM messages"),
                         [("second",)])
        self.assertEqual(relay.rows("SELECT count(*) FROM deliveries"), [(1,)])


def _send(to, body, topic=None, requires_ack=False, send_id=None):
    env = {"v": 1, "type": "SEND", "id": send_id or "m-" + body, "to": to,
           "payload": {"kind": "message", "body": body}}
    if topic is not None:
        env["topic"] = topic
    if requires_ack:
        env["payload_meta"] = {"requires_ack": True}
    return env


class MemoryStoreRouterTests(unittest.TestCase):
    """
    The router on L{relay.testing.MemoryStore} with
    L{relay.testing.FakeConnection}s: one L{task.Clock}, no file, no
    thread, no protocol.
    """

    def setUp(self):
        self.clock = task.Clock()
        self.store = MemoryStore(self.clock)
        self.router = Router(self.clock, self.store)
        self.router.start()
        self.addCleanup(self.router.stop)
        self.connect = lambda: FakeConnection(self.router, self.clock)
        self.alice = self.connect()
        self.alice.hello("alice")
        self.bob = self.connect()
        self.bob.hello("bob")
        self.clock.advance(0)

    def test_direct_and_broadcast(self):
        """
        A direct SEND reaches its recipient only; a broadcast reaches all
        but the sender with originalTo "*"; both are stored, one delivery
        row per recipient.
        """
        carol = self.connect()
        carol.hello("carol")
        self.clock.advance(0)
        self.router.send(self.alice.session, _send("bob", "direct"), 10)
        self.router.send(self.alice.session, _send("*", "all"), 10)
        self.assertEqual([d["payload"]["body"] for d in self.bob.delivered()], ["direct", "all"])
        [c] = carol.delivered()
        self.assertEqual(c["delivery"]["originalTo"], "*")
        self.assertEqual(self.alice.delivered(), [])
        self.clock.advance(0)
        self.assertEqual(len(self.store.messages), 2)
        self.assertEqual(sorted(self.store.deliveries), [("bob", 1), ("bob", 2), ("carol", 2)])

    def test_receipt_after_commit(self):
        """
        A SEND asking for a receipt is ACKed to its sender once its rows
        are committed, not before.
        """
        self.router.send(self.alice.session, _send("bob", "r", requires_ack=True), 10)
        self.assertEqual(self.alice.frames, [])
        self.clock.advance(0)
        self.assertEqual([(f["type"], f["payload"]["ack_id"]) for f in self.alice.frames],
                         [("ACK", "m-r")])

    def test_acked_is_not_replayed_unacked_is(self):
        """
        After a reconnect, an ACKed delivery is not sent again; the unacked
        one is, with its stream seq.
        """
        self.router.send(self.alice.session, _send("bob", "one"), 10)
        self.router.send(self.alice.session, _send("bob", "two"), 10)
        first, second = self.bob.delivered()
        self.assertTrue(self.router.ack(self.bob.session, first["id"]))
        self.bob.close()
        self.clock.advance(0)
        again = self.connect()
        again.hello("bob")
        self.clock.advance(0)
        self.assertEqual([(d["payload"]["body"], d["delivery"]["seq"]) for d in again.delivered()],
                         [("two", 2)])

    def test_retransmit_is_not_stored_twice(self):
        """
        The same SEND (id, recipient, payload) again is receipted but not
        stored or delivered a second time.
        """
        env = _send("bob", "once", requires_ack=True)
        self.router.send(self.alice.session, env, 10)
        self.router.send(self.alice.session, dict(env), 10)
        self.clock.advance(0)
        self.assertEqual(len(self.bob.delivered()), 1)
        self.assertEqual(len(self.store.messages), 1)
        self.assertEqual([f["type"] for f in self.alice.frames], ["ACK", "ACK"])
        self.assertEqual(self.router.counters["retransmits"], 1)

    def test_offline_recipient_gets_it_on_hello(self):
        """
        A SEND to an agent not connected waits in the store and is
        delivered when that agent says HELLO.
        """
        self.router.send(self.alice.session, _send("dave", "later"), 10)
        self.clock.advance(0)
        dave = self.connect()
        dave.hello("dave")
        self.clock.advance(0)
        self.assertEqual([d["payload"]["body"] for d in dave.delivered()], ["later"])
