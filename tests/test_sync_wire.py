# -*- test-case-name: tests.test_sync_wire -*-
"""
Tests for L{relay.sync.wire}: message encoding, batch bodies, compression.
"""

import gzip

import orjson
from twisted.trial import unittest

from relay.sync.wire import WIRE_FIELDS, batch_body, encode_message, is_urgent, maybe_compress
from tests.support.sync import DAEMON, WORKSPACE, make_row


class WireTests(unittest.TestCase):
    """
    What the ingest receives.
    """

    def test_message_fields(self):
        """
        A message carries exactly the contract's fields (no seq), with
        booleans for the flags.
        """
        row = make_row(5, to="*", topic="builds")
        item = encode_message(row)
        wire = orjson.loads(item.json)
        self.assertEqual(set(wire), set(WIRE_FIELDS))
        self.assertEqual(set(WIRE_FIELDS), {
            "id", "ts", "from", "to", "topic", "thread", "kind", "body", "data",
            "payload_meta", "is_broadcast", "is_urgent", "expires_at"})
        self.assertIs(wire["is_broadcast"], True)
        self.assertIs(wire["is_urgent"], False)
        self.assertEqual((item.seq, item.id), (5, "msg-00000005"))
        self.assertEqual(wire["data"], row["data"])
        self.assertEqual(wire["topic"], "builds")

    def test_flags_derived_from_the_row(self):
        """
        is_broadcast comes from C{to == "*"} and is_urgent from
        payload_meta.importance (words urgent/high/critical in any case, or a
        number of 80 and more); the row's own flags, if any, are ignored.
        """
        def flags(**extra):
            wire = orjson.loads(encode_message(make_row(1, **extra)).json)
            return wire["is_broadcast"], wire["is_urgent"]

        self.assertEqual(flags(to="*", payload_meta={"importance": "high"}), (True, True))
        self.assertEqual(flags(to="bob", is_broadcast=True, is_urgent=True), (False, False))
        cases = [({"importance": "URGENT"}, True), ({"importance": "Critical"}, True),
                 ({"importance": "low"}, False), ({"importance": 80}, True),
                 ({"importance": 79.9}, False), ({"importance": True}, False),
                 ({"importance": None}, False), ({}, False), (None, False),
                 ({"importance": ["high"]}, False), ("high", False)]
        for meta, want in cases:
            self.assertIs(is_urgent(meta), want, meta)

    def test_unencodable(self):
        """
        A row orjson cannot encode gives an item with the reason and no JSON.
        """
        item = encode_message(make_row(3, data={"n": 2 ** 70}))
        self.assertIsNone(item.json)
        self.assertIn("cannot encode", item.error)

    def test_batch_body(self):
        """
        The body joins pre-encoded messages into the contract's object.
        """
        items = [encode_message(make_row(seq)) for seq in (1, 2, 3)]
        doc = orjson.loads(batch_body(DAEMON, WORKSPACE, items))
        self.assertEqual(set(doc), {"daemon_id", "workspace_id", "messages"})
        self.assertEqual((doc["daemon_id"], doc["workspace_id"]), (DAEMON, WORKSPACE))
        self.assertEqual([m["id"] for m in doc["messages"]], [i.id for i in items])
        self.assertEqual(orjson.loads(batch_body(DAEMON, None, []))["messages"], [])

    def test_compress_threshold(self):
        """
        Bodies up to the threshold go as they are; longer ones are gzipped,
        deterministically, and inflate back to the same bytes.
        """
        body = b"x" * 1024
        self.assertEqual(maybe_compress(body, 1024), (body, False))
        data, compressed = maybe_compress(body + b"y", 1024)
        self.assertTrue(compressed)
        self.assertEqual(gzip.decompress(data), body + b"y")
        self.assertEqual(maybe_compress(body + b"y", 1024)[0], data)

    def test_typical_text_compresses_four_times(self):
        """
        A batch of 100 typical agent messages compresses at least 4x.
        """
        items = [encode_message(make_row(seq)) for seq in range(1, 101)]
        body = batch_body(DAEMON, WORKSPACE, items)
        data, _ = maybe_compress(body, 1024)
        self.assertGreaterEqual(len(body) / len(data), 4.0)
