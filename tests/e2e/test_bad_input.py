# -*- test-case-name: tests.e2e.test_bad_input -*-
"""
Bad input through the real C{twistd -n relay} process: each gets the answer
PROTOCOL.md gives, and meanwhile the daemon keeps serving other agents.
"""

import json
import struct

from twisted.internet import defer, reactor, task
from twisted.trial import unittest

from tests.support.daemon import DaemonProcess, connect_agent, encode, hello, rss_kib, send


class BadInputTests(unittest.TestCase):
    """
    Malformed, hostile and oversized frames against the real daemon: refused, never fatal to it.
    """

    @defer.inlineCallbacks
    def setUp(self):
        self.daemon = DaemonProcess(self, ["--batch-delay-ms", "10"])
        yield self.daemon.start()
        self.alice = yield connect_agent(self.daemon, "alice")
        self.bob = yield connect_agent(self.daemon, "bob")
        self.checks = 0

    def tearDown(self):
        return self.daemon.stop()

    @defer.inlineCallbacks
    def assertStillServing(self):
        """
        The bystanders can still exchange a receipted message.
        """
        self.checks += 1
        self.alice.send(send("bob", "check %d" % (self.checks,), requires_ack=True))
        yield self.alice.wait_type("ACK", self.checks)
        yield self.bob.wait_for(
            lambda a: any(f["payload"]["body"] == "check %d" % (self.checks,)
                          for f in a.of_type("DELIVER")))

    def assertError(self, env, fatal):
        self.assertEqual(env["type"], "ERROR")
        self.assertEqual(env["payload"]["code"], "BAD_REQUEST")
        self.assertIs(env["payload"]["fatal"], fatal)
        self.assertIsInstance(env["payload"]["message"], str)

    @defer.inlineCallbacks
    def test_length_prefix_over_limit(self):
        """
        A length prefix over max_frame_bytes (here 4 GiB - 1) gets a fatal
        ERROR BAD_REQUEST and the connection is closed, on the prefix alone:
        the daemon neither waits for nor allocates the announced bytes.
        """
        before = rss_kib(self.daemon.pid)
        agent = yield connect_agent(self.daemon)
        agent.write_raw(struct.pack(">I", 0xFFFFFFFF))
        yield agent.wait_closed()
        [error] = agent.frames
        self.assertError(error, True)
        self.assertIn("max_frame_bytes", error["payload"]["message"])
        self.assertLess(rss_kib(self.daemon.pid) - before, 64 * 1024)
        yield self.assertStillServing()

    @defer.inlineCallbacks
    def test_length_just_over_limit_after_hello(self):
        """
        A registered agent announcing max_frame_bytes + 1 is closed with a
        fatal ERROR too, and its name is free again.
        """
        agent = yield connect_agent(self.daemon, "carol")
        agent.write_raw(struct.pack(">I", 1048577) + b"{")
        yield agent.wait_closed()
        self.assertError(agent.of_type("ERROR")[0], True)
        yield self.assertStillServing()
        again = yield connect_agent(self.daemon, "carol")
        self.assertEqual(len(again.of_type("WELCOME")), 1)

    @defer.inlineCallbacks
    def test_bad_frames_are_not_fatal(self):
        """
        Invalid JSON, JSON that is not an object, invalid UTF-8, an object
        without a string type and an empty frame each get a non-fatal ERROR
        BAD_REQUEST; the connection stays open and usable afterwards.
        """
        agent = yield connect_agent(self.daemon)
        bad = [b"{this is not json", b"[1, 2, 3]", b"42", b'"SEND"',
               b'{"type": "PING", "bad": "\xc3\x28"}', b'{"v": 1}', b'{"type": null}',
               b""]
        agent.write_raw(b"".join(struct.pack(">I", len(b)) + b for b in bad))
        yield agent.wait_type("ERROR", len(bad))
        for error in agent.of_type("ERROR"):
            self.assertError(error, False)
        self.assertFalse(agent.closed.called)
        yield self.assertStillServing()
        agent.send(hello("dave"))
        yield agent.wait_type("WELCOME")
        agent.send(send("bob", "from dave", requires_ack=True))
        yield agent.wait_type("ACK")

    @defer.inlineCallbacks
    def test_send_before_hello(self):
        """
        A SEND before HELLO gets a non-fatal ERROR BAD_REQUEST, is not
        routed, and the connection can say HELLO afterwards.
        """
        agent = yield connect_agent(self.daemon)
        agent.send(send("bob", "sneaky", requires_ack=True))
        frames = yield agent.wait_type("ERROR")
        self.assertError(frames[0], False)
        agent.send(hello("erin"))
        yield agent.wait_type("WELCOME")
        yield self.assertStillServing()
        self.assertNotIn("sneaky", [f["payload"]["body"] for f in self.bob.of_type("DELIVER")])
        self.assertEqual(agent.of_type("ACK"), [])

    @defer.inlineCallbacks
    def test_one_byte_at_a_time(self):
        """
        A HELLO and a SEND dripped one byte per write (with a reactor turn
        between writes) are handled like whole frames.
        """
        agent = yield connect_agent(self.daemon)
        data = encode(hello("drip")) + encode(send("bob", "dripped", requires_ack=True))
        for i in range(len(data)):
            agent.write_raw(data[i:i + 1])
            yield task.deferLater(reactor, 0, lambda: None)
        yield agent.wait_type("ACK")
        self.assertEqual([f["type"] for f in agent.frames if f["type"] != "PING"],
                         ["WELCOME", "ACK"])
        yield self.bob.wait_for(lambda a: any(f["payload"]["body"] == "dripped"
                                              for f in a.of_type("DELIVER")))

    @defer.inlineCallbacks
    def test_thousand_frames_in_one_write(self):
        """
        A HELLO and 1000 SENDs in a single write are all handled in order:
        1000 receipts in send order, 1000 deliveries in send order.
        """
        agent = yield connect_agent(self.daemon)
        sends = [send("bob", "burst %d" % i, requires_ack=True) for i in range(1000)]
        agent.write_raw(encode(hello("burst")) + b"".join(encode(e) for e in sends))
        yield agent.wait_type("ACK", 1000, timeout=30)
        self.assertEqual([a["payload"]["ack_id"] for a in agent.of_type("ACK")],
                         [e["id"] for e in sends])
        yield self.bob.wait_type("DELIVER", 1000, timeout=30)
        self.assertEqual([d["payload"]["body"] for d in self.bob.of_type("DELIVER")
                          if d["from"] == "burst"], ["burst %d" % i for i in range(1000)])
        yield self.assertStillServing()

    @defer.inlineCallbacks
    def test_disconnect_mid_frame(self):
        """
        A connection that drops in the middle of a frame costs nothing: the
        daemon forgets it and keeps serving.
        """
        agent = yield connect_agent(self.daemon, "quitter")
        agent.write_raw(encode(send("bob", "never finished"))[:-5])
        agent.transport.loseConnection()
        yield agent.closed
        yield self.assertStillServing()
        self.assertNotIn("never finished",
                         [f["payload"]["body"] for f in self.bob.of_type("DELIVER")])

    @defer.inlineCallbacks
    def test_values_the_store_cannot_hold(self):
        """
        A SEND with a non-string id or a ttl_ms too large for SQLite gets
        NACK INVALID, an ACK naming no message is ignored, and none of them
        stops the store: later messages are still stored and receipted.
        """
        agent = yield connect_agent(self.daemon, "frank")
        bad_id = send("bob", "bad id")
        bad_id["id"] = {"not": "a string"}
        bad_ttl = send("bob", "bad ttl")
        bad_ttl["payload_meta"] = {"ttl_ms": 10 ** 19}
        agent.send_many([bad_id, bad_ttl])
        frames = yield agent.wait_type("NACK", 2)
        nacks = [f for f in frames if f["type"] == "NACK"]
        self.assertEqual([n["payload"]["code"] for n in nacks], ["INVALID", "INVALID"])
        self.assertEqual(nacks[0]["payload"]["ack_id"], {"not": "a string"})
        self.assertIn("ttl_ms", nacks[1]["payload"]["message"])
        yield self.assertStillServing()
        prefix = self.bob.of_type("DELIVER")[0]["id"].rpartition("-")[0]
        self.bob.send({"v": 1, "type": "ACK", "payload": {"ack_id": prefix + "-" + "9" * 30,
                                                          "seq": 1}})
        yield self.assertStillServing()
        self.assertFalse(self.bob.closed.called)

    @defer.inlineCallbacks
    def test_send_growing_past_the_limit(self):
        """
        A SEND under max_frame_bytes whose JSON grows past it when the
        daemon re-encodes it for the DELIVER (1e15 becomes
        1000000000000000.0) gets NACK INVALID instead of an oversized
        DELIVER.
        """
        agent = yield connect_agent(self.daemon, "grower")
        head = b'{"v":1,"type":"SEND","id":"grow","to":"bob","payload":{"body":"","data":{"n":['
        count = 300000 // 5
        raw = head + b",".join([b"1e15"] * count) + b"]}}}"
        self.assertLess(len(raw), 1048576)
        agent.write_raw(struct.pack(">I", len(raw)) + raw)
        frames = yield agent.wait_type("NACK")
        [nack] = [f for f in frames if f["type"] == "NACK"]
        self.assertEqual((nack["payload"]["ack_id"], nack["payload"]["code"]), ("grow", "INVALID"))
        self.assertIn("too large", nack["payload"]["message"])
        yield self.assertStillServing()
        self.assertEqual([d for d in self.bob.of_type("DELIVER") if d["from"] == "grower"], [])

    @defer.inlineCallbacks
    def test_bad_values_nacked(self):
        """
        Through the real daemon: payload.kind a list or an object,
        payload.data nested 300 deep, a ttl_ms of 10**15 (past what the
        ingest can store) and a broadcast to topic "" each get NACK INVALID
        naming the SEND, and the connection stays open and usable.
        """
        agent = yield connect_agent(self.daemon, "gina")
        deep = {}
        for _ in range(299):
            deep = {"a": deep}
        bad = [send("bob", "k1"), send("bob", "k2"), send("bob", "deep", data=deep),
               send("bob", "ttl"), send("*", "empty topic", topic="")]
        bad[0]["payload"]["kind"] = ["message"]
        bad[1]["payload"]["kind"] = {"message": True}
        bad[3]["payload_meta"] = {"ttl_ms": 10 ** 15}
        # The standard json module writes the 300 levels orjson refuses.
        agent.write_raw(b"".join(struct.pack(">I", len(b)) + b
                                 for b in (json.dumps(e).encode() for e in bad)))
        frames = yield agent.wait_type("NACK", len(bad))
        nacks = [f["payload"] for f in frames if f["type"] == "NACK"]
        self.assertEqual([(n["ack_id"], n["code"]) for n in nacks],
                         [(e["id"], "INVALID") for e in bad])
        self.assertFalse(agent.closed.called)
        agent.send(send("bob", "gina after", requires_ack=True))
        yield agent.wait_type("ACK")
        yield self.assertStillServing()
        self.assertEqual([d["payload"]["body"] for d in self.bob.of_type("DELIVER")
                          if d["from"] == "gina"], ["gina after"])
