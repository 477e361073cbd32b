# -*- test-case-name: tests.test_e2e_flow -*-
"""
Flow control end to end, through the real daemon process: stalled
receivers, broadcast fan-out to a stalled member, rate limits.  Nothing
accepted may be lost.
"""

import sqlite3

from twisted.internet import defer, reactor, task
from twisted.trial import unittest

from tests.daemon_support import DaemonProcess, connect_agent, daemon_status, send


def rss_kib(pid):
    with open("/proc/%d/status" % (pid,)) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS for pid %d" % (pid,))


def pause(seconds):
    return task.deferLater(reactor, seconds, lambda: None)


def bodies(agent):
    return [f["payload"]["body"] for f in agent.frames if f.get("type") == "DELIVER"]


class StalledReceiverTests(unittest.TestCase):
    timeout = 240

    @defer.inlineCallbacks
    def test_stalled_receiver_gets_everything_in_order(self):
        """
        A receiver stops reading while a sender pushes 50,000 messages open
        loop: the daemon stops reading the sender (BUSY), its memory stays
        bounded (RSS growth under 64 MB), and once the receiver reads again
        it gets all 50,000, in order, with no duplicates.
        """
        daemon = DaemonProcess(self, ["--no-rate-limit"])
        yield daemon.start()
        receiver = yield connect_agent(daemon, "rx")
        sender = yield connect_agent(daemon, "tx")
        yield pause(0.2)
        base_rss = rss_kib(daemon.pid)
        receiver.transport.pauseProducing()
        n = 50000
        payload = "x" * 150
        sender.send_many(send("rx", "%06d %s" % (i, payload)) for i in range(n))
        yield sender.wait_type("BUSY", 1, timeout=60)
        peak = base_rss
        for _ in range(10):
            yield pause(0.1)
            peak = max(peak, rss_kib(daemon.pid))
        self.assertLess(receiver.counts.get("DELIVER", 0), n)
        status = yield daemon_status(daemon)
        agents = {a["name"]: a for a in status["agents"]}
        self.assertTrue(agents["rx"]["backpressured"])
        self.assertEqual(agents["tx"]["paused"], ["('queue', 'rx')"])
        receiver.transport.resumeProducing()
        yield receiver.wait_type("DELIVER", n, timeout=180)
        got = bodies(receiver)
        self.assertEqual(len(got), n)
        self.assertEqual([int(b.split()[0]) for b in got], list(range(n)))
        ids = [f["id"] for f in receiver.of_type("DELIVER")]
        self.assertEqual(len(set(ids)), n)
        growth_mb = (peak - base_rss) / 1024.0
        self.assertLess(growth_mb, 64.0, "daemon RSS grew %.1f MB during the stall" % growth_mb)
        yield daemon.stop()


class BroadcastStallTests(unittest.TestCase):
    timeout = 240

    @defer.inlineCallbacks
    def test_broadcast_with_one_stalled_member(self):
        """
        One agent broadcasts to 20; one of them has stopped reading.  The
        other 19 get every message while it is stalled (the broadcast is
        not held up by it: its queue overflows to the store), and the
        stalled one gets every message, in order, once it reads again.
        """
        daemon = DaemonProcess(self, ["--no-rate-limit", "--queue-high", "300",
                                      "--queue-low", "100", "--queue-max", "400"])
        yield daemon.start()
        members = []
        for i in range(20):
            members.append((yield connect_agent(daemon, "m%02d" % i)))
        sender = yield connect_agent(daemon, "caster")
        stalled = members[0]
        stalled.transport.pauseProducing()
        n = 3000
        sender.send_many(send("*", "%05d" % i) for i in range(n))
        for m in members[1:]:
            yield m.wait_type("DELIVER", n, timeout=120)
            self.assertEqual(bodies(m), ["%05d" % i for i in range(n)])
        self.assertLess(stalled.counts.get("DELIVER", 0), n)
        status = yield daemon_status(daemon)
        m00 = [a for a in status["agents"] if a["name"] == "m00"][0]
        # Its queue stopped at --queue-max; the rest waits in the store.
        self.assertFalse(m00["live"])
        self.assertLessEqual(m00["queue_depth"], 400)
        stalled.transport.resumeProducing()
        yield stalled.wait_type("DELIVER", n, timeout=120)
        got = bodies(stalled)
        self.assertEqual(got, ["%05d" % i for i in range(n)])
        self.assertEqual(len({f["id"] for f in stalled.of_type("DELIVER")}), n)
        self.assertEqual({f["delivery"]["originalTo"] for f in stalled.of_type("DELIVER")}, {"*"})
        yield daemon.stop()


