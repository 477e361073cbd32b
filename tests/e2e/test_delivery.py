# -*- test-case-name: tests.e2e.test_delivery -*-
"""
End-to-end delivery tests through the real C{twistd -n relay} process over
real Unix sockets and a real SQLite file: broadcast, topics, store and
forward across a restart, no receipted message lost to C{kill -9},
redelivery on reconnect and after the ack timeout, heartbeat, duplicate
names.
"""

from twisted.internet import defer, reactor
from twisted.trial import unittest

from tests.support.daemon import DaemonProcess, connect_agent, send, stored


def bodies(frames):
    return [f["payload"]["body"] for f in frames]


@defer.inlineCallbacks
def barrier(agent, nonce):
    """
    PING the daemon and wait for its PONG: every frame the daemon wrote to
    this agent before handling the PING has arrived by then.
    """
    agent.send({"v": 1, "type": "PING", "payload": {"nonce": nonce}})
    yield agent.wait_for(lambda a: any(f.get("type") == "PONG"
                                       and f["payload"].get("nonce") == nonce for f in a.frames))


class _DaemonTestCase(unittest.TestCase):
    args = ["--batch-delay-ms", "10"]

    @defer.inlineCallbacks
    def setUp(self):
        self.daemon = DaemonProcess(self, self.args)
        yield self.daemon.start()

    def tearDown(self):
        return self.daemon.stop()


class BroadcastTests(_DaemonTestCase):
    """
    Broadcasts and topics through the real daemon.
    """

    @defer.inlineCallbacks
    def test_broadcast_reaches_all_but_sender(self):
        """
        C{to: "*"} reaches every connected agent but the sender, with one
        id for all and C{originalTo: "*"}.
        """
        agents = {}
        for name in ("alice", "bob", "carol", "dave"):
            agents[name] = yield connect_agent(self.daemon, name)
        agents["alice"].send(send("*", "to everyone", requires_ack=True))
        yield agents["alice"].wait_type("ACK")
        got = []
        for name in ("bob", "carol", "dave"):
            frames = yield agents[name].wait_type("DELIVER")
            [d] = [f for f in frames if f["type"] == "DELIVER"]
            self.assertEqual((d["from"], d["to"], d["payload"]["body"]),
                             ("alice", name, "to everyone"))
            self.assertEqual(d["delivery"]["originalTo"], "*")
            got.append(d["id"])
        self.assertEqual(len(set(got)), 1)
        yield barrier(agents["alice"], "b1")
        self.assertEqual(agents["alice"].of_type("DELIVER"), [])

    @defer.inlineCallbacks
    def test_topics(self):
        """
        A topic broadcast reaches the topic's subscribers but the sender,
        not the other agents; after UNSUBSCRIBE it no longer reaches that
        agent.
        """
        alice = yield connect_agent(self.daemon, "alice")
        bob = yield connect_agent(self.daemon, "bob")
        carol = yield connect_agent(self.daemon, "carol")
        for agent in (alice, bob):
            agent.send({"v": 1, "type": "SUBSCRIBE", "topic": "deploys"})
            yield barrier(agent, "sub")
        alice.send(send("*", "v1 is out", topic="deploys", requires_ack=True))
        yield alice.wait_type("ACK")
        frames = yield bob.wait_type("DELIVER")
        [d] = [f for f in frames if f["type"] == "DELIVER"]
        self.assertEqual(d["topic"], "deploys")
        self.assertEqual(d["delivery"]["seq"], 1)
        yield barrier(carol, "c")
        yield barrier(alice, "a")
        self.assertEqual(carol.of_type("DELIVER") + alice.of_type("DELIVER"), [])
        bob.send({"v": 1, "type": "UNSUBSCRIBE", "topic": "deploys"})
        yield barrier(bob, "unsub")
        carol.send({"v": 1, "type": "SUBSCRIBE", "topic": "deploys"})
        yield barrier(carol, "sub")
        alice.send(send("*", "v2 is out", topic="deploys", requires_ack=True))
        yield carol.wait_type("DELIVER")
        yield barrier(bob, "b2")
        self.assertEqual(bodies(bob.of_type("DELIVER")), ["v1 is out"])
        self.assertEqual(bodies(carol.of_type("DELIVER")), ["v2 is out"])


