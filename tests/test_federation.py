# -*- test-case-name: tests.test_federation -*-
"""
Tests for L{relay.federation.directory} and the hand-over item encoding of
L{relay.federation.storage} (the store side runs in
L{tests.test_federation_service} on a real SQLite file).
"""

import orjson
from twisted.trial import unittest

from relay.federation.directory import Directory
from relay.federation.storage import encode_item

ME, OTHER = "me-id", "other-id"


def row(name, home, version, online=True):
    return {"name": name, "home": home, "online": online, "since_ms": 5, "version": version}


class DirectoryTests(unittest.TestCase):

    def test_home_elsewhere(self):
        """
        A name at home on another daemon is elsewhere; one at home here or
        nowhere is not.
        """
        d = Directory(ME)
        d.apply([row("bob", OTHER, 1), row("ann", ME, 2)])
        self.assertTrue(d.home_elsewhere("bob"))
        self.assertFalse(d.home_elsewhere("ann"))
        self.assertFalse(d.home_elsewhere("nobody"))
        self.assertEqual(d.version, 2)

    def test_older_change_ignored(self):
        """
        A change older than the one held (a claim answered before a poll
        brought an earlier row) changes nothing and is not reported.
        """
        d = Directory(ME)
        self.assertEqual([e.name for e in d.apply([row("bob", ME, 5)])], ["bob"])
        self.assertEqual(d.apply([row("bob", OTHER, 4)]), [])
        self.assertEqual(d.home_of("bob"), ME)
        self.assertEqual(d.version, 5)

    def test_bad_rows(self):
        """
        A row of the wrong shape is refused with ValueError (a missing
        field with KeyError).
        """
        d = Directory(ME)
        for bad in ({"name": 1, "home": OTHER, "version": 1},
                    {"name": "a", "home": None, "version": 1},
                    {"name": "a", "home": OTHER, "version": True},
                    {"name": "a", "home": OTHER, "version": "2"}):
            self.assertRaises(ValueError, d.apply, [bad])
        self.assertRaises(KeyError, d.apply, [{"name": "a"}])
        self.assertEqual(len(d), 0)

    def test_listing_sorted_and_bounded(self):
        d = Directory(ME)
        d.apply([row("c", ME, 1), row("a", OTHER, 2, online=False), row("b", ME, 3)])
        self.assertEqual([e["name"] for e in d.listing()], ["a", "b", "c"])
        self.assertEqual(d.listing(limit=1), [{"name": "a", "home": OTHER, "online": False,
                                               "since_ms": 5, "version": 2}])


class EncodeItemTests(unittest.TestCase):

    def test_stored_text_kept_as_json(self):
        """
        The payload, meta and extra columns (JSON text) become the item's
        objects without being parsed; absent ones are left out.
        """
        item = orjson.loads(encode_item((
            "bob", 7, "m1", "s1", 1000, "alice", "bob", None, "t", "message",
            '{"body":"hi \\u00e9","data":{"k":[1]}}', '{"ttl_ms":5}', '{"x":1}', 99)))
        self.assertEqual(item, {"recipient": "bob", "message": {
            "id": "m1", "send_id": "s1", "ts": 1000, "from": "alice", "to": "bob",
            "topic": None, "thread": "t", "kind": "message", "expires_at": 99,
            "payload": {"body": "hi \u00e9", "data": {"k": [1]}},
            "payload_meta": {"ttl_ms": 5}, "extra": {"x": 1}}})
        bare = orjson.loads(encode_item((
            "*", 8, "m2", None, 1, "a", "*", "news", None, "message", "{}", None, None, 2)))
        self.assertNotIn("payload_meta", bare["message"])
        self.assertNotIn("extra", bare["message"])
        self.assertEqual(bare["recipient"], "*")
