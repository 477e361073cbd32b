# -*- test-case-name: tests.e2e.test_client -*-
"""
relay.client against the real daemon process (``twistd -n relay``): receipts,
NACKs, de-duplication of real redeliveries, heartbeats, STATUS, and reconnecting
across a daemon restart with sends made while it was down.
"""

import os
import sqlite3
import tempfile

from twisted.internet import defer, reactor, task
from twisted.trial import unittest

from relay.client import (
    ClientClosed, ConnectFailed, SendRefused, connect, fetch_status)
from tests.support.daemon import DaemonProcess
from tests.support.poll import poll_until


def elapse(seconds):
    """
    Let C{seconds} of real time pass on the reactor.  Used only where a test
    must show that something does NOT happen within a window (no further
    duplicates, no reconnect, a connection kept through many heartbeats);
    waiting for something to happen uses L{wait_for} instead.
    """
    return task.deferLater(reactor, seconds, lambda: None)


def wait_for(condition, bound=10.0, step=0.02):
    """Poll ``condition`` until true; fail after ``bound`` seconds."""
    return poll_until(condition, bound, step)


def wait_for_status(endpoint, condition, bound=10.0):
    """Poll STATUS until ``condition(status)``; return that status."""
    last = [None]

    def matches(status):
        last[0] = status
        return status if condition(status) else None
    return poll_until(lambda: fetch_status(reactor, endpoint).addCallback(matches), bound,
                      what=lambda: "status condition: {}".format(last[0]))


class ClientDaemonTests(unittest.TestCase):
    """The client library through a real daemon."""

    extra_args = []

    @defer.inlineCallbacks
    def setUp(self):
        self.daemon = DaemonProcess(self, extra_args=self.extra_args)
        yield self.daemon.start()
        self.clients = []

    @defer.inlineCallbacks
    def tearDown(self):
        for client in self.clients:
            yield client.close()
        yield self.daemon.stop()

    @defer.inlineCallbacks
    def agent(self, name, **kwargs):
        client = yield connect(reactor, self.daemon.endpoint, name, **kwargs)
        self.clients.append(client)
        return client

    @defer.inlineCallbacks
    def test_send_receive_receipt(self):
        """send() fires with its SEND id once the message is stored; the receiver's
        callback sees the body, data, thread and sender; the store holds it."""
        inbox = []
        yield self.agent("bob", on_message=inbox.append)
        alice = yield self.agent("alice")
        send_id = yield alice.send("bob", "hello bob", data={"n": 1}, thread="t-1")
        self.assertTrue(send_id.startswith("c"))
        db = sqlite3.connect("file:{}?mode=ro".format(self.daemon.db_path), uri=True)
        self.addCleanup(db.close)
        rows = db.execute("SELECT sender, recipient, json_extract(payload, '$.body') "
                          "FROM messages WHERE send_id = ?", (send_id,)).fetchall()
        self.assertEqual(rows, [("alice", "bob", "hello bob")])
        yield wait_for(lambda: inbox)
        (message,) = inbox
        self.assertEqual((message.sender, message.to, message.body, message.data,
                          message.thread, message.seq),
                         ("alice", "bob", "hello bob", {"n": 1}, "t-1", 1))

    @defer.inlineCallbacks
    def test_queue_and_store_and_forward(self):
        """A message sent to an agent that is offline reaches it through
        next_message() when it connects."""
        alice = yield self.agent("alice")
        yield alice.send("carol", "while you were out")
        carol = yield self.agent("carol")
        message = yield carol.next_message()
        self.assertEqual((message.sender, message.body), ("alice", "while you were out"))

    @defer.inlineCallbacks
    def test_broadcast_and_topics(self):
        """A broadcast reaches everyone else; a topic broadcast only subscribers."""
        bob_inbox, carol_inbox = [], []
        bob = yield self.agent("bob", on_message=bob_inbox.append)
        yield self.agent("carol", on_message=carol_inbox.append)
        alice = yield self.agent("alice")
        bob.subscribe("news")
        yield bob.status()      # the SUBSCRIBE is handled before this reply
        yield alice.broadcast("everyone")
        yield alice.broadcast("news only", topic="news")
        yield wait_for(lambda: len(bob_inbox) == 2 and len(carol_inbox) == 1)
        self.assertEqual([m.body for m in bob_inbox], ["everyone", "news only"])
        self.assertEqual([m.body for m in carol_inbox], ["everyone"])
        self.assertTrue(all(m.is_broadcast for m in bob_inbox))
        bob.unsubscribe("news")
        yield bob.status()
        yield alice.broadcast("news again", topic="news")
        yield alice.send("bob", "direct")
        yield wait_for(lambda: len(bob_inbox) == 3)
        self.assertEqual(bob_inbox[-1].body, "direct")

    @defer.inlineCallbacks
    def test_status(self):
        """fetch_status (no HELLO) and client.status() return the daemon's
        STATUS_REPLY listing connected agents."""
        yield self.agent("alice")
        status = yield fetch_status(reactor, self.daemon.endpoint)
        names = [a["name"] for a in status["agents"]]
        self.assertEqual(names, ["alice"])
        self.assertIn("store", status)
        self.assertIn("uptime_s", status)
        # close() says BYE: the daemon forgets the agent.
        yield self.clients.pop().close()
        status = yield wait_for_status(self.daemon.endpoint, lambda s: not s["agents"])
        self.assertEqual(status["agents"], [])

    @defer.inlineCallbacks
    def test_connect_errors(self):
        """No socket, or a socket nobody listens on, fail with ConnectFailed."""
        directory = tempfile.mkdtemp(prefix="relay-c-")
        self.addCleanup(os.rmdir, directory)
        missing = os.path.join(directory, "none.sock")
        e = yield self.assertFailure(connect(reactor, "unix:" + missing, "alice"),
                                     ConnectFailed)
        self.assertEqual(e.reason, "missing")
        e = yield self.assertFailure(fetch_status(reactor, "unix:" + missing), ConnectFailed)
        self.assertEqual(e.reason, "missing")


