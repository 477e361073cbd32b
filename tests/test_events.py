# -*- test-case-name: tests.test_events -*-
"""
Tests for L{relay.events}: the hub that tells the dashboard what happens.
"""

from twisted.trial import unittest

from relay.events import FIELDS, EventHub


class EventHubTests(unittest.TestCase):

    def test_nobody_listening(self):
        """
        With no subscriber, emit does nothing and the hub says nobody listens.
        """
        hub = EventHub()
        self.assertFalse(hub.listening)
        hub.emit("accepted", id="x")

    def test_subscribers_in_order_and_unsubscribe(self):
        """
        Subscribers get (kind, fields) in subscription order; one that
        raises is logged and does not stop the others; unsubscribing stops
        the calls.
        """
        hub = EventHub()
        seen = []

        def broken(kind, fields):
            raise ValueError("boom")
        hub.subscribe(lambda k, f: seen.append(("a", k, f)))
        hub.subscribe(broken)
        off = hub.subscribe(lambda k, f: seen.append(("b", k, f)))
        hub.emit("online", agent="bob")
        self.assertEqual(seen, [("a", "online", {"agent": "bob"}),
                                ("b", "online", {"agent": "bob"})])
        off()
        hub.emit("offline", agent="bob")
        self.assertEqual([s[0] for s in seen], ["a", "b", "a"])
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 2)

    def test_positional_and_named(self):
        """
        post() takes the fields positionally in FIELDS order: a positional
        subscriber gets that tuple, a named one a dictionary of FIELDS'
        names; emit() with named fields gives a positional subscriber the
        tuple in FIELDS order, None for a field not given.
        """
        hub = EventHub()
        seen = []
        hub.subscribe(lambda k, v: seen.append(("pos", k, v)), ("acked",), positional=True)
        hub.subscribe(lambda k, f: seen.append(("named", k, f)), ("acked",))
        hub.post("acked", "m-1", "bob", 1.5, 2.0)
        hub.emit("acked", at=3.0, id="m-2", to="carol")
        hub.post("online", "bob", "s-1", 1.0)
        self.assertEqual(FIELDS["acked"], ("id", "to", "sent_at", "at"))
        self.assertEqual(seen, [
            ("pos", "acked", ("m-1", "bob", 1.5, 2.0)),
            ("named", "acked", {"id": "m-1", "to": "bob", "sent_at": 1.5, "at": 2.0}),
            ("pos", "acked", ("m-2", "carol", None, 3.0)),
            ("named", "acked", {"at": 3.0, "id": "m-2", "to": "carol"})])
