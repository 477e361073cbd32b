# -*- test-case-name: tests.test_loadgen -*-
"""
Tests for relay.bench.loadgen, the standard-library load generator.

The accounting (loss, duplicates, order, NACK retry, receipts) is proven against
a small scripted peer on a real Unix socket that can be told to misbehave, which
the real daemon never does on purpose; L{tests.e2e.test_loadgen} runs the load
generator against the real daemon process.
"""

import json
import os
import shutil
import socket
import struct
import tempfile

from twisted.internet import defer, protocol, reactor, threads
from twisted.internet.endpoints import UNIXServerEndpoint
from twisted.protocols.basic import Int32StringReceiver
from twisted.trial import unittest

from relay.bench import loadgen
from tests.support.poll import poll_until


class ScriptedPeer(Int32StringReceiver):
    """A minimal relay: HELLO/WELCOME, SEND -> DELIVER + receipt, per a script."""

    MAX_LENGTH = 1 << 20

    def connectionMade(self):
        self.name = None

    def connectionLost(self, reason):
        if self.name and self.factory.agents.get(self.name) is self:
            del self.factory.agents[self.name]

    def sendEnvelope(self, envelope):
        self.sendString(json.dumps(envelope).encode("utf-8"))

    def stringReceived(self, data):
        envelope = json.loads(data)
        kind = envelope["type"]
        factory = self.factory
        if kind == "HELLO":
            self.name = envelope["payload"]["agent"]
            factory.agents[self.name] = self
            self.sendEnvelope({"v": 1, "type": "WELCOME", "id": "w", "ts": 0, "payload": {
                "session_id": "s-" + self.name, "resume_token": "t",
                "server": {"max_frame_bytes": 1 << 20, "heartbeat_ms": 5000}}})
            if factory.ping_on_hello:
                self.sendEnvelope({"v": 1, "type": "PING", "id": "p", "ts": 0,
                                   "payload": {"nonce": "n1"}})
        elif kind == "PONG":
            factory.pongs.append(envelope["payload"]["nonce"])
        elif kind == "ACK":
            factory.acks.append(envelope["payload"]["ack_id"])
        elif kind == "SEND":
            factory.count += 1
            number = factory.count
            send_id = envelope["id"]
            if number in factory.nack_busy and send_id not in factory.nacked:
                factory.nacked.add(send_id)
                self.sendEnvelope({"v": 1, "type": "NACK", "id": "n", "ts": 0, "payload": {
                    "ack_id": send_id, "code": "BUSY", "message": "slow down",
                    "retry_after_ms": 5}})
                return
            if number in factory.busy_frame:
                self.sendEnvelope({"v": 1, "type": "BUSY", "id": "b", "ts": 0, "payload": {
                    "retry_after_ms": 5, "queue_depth": 9}})
            if envelope.get("payload_meta", {}).get("requires_ack"):
                self.sendEnvelope({"v": 1, "type": "ACK", "id": "r", "ts": 0,
                                   "payload": {"ack_id": send_id, "seq": 0}})
            deliver = dict(envelope, type="DELIVER", id="d-" + send_id)
            deliver["payload"] = dict(envelope["payload"],
                                      delivery={"seq": number, "session_id": "x"})
            target = factory.agents[envelope["to"]]
            if number in factory.drop:
                return
            if number in factory.hold:
                factory.held.append((target, deliver))
                return
            target.sendEnvelope(deliver)
            if number in factory.duplicate:
                target.sendEnvelope(deliver)
            if factory.held and number in factory.release_after:
                for held_target, held in factory.held:
                    held_target.sendEnvelope(held)
                del factory.held[:]


class ScriptedPeerFactory(protocol.Factory):
    protocol = ScriptedPeer

    def __init__(self, drop=(), duplicate=(), nack_busy=(), busy_frame=(), hold=(),
                 release_after=(), ping_on_hello=False):
        self.agents = {}
        self.count = 0
        self.drop = set(drop)
        self.duplicate = set(duplicate)
        self.nack_busy = set(nack_busy)
        self.nacked = set()
        self.busy_frame = set(busy_frame)
        self.hold = set(hold)
        self.held = []
        self.release_after = set(release_after)
        self.ping_on_hello = ping_on_hello
        self.pongs = []
        self.acks = []