class RateLimitTests(unittest.TestCase):
    timeout = 120

    @defer.inlineCallbacks
    def test_throttle_slows_sender_and_loses_nothing(self):
        """
        With the throttle policy, an agent sending far above its rate limit
        gets one BUSY frame, is slowed down to the limit (the daemon stops
        reading its socket), and every message is delivered in order.
        """
        rate, burst, n = 250, 25, 750
        daemon = DaemonProcess(self, ["--rate-limit", str(rate), "--rate-burst", str(burst)])
        yield daemon.start()
        receiver = yield connect_agent(daemon, "rx")
        sender = yield connect_agent(daemon, "tx")
        started = reactor.seconds()
        sender.send_many(send("rx", str(i)) for i in range(n))
        yield receiver.wait_type("DELIVER", n, timeout=60)
        elapsed = reactor.seconds() - started
        self.assertEqual(bodies(receiver), [str(i) for i in range(n)])
        self.assertGreaterEqual(sender.counts.get("BUSY", 0), 1)
        busy = sender.of_type("BUSY")[0]["payload"]
        self.assertGreater(busy["retry_after_ms"], 0)
        # Slowed to the limit: n messages with a burst of `burst` need at
        # least (n - burst) / rate seconds.
        self.assertGreaterEqual(elapsed, (n - burst) / float(rate) * 0.95)
        self.assertEqual(sender.counts.get("NACK", 0), 0)
        yield daemon.stop()

    @defer.inlineCallbacks
    def test_reject_policy_nacks_what_it_does_not_store(self):
        """
        With the reject policy, every SEND over the budget gets NACK BUSY
        with retry_after_ms and is not stored; every other one is delivered
        and stored: delivered + NACKed = sent.
        """
        daemon = DaemonProcess(self, ["--rate-limit", "100", "--rate-burst", "50",
                                      "--rate-limit-policy", "reject"])
        yield daemon.start()
        receiver = yield connect_agent(daemon, "rx")
        sender = yield connect_agent(daemon, "tx")
        n = 600
        envs = [send("rx", str(i), requires_ack=True) for i in range(n)]
        sender.send_many(envs)
        yield sender.wait_for(lambda a: a.counts.get("ACK", 0) + a.counts.get("NACK", 0) >= n,
                              timeout=60)
        nacks = sender.of_type("NACK")
        self.assertGreater(len(nacks), 0)
        self.assertEqual({f["payload"]["code"] for f in nacks}, {"BUSY"})
        self.assertTrue(all(f["payload"]["retry_after_ms"] > 0 for f in nacks))
        receipts = {f["payload"]["ack_id"] for f in sender.of_type("ACK")}
        refused = {f["payload"]["ack_id"] for f in nacks}
        self.assertEqual(receipts | refused, {e["id"] for e in envs})
        self.assertEqual(receipts & refused, set())
        yield receiver.wait_type("DELIVER", len(receipts), timeout=30)
        yield daemon.stop()
        conn = sqlite3.connect(daemon.db_path)
        stored = {r[0] for r in conn.execute("SELECT send_id FROM messages")}
        conn.close()
        self.assertEqual(stored, receipts)
        self.assertEqual(len(bodies(receiver)), len(receipts))
