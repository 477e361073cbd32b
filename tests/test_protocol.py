# -*- test-case-name: tests.test_protocol -*-
"""
Unit tests for L{relay.protocol.RelayProtocol}: frames in and out over a
L{StringTransport}, and everything on one L{task.Clock}: the router's and
protocol's timers, and a real L{relay.store.Store} on a temporary SQLite
file whose adbapi pool runs its transactions on clock turns
(L{relay.testing.ThreadlessConnectionPool}): no thread, no global reactor.

The harness (L{Relay}, L{Peer}) is in L{tests.support.protocol}.
"""

import struct

import orjson
from twisted.internet import defer
from twisted.trial import unittest

from tests.support.frames import encode, hello, send
from tests.support.protocol import Relay


class HandshakeTests(unittest.TestCase):

    def setUp(self):
        self.relay = Relay(self, heartbeat=2.5, ack_timeout=4.0, message_ttl=60.0)

    def test_welcome(self):
        """
        HELLO with a valid name gets WELCOME carrying a session id, a resume
        token and the server's max_frame_bytes and heartbeat_ms, answering
        the HELLO's id, and registers the name.
        """
        peer = self.relay.connect()
        peer.feed(hello("alice"))
        [welcome] = peer.received()
        self.assertEqual(welcome["type"], "WELCOME")
        self.assertEqual(welcome["id"], "h-alice")
        p = welcome["payload"]
        self.assertIsInstance(p["session_id"], str)
        self.assertTrue(p["session_id"])
        self.assertIsInstance(p["resume_token"], str)
        self.assertTrue(p["resume_token"])
        self.assertEqual(p["server"]["max_frame_bytes"], 1048576)
        self.assertEqual(p["server"]["heartbeat_ms"], 2500)
        self.assertEqual(p["server"]["ack_timeout_ms"], 4000)
        self.assertEqual(p["server"]["message_ttl_ms"], 60000)
        self.assertEqual(self.relay.router.sessions["alice"].session_id, p["session_id"])

    def test_sessions_differ(self):
        """
        Two agents get different session ids and resume tokens.
        """
        a, b = self.relay.connect(), self.relay.connect()
        a.feed(hello("a"))
        b.feed(hello("b"))
        wa, wb = a.received()[0]["payload"], b.received()[0]["payload"]
        self.assertNotEqual(wa["session_id"], wb["session_id"])
        self.assertNotEqual(wa["resume_token"], wb["resume_token"])

    def test_max_inflight_capped(self):
        """
        HELLO's capabilities.max_inflight lowers the window; WELCOME says
        which one applies.
        """
        peer = self.relay.connect()
        peer.feed(hello("alice", capabilities={"max_inflight": 7}))
        self.assertEqual(peer.received()[0]["payload"]["server"]["max_inflight"], 7)

    def test_bad_names(self):
        """
        HELLO with a missing, empty, too long, reserved or ill-formed name
        gets a non-fatal ERROR BAD_REQUEST, registers nothing and leaves the
        connection open; a later valid HELLO on it succeeds.
        """
        peer = self.relay.connect()
        bad = [None, "", "x" * 129, "*", "_system", "has space", "semi;colon", "é", 42,
               ["list"]]
        for name in bad:
            env = hello("placeholder")
            if name is None:
                del env["payload"]["agent"]
            else:
                env["payload"]["agent"] = name
            peer.feed(env)
            [error] = peer.new()
            self.assertEqual(error["type"], "ERROR", name)
            self.assertEqual(error["payload"]["code"], "BAD_REQUEST")
            self.assertIs(error["payload"]["fatal"], False)
        no_payload = hello("x")
        del no_payload["payload"]
        peer.feed(no_payload)
        self.assertEqual([f["type"] for f in peer.new()], ["ERROR"])
        self.assertEqual(self.relay.router.sessions, {})
        self.assertFalse(peer.closed)
        peer.feed(hello("good.name-1@host:2"))
        self.assertEqual([f["type"] for f in peer.new()], ["WELCOME"])
        self.assertIn("good.name-1@host:2", self.relay.router.sessions)

    def test_longest_name(self):
        """
        A name of exactly 128 allowed characters is accepted.
        """
        peer = self.relay.connect()
        peer.feed(hello("a" * 128))
        self.assertEqual(peer.received()[0]["type"], "WELCOME")

    def test_second_hello(self):
        """
        A second HELLO after a successful one gets a non-fatal ERROR
        BAD_REQUEST and changes nothing: the first name stays registered.
        """
        peer = self.relay.connect()
        peer.feed(hello("alice"))
        peer.new()
        peer.feed(hello("mallory"))
        [error] = peer.new()
        self.assertEqual(error["type"], "ERROR")
        self.assertEqual(error["payload"]["code"], "BAD_REQUEST")
        self.assertIs(error["payload"]["fatal"], False)
        self.assertEqual(list(self.relay.router.sessions), ["alice"])
        self.assertFalse(peer.closed)

    def test_frames_before_hello(self):
        """
        Before HELLO, SEND/ACK/SUBSCRIBE/UNSUBSCRIBE get a non-fatal ERROR
        BAD_REQUEST and do nothing; PING gets PONG and STATUS a reply; the
        connection can then say HELLO.
        """
        peer = self.relay.connect()
        for env in (send("bob"),
                    {"v": 1, "type": "ACK", "payload": {"ack_id": "x", "seq": 1}},
                    {"v": 1, "type": "SUBSCRIBE", "topic": "t"},
                    {"v": 1, "type": "UNSUBSCRIBE", "topic": "t"},
                    {"v": 1, "type": "DELIVER", "payload": {}}):
            peer.feed(env)
            [error] = peer.new()
            self.assertEqual(error["type"], "ERROR")
            self.assertEqual(error["payload"]["code"], "BAD_REQUEST")
            self.assertIs(error["payload"]["fatal"], False)
            self.assertIn("HELLO", error["payload"]["message"])
        peer.feed({"v": 1, "type": "PING", "payload": {"nonce": "n1"}})
        [pong] = peer.new()
        self.assertEqual(pong["type"], "PONG")
        peer.feed({"v": 1, "type": "STATUS", "id": "st"})
        [status] = peer.new()
        self.assertEqual(status["type"], "STATUS_REPLY")
        self.assertEqual(self.relay.router.counters["accepted"], 0)
        peer.feed(hello("alice"))
        self.assertEqual([f["type"] for f in peer.new()], ["WELCOME"])

    def test_status_lists_agents_with_their_hello_info(self):
        """
        STATUS lists each connected agent with what its HELLO said about it
        (cli, model, ...), leaving out anything that is not a plain value.
        """
        peer = self.relay.connect()
        peer.feed(hello("alice", cli="claude", model="m-1", task={"nested": True}))
        peer.new()
        peer.feed({"v": 1, "type": "STATUS", "id": "st"})
        [status] = peer.new()
        [agent] = status["payload"]["agents"]
        self.assertEqual(agent["name"], "alice")
        self.assertEqual(agent["info"], {"cli": "claude", "model": "m-1"})

    def test_log_frames_accepted_quietly(self):
        """
        LOG frames (agent output that agent-relay's wrapper streams) are
        accepted without an ERROR reply, and the connection goes on.
        """
        peer = self.relay.connect()
        peer.feed(hello("alice"))
        peer.new()
        peer.feed({"v": 1, "type": "LOG", "id": "l1", "payload": {"data": "line\n",
                                                                  "timestamp": 1}})
        peer.feed({"v": 1, "type": "LOG", "id": "l2", "payload": "not an object"})
        self.assertEqual(peer.new(), [])
        self.assertFalse(peer.closed)

    def test_unknown_type(self):
        """
        An unknown frame type gets a non-fatal ERROR BAD_REQUEST naming it.
        """
        peer = self.relay.connect()
        peer.feed(hello("alice"))
        peer.new()
        peer.feed({"v": 1, "type": "FROBNICATE"})
        [error] = peer.new()
        self.assertEqual(error["payload"]["code"], "BAD_REQUEST")
        self.assertIn("FROBNICATE", error["payload"]["message"])
        self.assertFalse(peer.closed)

    def test_bye(self):
        """
        BYE is answered with BYE and the connection is closed and forgotten.
        """
        peer = self.relay.connect()
        peer.feed(hello("alice"))
        peer.new()
        peer.feed({"v": 1, "type": "BYE", "payload": {}})
        self.assertEqual([f["type"] for f in peer.new()], ["BYE"])
        self.assertTrue(peer.closed)
        self.assertNotIn("alice", self.relay.router.sessions)
        self.assertEqual(self.relay.router.connections, set())

    def test_bye_before_hello(self):
        """
        BYE is accepted before HELLO too.
        """
        peer = self.relay.connect()
        peer.feed({"v": 1, "type": "BYE", "payload": {}})
        self.assertEqual([f["type"] for f in peer.new()], ["BYE"])
        self.assertTrue(peer.closed)


