"""
Tests for API keys (L{relay.ingest.keys}): generating, parsing and checking
them.  The database helpers are tested through the C{relay keys} command
in L{tests.test_cli_keys}.
"""

import uuid

from twisted.trial import unittest

from relay.ingest import keys

WS = "6f1d1c2e-8d8e-4a53-9a4b-0d5b3f3d6a01"
DAEMON = "11111111-2222-4333-8444-555555555555"


class KeyFormatTests(unittest.TestCase):
    """
    Generating, parsing and checking keys, without a database.
    """

    def test_generate(self):
        """
        Keys are unique, parse back to their id, and hash to 32 bytes.
        """
        a, b = keys.generate_key(), keys.generate_key()
        self.assertNotEqual(a, b)
        key_id, key = a
        self.assertEqual(keys.parse_key(key), key_id)
        self.assertEqual(len(keys.hash_key(key)), 32)

    def test_parse_rejects(self):
        """
        Anything not shaped like a key has no id.
        """
        key_id, key = keys.generate_key()
        for bad in ("", "rlk_", key + "x", key[:-1], key.replace("rlk_", "xyz_"),
                    "rlk_%s_%s" % (key_id, "!" * 43)):
            self.assertIsNone(keys.parse_key(bad), bad)

    def test_check(self):
        """
        Only the matching, unrevoked hash yields the workspace.
        """
        _, key = keys.generate_key()
        _, other = keys.generate_key()
        h = keys.hash_key(key)
        self.assertEqual(keys.check_key(key, (h, WS, False)), uuid.UUID(WS))
        self.assertIsNone(keys.check_key(key, (h, WS, True)))
        self.assertIsNone(keys.check_key(other, (h, WS, False)))
        self.assertIsNone(keys.check_key(key, None))
        self.assertEqual(keys.check_key(key, (memoryview(h), uuid.UUID(WS), False)),
                         uuid.UUID(WS))

    def test_grant_binding(self):
        """
        A key's grant carries the daemon it is bound to (or None), and
        allows only that daemon; an unbound key allows any.
        """
        _, key = keys.generate_key()
        h = keys.hash_key(key)
        daemon = uuid.UUID(DAEMON)
        bound = keys.check_grant(key, (h, WS, False, DAEMON))
        self.assertEqual(bound, keys.Grant(uuid.UUID(WS), daemon))
        self.assertTrue(bound.allows(daemon))
        self.assertFalse(bound.allows(uuid.UUID(WS)))
        free = keys.check_grant(key, (h, WS, False, None))
        self.assertEqual(free, keys.Grant(uuid.UUID(WS), None))
        self.assertTrue(free.allows(daemon))
        self.assertIsNone(keys.check_grant(key, (h, WS, True, DAEMON)))
        self.assertEqual(keys.check_key(key, (h, WS, False, DAEMON)), uuid.UUID(WS))
