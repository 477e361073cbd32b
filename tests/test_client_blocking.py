# -*- test-case-name: tests.test_client_blocking -*-
"""
relay.client.blocking against the real daemon: the blocking calls run in a
thread while trial's reactor (the one the facade hands work to) runs.
"""

import os
import tempfile

from twisted.internet import defer, threads
from twisted.trial import unittest

from relay.client import ConnectFailed, SendRefused
from relay.client.blocking import BlockingClient
from tests.daemon_support import DaemonProcess


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
