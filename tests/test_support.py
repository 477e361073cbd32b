# -*- test-case-name: tests.test_support -*-
"""
Tests for the shared test harnesses in L{tests.support}: the frame codec,
C{poll_until} and the output-collecting process protocol.
"""

import struct
import sys

import orjson
from twisted.internet import defer, reactor, task
from twisted.trial import unittest

from relay.frames import frame
from tests.support import frames
from tests.support.poll import poll_until
from tests.support.process import ProcessOutput


class FrameCodecTests(unittest.TestCase):
    """
    L{frames.encode}, L{frames.decode_from} and L{frames.FrameReader}.
    """

    def test_encode_matches_the_daemon(self):
        """
        A frame encoded by the tests is byte for byte the daemon's own
        encoding of the same envelope: a 4-byte big-endian length, then JSON.
        """
        env = {"v": 1, "type": "SEND", "to": "bob", "payload": {"body": "h\u00e9"}}
        self.assertEqual(frames.encode(env), frame(env))
        data = orjson.dumps(env)
        self.assertEqual(frames.encode(env), struct.pack(">I", len(data)) + data)

    def test_decode_from_stops_at_a_partial_frame(self):
        """
        C{decode_from} returns the complete frames and the offset where the
        partial one starts, and resumes from an offset.
        """
        a, b = {"type": "A"}, {"type": "B", "n": 1}
        data = frames.encode(a) + frames.encode(b)
        partial = data[:-1]
        self.assertEqual(frames.decode_from(partial), ([a], len(frames.encode(a))))
        self.assertEqual(frames.decode_from(data, len(frames.encode(a))), ([b], len(data)))
        self.assertEqual(frames.decode_from(b"\x00\x00"), ([], 0))

    def test_reader_takes_any_split(self):
        """
        Fed one byte at a time, or all at once, the reader yields the same
        envelopes in order, each once.
        """
        envs = [{"type": "T", "i": i, "pad": "x" * i} for i in range(20)]
        data = b"".join(frames.encode(e) for e in envs)
        reader = frames.FrameReader()
        out = []
        for i in range(len(data)):
            out.extend(reader.feed(data[i:i + 1]))
        self.assertEqual(out, envs)
        self.assertEqual(reader.buffer, b"")
        self.assertEqual(frames.FrameReader().feed(data), envs)

    def test_frame_bytes_frames_anything(self):
        """
        C{frame_bytes} prefixes raw (even non-JSON) bytes with their length.
        """
        self.assertEqual(frames.frame_bytes(b"{"), b"\x00\x00\x00\x01{")

    def test_send_ids_are_fresh_and_fields_land_where_asked(self):
        """
        Each SEND gets a new id; C{requires_ack} and C{meta} go into
        C{payload_meta}, C{payload_extra} into the payload and other keywords
        into the envelope.
        """
        one = frames.send("bob", "x", topic="t", requires_ack=True, meta={"k": 1},
                          payload_extra={"data": [1]}, ttl_ms=5)
        two = frames.send("bob")
        self.assertNotEqual(one["id"], two["id"])
        self.assertEqual(one["payload"], {"kind": "message", "body": "x", "data": [1]})
        self.assertEqual(one["payload_meta"], {"k": 1, "requires_ack": True})
        self.assertEqual((one["topic"], one["ttl_ms"]), ("t", 5))
        self.assertNotIn("payload_meta", two)
        self.assertEqual(two["payload"]["body"], "hi")

    def test_hello_payload_entries_override(self):
        """
        HELLO carries the agent name and the usual capabilities; keyword
        entries are added to the payload.
        """
        env = frames.hello("alice", resume_token="r")
        self.assertEqual((env["type"], env["payload"]["agent"]), ("HELLO", "alice"))
        self.assertTrue(env["payload"]["capabilities"]["ack"])
        self.assertEqual(env["payload"]["resume_token"], "r")


class PollUntilTests(unittest.TestCase):
    """
    L{poll_until} on a L{task.Clock}.
    """

    def test_fires_with_the_first_true_value(self):
        """
        The condition is asked every C{interval}; the wait fires with its
        first true result, and not before.
        """
        clock = task.Clock()
        values = iter([0, None, "", "yes", "later"])
        calls = []

        def condition():
            calls.append(clock.seconds())
            return next(values)
        d = poll_until(condition, timeout=10, interval=1, clock=clock)
        clock.advance(1)
        clock.advance(1)
        self.assertNoResult(d)
        clock.advance(1)
        self.assertEqual(self.successResultOf(d), "yes")
        self.assertEqual(calls, [0, 1, 2, 3])

    def test_deferred_conditions(self):
        """
        A condition returning a L{Deferred} is waited on.
        """
        clock = task.Clock()
        pending = defer.Deferred()
        d = poll_until(lambda: pending, timeout=5, interval=1, clock=clock)
        self.assertNoResult(d)
        pending.callback(42)
        self.assertEqual(self.successResultOf(d), 42)

    def test_times_out_naming_what(self):
        """
        After C{timeout} the wait fails with L{AssertionError} naming what
        was awaited (a callable's text is taken at that moment).
        """
        clock = task.Clock()
        state = ["start"]
        d = poll_until(lambda: False, timeout=3, interval=1, clock=clock,
                       what=lambda: "state " + state[0])
        state[0] = "end"
        clock.advance(1)
        clock.advance(1)
        self.assertNoResult(d)
        clock.advance(1)
        failure = self.failureResultOf(d, AssertionError)
        self.assertIn("state end", str(failure.value))
        self.assertIn("3", str(failure.value))

    def test_condition_errors_fail_at_once(self):
        """
        An exception raised by the condition fails the wait immediately.
        """
        clock = task.Clock()

        def condition():
            raise ValueError("broken")
        self.failureResultOf(poll_until(condition, clock=clock), ValueError)


class ProcessOutputTests(unittest.TestCase):
    """
    L{ProcessOutput} around a real child process.
    """

    @defer.inlineCallbacks
    def test_collects_both_streams_lines_and_status(self):
        """
        stdout and stderr are kept apart and in arrival order, stdout's
        complete lines are split out, stdin is written and closed, and
        C{ended} fires with the exit status.
        """
        code = ("import sys\n"
                "data = sys.stdin.read()\n"
                "sys.stdout.write('one\\ntwo ' + data + '\\npart'); sys.stdout.flush()\n"
                "sys.stderr.write('oops'); sys.stderr.flush()\n"
                "sys.exit(3)\n")
        proto = ProcessOutput(stdin=b"in", close_stdin=True)
        reactor.spawnProcess(proto, sys.executable, [sys.executable, "-c", code], env=None)
        status = yield proto.ended
        self.assertEqual((status, proto.exit_code, proto.exit_signal), (3, 3, None))
        self.assertEqual(proto.stdout(), "one\ntwo in\npart")
        self.assertEqual(proto.stderr(), "oops")
        self.assertEqual(proto.lines, ["one", "two in"])
        self.assertEqual(sorted(proto.text()), sorted("one\ntwo in\npartoops"))

    @defer.inlineCallbacks
    def test_killed_by_a_signal(self):
        """
        A child killed by a signal has no exit code and names the signal.
        """
        proto = ProcessOutput()
        reactor.spawnProcess(proto, sys.executable,
                             [sys.executable, "-c", "import sys; sys.stdin.read()"], env=None)
        proto.transport.signalProcess("KILL")
        yield proto.ended
        self.assertEqual((proto.exit_code, proto.exit_signal), (None, 9))