class PingTests(unittest.TestCase):

    def setUp(self):
        self.relay = Relay(self, heartbeat=5.0)
        self.clock = self.relay.clock

    def test_pong_same_nonce(self):
        """
        An agent's PING is answered with PONG carrying the same nonce.
        """
        peer = self.relay.connect()
        peer.feed(hello("alice"))
        peer.new()
        peer.feed({"v": 1, "type": "PING", "payload": {"nonce": "abc-123"}})
        [pong] = peer.new()
        self.assertEqual(pong["type"], "PONG")
        self.assertEqual(pong["payload"]["nonce"], "abc-123")

    def test_pings_every_heartbeat(self):
        """
        The daemon PINGs every heartbeat interval (and not before), each
        with a new nonce.
        """
        peer = self.relay.connect()
        self.clock.advance(4.9)
        self.assertEqual(peer.of_type("PING"), [])
        self.clock.advance(0.1)
        self.assertEqual(len(peer.of_type("PING")), 1)
        self.clock.advance(5.0)
        self.clock.advance(5.0)
        pings = peer.of_type("PING")
        self.assertEqual(len(pings), 3)
        self.assertEqual(len({p["payload"]["nonce"] for p in pings}), 3)

    def test_closes_after_six_missed(self):
        """
        A connection that sends nothing for more than six heartbeats is
        closed, and not before.
        """
        peer = self.relay.connect()
        peer.feed(hello("alice"))
        self.clock.pump([5.0] * 6)
        self.assertFalse(peer.closed)
        self.clock.advance(5.0)
        self.assertTrue(peer.closed)
        self.assertTrue(peer.transport.aborted)
        self.assertNotIn("alice", self.relay.router.sessions)

    def test_pongs_keep_it_open(self):
        """
        A connection answering PINGs stays open however long it lives.
        """
        peer = self.relay.connect()
        peer.feed(hello("alice"))
        for _ in range(20):
            self.clock.advance(5.0)
            ping = peer.of_type("PING")[-1]
            peer.feed({"v": 1, "type": "PONG", "payload": ping["payload"]})
        self.assertFalse(peer.closed)

    def test_not_closed_while_we_paused_reading(self):
        """
        The heartbeat does not close a connection whose socket the daemon
        itself stopped reading (its replies are unread, above the control
        cap): its PONGs cannot arrive.  Once reading resumes, the
        six-heartbeat count starts again from there.
        """
        peer = self.relay.connect()
        peer.feed(hello("alice"))
        peer.proto._control_full(True)
        self.assertEqual(peer.transport.producerState, "paused")
        self.clock.pump([5.0] * 20)
        self.assertFalse(peer.closed)
        peer.proto._control_full(False)
        self.clock.advance(0)
        self.assertEqual(peer.transport.producerState, "producing")
        self.clock.pump([5.0] * 6)
        self.assertFalse(peer.closed)
        self.clock.pump([5.0] * 2)
        self.assertTrue(peer.closed)

    def test_held_sends_do_not_keep_it_alive(self):
        """
        A connection whose SENDs are held (flow control, rate, store) is
        still read, so it must still answer: silent for six heartbeats, it
        is closed (issue 13.4: the heartbeat took paused for alive).
        """
        peer = self.relay.connect()
        peer.feed(hello("alice"))
        peer.proto.pause_reading("store")
        self.assertEqual(peer.transport.producerState, "producing")
        self.clock.pump([5.0] * 8)
        self.assertTrue(peer.closed)