class NackTests(unittest.TestCase):
    """A refused SEND surfaces as SendRefused with the daemon's code."""

    @defer.inlineCallbacks
    def setUp(self):
        self.daemon = DaemonProcess(self, extra_args=[
            "--rate-limit-policy", "reject", "--rate-limit", "1", "--rate-burst", "1"])
        yield self.daemon.start()

    @defer.inlineCallbacks
    def test_nack_busy(self):
        """Over the rate limit with the reject policy, send() fails with
        SendRefused BUSY and a retry_after_ms; the first send succeeded."""
        alice = yield connect(reactor, self.daemon.endpoint, "alice")
        try:
            yield alice.send("bob", "one")
            e = yield self.assertFailure(alice.send("bob", "two"), SendRefused)
            self.assertEqual(e.code, "BUSY")
            self.assertIsInstance(e.retry_after_ms, int)
            self.assertGreater(e.retry_after_ms, 0)
        finally:
            yield alice.close()
        yield self.daemon.stop()


class RedeliveryTests(unittest.TestCase):
    """Real redeliveries (short ack timeout) are de-duplicated by id."""

    @defer.inlineCallbacks
    def test_redelivery_not_passed_on_twice(self):
        """While bob's callback is still busy the daemon redelivers (ack timeout
        200 ms); bob's callback runs once and, once it finishes, the ACK stops
        the redeliveries."""
        daemon = DaemonProcess(self, extra_args=["--ack-timeout-ms", "200"])
        yield daemon.start()
        gate = defer.Deferred()
        calls = []

        def on_message(message):
            calls.append(message.id)
            return gate
        bob = yield connect(reactor, daemon.endpoint, "bob", on_message=on_message)
        alice = yield connect(reactor, daemon.endpoint, "alice")
        try:
            yield alice.send("bob", "slow one")
            yield wait_for(lambda: bob.duplicates >= 1)
            gate.callback(None)
            settled = bob.duplicates
            yield elapse(0.6)
            self.assertEqual(len(calls), 1)
            # At most one redelivery already on its way when the ACK went out.
            self.assertLessEqual(bob.duplicates, settled + 1)
        finally:
            yield alice.close()
            yield bob.close()
            yield daemon.stop()