class DurabilityTests(_DaemonTestCase):
    """
    Store and forward across restarts and SIGKILL, and redelivery of what was not ACKed.
    """

    args = ["--batch-delay-ms", "10", "--no-rate-limit"]

    @defer.inlineCallbacks
    def test_store_and_forward_across_restart(self):
        """
        A message to an agent that is offline survives a daemon restart and
        is delivered when the agent connects, with its original id.
        """
        alice = yield connect_agent(self.daemon, "alice")
        alice.send(send("carol", "while you were out", requires_ack=True))
        yield alice.wait_type("ACK")
        yield self.daemon.stop()
        self.assertIn("flushed and closed", self.daemon.output())
        [(mid,)] = stored(self.daemon.db_path, "SELECT id FROM messages")
        yield self.daemon.start()
        carol = yield connect_agent(self.daemon, "carol")
        frames = yield carol.wait_type("DELIVER")
        [d] = [f for f in frames if f["type"] == "DELIVER"]
        self.assertEqual(d["id"], mid)
        self.assertEqual((d["from"], d["payload"]["body"]), ("alice", "while you were out"))
        self.assertEqual(d["delivery"]["seq"], 1)

    @defer.inlineCallbacks
    def test_kill_9_loses_no_receipted_message(self):
        """
        After 2000 receipts, a SIGKILL loses none of those messages: they
        are all in the SQLite file, and after a restart the recipient gets
        every one, in order, seq 1..2000.
        """
        n = 2000
        alice = yield connect_agent(self.daemon, "alice")
        sent = [send("bob", "m%d" % i, requires_ack=True) for i in range(n)]
        for env in sent:
            alice.send(env)
        yield alice.wait_type("ACK", n, timeout=60)
        self.assertEqual({a["payload"]["ack_id"] for a in alice.of_type("ACK")},
                         {env["id"] for env in sent})
        yield self.daemon.kill()
        self.assertEqual(self.daemon.exit_signal, 9)
        rows = stored(self.daemon.db_path, "SELECT send_id FROM messages ORDER BY seq")
        self.assertEqual([r[0] for r in rows], [env["id"] for env in sent])
        self.assertEqual(stored(self.daemon.db_path,
                                "SELECT count(*) FROM deliveries WHERE recipient = 'bob'"
                                " AND status = 'pending'"), [(n,)])
        yield self.daemon.start()
        bob = yield connect_agent(self.daemon, "bob")
        yield bob.wait_type("DELIVER", n, timeout=60)
        delivered = bob.of_type("DELIVER")
        self.assertEqual(bodies(delivered), ["m%d" % i for i in range(n)])
        self.assertEqual([d["delivery"]["seq"] for d in delivered], list(range(1, n + 1)))

    @defer.inlineCallbacks
    def test_unacked_redelivered_on_reconnect(self):
        """
        Deliveries an agent did not ACK before its connection dropped are
        sent again, in order and with the same ids and seqs, when it
        reconnects; the ones it ACKed are not.
        """
        alice = yield connect_agent(self.daemon, "alice")
        bob = yield connect_agent(self.daemon, "bob")
        bob.auto_ack = False
        for i in range(6):
            alice.send(send("bob", "m%d" % i, requires_ack=True))
        yield alice.wait_type("ACK", 6)
        yield bob.wait_type("DELIVER", 6)
        first = bob.of_type("DELIVER")
        for d in first[:2]:
            bob.send({"v": 1, "type": "ACK", "payload": {"ack_id": d["id"],
                                                         "seq": d["delivery"]["seq"]}})
        yield barrier(bob, "acked")
        bob.transport.loseConnection()
        yield bob.closed
        bob2 = yield connect_agent(self.daemon, "bob")
        yield bob2.wait_type("DELIVER", 4)
        again = bob2.of_type("DELIVER")
        self.assertEqual([(d["id"], d["delivery"]["seq"], d["payload"]["body"]) for d in again],
                         [(d["id"], d["delivery"]["seq"], d["payload"]["body"])
                          for d in first[2:]])
        yield barrier(bob2, "done")
        self.assertEqual(len(bob2.of_type("DELIVER")), 4)