class FramingTests(unittest.TestCase):

    def setUp(self):
        self.relay = Relay(self, max_frame_bytes=1024)

    def test_length_over_limit(self):
        """
        A length prefix over max_frame_bytes gets a fatal ERROR BAD_REQUEST
        written before the connection closes, from the 4-byte prefix alone
        (nothing of the announced size is awaited or allocated).
        """
        peer = self.relay.connect()
        peer.raw(struct.pack(">I", 1025))
        [error] = peer.received()
        self.assertEqual(error["type"], "ERROR")
        self.assertEqual(error["payload"]["code"], "BAD_REQUEST")
        self.assertIs(error["payload"]["fatal"], True)
        self.assertIn("1025", error["payload"]["message"])
        self.assertTrue(peer.closed)

    def test_length_at_limit(self):
        """
        A frame of exactly max_frame_bytes is read and handled.
        """
        peer = self.relay.connect()
        env = {"v": 1, "type": "PING", "payload": {"nonce": ""}}
        pad = 1024 - len(orjson.dumps(env)) - len(',"pad":""')
        env["pad"] = "x" * pad
        data = orjson.dumps(env)
        self.assertEqual(len(data), 1024)
        peer.raw(struct.pack(">I", len(data)) + data)
        self.assertEqual([f["type"] for f in peer.received()], ["PONG"])
        self.assertFalse(peer.closed)

    def assertNonFatal(self, peer, data, words):
        peer.raw(struct.pack(">I", len(data)) + data)
        [error] = peer.new()
        self.assertEqual(error["type"], "ERROR")
        self.assertEqual(error["payload"]["code"], "BAD_REQUEST")
        self.assertIs(error["payload"]["fatal"], False)
        self.assertIn(words, error["payload"]["message"])
        self.assertFalse(peer.closed)

    def test_bad_frames_non_fatal(self):
        """
        Invalid JSON, invalid UTF-8, JSON that is not an object and an
        object without a string type each get a non-fatal ERROR
        BAD_REQUEST; the connection stays usable (a PING after them is
        answered).
        """
        peer = self.relay.connect()
        self.assertNonFatal(peer, b"{not json", "JSON")
        self.assertNonFatal(peer, b'{"type": "PING", "x": "\xff\xfe"}', "JSON")
        self.assertNonFatal(peer, b"[1, 2]", "object")
        self.assertNonFatal(peer, b'"PING"', "object")
        self.assertNonFatal(peer, b'{"v": 1}', "type")
        self.assertNonFatal(peer, b'{"type": 7}', "type")
        peer.feed({"v": 1, "type": "PING", "payload": {"nonce": "still"}})
        self.assertEqual(peer.new()[0]["payload"]["nonce"], "still")

    def test_one_byte_at_a_time(self):
        """
        Frames dripped one byte at a time are all handled, in order.
        """
        peer = self.relay.connect()
        data = encode(hello("alice")) + b"".join(
            encode({"v": 1, "type": "PING", "payload": {"nonce": str(i)}}) for i in range(5))
        for i in range(len(data)):
            peer.raw(data[i:i + 1])
        frames = peer.received()
        self.assertEqual([f["type"] for f in frames], ["WELCOME"] + ["PONG"] * 5)
        self.assertEqual([f["payload"]["nonce"] for f in frames[1:]], [str(i) for i in range(5)])

    def test_many_frames_in_one_write(self):
        """
        1000 frames in a single read are all handled, in order.
        """
        peer = self.relay.connect()
        data = encode(hello("alice")) + b"".join(
            encode({"v": 1, "type": "PING", "payload": {"nonce": str(i)}}) for i in range(1000))
        peer.raw(data)
        frames = peer.received()
        self.assertEqual(len(frames), 1001)
        self.assertEqual([f["payload"]["nonce"] for f in frames[1:]],
                         [str(i) for i in range(1000)])


