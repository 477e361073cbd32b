# -*- test-case-name: tests.e2e.test_core -*-
"""
End-to-end tests of the daemon core through the real C{twistd -n relay}
process, over real Unix sockets, with a real SQLite file.
"""

from twisted.internet import defer
from twisted.trial import unittest

from tests.support.daemon import DaemonProcess, connect_agent, send, stored, wait_status


class ConversationTests(unittest.TestCase):
    """
    Two agents converse through the real daemon.
    """

    @defer.inlineCallbacks
    def setUp(self):
        self.daemon = DaemonProcess(self, ["--batch-delay-ms", "20"])
        yield self.daemon.start()

    @defer.inlineCallbacks
    def tearDown(self):
        yield self.daemon.stop()

    @defer.inlineCallbacks
    def test_two_agents_converse(self):
        """
        Alice and Bob exchange messages both ways; each gets a receipt
        after storage, each DELIVER carries the daemon's id and seq counting
        from 1, and every message is on disk after the daemon stops.
        """
        alice = yield connect_agent(self.daemon, "alice")
        bob = yield connect_agent(self.daemon, "bob")
        for i in range(3):
            alice.send(send("bob", "hi %d" % i, requires_ack=True))
        bob.send(send("alice", "hello back", requires_ack=True))
        yield bob.wait_type("DELIVER", 3)
        yield alice.wait_type("DELIVER", 1)
        yield alice.wait_type("ACK", 3)
        yield bob.wait_type("ACK", 1)
        delivered = bob.of_type("DELIVER")
        self.assertEqual([d["payload"]["body"] for d in delivered], ["hi 0", "hi 1", "hi 2"])
        self.assertEqual([d["delivery"]["seq"] for d in delivered], [1, 2, 3])
        self.assertEqual({d["from"] for d in delivered}, {"alice"})
        self.assertEqual(len({d["id"] for d in delivered}), 3)
        self.assertEqual(alice.of_type("DELIVER")[0]["payload"]["body"], "hello back")
        # The agents' ACKs may still be on their way: wait until the daemon
        # has read all four before stopping it.
        yield wait_status(self.daemon, lambda s: s["messages"]["acked"] == 4)
        yield self.daemon.stop()
        rows = stored(self.daemon.db_path, "SELECT sender, recipient, json_extract(payload, '$.body')"
                      " FROM messages ORDER BY seq")
        self.assertEqual([r for r in rows if r[0] == "alice"],
                         [("alice", "bob", "hi 0"), ("alice", "bob", "hi 1"), ("alice", "bob", "hi 2")])
        self.assertEqual([r for r in rows if r[0] == "bob"], [("bob", "alice", "hello back")])
        statuses = stored(self.daemon.db_path, "SELECT status, count(*) FROM deliveries GROUP BY status")
        self.assertEqual(statuses, [("acked", 4)])
