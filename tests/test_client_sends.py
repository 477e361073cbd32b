# -*- test-case-name: tests.test_client_sends -*-
"""
Tests for L{relay.client.sends}: the checks and envelope fields of a SEND,
and the SENDs waiting for the daemon's receipt.
"""

from twisted.trial import unittest

from relay.client.errors import ClientClosed, SendRefused, TooManyPending
from relay.client.sends import PendingSends, build_send, check_agent_name


class BuildSendTests(unittest.TestCase):
    """
    L{build_send} refuses arguments of the wrong shape and builds the
    payload and C{payload_meta} the wire asks for.
    """

    def test_fields(self):
        """
        Every optional argument lands where PROTOCOL.md puts it.
        """
        fields = build_send("bob", "hi", kind="action", data={"k": 1}, thread="t", topic="news",
                            ttl_ms=5000, importance=2, reply_to="m-1", meta={"x": True})
        self.assertEqual(fields, {
            "to": "bob", "topic": "news",
            "payload_meta": {"x": True, "requires_ack": True, "ttl_ms": 5000,
                             "importance": 2, "replyTo": "m-1"},
            "payload": {"kind": "action", "body": "hi", "data": {"k": 1}, "thread": "t"}})

    def test_minimal(self):
        """
        Without a receipt and options, only the recipient and payload.
        """
        self.assertEqual(build_send("*", "x", durable=False),
                         {"to": "*", "payload": {"kind": "message", "body": "x"}})

    def test_refused(self):
        """
        A non-string body, an unknown kind, a bad recipient and non-dict
        data are refused, each with its reason.
        """
        self.assertRaises(TypeError, build_send, "bob", b"bytes")
        e = self.assertRaises(ValueError, build_send, "bob", "x", kind="shout")
        self.assertIn("message, action, state, thinking", str(e))
        e = self.assertRaises(ValueError, build_send, "bo b", "x")
        self.assertIn("invalid recipient", str(e))
        self.assertRaises(ValueError, build_send, "_daemon", "x")
        self.assertRaises(TypeError, build_send, "bob", "x", data=[1])

    def test_agent_name(self):
        """
        check_agent_name passes a good name and refuses others in one line.
        """
        check_agent_name("alice")
        for bad in ("", "a" * 129, "_x", "a/b", None):
            e = self.assertRaises(ValueError, check_agent_name, bad)
            self.assertIn("invalid agent name", str(e))


class PendingSendsTests(unittest.TestCase):
    """
    L{PendingSends} keeps SENDs in order until their receipt, NACK, or the
    client closing; it is bounded.
    """

    def env(self, n):
        return {"type": "SEND", "id": "s-%d" % (n,)}

    def test_ack_fires_with_id(self):
        """
        The receipt fires the SEND's Deferred with its id and forgets it.
        """
        sends = PendingSends()
        d = sends.add(self.env(1), durable=True).deferred
        sends.acked("s-1")
        self.assertEqual(self.successResultOf(d), "s-1")
        self.assertEqual(len(sends), 0)
        sends.acked("s-1")   # a second receipt changes nothing

    def test_not_durable_done_when_written(self):
        """
        A SEND that wants no receipt is done once written; a durable one
        waits.
        """
        sends = PendingSends()
        quick = sends.add(self.env(1), durable=False)
        slow = sends.add(self.env(2), durable=True)
        sends.written(quick)
        sends.written(slow)
        self.assertEqual(self.successResultOf(quick.deferred), "s-1")
        self.assertNoResult(slow.deferred)
        self.assertEqual([p.env["id"] for p in sends], ["s-2"])

    def test_unwritten_after_drop_in_order(self):
        """
        After a drop every waiting SEND is unwritten, and they come back
        oldest first.
        """
        sends = PendingSends()
        items = [sends.add(self.env(n), durable=True) for n in range(3)]
        for p in items:
            sends.written(p)
        sends.unwritten()
        self.assertEqual([(p.env["id"], p.written) for p in sends],
                         [("s-0", False), ("s-1", False), ("s-2", False)])

    def test_nack(self):
        """
        A NACK fails its SEND with SendRefused carrying code and retry
        hint; a NACK for an unknown id says so.
        """
        sends = PendingSends()
        d = sends.add(self.env(1), durable=True).deferred
        self.assertTrue(sends.nacked({"ack_id": "s-1", "code": "BUSY", "message": "slow",
                                      "retry_after_ms": 50}))
        error = self.failureResultOf(d, SendRefused).value
        self.assertEqual((error.code, error.retry_after_ms), ("BUSY", 50))
        self.assertFalse(sends.nacked({"ack_id": "s-9"}))

    def test_bounded(self):
        """
        Beyond max_pending, add refuses with TooManyPending.
        """
        sends = PendingSends(max_pending=2)
        sends.add(self.env(1), True)
        sends.add(self.env(2), True)
        self.assertRaises(TooManyPending, sends.add, self.env(3), True)
        self.assertRaises(TooManyPending, sends.check_room)

    def test_cancel_forgets(self):
        """
        Cancelling a SEND's Deferred forgets it: it is not written again.
        """
        sends = PendingSends()
        d = sends.add(self.env(1), True).deferred
        d.cancel()
        self.failureResultOf(d)
        self.assertEqual(len(sends), 0)

    def test_fail_all(self):
        """
        Closing fails every waiting SEND with ClientClosed naming it.
        """
        sends = PendingSends()
        d = sends.add(self.env(1), True).deferred
        sends.fail_all(ClientClosed("closed"))
        error = self.failureResultOf(d, ClientClosed).value
        self.assertIn("message s-1 was not confirmed", str(error))
        self.assertEqual(len(sends), 0)