class TimerTests(_DaemonTestCase):
    """
    The ACK timeout and heartbeat timers of the real daemon.
    """

    args = ["--batch-delay-ms", "10", "--ack-timeout-ms", "200", "--heartbeat-ms", "100"]

    @defer.inlineCallbacks
    def test_ack_timeout_redelivery(self):
        """
        A DELIVER not ACKed within --ack-timeout-ms is sent again on the
        same connection with the same id and seq; once ACKed it stops.
        """
        alice = yield connect_agent(self.daemon, "alice")
        bob = yield connect_agent(self.daemon, "bob")
        bob.auto_ack = False
        alice.send(send("bob", "ack me"))
        yield bob.wait_type("DELIVER", 2, timeout=10)
        first, second = bob.of_type("DELIVER")[:2]
        self.assertEqual(first, second)
        bob.send({"v": 1, "type": "ACK", "payload": {"ack_id": first["id"], "seq": 1}})
        yield barrier(bob, "acked")
        count = len(bob.of_type("DELIVER"))
        # Several ack timeouts later nothing more has come (PINGs prove the
        # connection has been read and written meanwhile).
        yield bob.wait_type("PING", len(bob.of_type("PING")) + 12)
        self.assertEqual(len(bob.of_type("DELIVER")), count)

    @defer.inlineCallbacks
    def test_heartbeat_closes_silent_agent(self):
        """
        The daemon PINGs every --heartbeat-ms; an agent that answers stays
        connected, one that never answers is closed after six missed
        heartbeats (not sooner).
        """
        talker = yield connect_agent(self.daemon, "talker")
        started = reactor.seconds()
        mute = yield connect_agent(self.daemon)
        mute.auto_pong = False
        yield mute.closed
        self.assertGreaterEqual(reactor.seconds() - started, 6 * 0.1)
        self.assertGreaterEqual(len(mute.of_type("PING")), 5)
        self.assertFalse(talker.closed.called)
        talker.send(send("talker", "still here", requires_ack=True))
        yield talker.wait_type("ACK")


class DuplicateNameTests(_DaemonTestCase):
    """
    A second connection under a name in use.
    """

    @defer.inlineCallbacks
    def test_newer_connection_wins(self):
        """
        A second connection with a name in use replaces the first, which
        gets a fatal ERROR and is closed; messages then reach the new one.
        """
        alice = yield connect_agent(self.daemon, "alice")
        old = yield connect_agent(self.daemon, "bob")
        new = yield connect_agent(self.daemon, "bob")
        yield old.closed
        [error] = old.of_type("ERROR")
        self.assertIs(error["payload"]["fatal"], True)
        alice.send(send("bob", "which bob?", requires_ack=True))
        yield new.wait_type("DELIVER")
        self.assertEqual(old.of_type("DELIVER"), [])


class CrashIdTests(_DaemonTestCase):
    """
    Message ids are never given twice across a crash.
    """

    # Nothing commits on its own: a delivered message stays uncommitted.
    args = ["--batch-delay-ms", "60000", "--batch-size", "100000"]

    @defer.inlineCallbacks
    def test_no_id_given_twice_across_a_crash(self):
        """
        A message delivered live but not yet committed when the daemon is
        killed is lost with its sender's receipt (it never got one), but
        its id is never given to another message after the restart:
        clients drop a DELIVER whose id they have seen, so a reused id would
        silently lose the new, receipted message.
        """
        alice = yield connect_agent(self.daemon, "alice")
        bob = yield connect_agent(self.daemon, "bob")
        # A receipted message first: once bob has it, he is caught up and
        # gets the next one live, before any commit.
        alice.send(send("bob", "warm-up", requires_ack=True))
        yield alice.wait_type("ACK")
        yield bob.wait_type("DELIVER")
        alice.send(send("bob", "A, not receipted"))
        yield bob.wait_type("DELIVER", 2)
        seen = {f["id"] for f in bob.of_type("DELIVER")}
        yield self.daemon.kill()
        yield self.daemon.start()
        alice = yield connect_agent(self.daemon, "alice")
        bob = yield connect_agent(self.daemon, "bob")
        alice.send(send("bob", "B, receipted", requires_ack=True))
        yield alice.wait_type("ACK")
        yield bob.wait_for(lambda a: any(f["payload"]["body"] == "B, receipted"
                                         for f in a.of_type("DELIVER")))
        [second] = [f for f in bob.of_type("DELIVER") if f["payload"]["body"] == "B, receipted"]
        self.assertNotIn(second["id"], seen)


class PausedHeartbeatTests(_DaemonTestCase):
    """
    The heartbeat does not close an agent the daemon itself stopped reading.
    """

    # 2 messages/s after a burst of 1: the daemon stops reading a sender of
    # three for about a second, more than six 50 ms heartbeats.
    args = ["--batch-delay-ms", "10", "--heartbeat-ms", "50", "--rate-limit", "2",
            "--rate-burst", "1", "--rate-limit-policy", "throttle"]

    @defer.inlineCallbacks
    def test_not_closed_while_throttled(self):
        """
        While the daemon itself is not reading an agent's socket (rate
        throttling) the agent's PONGs cannot arrive, and the heartbeat does
        not close it: all its messages are accepted and receipted.
        """
        alice = yield connect_agent(self.daemon, "alice")
        started = reactor.seconds()
        alice.send_many([send("alice", "m%d" % i, requires_ack=True) for i in range(3)])
        yield alice.wait_type("ACK", 3, timeout=10)
        self.assertGreater(reactor.seconds() - started, 6 * 0.05)
        self.assertFalse(alice.closed.called)
        self.assertGreaterEqual(len(alice.of_type("BUSY")), 1)
