"""
Tests for L{relay.ingest.federation_validate}: the federation request bodies
of every wrong shape are refused with 400 naming the field (and the index),
a key bound to another daemon with 403, and good bodies give their values.
"""

import uuid

import orjson
from twisted.trial import unittest

from relay.ingest.federation_validate import (
    DEFAULT_LIMIT,
    DEFAULT_WAIT,
    MAX_CONFIRM,
    MAX_EVENTS,
    MAX_ITEMS,
    MAX_NAME_CHARS,
    parse_handover,
    parse_poll,
    parse_presence,
)
from relay.ingest.keys import Grant
from relay.ingest.validate import BadRequest

WS = uuid.UUID("6f1d1c2e-8d8e-4a53-9a4b-0d5b3f3d6a01")
D = "11111111-2222-4333-8444-555555555555"


def message(**overrides):
    m = {"id": "m-1", "from": "alice", "to": "bob", "topic": None, "body": "hi"}
    m.update(overrides)
    return m


class _Refusals:
    def refused(self, parse, body, field, index=None, status=400, grant=None):
        e = self.assertRaises(BadRequest, parse, body, grant)
        self.assertEqual((e.status, e.field, e.index), (status, field, index), body)
        return e


class DaemonTests(_Refusals, unittest.TestCase):
    """
    Every body names its daemon; a bound key allows only that one.
    """

    def test_body_and_daemon_shapes(self):
        """
        A body that is not an object is 400 without a field; a missing,
        non-string or non-UUID daemon_id is 400 naming it, on every route.
        """
        for parse in (parse_presence, parse_handover, parse_poll):
            for body in ([], "x", 1, None, True):
                self.refused(parse, body, None)
            for daemon in (None, 5, True, "nope", ["x"]):
                body = {"events": [], "items": []}
                if daemon is not None:
                    body["daemon_id"] = daemon
                self.refused(parse, body, "daemon_id")

    def test_bound_key(self):
        """
        A key bound to daemon D is 403 for another daemon and fine for D
        (whatever the case of its UUID); an unbound key allows any.
        """
        other = Grant(WS, uuid.uuid4())
        body = {"daemon_id": D}
        self.refused(parse_poll, body, "daemon_id", status=403, grant=other)
        self.assertEqual(parse_poll({"daemon_id": D.upper()}, Grant(WS, uuid.UUID(D))).daemon_id,
                         uuid.UUID(D))
        parse_poll(body, Grant(WS, None))


class PresenceTests(_Refusals, unittest.TestCase):
    """
    L{parse_presence}.
    """

    def test_good(self):
        """
        Events come back as (name, online) pairs, in order.
        """
        p = parse_presence({"daemon_id": D, "events": [
            {"name": "a", "online": True}, {"name": "a", "online": False}]})
        self.assertEqual(p.events, [("a", True), ("a", False)])
        self.assertEqual(p.daemon_id, uuid.UUID(D))

    def test_bad(self):
        """
        events not a list, empty or too long; an event not an object; a
        name not a string, empty, too long or with NUL; online not a bool:
        400 naming the field and the index.
        """
        ok = {"name": "a", "online": True}
        for events in (None, {}, "x", [], [ok] * (MAX_EVENTS + 1)):
            self.refused(parse_presence, {"daemon_id": D, "events": events}, "events")
        parse_presence({"daemon_id": D, "events": [ok] * MAX_EVENTS})
        cases = [
            ("x", "events"), (None, "events"),
            ({"online": True}, "name"), ({"name": 1, "online": True}, "name"),
            ({"name": "", "online": True}, "name"),
            ({"name": "x" * (MAX_NAME_CHARS + 1), "online": True}, "name"),
            ({"name": "a\x00b", "online": True}, "name"),
            ({"name": "a"}, "online"), ({"name": "a", "online": 1}, "online"),
            ({"name": "a", "online": "true"}, "online"),
        ]
        for event, field in cases:
            self.refused(parse_presence, {"daemon_id": D, "events": [ok, event]}, field, 1)
        parse_presence({"daemon_id": D, "events": [{"name": "x" * MAX_NAME_CHARS,
                                                    "online": False}]})


