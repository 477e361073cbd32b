"""
Tests for L{relay.ingest.validate}: the wire contract's message checks.
"""

import uuid

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial import unittest

from relay.ingest.validate import MAX_MS, BadRequest, parse_batch, parse_message
from tests.support.ingest import makeMessage

WS = uuid.UUID("6f1d1c2e-8d8e-4a53-9a4b-0d5b3f3d6a01")
DAEMON = "11111111-2222-4333-8444-555555555555"


def body(messages, workspace=str(WS), daemon=DAEMON):
    return {"daemon_id": daemon, "workspace_id": workspace, "messages": messages}


class ParseMessageTests(unittest.TestCase):
    """
    L{parse_message} accepts valid messages and names the field of an
    invalid one.
    """

    def assertBad(self, message, field, index=3):
        e = self.assertRaises(BadRequest, parse_message, index, message)
        self.assertEqual(e.status, 400)
        self.assertEqual(e.field, field)
        self.assertEqual(e.index, index)
        js = e.to_json()
        self.assertEqual((js["index"], js["field"]), (index, field))
        self.assertIn("message %d" % (index,), js["error"])
        return e

    def test_valid(self):
        """
        A full valid message becomes its row tuple.
        """
        m = makeMessage(1, channel="#c", expires_at=5, data={"a": [1]},
                        payload_meta={"b": None}, is_urgent=True)
        self.assertEqual(parse_message(0, m), (
            "m-1", "agent-a", "agent-b", "hello 1", "message", None, None, "#c",
            False, True, '{"a":[1]}', '{"b":null}', m["ts"], 5))

    def test_optional_fields(self):
        """
        channel, expires_at, topic, thread, data, payload_meta and the
        booleans may be left out; unknown fields are ignored.
        """
        m = makeMessage(1, extra="ignored")
        for name in ("topic", "thread", "data", "payload_meta", "is_broadcast", "is_urgent"):
            del m[name]
        row = parse_message(0, m)
        self.assertEqual(row[5:12], (None, None, None, False, False, None, None))
        self.assertIsNone(row[13])

    def test_missing_id(self):
        """
        A message without an id is refused naming "id", with a null id.
        """
        m = makeMessage(1)
        del m["id"]
        e = self.assertBad(m, "id")
        self.assertIsNone(e.message_id)

    def test_id_length(self):
        """
        An id of 255 characters (even non-ASCII ones) is fine, 256 or 0 is
        not.
        """
        parse_message(0, makeMessage(1, id="\u00e9" * 255))
        self.assertBad(makeMessage(1, id="x" * 256), "id")
        self.assertBad(makeMessage(1, id=""), "id")
        self.assertBad(makeMessage(1, id=17), "id")

    def test_nul(self):
        """
        A NUL character anywhere PostgreSQL would store text is refused,
        naming the field and the message's id.
        """
        for field in ("body", "from", "to", "topic", "thread", "channel"):
            e = self.assertBad(makeMessage(1, **{field: "a\x00b"}), field)
            self.assertEqual(e.message_id, "m-1")
        self.assertBad(makeMessage(1, id="a\x00"), "id")
        self.assertBad(makeMessage(1, data={"k": ["x", {"y": "\x00"}]}), "data")
        self.assertBad(makeMessage(1, payload_meta={"\x00key": 1}), "payload_meta")

    def test_backslash_u_not_nul(self):
        """
        A string holding a backslash followed by "u0000" is text, not a NUL,
        and is accepted.
        """
        row = parse_message(0, makeMessage(1, data={"k": "\\u0000"}))
        self.assertEqual(row[10], '{"k":"\\\\u0000"}')

    def test_types(self):
        """
        Wrong types are refused naming the field.
        """
        cases = [
            ("ts", "123"), ("ts", True), ("ts", 1.5), ("ts", None),
            ("ts", MAX_MS + 1), ("expires_at", "soon"), ("from", None), ("from", ""),
            ("to", 5), ("to", ""), ("body", None), ("body", ["x"]), ("kind", "chat"),
            ("kind", None), ("topic", 3), ("thread", {}), ("channel", False),
            ("data", [1, 2]), ("data", "x"), ("payload_meta", 7),
            ("is_broadcast", 1), ("is_urgent", "true"), ("is_urgent", None),
        ]
        for field, value in cases:
            self.assertBad(makeMessage(1, **{field: value}), field)

    def test_not_an_object(self):
        """
        A message that is not a JSON object is refused with its index.
        """
        e = self.assertBad("hello", "message", index=0)
        self.assertIsNone(e.message_id)

    def test_unencodable_data(self):
        """
        A data value orjson cannot encode (an integer over 64 bits, a lone
        surrogate) is refused naming the field, not a crash.
        """
        self.assertBad(makeMessage(1, data={"n": 2 ** 70}), "data")
        self.assertBad(makeMessage(1, payload_meta={"s": "\ud800"}), "payload_meta")

    @settings(max_examples=200, deadline=None)
    @given(text=st.text(alphabet=st.characters(blacklist_characters="\x00",
                                               blacklist_categories=("Cs",)), min_size=1),
           data=st.recursive(
               st.none() | st.booleans() | st.integers(-2 ** 53, 2 ** 53)
               | st.text(st.characters(blacklist_characters="\x00",
                                       blacklist_categories=("Cs",))),
               lambda children: st.lists(children, max_size=3)
               | st.dictionaries(st.text(st.characters(blacklist_characters="\x00",
                                                       blacklist_categories=("Cs",))),
                                 children, max_size=3),
               max_leaves=8))
    def test_any_nul_free_text_accepted(self, text, data):
        """
        Any NUL-free text and any NUL-free JSON object are accepted and kept
        as given.  (Lone surrogates are left out: they cannot come out of
        orjson.loads, which refuses them as invalid JSON.)
        """
        import orjson
        row = parse_message(0, makeMessage(1, id=text[:255], body=text, topic=text,
                                          data={"v": data}))
        self.assertEqual((row[0], row[3], row[5]), (text[:255], text, text))
        self.assertEqual(orjson.loads(row[10]), {"v": data})

    @settings(max_examples=100, deadline=None)
    @given(prefix=st.text(), suffix=st.text())
    def test_any_nul_refused(self, prefix, suffix):
        """
        Any body holding a NUL is refused naming "body".
        """
        self.assertBad(makeMessage(1, body=prefix + "\x00" + suffix), "body")


