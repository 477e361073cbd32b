# -*- test-case-name: tests.test_client -*-
"""
Unit tests for relay.client driven deterministically: a MemoryReactorClock for
connections and time, StringTransport for the bytes. The same behaviours are
proven against the real daemon in tests.e2e.test_client.
"""

from twisted.internet import defer
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial import unittest

from relay.client import (
    ClientClosed, ConnectFailed, ProtocolViolation, SendRefused,
    TooManyPending, fetch_status)
from tests.support.client import Harness, decode_frames
from tests.support.frames import encode


class SendTests(unittest.TestCase):
    """send(): receipts, NACKs, and the frame it writes."""

    def setUp(self):
        self.h = Harness(self)
        self.h.client.start()
        self.h.accept()
        self.h.welcome()

    def test_receipt(self):
        """A durable send fires with its SEND id when the ACK receipt arrives."""
        d = self.h.client.send("bob", "hello", data={"k": 1}, thread="t1", topic="x")
        (frame,) = self.h.sent()
        self.assertEqual(frame["type"], "SEND")
        self.assertEqual(frame["to"], "bob")
        self.assertEqual(frame["topic"], "x")
        self.assertEqual(frame["payload"], {"kind": "message", "body": "hello",
                                            "data": {"k": 1}, "thread": "t1"})
        self.assertEqual(frame["payload_meta"], {"requires_ack": True})
        self.assertNoResult(d)
        self.h.feed("ACK", {"ack_id": frame["id"], "seq": 0})
        self.assertEqual(self.successResultOf(d), frame["id"])
        self.assertEqual(self.h.client.pending_sends, 0)

    def test_not_durable(self):
        """durable=False asks for no receipt and fires once written."""
        d = self.h.client.send("bob", "hello", durable=False)
        (frame,) = self.h.sent()
        self.assertNotIn("payload_meta", frame)
        self.assertEqual(self.successResultOf(d), frame["id"])

    def test_nack(self):
        """A NACK fails the send with its code and retry_after_ms."""
        d = self.h.client.send("bob", "hello")
        (frame,) = self.h.sent()
        self.h.feed("NACK", {"ack_id": frame["id"], "code": "BUSY", "message": "rate",
                             "retry_after_ms": 250})
        error = self.failureResultOf(d, SendRefused).value
        self.assertEqual((error.code, error.retry_after_ms, error.send_id),
                         ("BUSY", 250, frame["id"]))
        self.assertIn("retry after 250 ms", str(error))

    def test_bad_arguments(self):
        """A non-string body, unknown kind or bad recipient fails with one line."""
        c = self.h.client
        self.assertIn("body must be a string",
                      str(self.failureResultOf(c.send("bob", 3), TypeError).value))
        self.assertIn("kind must be",
                      str(self.failureResultOf(c.send("bob", "x", kind="poem"), ValueError).value))
        self.assertIn("invalid recipient",
                      str(self.failureResultOf(c.send("b b", "x"), ValueError).value))
        self.assertEqual(self.h.sent(), [])

    def test_broadcast_and_topics(self):
        """broadcast() sends to '*'; subscribe/unsubscribe write their frames."""
        self.h.client.subscribe("news")
        self.h.client.broadcast("all hands", topic="news")
        self.h.client.unsubscribe("news")
        frames = self.h.sent()
        self.assertEqual([f["type"] for f in frames], ["SUBSCRIBE", "SEND", "UNSUBSCRIBE"])
        self.assertEqual(frames[0]["topic"], "news")
        self.assertEqual(frames[1]["to"], "*")
        self.assertEqual(self.h.client.topics, [])

    def test_ping(self):
        """A PING is answered with a PONG carrying the same nonce."""
        self.h.feed("PING", {"nonce": "n-7"})
        (pong,) = self.h.sent()
        self.assertEqual((pong["type"], pong["payload"]), ("PONG", {"nonce": "n-7"}))

    def test_busy_counted(self):
        """BUSY frames are advisory: counted, nothing fails."""
        self.h.feed("BUSY", {"retry_after_ms": 50, "queue_depth": 3})
        self.assertEqual(self.h.client.busy_frames, 1)
        self.assertEqual(self.h.client.last_busy["queue_depth"], 3)

    def test_close(self):
        """close() says BYE; a send still waiting for its receipt fails, not lost silently."""
        d = self.h.client.send("bob", "hello")
        self.h.sent()
        closed = self.h.client.close()
        (bye,) = self.h.sent()
        self.assertEqual(bye["type"], "BYE")
        self.assertTrue(self.h.transport.disconnecting)
        self.h.drop()
        self.successResultOf(closed)
        self.assertIn("was not confirmed", str(self.failureResultOf(d, ClientClosed).value))
        self.failureResultOf(self.h.client.send("bob", "late"), ClientClosed)


