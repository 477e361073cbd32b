# -*- test-case-name: tests.test_frames -*-
"""
Tests for L{relay.frames.check_send} (the SEND checks PROTOCOL.md asks for)
and for the ttl_ms rule the daemon shares with the ingest: the bad values of
issue 13 point 8 each get a reason (NACK INVALID), never an exception.
"""

import json
import struct

from twisted.internet import defer
from twisted.trial import unittest

from relay.frames import MAX_DEPTH, MAX_TTL_MS, check_send, echo
from relay.ingest.validate import BadRequest, parse_message
from tests.support.ingest import makeMessage
from tests.support.frames import send
from tests.support.protocol import Relay


def nested(depth):
    """
    An object C{depth} levels deep: C{{"a": {"a": ... {}}}}.
    """
    value = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


def sendWith(**payload):
    env = send("bob")
    env["payload"].update(payload)
    return env


class CheckSendTests(unittest.TestCase):
    """
    L{check_send} returns a reason for every value the daemon cannot route,
    store or re-encode, and None for the valid ones next to them.
    """

    def reason(self, env):
        return check_send(env, 1048576, 100)

    def test_kind_not_a_string(self):
        """
        A payload.kind that is a list or an object (unhashable: it used to
        raise TypeError) or any other non-string is refused by name.
        """
        for kind in (["message"], {"message": 1}, 1, None, True, 1.5):
            reason = self.reason(sendWith(kind=kind))
            self.assertIsNotNone(reason, kind)
            self.assertIn("payload.kind", reason)

    def test_data_nested_too_deep(self):
        """
        A payload.data nested 300 levels deep, more than orjson can write
        back, is refused; the deepest data that fits (the envelope and the
        payload are two of the MAX_DEPTH levels) is accepted.
        """
        reason = self.reason(sendWith(data=nested(300)))
        self.assertIn("nested", reason)
        self.assertIsNone(self.reason(sendWith(data=nested(MAX_DEPTH - 2))))
        self.assertIsNotNone(self.reason(sendWith(data=nested(MAX_DEPTH - 1))))

    def test_unknown_field_nested_too_deep(self):
        """
        Unknown fields are forwarded, so their depth counts too.
        """
        env = send("bob")
        env["extra"] = [[[[nested(MAX_DEPTH - 4)]]]]
        self.assertIn("nested", self.reason(env))

    def test_empty_topic(self):
        """
        A broadcast (or a direct SEND) with topic "" is refused: no one can
        subscribe to the empty topic.
        """
        self.assertIn("topic", self.reason(send("*", topic="")))
        self.assertIn("topic", self.reason(send("bob", topic="")))
        self.assertIsNone(self.reason(send("*", topic="t")))

    def test_ttl_bounds(self):
        """
        ttl_ms from 1 to MAX_TTL_MS (100 years) is accepted; 0, one more
        than the maximum and values of other types are refused.
        """
        self.assertEqual(MAX_TTL_MS, 100 * 365.25 * 86400 * 1000)
        for ttl in (1, 60000, MAX_TTL_MS):
            self.assertIsNone(self.reason(send("bob", meta={"ttl_ms": ttl})), ttl)
        for ttl in (0, -1, MAX_TTL_MS + 1, 2 ** 53 - 1, 10 ** 19, 1.0, "1", True, [1], {}):
            reason = self.reason(send("bob", meta={"ttl_ms": ttl}))
            self.assertIsNotNone(reason, ttl)
            self.assertIn("ttl_ms", reason)

    def test_size_measured_after_re_encoding(self):
        """
        The size compared with max_frame_bytes is that of the re-encoded
        SEND (whatever size the caller passes), so a SEND that grows when
        encoded again is refused.
        """
        env = sendWith(data={"n": [1e15] * 50})
        self.assertIsNone(check_send(env, 2048, 10))
        self.assertIn("too large", check_send(env, 1300, 10))


