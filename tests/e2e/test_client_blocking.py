# -*- test-case-name: tests.e2e.test_client_blocking -*-
"""
relay.client.blocking against the real daemon: the blocking calls run in a
thread while trial's reactor (the one the facade hands work to) runs.
"""

import os
import sys
import tempfile

from twisted.internet import defer, reactor, threads
from twisted.trial import unittest

from relay.client import ConnectFailed, SendRefused
from relay.client.blocking import BlockingClient
from tests.support.daemon import (
    REPO, DaemonProcess, connect_agent, send, send_receipted, wait_status)
from tests.support.process import ProcessOutput

# A script that receives one message as bob, prints its body, and exits
# without closing (os._exit) when its stdin closes.
RECEIVE_ONE = """
import os, sys
from relay.client.blocking import BlockingClient
bob = BlockingClient("bob", endpoint=sys.argv[1])
message = bob.receive(timeout=15)
print(message.body, flush=True)
sys.stdin.read()
os._exit(0)
"""


class _Child(ProcessOutput):
    """The child's output; C{line} fires with its first line."""

    def __init__(self):
        ProcessOutput.__init__(self)
        self.line = defer.Deferred()

    def line_received(self):
        if self.lines and not self.line.called:
            self.line.callback(self.lines[0])


class BlockingClientTests(unittest.TestCase):
    """The blocking facade: send with receipt, receive, status, errors."""

    @defer.inlineCallbacks
    def test_conversation(self):
        """Two blocking clients exchange a message; send returns the SEND id
        after the receipt, receive returns the Message or None on timeout."""
        daemon = DaemonProcess(self)
        yield daemon.start()

        def script():
            with BlockingClient("bob", endpoint=daemon.endpoint) as bob, \
                    BlockingClient("alice", endpoint=daemon.endpoint) as alice:
                send_id = alice.send("bob", "hi", data={"x": 1})
                message = bob.receive(timeout=10)
                nothing = bob.receive(timeout=0.05)
                names = sorted(a["name"] for a in alice.status()["agents"])
                return send_id, message, nothing, names
        send_id, message, nothing, names = yield threads.deferToThread(script)
        self.assertTrue(send_id)
        self.assertEqual((message.sender, message.body, message.data), ("alice", "hi", {"x": 1}))
        self.assertIsNone(nothing)
        self.assertEqual(names, ["alice", "bob"])
        yield daemon.stop()

    @defer.inlineCallbacks
    def test_errors_raised_in_caller(self):
        """A missing daemon raises ConnectFailed in the calling thread; a NACK
        raises SendRefused."""
        missing = os.path.join(tempfile.mkdtemp(prefix="relay-b-"), "none.sock")
        failure = yield threads.deferToThread(
            lambda: self.assertRaises(ConnectFailed, BlockingClient, "alice",
                                      endpoint="unix:" + missing))
        self.assertEqual(failure.reason, "missing")
        daemon = DaemonProcess(self, extra_args=[
            "--rate-limit-policy", "reject", "--rate-limit", "0.01", "--rate-burst", "1"])
        yield daemon.start()

        def script():
            with BlockingClient("alice", endpoint=daemon.endpoint) as alice:
                alice.send("bob", "one")
                return self.assertRaises(SendRefused, alice.send, "bob", "two")
        error = yield threads.deferToThread(script)
        self.assertEqual(error.code, "BUSY")
        yield daemon.stop()


class BlockingDeliveryTests(unittest.TestCase):
    """
    BlockingClient ACKs a delivery when receive() returns it, and bounds
    what waits for receive().
    """

    @defer.inlineCallbacks
    def test_unreceived_delivered_again(self):
        """
        A process that received one of five messages and exits (without
        closing) leaves the other four unACKed: the daemon holds them as in
        flight, and the next connection of bob gets exactly those four.
        """
        daemon = DaemonProcess(self, ["--batch-delay-ms", "10"])
        yield daemon.start()
        self.addCleanup(daemon.stop)
        yield send_receipted(daemon, "alice", [send("bob", "m%d" % i, requires_ack=True)
                                                for i in range(5)])
        env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
        child = _Child()
        process = reactor.spawnProcess(
            child, sys.executable, [sys.executable, "-c", RECEIVE_ONE, daemon.endpoint],
            env=env, path=REPO)
        self.addCleanup(lambda: child.ended.called or process.signalProcess("KILL"))
        first = yield child.line.addTimeout(30, reactor)
        self.assertEqual(first, "m0")

        def bob_holds_four(status):
            bob = [a for a in status["agents"] if a["name"] == "bob"]
            return bool(bob) and bob[0]["inflight"] == 4
        # All five were written to the child's socket; only m0 was ACKed.
        yield wait_status(daemon, bob_holds_four)
        process.closeStdin()
        code = yield child.ended
        self.assertEqual(code, 0)
        bob = yield connect_agent(daemon, "bob")
        yield bob.wait_type("DELIVER", 4)
        yield wait_status(daemon, lambda s: any(a["name"] == "bob" and a["inflight"] == 0
                                                for a in s["agents"]))
        self.assertEqual([d["payload"]["body"] for d in bob.of_type("DELIVER")],
                         ["m1", "m2", "m3", "m4"])

    @defer.inlineCallbacks
    def test_queue_bounded(self):
        """
        With max_queue=5 and 300 messages of 8 KB sent to a bob that does
        not call receive(), bob's process holds at most max_queue plus one
        socket read of them (it stops reading), the daemon holds the rest,
        and then receive() gets all 300 in order, once each.
        """
        daemon = DaemonProcess(self, ["--batch-delay-ms", "10"])
        yield daemon.start()
        self.addCleanup(daemon.stop)
        bob = yield threads.deferToThread(BlockingClient, "bob", endpoint=daemon.endpoint,
                                          max_queue=5)
        self.addCleanup(threads.deferToThread, bob.close)
        pad = "x" * 8192
        yield send_receipted(daemon, "alice", [send("bob", "%d %s" % (i, pad), requires_ack=True)
                                                for i in range(300)])

        def held_by_daemon(status):
            [b] = [a for a in status["agents"] if a["name"] == "bob"]
            return b["queue_depth"] > 0 or b["backpressured"]
        yield wait_status(daemon, held_by_daemon)
        # One read is at most 64 KiB: 8 more frames.
        self.assertLessEqual(bob._client.queued, 5 + 8)

        def receive_all():
            return [bob.receive(timeout=15).body.split()[0] for _ in range(300)]
        got = yield threads.deferToThread(receive_all)
        self.assertEqual(got, [str(i) for i in range(300)])
        nothing = yield threads.deferToThread(bob.receive, 0.2)
        self.assertIsNone(nothing)