class InvalidSendTests(unittest.TestCase):
    """
    Every bad SEND case of PROTOCOL.md gets NACK INVALID with a message
    saying which, and stores nothing.
    """

    # A bad value reaching the store would make flushes wait forever.
    timeout = 20

    @defer.inlineCallbacks
    def setUp(self):
        self.relay = Relay(self, max_frame_bytes=2048)
        self.alice = yield self.relay.agent("alice")
        self.bob = yield self.relay.agent("bob")
        self.alice.new()

    @defer.inlineCallbacks
    def assertNack(self, env, words):
        self.alice.feed(env)
        [nack] = self.alice.new()
        self.assertEqual(nack["type"], "NACK")
        self.assertEqual(nack["payload"]["ack_id"], env.get("id"))
        self.assertEqual(nack["payload"]["code"], "INVALID")
        self.assertIn(words, nack["payload"]["message"])
        self.assertFalse(self.alice.closed)
        yield self.relay.flush()
        self.assertEqual(self.relay.rows("SELECT count(*) FROM messages"), [(0,)])
        self.assertEqual(self.bob.of_type("DELIVER"), [])

    def test_no_to(self):
        """
        A SEND without C{to} is refused.
        """
        env = send("bob")
        del env["to"]
        return self.assertNack(env, "to")

    def test_empty_to(self):
        """
        A SEND with an empty C{to} is refused.
        """
        return self.assertNack(send(""), "to")

    def test_invalid_name(self):
        """
        A SEND to an invalid agent name is refused.
        """
        return self.assertNack(send("no spaces allowed"), "invalid recipient")

    def test_reserved_name(self):
        """
        A SEND to a reserved name (starting with _) is refused.
        """
        return self.assertNack(send("_system"), "invalid recipient")

    def test_non_string_to(self):
        """
        A SEND whose C{to} is not a string is refused.
        """
        return self.assertNack(send(["bob"]), "to")

    def test_no_payload(self):
        """
        A SEND without a payload object is refused.
        """
        env = send("bob")
        del env["payload"]
        return self.assertNack(env, "payload")

    def test_payload_not_object(self):
        """
        A SEND whose payload is not an object is refused.
        """
        env = send("bob")
        env["payload"] = "hello"
        return self.assertNack(env, "payload")

    def test_body_not_string(self):
        """
        A SEND with a non-string body is refused.
        """
        env = send("bob")
        env["payload"]["body"] = {"text": "hi"}
        return self.assertNack(env, "body")

    def test_no_body(self):
        """
        A SEND without a body is refused.
        """
        env = send("bob")
        del env["payload"]["body"]
        return self.assertNack(env, "body")

    def test_unknown_kind(self):
        """
        A SEND with a kind other than message/action/state/thinking is
        refused.
        """
        env = send("bob")
        env["payload"]["kind"] = "shout"
        return self.assertNack(env, "kind")

    def test_topic_not_string(self):
        """
        A SEND with a non-string topic is refused.
        """
        return self.assertNack(send("*", topic=5), "topic")

    def test_too_large_to_deliver(self):
        """
        A SEND that fits in a frame but whose DELIVER would exceed
        max_frame_bytes is refused.
        """
        env = send("bob", body="x" * 1800)
        self.assertLess(len(orjson.dumps(env)), 2048)
        return self.assertNack(env, "too large")

    @defer.inlineCallbacks
    def test_valid_kinds_accepted(self):
        """
        Each of the four kinds is accepted (the NACK cases above are not
        refusing everything).
        """
        for kind in ("message", "action", "state", "thinking"):
            env = send("bob")
            env["payload"]["kind"] = kind
            self.alice.feed(env)
        self.assertEqual(self.alice.of_type("NACK"), [])
        self.assertEqual([d["payload"]["kind"] for d in self.bob.of_type("DELIVER")],
                         ["message", "action", "state", "thinking"])
        yield self.relay.flush()
        self.assertEqual(self.relay.rows("SELECT count(*) FROM messages"), [(4,)])

    def test_id_not_string(self):
        """
        A SEND whose id is not a string (object, list, a number too large
        for SQLite) is refused, and the store keeps working: such an id
        must never reach a write batch, where it would fail it for good.
        """
        for bad in ({"x": 1}, ["a"], 10 ** 19, True):
            env = send("bob")
            env["id"] = bad
            self.alice.feed(env)
            [nack] = self.alice.new()
            self.assertEqual((nack["type"], nack["payload"]["code"]), ("NACK", "INVALID"))
            self.assertIn("id", nack["payload"]["message"])
        return self.assertStillStoring()

    def test_ttl_too_large(self):
        """
        A ttl_ms beyond 2**53 - 1 (the largest integer JSON peers agree on)
        is refused instead of overflowing the store's INTEGER column; a TTL
        of ten years is accepted.
        """
        self.alice.feed(send("bob", meta={"ttl_ms": 10 ** 19}))
        [nack] = self.alice.new()
        self.assertEqual((nack["type"], nack["payload"]["code"]), ("NACK", "INVALID"))
        self.assertIn("ttl_ms", nack["payload"]["message"])
        self.alice.feed(send("bob", meta={"ttl_ms": 10 * 365 * 86400 * 1000}))
        self.assertEqual(self.alice.new(), [])
        return self.assertStillStoring()

    @defer.inlineCallbacks
    def assertStillStoring(self):
        env = send("bob", "after", requires_ack=True)
        self.alice.feed(env)
        yield self.relay.flush()
        self.assertEqual([a["payload"]["ack_id"] for a in self.alice.of_type("ACK")], [env["id"]])
        self.assertEqual(self.relay.store.stats()["failures"], 0)

    def test_bad_ttl(self):
        """
        A SEND whose payload_meta.ttl_ms is not a positive integer is
        refused.
        """
        for ttl in (0, -5, "soon", 1.5, True):
            env = send("bob", meta={"ttl_ms": ttl})
            self.alice.feed(env)
            [nack] = self.alice.new()
            self.assertEqual((nack["type"], nack["payload"]["code"]), ("NACK", "INVALID"), ttl)
            self.assertIn("ttl_ms", nack["payload"]["message"])
        self.assertEqual(self.bob.of_type("DELIVER"), [])

    def test_meta_not_object(self):
        """
        A SEND whose payload_meta is not an object is refused.
        """
        env = send("bob")
        env["payload_meta"] = ["requires_ack"]
        return self.assertNack(env, "payload_meta")

    def test_data_not_object(self):
        """
        A SEND whose payload.data is not an object is refused.
        """
        env = send("bob")
        env["payload"]["data"] = "text"
        return self.assertNack(env, "data")

    def test_thread_not_string(self):
        """
        A SEND whose payload.thread is not a string is refused.
        """
        env = send("bob")
        env["payload"]["thread"] = 12
        return self.assertNack(env, "thread")

    def test_ack_needs_ack_id(self):
        """
        An ACK without a string payload.ack_id gets a non-fatal ERROR
        BAD_REQUEST.
        """
        self.bob.new()
        self.bob.feed({"v": 1, "type": "ACK", "payload": {"seq": 1}})
        [error] = self.bob.new()
        self.assertEqual((error["type"], error["payload"]["code"], error["payload"]["fatal"]),
                         ("ERROR", "BAD_REQUEST", False))


