# -*- test-case-name: tests.test_client_inbox -*-
"""
Tests for L{relay.client.inbox.Inbox}: redeliveries, the callback or the
queue, ACKs only once a message is handled, and the queue's flow control.
"""

from twisted.internet import defer
from twisted.trial import unittest

from relay.client.errors import ClientClosed
from relay.client.inbox import Inbox
from relay.client.message import Message


def message(message_id, seq=1):
    return Message({"type": "DELIVER", "id": message_id, "from": "bob", "to": "alice",
                    "payload": {"kind": "message", "body": "hi"},
                    "delivery": {"seq": seq, "session_id": "s"}})


class InboxTests(unittest.TestCase):
    """
    One L{Inbox} recording what it ACKs, pauses and resumes.
    """

    def make(self, **kwargs):
        self.acked, self.flow = [], []
        return Inbox(lambda m: self.acked.append(m.id), lambda: self.flow.append("pause"),
                     lambda: self.flow.append("resume"), name="alice", **kwargs)

    def test_queue_acks_when_handed_out(self):
        """
        A queued message is ACKed when next_message hands it out, not before.
        """
        inbox = self.make()
        inbox.deliver(message("m-1"))
        self.assertEqual((len(inbox), self.acked), (1, []))
        self.assertEqual(self.successResultOf(inbox.next_message()).id, "m-1")
        self.assertEqual(self.acked, ["m-1"])

    def test_waiting_getter(self):
        """
        A next_message waiting gets the next delivery at once (ACKed).
        """
        inbox = self.make()
        d = inbox.next_message()
        self.assertNoResult(d)
        inbox.deliver(message("m-1"))
        self.assertEqual(self.successResultOf(d).id, "m-1")
        self.assertEqual(self.acked, ["m-1"])

    def test_redelivery(self):
        """
        A redelivery is not passed on; once handled it is ACKed again, while
        still queued it is not.
        """
        inbox = self.make()
        inbox.deliver(message("m-1"))
        inbox.deliver(message("m-1"))
        self.assertEqual((len(inbox), inbox.duplicates, self.acked), (1, 1, []))
        inbox.next_message()
        inbox.deliver(message("m-1"))
        self.assertEqual((len(inbox), inbox.duplicates, self.acked), (0, 2, ["m-1", "m-1"]))

    def test_callback_failure_not_acked(self):
        """
        A callback that fails leaves its message un-ACKed and forgotten, so
        the daemon's redelivery is handled again; one that succeeds is ACKed
        when its Deferred fires.
        """
        pending = defer.Deferred()
        calls = []

        def on_message(m):
            calls.append(m.id)
            if m.id == "bad":
                raise RuntimeError("boom")
            return pending
        inbox = self.make(on_message=on_message)
        inbox.deliver(message("bad"))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        inbox.deliver(message("bad"))
        self.flushLoggedErrors(RuntimeError)
        self.assertEqual((calls, self.acked), (["bad", "bad"], []))
        inbox.deliver(message("ok"))
        self.assertEqual(self.acked, [])
        pending.callback(None)
        self.assertEqual(self.acked, ["ok"])

    def test_high_mark_pauses(self):
        """
        At queue_high waiting messages the inbox pauses once, and resumes
        once drained to half.
        """
        inbox = self.make(queue_high=4)
        for i in range(6):
            inbox.deliver(message("m-%d" % (i,)))
        self.assertEqual(self.flow, ["pause"])
        self.assertTrue(inbox.paused)
        for _ in range(3):
            inbox.next_message()
        self.assertEqual(self.flow, ["pause"])
        inbox.next_message()
        self.assertEqual(self.flow, ["pause", "resume"])
        self.assertFalse(inbox.paused)

    def test_dedupe_bounded(self):
        """
        Only the newest dedupe_size ids are remembered.
        """
        inbox = self.make(dedupe_size=2)
        for i in range(3):
            inbox.deliver(message("m-%d" % (i,)))
        inbox.deliver(message("m-0"))
        self.assertEqual((len(inbox), inbox.duplicates), (4, 0))

    def test_without_id_ignored(self):
        """
        A DELIVER without a string id is dropped with a warning (nothing to
        ACK it by).
        """
        inbox = self.make()
        inbox.deliver(message(None))
        self.assertEqual(len(inbox), 0)

    def test_closed(self):
        """
        Once closed, an empty inbox fails next_message; waiting ones fail
        with ClientClosed.
        """
        inbox = self.make()
        waiting = inbox.next_message()
        inbox.fail_waiting(ClientClosed("gone"))
        self.failureResultOf(waiting, ClientClosed)
        self.failureResultOf(inbox.next_message(ClientClosed("gone")), ClientClosed)