class HandoverTests(_Refusals, unittest.TestCase):
    """
    L{parse_handover}.
    """

    def test_good(self):
        """
        Items give their id, recipient and the message as JSON text, with
        every field passed through (NUL inside the message travels escaped).
        """
        m = message(extra={"k": [1, 2]}, body="a\x00b")
        h = parse_handover({"daemon_id": D, "items": [
            {"recipient": "bob", "message": m},
            {"recipient": "*", "message": message(id="m-2", topic="news")}]})
        self.assertEqual([(i, r) for i, r, _ in h.items], [("m-1", "bob"), ("m-2", "*")])
        self.assertEqual(orjson.loads(h.items[0][2]), m)
        self.assertNotIn("\x00", h.items[0][2])

    def test_bad(self):
        """
        items not a list, empty or too long; an item or its message not an
        object; a message without a string id (or one empty, too long, with
        NUL); from or to not strings; a topic neither string nor null; a
        recipient not a name; a broadcast without a string topic: 400
        naming the field and the index, and the id when known.
        """
        ok = {"recipient": "bob", "message": message()}
        for items in (None, {}, "x", [], [ok] * (MAX_ITEMS + 1)):
            self.refused(parse_handover, {"daemon_id": D, "items": items}, "items")
        cases = [
            ("x", "items"), ({"recipient": "bob"}, "message"),
            ({"recipient": "bob", "message": "m"}, "message"),
            ({"recipient": "bob", "message": message(id=None)}, "id"),
            ({"recipient": "bob", "message": message(id=5)}, "id"),
            ({"recipient": "bob", "message": message(id="")}, "id"),
            ({"recipient": "bob", "message": message(id="x" * 256)}, "id"),
            ({"recipient": "bob", "message": message(id="a\x00")}, "id"),
            ({"message": message()}, "recipient"),
            ({"recipient": 5, "message": message()}, "recipient"),
            ({"recipient": "", "message": message()}, "recipient"),
            ({"recipient": "b\x00", "message": message()}, "recipient"),
            ({"recipient": "x" * 256, "message": message()}, "recipient"),
            ({"recipient": "bob", "message": message(**{"from": None})}, "from"),
            ({"recipient": "bob", "message": message(to=1)}, "to"),
            ({"recipient": "bob", "message": message(topic=1)}, "topic"),
            ({"recipient": "*", "message": message()}, "topic"),
            ({"recipient": "*", "message": message(topic=["t"])}, "topic"),
        ]
        for it, field in cases:
            e = self.refused(parse_handover, {"daemon_id": D, "items": [ok, it]}, field, 1)
            if field not in ("items", "message", "id"):
                self.assertEqual(e.message_id, "m-1")


class PollTests(_Refusals, unittest.TestCase):
    """
    L{parse_poll}.
    """

    def test_defaults_and_values(self):
        """
        Missing fields take the defaults; given ones are kept (wait may be
        a fraction of a second).
        """
        p = parse_poll({"daemon_id": D})
        self.assertEqual((p.confirm, p.directory_after, p.wait, p.limit),
                         ([], 0, DEFAULT_WAIT, DEFAULT_LIMIT))
        p = parse_poll({"daemon_id": D, "confirm": [3, 1], "directory_after": 9,
                        "wait": 0.5, "limit": 1000})
        self.assertEqual((p.confirm, p.directory_after, p.wait, p.limit), ([3, 1], 9, 0.5, 1000))
        parse_poll({"daemon_id": D, "wait": 60, "limit": 1, "confirm": [1] * MAX_CONFIRM})

    def test_bad(self):
        """
        confirm not a list of positive ints (bools and floats included) or
        too long; directory_after, wait and limit of the wrong type (bools
        included) or out of range: 400 naming the field.
        """
        for confirm, index in ((5, None), ({}, None), ([1] * (MAX_CONFIRM + 1), None),
                               ([1, "2"], 1), ([True], 0), ([1.0], 0), ([0], 0), ([-3], 0),
                               ([2 ** 63], 0), ([None], 0)):
            self.refused(parse_poll, {"daemon_id": D, "confirm": confirm}, "confirm", index)
        cases = [
            ("directory_after", -1), ("directory_after", True), ("directory_after", 1.5),
            ("directory_after", "1"), ("directory_after", None),
            ("wait", -1), ("wait", 61), ("wait", 60.5), ("wait", True), ("wait", False),
            ("wait", "20"), ("wait", None),
            ("limit", 0), ("limit", 1001), ("limit", True), ("limit", 2.0), ("limit", None),
        ]
        for field, value in cases:
            self.refused(parse_poll, {"daemon_id": D, field: value}, field)