class FrameBufferTests(unittest.TestCase):
    """The frame parser the load generator reads with."""

    def test_byte_at_a_time(self):
        """Frames split into single bytes come out whole and in order."""
        data = loadgen.encode_frame({"type": "A"}) + loadgen.encode_frame({"type": "B"})
        frames = loadgen.FrameBuffer()
        seen = []
        for i in range(len(data)):
            frames.feed(data[i:i + 1])
            envelope = frames.next_frame()
            while envelope is not None:
                seen.append(envelope["type"])
                envelope = frames.next_frame()
        self.assertEqual(seen, ["A", "B"])
        self.assertEqual(len(frames), 0)

    def test_oversized_length_refused(self):
        """A length prefix above the limit is an error, not a huge allocation."""
        frames = loadgen.FrameBuffer(max_frame=10)
        frames.feed(struct.pack(">I", 11) + b"{}")
        self.assertRaises(loadgen.LoadgenError, frames.next_frame)


class PreEncodedFramesTests(unittest.TestCase):
    """
    The pre-encoded SEND and ACK frames decode to exactly the envelopes the
    load generator used to build as dicts.
    """

    def test_send_template_matches_the_envelope(self):
        """
        A filled SEND template, with and without receipts and with names and
        a body holding JSON's special characters and %, is the same JSON
        object as the dict-built envelope.
        """
        for durable in (True, False):
            body = 'x"\\%s%d\u00e9\n'
            template = loadgen.send_template("lg1-s0-", "lg1-s0", 'r"%1', body, 3, durable)
            data = template % (b"17.2", 1234, 17, 5.25)
            expected = {
                "v": 1, "type": "SEND", "id": "lg1-s0-17.2", "ts": 1234,
                "from": "lg1-s0", "to": 'r"%1',
                "payload": {"kind": "message", "body": body,
                            "data": {"lg": [3, 17, 5.25]}}}
            if durable:
                expected["payload_meta"] = {"requires_ack": True}
            self.assertEqual(json.loads(data), expected)

    def test_ack_matches_the_envelope(self):
        """
        encode_ack gives the frame of the dict-built ACK, for a string id with
        quotes, a missing seq, and an id that is not a string.
        """
        for deliver_id, seq in (('m"1\\', 4), ("m2", None), (7, 1)):
            frames = loadgen.FrameBuffer()
            frames.feed(loadgen.encode_ack(deliver_id, seq, 99))
            self.assertEqual(frames.next_frame(), {
                "v": 1, "type": "ACK", "id": "ack-" + str(deliver_id), "ts": 99,
                "payload": {"ack_id": deliver_id, "seq": seq}})


class HelpersTests(unittest.TestCase):
    """Endpoint parsing and percentiles."""

    def test_endpoint_forms(self):
        """A path, unix:PATH and unix:path=PATH:opts all name the same socket."""
        self.assertEqual(loadgen.endpoint_to_path("/tmp/a.sock"), "/tmp/a.sock")
        self.assertEqual(loadgen.endpoint_to_path("unix:/tmp/a.sock"), "/tmp/a.sock")
        self.assertEqual(loadgen.endpoint_to_path("unix:path=/tmp/a.sock:timeout=2"),
                         "/tmp/a.sock")
        self.assertRaises(loadgen.LoadgenError, loadgen.endpoint_to_path, "tcp:host=x:port=1")

    def test_percentile_nearest_rank(self):
        """p50 and p99 of 1..100 are 50 and 99; an empty list has none."""
        values = list(range(1, 101))
        self.assertEqual(loadgen.percentile(values, 0.50), 50)
        self.assertEqual(loadgen.percentile(values, 0.99), 99)
        self.assertEqual(loadgen.percentile(values, 1.0), 100)
        self.assertIsNone(loadgen.percentile([], 0.5))


