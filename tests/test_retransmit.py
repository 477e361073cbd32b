# -*- test-case-name: tests.test_retransmit -*-
"""
A client that re-sends a SEND it got no receipt for (same sender, id,
recipient and payload) gets a receipt, and the message is stored and
delivered once.
"""

from twisted.internet import defer
from twisted.trial import unittest

from tests.support.flow import Harness, frames_of, until


class RetransmitUnitTests(unittest.TestCase):
    """
    Retransmitted SENDs are recognised per sender, id and content.
    """

    @defer.inlineCallbacks
    def test_same_send_twice(self):
        """
        The same SEND on a second connection of the same agent is receipted
        (after the original is on disk) but neither stored nor delivered
        again.
        """
        h = Harness(self)
        rx, rx_t = h.connect("rx")
        yield until(lambda: h.router.sessions["rx"].live)
        tx, tx_t = h.connect("tx")
        h.send(tx, "rx", "once", requires_ack=True)
        tx.transport.loseConnection()
        tx.connectionLost(None)
        tx2, tx2_t = h.connect("tx")
        frames_of(tx2_t)
        h.send(tx2, "rx", "once", requires_ack=True)
        yield h.flush()
        receipts = [f for f in frames_of(tx2_t) if f["type"] == "ACK"]
        self.assertEqual([r["payload"]["ack_id"] for r in receipts], ["s-once"])
        delivered = [f for f in frames_of(rx_t) if f["type"] == "DELIVER"]
        self.assertEqual(len(delivered), 1)
        self.assertEqual(h.router.counters["accepted"], 1)
        self.assertEqual(h.router.counters["retransmits"], 1)
        n = yield h.query(h.store.count("SELECT count(*) FROM messages"))
        self.assertEqual(n, 1)

    def test_reused_id_with_other_content_is_a_new_message(self):
        """
        An id reused for a different message (another body or recipient)
        is not mistaken for a retransmission: nothing is dropped.
        """
        h = Harness(self)
        tx, tx_t = h.connect("tx")
        env = {"v": 1, "type": "SEND", "id": "same", "to": "rx",
               "payload": {"kind": "message", "body": "one"}}
        from relay.frames import frame
        tx.dataReceived(frame(env))
        env["payload"]["body"] = "two"
        tx.dataReceived(frame(env))
        env["to"] = "other"
        tx.dataReceived(frame(env))
        self.assertEqual(h.router.counters["accepted"], 3)
        self.assertEqual(h.router.counters["retransmits"], 0)

    def test_other_sender_same_id(self):
        """
        Ids are per sender: two agents may use the same id.
        """
        h = Harness(self)
        a, _ = h.connect("a")
        b, _ = h.connect("b")
        h.send(a, "rx", "x")
        h.send(b, "rx", "x")
        self.assertEqual(h.router.counters["accepted"], 2)

    def test_window_zero_turns_it_off(self):
        """
        With --dedupe-window 0 every SEND is a new message.
        """
        h = Harness(self, dedupe_window=0)
        a, _ = h.connect("a")
        h.send(a, "rx", "x")
        h.send(a, "rx", "x")
        self.assertEqual(h.router.counters["accepted"], 2)
