# -*- test-case-name: tests.test_delivery -*-
"""
Tests for L{relay.delivery}: the one DELIVER builder, live and from a
stored row.
"""

import orjson
from twisted.trial import unittest

from relay.delivery import deliver_base, deliver_stored, deliver_to


class DeliverBuilderTests(unittest.TestCase):

    def test_live_and_stored_are_the_same(self):
        """
        A DELIVER built from a SEND's values and one built from the stored
        row of the same message are equal, field for field.
        """
        payload = {"kind": "message", "body": "hi"}
        meta = {"requires_ack": True}
        extra = {"x-trace": "t1"}
        live = deliver_to(deliver_base("m1", 5, "alice", "builds", payload, meta, extra),
                          "bob", 3, "sess", True)
        stored = deliver_to(deliver_stored("m1", 5, "alice", "builds", orjson.dumps(payload),
                                           orjson.dumps(meta), orjson.dumps(extra)),
                            "bob", 3, "sess", True)
        self.assertEqual(live, stored)
        self.assertEqual(live, {
            "x-trace": "t1", "v": 1, "type": "DELIVER", "id": "m1", "ts": 5, "from": "alice",
            "topic": "builds", "payload": payload, "payload_meta": meta, "to": "bob",
            "delivery": {"seq": 3, "session_id": "sess", "originalTo": "*"}})

    def test_optional_fields_left_out(self):
        """
        Without topic, meta, extra or broadcast, the DELIVER has no such
        fields (and no originalTo).
        """
        d = deliver_to(deliver_stored("m1", 5, "alice", None, b"{}", None, None),
                       "bob", 1, "s", False)
        self.assertEqual(sorted(d), ["delivery", "from", "id", "payload", "to", "ts", "type", "v"])
        self.assertEqual(d["delivery"], {"seq": 1, "session_id": "s"})

    def test_extra_never_overrides_the_envelope(self):
        """
        Unknown fields are carried along but cannot replace the envelope's
        own (id, from, type).
        """
        d = deliver_base("m1", 5, "alice", None, {}, None,
                         {"id": "forged", "from": "mallory", "type": "ACK", "z": 1})
        self.assertEqual((d["id"], d["from"], d["type"], d["z"]), ("m1", "alice", "DELIVER", 1))

    def test_builders_do_not_share_state(self):
        """
        Two recipients' DELIVERs of one base are separate dicts: one's
        delivery info is not the other's.
        """
        base = deliver_base("m1", 5, "alice", None, {}, None, None)
        a = deliver_to(base, "a", 1, "sa", True)
        b = deliver_to(base, "b", 7, "sb", True)
        self.assertEqual((a["to"], a["delivery"]["seq"]), ("a", 1))
        self.assertEqual((b["to"], b["delivery"]["seq"]), ("b", 7))
        self.assertNotIn("to", base)
