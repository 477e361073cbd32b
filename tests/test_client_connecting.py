# -*- test-case-name: tests.test_client_connecting -*-
"""
Unit tests of L{relay.client.connecting}: connection attempts, HELLO, and
reconnecting with backoff.
"""

from twisted.internet.error import ConnectError
from twisted.internet.testing import MemoryReactorClock
from twisted.trial import unittest

from relay.client import (ClientClosed, ConnectFailed, HandshakeRefused, connect,
                          default_endpoint)
from tests.support.client import Harness


class ConnectTests(unittest.TestCase):
    """Connecting: HELLO, WELCOME, and one-line errors for each failure."""

    def test_hello_then_welcome(self):
        """HELLO names the agent with its capabilities and extra fields; the
        Deferred fires with the client only after WELCOME."""
        h = Harness(self, hello_fields={"cli": "test", "model": "m1"})
        d = h.client.start()
        hello = h.accept()
        self.assertEqual(hello["type"], "HELLO")
        self.assertEqual(hello["payload"]["agent"], "alice")
        self.assertEqual(hello["payload"]["cli"], "test")
        self.assertEqual(hello["payload"]["model"], "m1")
        self.assertTrue(hello["payload"]["capabilities"]["ack"])
        self.assertNotIn("session", hello["payload"])
        self.assertNoResult(d)
        h.welcome()
        self.assertIs(self.successResultOf(d), h.client)
        self.assertEqual(h.client.session_id, "sess")
        self.assertEqual(h.client.state, "active")

    def test_refused(self):
        """A refused first connection fails with ConnectFailed('refused'), no retry."""
        h = Harness(self)
        d = h.client.start()
        h.refuse()
        error = self.failureResultOf(d, ConnectFailed).value
        self.assertEqual(error.reason, "refused")
        self.assertIn("unix:/nowhere/relay.sock", str(error))
        h.reactor.advance(60)
        self.assertEqual(h.attempts(), 1)

    def test_missing_socket(self):
        """A socket path that does not exist says so."""
        h = Harness(self)
        d = h.client.start()
        h.refuse(ConnectError(osError=2, string="No such file or directory"))
        error = self.failureResultOf(d, ConnectFailed).value
        self.assertEqual(error.reason, "missing")
        self.assertIn("no daemon socket", str(error))

    def test_permission_denied(self):
        """EACCES on the socket is reported as a permission problem."""
        h = Harness(self)
        d = h.client.start()
        h.refuse(ConnectError(osError=13, string="Permission denied"))
        self.assertEqual(self.failureResultOf(d, ConnectFailed).value.reason, "permission")

    def test_welcome_timeout(self):
        """No WELCOME within the timeout fails the connect and drops the socket."""
        h = Harness(self, timeout=3)
        d = h.client.start()
        h.accept()
        h.reactor.advance(2.9)
        self.assertNoResult(d)
        h.reactor.advance(0.2)
        self.assertTrue(h.transport.disconnecting or h.transport.disconnected)
        h.drop()
        error = self.failureResultOf(d, ConnectFailed).value
        self.assertEqual(error.reason, "timeout")

    def test_error_frame(self):
        """An ERROR answering HELLO fails with HandshakeRefused carrying the code."""
        h = Harness(self)
        d = h.client.start()
        h.accept()
        h.feed("ERROR", {"code": "BAD_REQUEST", "message": "name taken", "fatal": False})
        error = self.failureResultOf(d, HandshakeRefused).value
        self.assertEqual(error.code, "BAD_REQUEST")
        self.assertIn("name taken", str(error))

    def test_bad_input(self):
        """A bad agent name or endpoint string fails at once with a clear error."""
        r = MemoryReactorClock()
        e = self.failureResultOf(connect(r, "unix:/x", "bad name!"), ValueError).value
        self.assertIn("invalid agent name", str(e))
        e = self.failureResultOf(connect(r, "bogus:x", "alice"), ConnectFailed).value
        self.assertEqual(e.reason, "endpoint")

    def test_default_endpoint(self):
        """RELAY_SOCKET overrides the default /tmp/agent-relay.sock."""
        self.assertEqual(default_endpoint({}), "unix:/tmp/agent-relay.sock")
        self.assertEqual(default_endpoint({"RELAY_SOCKET": "/run/r.sock"}), "unix:/run/r.sock")


