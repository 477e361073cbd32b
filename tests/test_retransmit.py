# -*- test-case-name: tests.test_retransmit -*-
"""
A client that re-sends a SEND it got no receipt for (same sender, id,
recipient and payload) gets a receipt, and the message is stored and
delivered once.
"""

import sqlite3

from twisted.internet import defer
from twisted.trial import unittest

from tests.support.daemon import DaemonProcess, connect_agent, send, wait_status
from tests.test_flow import Harness, frames_of, until


def stored(db_path):
    conn = sqlite3.connect(db_path)
    try:
        return conn.execute("SELECT send_id, json_extract(payload, '$.body') FROM messages"
                            " ORDER BY seq").fetchall()
    finally:
        conn.close()


class RetransmitUnitTests(unittest.TestCase):

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
        yield h.store.batcher.flush()
        receipts = [f for f in frames_of(tx2_t) if f["type"] == "ACK"]
        self.assertEqual([r["payload"]["ack_id"] for r in receipts], ["s-once"])
        delivered = [f for f in frames_of(rx_t) if f["type"] == "DELIVER"]
        self.assertEqual(len(delivered), 1)
        self.assertEqual(h.router.counters["accepted"], 1)
        self.assertEqual(h.router.counters["retransmits"], 1)
        n = yield h.store.count("SELECT count(*) FROM messages")
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


class RetransmitEndToEndTests(unittest.TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def test_resend_after_kill(self):
        """
        Through the real daemon: an agent's SEND is receipted, the daemon is
        killed with SIGKILL and restarted, the agent sends the same SEND
        again (as a client does when it cannot know whether it arrived): it
        gets a receipt, the store holds the message once and the recipient
        gets it once.
        """
        daemon = DaemonProcess(self, ["--no-rate-limit"])
        yield daemon.start()
        alice = yield connect_agent(daemon, "alice")
        env = send("bob", "exactly once", requires_ack=True)
        alice.send(env)
        yield alice.wait_type("ACK")
        yield daemon.kill()
        yield daemon.start()
        alice = yield connect_agent(daemon, "alice")
        alice.send(env)
        yield alice.wait_type("ACK")
        self.assertEqual(alice.of_type("ACK")[0]["payload"]["ack_id"], env["id"])
        bob = yield connect_agent(daemon, "bob")
        yield bob.wait_type("DELIVER")
        yield wait_status(daemon, lambda s: s["messages"]["acked"] == 1)
        alice.send(send("bob", "after"))
        yield bob.wait_type("DELIVER", 2)
        self.assertEqual([f["payload"]["body"] for f in bob.of_type("DELIVER")],
                         ["exactly once", "after"])
        yield daemon.stop()
        self.assertEqual([body for _, body in stored(daemon.db_path)], ["exactly once", "after"])
