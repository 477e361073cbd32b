# -*- test-case-name: tests.test_client_message -*-
"""
Tests for L{relay.client.message.Message}: one DELIVER frame as an agent
sees it.
"""

from twisted.trial import unittest

from relay.client.message import Message

DELIVER = {"v": 1, "type": "DELIVER", "id": "m-1", "ts": 5, "from": "alice", "to": "bob",
           "topic": "news", "payload": {"kind": "action", "body": "go", "data": {"n": 1},
                                        "thread": "t1"},
           "payload_meta": {"requires_ack": True},
           "delivery": {"seq": 7, "session_id": "s", "originalTo": "*"}, "x-extra": 1}


class MessageTests(unittest.TestCase):
    """The fields of a DELIVER, broadcast or not, and its dict form."""

    def test_fields(self):
        """Every field comes from its place in the frame; unknown ones stay in envelope."""
        m = Message(DELIVER)
        self.assertEqual((m.id, m.sender, m.to, m.topic, m.kind, m.body, m.data, m.thread,
                          m.seq, m.session_id, m.original_to, m.ts),
                         ("m-1", "alice", "bob", "news", "action", "go", {"n": 1}, "t1",
                          7, "s", "*", 5))
        self.assertTrue(m.is_broadcast)
        self.assertEqual(m.envelope["x-extra"], 1)

    def test_defaults_and_delivery_inside_payload(self):
        """A missing kind is a message; delivery info inside the payload is tolerated."""
        m = Message({"id": "m-2", "payload": {"body": "hi", "delivery": {"seq": 3}}})
        self.assertEqual((m.kind, m.seq, m.original_to), ("message", 3, None))
        self.assertFalse(m.is_broadcast)

    def test_as_dict_and_repr(self):
        """as_dict is what relay listen --json prints; repr cuts a long body."""
        m = Message(DELIVER)
        self.assertEqual(m.as_dict()["from"], "alice")
        self.assertEqual(set(m.as_dict()), {"id", "from", "to", "topic", "kind", "body", "data",
                                             "thread", "seq", "original_to", "meta", "ts"})
        long = Message({"id": "m-3", "payload": {"body": "x" * 100}})
        self.assertIn("x" * 37 + "...", repr(long))
