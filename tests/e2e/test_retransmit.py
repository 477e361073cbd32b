# -*- test-case-name: tests.e2e.test_retransmit -*-
"""
Through the real daemon: a client that re-sends a SEND it got no receipt for
after a crash gets a receipt, and the message is stored and delivered once
(the unit tests of the same rule are in C{tests/test_retransmit.py}).
"""

import sqlite3

from twisted.internet import defer
from twisted.trial import unittest

from tests.support.daemon import DaemonProcess, connect_agent, send, wait_status


def stored(db_path):
    conn = sqlite3.connect(db_path)
    try:
        return conn.execute("SELECT send_id, json_extract(payload, '$.body') FROM messages"
                            " ORDER BY seq").fetchall()
    finally:
        conn.close()


class RetransmitEndToEndTests(unittest.TestCase):
    """
    A SEND re-sent after a SIGKILL is receipted and stored and delivered once.
    """

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