class TtlRuleTests(unittest.TestCase):
    """
    The daemon and the ingest apply one ttl_ms rule: a SEND the daemon
    accepts is never refused at sync for its ttl_ms, and what the daemon
    refuses the ingest refuses too.
    """

    def test_same_rule(self):
        """
        For each value, check_send refuses it exactly when parse_message does
        (with a ts and an expires_at the daemon would compute).
        """
        ts = 1700000000000
        for ttl in (1, 3600000, MAX_TTL_MS, MAX_TTL_MS + 1, 2 ** 53 - 1, 0, -3, 2.5, "9", True):
            daemon = check_send(send("bob", meta={"ttl_ms": ttl}), 1048576, 100)
            expires = ts + ttl if isinstance(ttl, int) and not isinstance(ttl, bool) else None
            m = makeMessage(1, payload_meta={"ttl_ms": ttl}, expires_at=expires, ts=ts)
            try:
                parse_message(0, m)
            except BadRequest as e:
                ingest = e.message
            else:
                ingest = None
            self.assertEqual(daemon is None, ingest is None, (ttl, daemon, ingest))

    def test_longest_ttl_is_storable(self):
        """
        The longest ttl_ms the daemon accepts, from a ts of the year 9000,
        still gives an expires_at the ingest stores.
        """
        ts = 221845392000000  # 9000-01-01
        m = makeMessage(1, payload_meta={"ttl_ms": MAX_TTL_MS}, ts=ts, expires_at=ts + MAX_TTL_MS)
        self.assertEqual(parse_message(0, m)[13], ts + MAX_TTL_MS)


class BadValueProtocolTests(unittest.TestCase):
    """
    Through the real protocol and router: each bad value of point 8 gets
    NACK INVALID, the connection stays open and the next SEND is stored.
    """

    timeout = 20

    @defer.inlineCallbacks
    def setUp(self):
        self.relay = Relay(self)
        self.alice = yield self.relay.agent("alice")
        self.bob = yield self.relay.agent("bob")
        self.alice.new()

    @defer.inlineCallbacks
    def test_each_nacked_connection_open(self):
        """
        kind as a list and as an object, data 300 deep, ttl_ms of 10**15
        and a broadcast to topic "" each get NACK INVALID naming the SEND;
        alice stays connected and her next SEND gets its receipt.
        """
        bad = [sendWith(kind=["message"]), sendWith(kind={"k": 1}),
               sendWith(data=nested(300)), send("bob", meta={"ttl_ms": 10 ** 15}),
               send("*", topic="")]
        for env in bad:
            # The standard json module writes what orjson refuses to.
            data = json.dumps(env).encode("utf-8")
            self.alice.raw(struct.pack(">I", len(data)) + data)
            [nack] = self.alice.new()
            self.assertEqual((nack["type"], nack["payload"]["code"], nack["payload"]["ack_id"]),
                             ("NACK", "INVALID", env["id"]))
            self.assertTrue(self.alice.transport.connected)
        good = send("bob", "after", requires_ack=True)
        self.alice.feed(good)
        yield self.relay.flush()
        self.assertEqual([a["payload"]["ack_id"] for a in self.alice.of_type("ACK")], [good["id"]])
        self.assertEqual([d["payload"]["body"] for d in self.bob.of_type("DELIVER")], ["after"])
        self.assertEqual(self.relay.store.batcher.metrics["failures"], 0)


class EchoTests(unittest.TestCase):
    """
    L{echo} keeps an id or nonce the daemon can write back in its answer
    and drops (None) one nested too deep to be written.
    """

    def test_echo(self):
        """
        Strings, numbers, objects and lists of ordinary depth come back as
        they are; a value two levels short of orjson's limit (the answer's
        envelope and payload hold it) or deeper becomes None.
        """
        for value in ("s1", 5, 1.5, True, None, {"not": "a string"}, [1, [2]]):
            self.assertEqual(echo(value), value)
        self.assertEqual(echo(nested(MAX_DEPTH - 2)), nested(MAX_DEPTH - 2))
        self.assertIsNone(echo(nested(MAX_DEPTH - 1)))
        self.assertIsNone(echo(nested(300)))
