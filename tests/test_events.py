# -*- test-case-name: tests.test_events -*-
"""
Tests for L{relay.events}: the hub that tells the dashboard what happens.
"""

from twisted.trial import unittest

from relay.events import EventHub


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