class DeliveryTests(unittest.TestCase):
    """Deliveries: callback, queue, ACK timing, de-duplication."""

    def start(self, on_message=None):
        self.h = Harness(self, on_message=on_message)
        self.h.client.start()
        self.h.accept()
        self.h.welcome()

    def test_callback_then_ack(self):
        """The ACK goes out only after the callback's Deferred fires."""
        seen = []
        gate = defer.Deferred()

        def on_message(message):
            seen.append(message)
            return gate
        self.start(on_message)
        self.h.deliver("m-1", body="hi", seq=4)
        self.assertEqual([(m.id, m.sender, m.body, m.seq) for m in seen],
                         [("m-1", "bob", "hi", 4)])
        self.assertEqual(self.h.sent(), [])
        gate.callback(None)
        (ack,) = self.h.sent()
        self.assertEqual((ack["type"], ack["payload"]), ("ACK", {"ack_id": "m-1", "seq": 4}))

    def test_redelivery_deduplicated(self):
        """A redelivered id is ACKed again but not passed on twice."""
        seen = []
        self.start(seen.append)
        self.h.deliver("m-1")
        self.h.deliver("m-1")
        self.assertEqual(len(seen), 1)
        self.assertEqual(self.h.client.duplicates, 1)
        self.assertEqual([f["type"] for f in self.h.sent()], ["ACK", "ACK"])

    def test_redelivery_while_running(self):
        """A redelivery arriving while the callback still runs is neither
        passed on nor ACKed early."""
        gate = defer.Deferred()
        seen = []

        def on_message(message):
            seen.append(message)
            return gate
        self.start(on_message)
        self.h.deliver("m-1")
        self.h.deliver("m-1")
        self.assertEqual(self.h.sent(), [])
        gate.callback(None)
        self.assertEqual(len(seen), 1)
        self.assertEqual([f["type"] for f in self.h.sent()], ["ACK"])

    def test_failed_callback_not_acked(self):
        """A callback that raises leaves the message un-ACKed, so it comes again,
        and the redelivery is passed on again."""
        calls = []

        def on_message(message):
            calls.append(message.id)
            if len(calls) == 1:
                raise RuntimeError("boom")
        self.start(on_message)
        self.h.deliver("m-1")
        self.assertEqual(self.h.sent(), [])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.h.deliver("m-1")
        self.assertEqual(calls, ["m-1", "m-1"])
        self.assertEqual([f["type"] for f in self.h.sent()], ["ACK"])

    def test_queue(self):
        """Without a callback, next_message() hands deliveries out in order and ACKs them."""
        self.start()
        waiting = self.h.client.next_message()
        self.h.deliver("m-1", body="one")
        self.h.deliver("m-2", body="two")
        self.assertEqual(self.successResultOf(waiting).body, "one")
        self.assertEqual(len(self.h.sent()), 1)
        self.assertEqual(self.successResultOf(self.h.client.next_message()).body, "two")
        self.assertEqual(self.h.sent()[0]["payload"]["ack_id"], "m-2")

    def test_async_iteration(self):
        """`async for` reads deliveries and stops when the client is closed."""
        self.start()
        bodies = []

        async def consume():
            async for message in self.h.client:
                bodies.append(message.body)
        d = defer.Deferred.fromCoroutine(consume())
        self.h.deliver("m-1", body="one")
        self.h.deliver("m-2", body="two")
        self.h.client.close()
        self.h.drop()
        self.successResultOf(d)
        self.assertEqual(bodies, ["one", "two"])

    def test_queue_high_pauses_reading(self):
        """A queue nobody reads stops reading the socket at its high mark
        (the daemon then sees backpressure), and resumes when drained."""
        self.h = Harness(self, queue_high=4)
        self.h.client.start()
        self.h.accept()
        self.h.welcome()
        for i in range(4):
            self.h.deliver("m-%d" % i)
        self.assertEqual(self.h.transport.producerState, "paused")
        for i in range(3):
            self.h.client.next_message()
        self.assertEqual(self.h.transport.producerState, "producing")


class CancelTests(unittest.TestCase):
    """Cancelling a send."""

    def test_cancel_forgets(self):
        """A cancelled send (e.g. by addTimeout) is not re-sent and close() does
        not fire it a second time."""
        h = Harness(self)
        h.client.start()
        h.accept()
        h.welcome()
        d = h.client.send("bob", "x")
        h.sent()
        d.cancel()
        self.failureResultOf(d, defer.CancelledError)
        self.assertEqual(h.client.pending_sends, 0)
        h.client.close()
        h.drop()


class EarlyCloseTests(unittest.TestCase):
    """close() before the handshake finished."""

    def test_close_during_handshake(self):
        """The start() Deferred fails with ClientClosed instead of hanging."""
        h = Harness(self)
        d = h.client.start()
        h.accept()
        closed = h.client.close()
        h.drop()
        self.successResultOf(closed)
        self.failureResultOf(d, ClientClosed)