class ParseBatchTests(unittest.TestCase):
    """
    L{parse_batch} checks the envelope and reports the first bad message.
    """

    def test_valid(self):
        """
        A valid body yields the daemon, the workspace and one row per
        message, in order.
        """
        batch = parse_batch(body([makeMessage(i) for i in range(3)]), WS)
        self.assertEqual(batch.daemon_id, DAEMON)
        self.assertEqual(batch.workspace_id, str(WS))
        self.assertEqual([r[0] for r in batch.rows], ["m-0", "m-1", "m-2"])

    def test_workspace_case(self):
        """
        The body's workspace is compared as a UUID, whatever its case.
        """
        parse_batch(body([], workspace=str(WS).upper()), WS)

    def test_other_workspace(self):
        """
        A body claiming another workspace than the key's is 403.
        """
        e = self.assertRaises(BadRequest, parse_batch,
                              body([], workspace=str(uuid.uuid4())), WS)
        self.assertEqual(e.status, 403)

    def test_key_bound_to_another_daemon(self):
        """
        A key bound to a daemon may sync for that daemon only: another
        daemon_id is 403 naming the field; an unbound key takes any.
        """
        parse_batch(body([]), WS, uuid.UUID(DAEMON))
        parse_batch(body([]), WS, None)
        e = self.assertRaises(BadRequest, parse_batch, body([]), WS, uuid.uuid4())
        self.assertEqual((e.status, e.field), (403, "daemon_id"))

    def test_envelope(self):
        """
        A body that is not an object, has no messages list, or has a bad
        daemon or workspace id is 400 without an index.
        """
        cases = [
            [], "x", {}, {"messages": {}},
            body([], daemon="nope"), body([], daemon=None), body([], workspace=5),
        ]
        for value in cases:
            e = self.assertRaises(BadRequest, parse_batch, value, WS)
            self.assertEqual(e.status, 400, value)
            self.assertNotIn("index", e.to_json())

    def test_first_bad_message(self):
        """
        With several bad messages, the first one is named.
        """
        messages = [makeMessage(i) for i in range(6)]
        messages[2]["kind"] = "bogus"
        del messages[4]["id"]
        e = self.assertRaises(BadRequest, parse_batch, body(messages), WS)
        self.assertEqual((e.index, e.message_id, e.field), (2, "m-2", "kind"))
