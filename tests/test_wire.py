# -*- test-case-name: tests.test_wire -*-
"""
Tests for L{relay.wire}: the wire contract's name, kind and ttl rules, its
frame types and codes, and the envelope builder.
"""

import orjson
from twisted.trial import unittest

from relay import wire


class NameTests(unittest.TestCase):
    """
    The agent name rule: 1-128 of letters, digits and C{._-@:}, not
    starting with C{_}.
    """

    def test_valid(self):
        """
        Names within the rule are accepted, 128 characters included.
        """
        for name in ("alice", "a", "agent-1.b_c@host:7", "A" * 128, "*a"[1:]):
            self.assertTrue(wire.valid_agent_name(name), name)
            self.assertIsNone(wire.name_problem(name), name)

    def test_invalid(self):
        """
        Empty, too long, other characters, C{*}, reserved and non-string
        names are refused, each with a reason.
        """
        for name in ("", "A" * 129, "a b", "a/b", "é", "*", "a\n", None, 5, b"alice"):
            self.assertFalse(wire.valid_agent_name(name), name)
            self.assertIn("letters, digits", wire.name_problem(name))
        self.assertFalse(wire.valid_agent_name("_relay"))
        self.assertIn("reserved", wire.name_problem("_relay"))


class TtlTests(unittest.TestCase):
    """
    C{payload_meta.ttl_ms}: absent, or an integer from 1 ms to 100 years.
    """

    def test_bounds(self):
        """
        1 and L{wire.MAX_TTL_MS} pass; 0, one above, negatives, floats,
        bools and strings do not.
        """
        for good in (None, wire.MIN_TTL_MS, 60000, wire.MAX_TTL_MS):
            self.assertIsNone(wire.ttl_problem(good), good)
        for bad in (0, -1, wire.MAX_TTL_MS + 1, 1.5, 1000.0, True, "1000", [1]):
            self.assertIn("positive integer", wire.ttl_problem(bad), bad)

    def test_within_javascript_integers(self):
        """
        The longest ttl stays below 2**53, so JavaScript peers read it
        exactly.
        """
        self.assertLess(wire.MAX_TTL_MS, 2 ** 53)


class ContractTests(unittest.TestCase):
    """
    The constants PROTOCOL.md lists.
    """

    def test_kinds_in_documented_order(self):
        """
        The four payload kinds, in the order messages name them.
        """
        self.assertEqual(wire.KINDS, ("message", "action", "state", "thinking"))
        self.assertIn(wire.DEFAULT_KIND, wire.KINDS)

    def test_types_and_codes(self):
        """
        Every frame type and code constant is its own name, and the sets
        hold them all.
        """
        for name in ("HELLO", "WELCOME", "SEND", "DELIVER", "ACK", "NACK", "BUSY", "PING",
                     "PONG", "SUBSCRIBE", "UNSUBSCRIBE", "ERROR", "BYE", "STATUS",
                     "STATUS_REPLY"):
            self.assertEqual(getattr(wire, name), name)
            self.assertIn(name, wire.TYPES)
        self.assertEqual(len(wire.TYPES), 15)
        self.assertEqual(wire.NACK_CODES, {"BUSY", "INVALID", "FORBIDDEN"})
        self.assertEqual(wire.ERROR_CODES, {"BAD_REQUEST", "UNAUTHORIZED", "NOT_FOUND",
                                            "INTERNAL", "RESUME_TOO_OLD"})

    def test_max_depth_is_orjsons(self):
        """
        L{wire.MAX_DEPTH} nested containers encode; one more does not.
        """
        value = {}
        for _ in range(wire.MAX_DEPTH - 1):
            value = [value]
        orjson.dumps(value)
        self.assertRaises(orjson.JSONEncodeError, orjson.dumps, [value])


class EnvelopeTests(unittest.TestCase):
    """
    L{wire.envelope} builds C{v}, C{type}, the fields, then the payload.
    """

    def test_order_and_payload(self):
        """
        Fields keep their order; a payload of None is left out.
        """
        env = wire.envelope("ACK", {"ack_id": "x", "seq": 0}, id="i", ts=5)
        self.assertEqual(list(env), ["v", "type", "id", "ts", "payload"])
        self.assertEqual(env["v"], wire.VERSION)
        self.assertNotIn("payload", wire.envelope("BYE"))
        self.assertEqual(wire.envelope("BYE", {}), {"v": 1, "type": "BYE", "payload": {}})