class FetchStatusTests(unittest.TestCase):
    """fetch_status: the STATUS request without HELLO."""

    def start(self, timeout=5.0):
        self.reactor = MemoryReactorClock()
        self.d = fetch_status(self.reactor, "unix:/nowhere/relay.sock", timeout=timeout)
        factory = self.reactor.unixClients[-1][1]
        self.proto = factory.buildProtocol(None)
        self.transport = StringTransport()
        self.proto.makeConnection(self.transport)
        (request,) = decode_frames(self.transport)
        return request

    def reply(self, env):
        self.proto.dataReceived(encode(env))

    def test_reply(self):
        """STATUS goes out first (no HELLO); the reply with the same id is the
        result, then the client says BYE."""
        request = self.start()
        self.assertEqual(request["type"], "STATUS")
        self.reply({"v": 1, "type": "STATUS_REPLY", "id": "other", "payload": {"x": 0}})
        self.assertNoResult(self.d)
        self.reply({"v": 1, "type": "STATUS_REPLY", "id": request["id"],
                    "payload": {"agents": [], "uptime_s": 1.0}})
        self.assertEqual(self.successResultOf(self.d), {"agents": [], "uptime_s": 1.0})
        self.assertEqual([f["type"] for f in decode_frames(self.transport)], ["BYE"])

    def test_old_daemon(self):
        """A daemon without the extension answers ERROR: a clear ProtocolViolation."""
        self.start()
        self.reply({"v": 1, "type": "ERROR", "payload": {"code": "BAD_REQUEST",
                                                         "message": "HELLO first"}})
        error = self.failureResultOf(self.d, ProtocolViolation).value
        self.assertIn("does not answer STATUS", str(error))

    def test_timeout(self):
        """No reply within the timeout fails with ConnectFailed('timeout')."""
        self.start(timeout=2)
        self.reactor.advance(2.1)
        self.assertEqual(self.failureResultOf(self.d, ConnectFailed).value.reason, "timeout")

    def test_refused(self):
        """A refused connection fails with ConnectFailed('refused')."""
        reactor = MemoryReactorClock()
        d = fetch_status(reactor, "unix:/nowhere/relay.sock")
        factory = reactor.unixClients[-1][1]
        factory.clientConnectionFailed(reactor.connectors[-1],
                                       Failure(ConnectionRefusedError()))
        self.assertEqual(self.failureResultOf(d, ConnectFailed).value.reason, "refused")
        self.assertEqual(reactor.getDelayedCalls(), [])


class FatalErrorTests(unittest.TestCase):
    """A fatal ERROR on an active connection."""

    def test_replaced_not_reconnecting(self):
        """Replaced by a newer connection of the same name: the client closes
        (when_closed fires with the reason), fails waiting sends, and does not
        reconnect to throw the newer one out."""
        h = Harness(self)
        h.client.start()
        h.accept()
        h.welcome()
        closed = h.client.when_closed()
        d = h.client.send("bob", "x")
        h.feed("ERROR", {"code": "BAD_REQUEST", "fatal": True,
                         "message": "replaced by a newer connection for agent alice"})
        h.drop()
        reason = self.successResultOf(closed)
        self.assertIsInstance(reason, ClientClosed)
        self.assertIn("replaced by a newer connection", str(reason))
        self.assertIn("replaced", str(self.failureResultOf(d, ClientClosed).value))
        h.reactor.advance(60)
        self.assertEqual(h.attempts(), 1)
        self.assertIs(self.successResultOf(h.client.when_closed()), reason)

    def test_non_fatal_error_keeps_going(self):
        """A non-fatal ERROR is logged; the connection and client stay up."""
        h = Harness(self)
        h.client.start()
        h.accept()
        h.welcome()
        h.feed("ERROR", {"code": "BAD_REQUEST", "fatal": False, "message": "odd frame"})
        self.assertEqual(h.client.state, "active")


class MaxPendingTests(unittest.TestCase):
    """Sends while the daemon is away are bounded."""

    def test_refused_beyond_max_pending(self):
        """Beyond max_pending waiting SENDs, send() fails at once with
        TooManyPending; the waiting ones still go out after reconnecting."""
        h = Harness(self, max_pending=2)
        h.client.start()
        h.accept()
        h.welcome()
        h.drop()
        first, second = h.client.send("bob", "1"), h.client.send("bob", "2")
        error = self.failureResultOf(h.client.send("bob", "3"), TooManyPending).value
        self.assertIn("2 messages already wait", str(error))
        h.reactor.advance(1)
        h.accept()
        h.welcome()
        frames = h.sent()
        self.assertEqual([f["payload"]["body"] for f in frames], ["1", "2"])
        for frame in frames:
            h.feed("ACK", {"ack_id": frame["id"], "seq": 0})
        self.successResultOf(first)
        self.successResultOf(second)