class HeartbeatTests(unittest.TestCase):
    """The client answers the daemon's PINGs, so it is never dropped as dead."""

    @defer.inlineCallbacks
    def test_stays_connected(self):
        """With heartbeat 50 ms (dead after 300 ms) the client stays on its
        first connection for over a second and can still send."""
        daemon = DaemonProcess(self, extra_args=["--heartbeat-ms", "50"])
        yield daemon.start()
        alice = yield connect(reactor, daemon.endpoint, "alice")
        try:
            yield elapse(1.0)
            self.assertEqual(alice.state, "active")
            yield alice.send("bob", "still here")
            self.assertEqual(alice.connections, 1)
        finally:
            yield alice.close()
            yield daemon.stop()


class RestartTests(unittest.TestCase):
    """The daemon restarts under connected clients."""

    @defer.inlineCallbacks
    def test_reconnect_resubscribe_and_queued_send(self):
        """Both clients reconnect after a daemon restart; a send made while the
        daemon was down waits, goes out on reconnect, is receipted and
        delivered; bob's topic subscription is restored."""
        daemon = DaemonProcess(self)
        yield daemon.start()
        inbox = []
        policy = lambda attempt: 0.05 * attempt  # noqa: E731 (fast, still growing)
        bob = yield connect(reactor, daemon.endpoint, "bob", on_message=inbox.append,
                            retry_policy=policy)
        alice = yield connect(reactor, daemon.endpoint, "alice", retry_policy=policy)
        try:
            bob.subscribe("news")
            yield daemon.stop()
            yield wait_for(lambda: alice.state in ("waiting", "connecting"))
            queued = alice.send("bob", "sent while down")
            self.assertNoResult(queued)
            self.assertEqual(alice.pending_sends, 1)
            yield elapse(0.3)
            self.assertNoResult(queued)
            yield daemon.start()
            send_id = yield queued
            self.assertTrue(send_id)
            yield wait_for(lambda: bob.state == "active" and alice.state == "active")
            yield bob.status()
            yield alice.broadcast("news after restart", topic="news")
            yield wait_for(lambda: len(inbox) == 2)
            self.assertEqual(sorted(m.body for m in inbox),
                             ["news after restart", "sent while down"])
            self.assertEqual((alice.connections, bob.connections), (2, 2))
        finally:
            yield alice.close()
            yield bob.close()
            yield daemon.stop()

    @defer.inlineCallbacks
    def test_close_fails_waiting_send(self):
        """Closing while a send waits for the daemon fails it with ClientClosed."""
        daemon = DaemonProcess(self)
        yield daemon.start()
        alice = yield connect(reactor, daemon.endpoint, "alice",
                              retry_policy=lambda attempt: 0.05)
        yield daemon.kill()
        yield wait_for(lambda: alice.state != "active")
        queued = alice.send("bob", "never")
        yield alice.close()
        yield self.assertFailure(queued, ClientClosed)


class SameNameTests(unittest.TestCase):
    """Two clients with one agent name do not fight."""

    @defer.inlineCallbacks
    def test_newer_connection_wins(self):
        """The older client is closed with the daemon's reason and stays
        closed; the newer one keeps its first connection and receives."""
        daemon = DaemonProcess(self)
        yield daemon.start()
        policy = lambda attempt: 0.05  # noqa: E731
        old = yield connect(reactor, daemon.endpoint, "bob", retry_policy=policy)
        new = yield connect(reactor, daemon.endpoint, "bob", retry_policy=policy)
        try:
            reason = yield old.when_closed()
            self.assertIn("replaced", str(reason))
            yield elapse(0.5)
            self.assertEqual((old.state, new.state, new.connections),
                             ("closed", "active", 1))
            alice = yield connect(reactor, daemon.endpoint, "alice")
            yield alice.send("bob", "to the newer bob")
            yield alice.close()
            message = yield new.next_message()
            self.assertEqual(message.body, "to the newer bob")
        finally:
            yield new.close()
            yield daemon.stop()