class ReconnectTests(unittest.TestCase):
    """Losing the daemon: backoff, resume, resubscribe, queued sends."""

    def test_backoff_resume_resubscribe_resend(self):
        """After a lost connection the client retries on the backoff schedule,
        says HELLO with the resume token, resubscribes, and writes the SENDs made
        while disconnected (and the unreceipted ones) after WELCOME, in order."""
        h = Harness(self)
        h.client.start()
        h.accept()
        h.welcome(token="tok-1")
        h.client.subscribe("news")
        unreceipted = h.client.send("bob", "before")
        h.sent()
        h.drop()
        self.assertEqual(h.client.state, "waiting")
        during = h.client.send("bob", "during")
        h.reactor.advance(0.49)
        self.assertEqual(h.attempts(), 1)
        h.reactor.advance(0.02)              # attempt 1 after 0.5 s
        self.assertEqual(h.attempts(), 2)
        h.refuse()
        h.reactor.advance(0.99)
        self.assertEqual(h.attempts(), 2)
        h.reactor.advance(0.02)              # attempt 2 after 1.0 s more
        self.assertEqual(h.attempts(), 3)
        hello = h.accept()
        self.assertEqual(hello["payload"]["session"], {"resume_token": "tok-1"})
        self.assertNoResult(during)
        h.welcome(token="tok-2")
        frames = h.sent()
        self.assertEqual([f["type"] for f in frames], ["SUBSCRIBE", "SEND", "SEND"])
        self.assertEqual([f["payload"]["body"] for f in frames[1:]], ["before", "during"])
        for frame in frames[1:]:
            h.feed("ACK", {"ack_id": frame["id"], "seq": 0})
        self.assertEqual(self.successResultOf(unreceipted), frames[1]["id"])
        self.assertEqual(self.successResultOf(during), frames[2]["id"])
        self.assertEqual(h.client.resume_token, "tok-2")
        self.assertEqual(h.client.connections, 2)

    def test_resume_too_old(self):
        """RESUME_TOO_OLD clears the token and says HELLO again without it."""
        h = Harness(self)
        h.client.start()
        h.accept()
        h.welcome(token="tok-1")
        h.drop()
        h.reactor.advance(1)
        h.accept()
        h.feed("ERROR", {"code": "RESUME_TOO_OLD", "message": "gone", "fatal": False})
        (hello,) = h.sent()
        self.assertEqual(hello["type"], "HELLO")
        self.assertNotIn("session", hello["payload"])
        h.welcome(token="tok-9")
        self.assertEqual(h.client.state, "active")

    def test_give_up(self):
        """With max_attempts, the client gives up and fails what still waits."""
        h = Harness(self, max_attempts=2)
        h.client.start()
        h.accept()
        h.welcome()
        h.drop()
        d = h.client.send("bob", "x")
        for _ in range(2):
            h.reactor.advance(5)
            h.refuse()
        self.assertEqual(h.client.state, "closed")
        self.assertIn("gave up reconnecting", str(self.failureResultOf(d, ClientClosed).value))

    def test_no_reconnect(self):
        """reconnect=False: a lost connection closes the client."""
        h = Harness(self, reconnect=False)
        h.client.start()
        h.accept()
        h.welcome()
        d = h.client.send("bob", "x")
        h.drop()
        self.failureResultOf(d, ClientClosed)
        h.reactor.advance(60)
        self.assertEqual(h.attempts(), 1)

    def test_close_while_waiting(self):
        """close() during backoff cancels the retry and fires at once."""
        h = Harness(self)
        h.client.start()
        h.accept()
        h.welcome()
        h.drop()
        self.successResultOf(h.client.close())
        h.reactor.advance(60)
        self.assertEqual(h.attempts(), 1)