class DeliverSizeTests(unittest.TestCase):
    """
    PROTOCOL.md: a SEND whose DELIVER would exceed max_frame_bytes gets NACK
    INVALID.  Whatever is accepted must therefore reach its recipients in
    frames they accept.
    """

    @defer.inlineCallbacks
    def setUp(self):
        self.relay = Relay(self, max_frame_bytes=4096)
        # A realistic clock: ts has 13 digits, as in production.
        self.relay.clock.advance(1795702969.5)
        self.sender = yield self.relay.agent("s" * 128)
        self.recipient = yield self.relay.agent("r" * 128)
        self.sender.new()

    def deliver_sizes(self):
        return [len(orjson.dumps(d)) for d in self.recipient.of_type("DELIVER")]

    def test_near_the_limit(self):
        """
        Minimal SENDs (no v, id, ts or from) of every size up to the frame
        limit between 128-character names: each is refused or delivered
        in a frame within max_frame_bytes.
        """
        accepted = 0
        for to in ("r" * 128, "*"):
            for fill in range(3400, 4096, 7):
                env = {"type": "SEND", "to": to, "payload": {"body": "x" * fill}}
                if len(orjson.dumps(env)) > 4096:
                    break
                self.sender.feed(env)
                replies = self.sender.new()
                if not replies:
                    accepted += 1
                else:
                    self.assertEqual(replies[0]["type"], "NACK")
        self.assertGreater(accepted, 0)
        self.assertEqual(len(self.deliver_sizes()), accepted)
        self.assertLessEqual(max(self.deliver_sizes()), 4096)

    def test_re_encoding_growth(self):
        """
        A SEND whose JSON grows when re-encoded (1e15 is written back as
        1000000000000000.0) is measured as the daemon will send it: refused
        when its DELIVER would not fit, rather than sent oversized.
        """
        env = {"type": "SEND", "id": "grow", "to": "r" * 128,
               "payload": {"body": "", "data": {"n": []}}}
        data = orjson.dumps(env)
        count = (2000 - len(data)) // 5
        raw = data.replace(b'"n":[]', b'"n":[' + b",".join([b"1e15"] * count) + b"]")
        self.assertLess(len(raw), 2048)
        self.sender.raw(struct.pack(">I", len(raw)) + raw)
        replies = self.sender.new()
        if replies:
            self.assertEqual((replies[0]["type"], replies[0]["payload"]["code"]),
                             ("NACK", "INVALID"))
        self.assertTrue(all(n <= 4096 for n in self.deliver_sizes()), self.deliver_sizes())
        self.assertEqual(len(replies) + len(self.deliver_sizes()), 1)