class ScriptedRunTests(unittest.TestCase):
    """The run's accounting against a scripted peer on a real Unix socket."""

    def listen(self, **script):
        self.factory = ScriptedPeerFactory(**script)
        # Short path: AF_UNIX paths are limited to 107 bytes.
        directory = tempfile.mkdtemp(prefix="relay-lg-")
        self.addCleanup(shutil.rmtree, directory, True)
        self.path = os.path.join(directory, "s.sock")
        endpoint = UNIXServerEndpoint(reactor, self.path)
        d = endpoint.listen(self.factory)
        d.addCallback(lambda port: self.addCleanup(port.stopListening))
        return d

    def wait_for(self, condition, bound=2.0):
        """Poll ``condition`` until true; fail after ``bound`` seconds."""
        return poll_until(condition, bound, interval=0.01)

    def run_loadgen(self, **kwargs):
        kwargs.setdefault("idle_timeout", 2.0)
        return threads.deferToThread(loadgen.run, self.path, **kwargs)

    @defer.inlineCallbacks
    def test_clean_run(self):
        """Every message is sent, delivered once, receipted and ACKed; nothing lost."""
        yield self.listen()
        result = yield self.run_loadgen(senders=2, receivers=3, messages=500, size=50,
                                        window=7)
        self.assertEqual(result["sent"], 500)
        self.assertEqual(result["delivered"], 500)
        self.assertEqual(result["receipts"], 500)
        self.assertEqual(result["lost"], 0)
        self.assertEqual(result["duplicates"], 0)
        self.assertEqual(result["out_of_order"], 0)
        self.assertTrue(result["complete"])
        yield self.wait_for(lambda: len(self.factory.acks) >= 500)
        self.assertEqual(len(self.factory.acks), 500)
        self.assertIsNotNone(result["p50_ms"])
        self.assertLessEqual(result["p50_ms"], result["p99_ms"])

    @defer.inlineCallbacks
    def test_dropped_message_is_lost(self):
        """A message the peer receipts but never delivers is reported lost."""
        yield self.listen(drop={3})
        result = yield self.run_loadgen(messages=10, size=10, idle_timeout=0.5)
        self.assertEqual(result["lost"], 1)
        self.assertEqual(result["delivered"], 9)
        self.assertFalse(result["complete"])
        self.assertTrue(result["errors"])

    @defer.inlineCallbacks
    def test_duplicate_and_out_of_order(self):
        """A delivery seen twice counts as a duplicate; a late one as out of order."""
        yield self.listen(duplicate={2}, hold={4}, release_after={6})
        result = yield self.run_loadgen(messages=10, size=10, window=10)
        self.assertEqual(result["duplicates"], 1)
        self.assertEqual(result["out_of_order"], 1)
        self.assertEqual(result["delivered"], 10)
        self.assertEqual(result["lost"], 0)
        yield self.wait_for(lambda: len(self.factory.acks) >= 11)
        self.assertEqual(len(self.factory.acks), 11)

    @defer.inlineCallbacks
    def test_busy_nack_retried(self):
        """A BUSY NACK is counted and the message sent again, so it is not lost."""
        yield self.listen(nack_busy={2, 5}, busy_frame={7})
        result = yield self.run_loadgen(messages=10, size=10)
        self.assertEqual(result["nacked"], 2)
        self.assertEqual(result["nack_codes"], {"BUSY": 2})
        self.assertEqual(result["busy_frames"], 1)
        self.assertEqual(result["delivered"], 10)
        self.assertEqual(result["lost"], 0)
        self.assertEqual(result["sent"], 10)

    @defer.inlineCallbacks
    def test_ping_answered(self):
        """A PING from the daemon gets a PONG with the same nonce."""
        yield self.listen(ping_on_hello=True)
        result = yield self.run_loadgen(messages=5, size=10)
        self.assertEqual(result["delivered"], 5)
        yield self.wait_for(lambda: len(self.factory.pongs) >= 2)
        self.assertEqual(self.factory.pongs, ["n1", "n1"])

    @defer.inlineCallbacks
    def test_receiver_rate_limits(self):
        """With receiver_rate the receiver reads no faster than asked."""
        yield self.listen()
        result = yield self.run_loadgen(messages=40, size=10, window=40, receiver_rate=200)
        self.assertEqual(result["delivered"], 40)
        # 40 messages at 200/s with a burst of 10 cannot finish in under 0.15 s.
        self.assertGreater(result["elapsed_s"], 0.14)

    def test_no_daemon(self):
        """A missing socket is a one-line LoadgenError saying so."""
        path = os.path.abspath(self.mktemp())
        e = self.assertRaises(loadgen.LoadgenError, loadgen.run, path, messages=1)
        self.assertIn("no daemon socket", str(e))

    def test_refused(self):
        """A socket file nobody listens on is reported as refused."""
        path = os.path.abspath(self.mktemp())
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(path)
        self.addCleanup(sock.close)
        e = self.assertRaises(loadgen.LoadgenError, loadgen.run, path, messages=1)
        self.assertIn("refused", str(e))
