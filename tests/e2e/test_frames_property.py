# -*- test-case-name: tests.e2e.test_frames_property -*-
"""
Arbitrary JSON values in every field of every frame type (hypothesis),
through the real protocol: L{relay.protocol.RelayProtocol} over a
StringTransport on a task.Clock with a real router and SQLite store, and a
smoke run of the same frames through the real daemon's socket.  Each frame
gets its answer, no connection is closed for a non-fatal error, no
traceback reaches the log, and nothing accepted breaks the store.
"""

import json
import struct

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet import defer, reactor, task
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial import unittest

from tests.support.daemon import DaemonProcess, connect_agent
from tests.support.frames import hello
from tests.support.protocol import Relay


def nested(depth):
    value = []
    for _ in range(depth - 1):
        value = [value]
    return value


SCALARS = (st.none() | st.booleans() | st.integers(-2 ** 70, 2 ** 70)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12))
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=8)
SPECIAL = st.sampled_from(["", "*", "bob", "message", "action", "t", "\x00", "_system", 0, -1,
                           1, 2 ** 53, 2 ** 63, 2 ** 64, 10 ** 19, 1e308, True, [], {},
                           {"body": "x"}, "x" * 200])
VALUE = JSON | SPECIAL | st.integers(250, 900).map(nested)

TOP = ["v", "type", "id", "ts", "from", "to", "topic", "payload", "payload_meta", "extra"]
PAYLOAD = {
    "HELLO": ["agent", "capabilities", "capabilities.ack", "capabilities.resume",
              "capabilities.max_inflight", "capabilities.supports_topics", "entityType", "cli",
              "program", "model", "task", "workingDirectory", "displayName", "session",
              "session.resume_token"],
    "SEND": ["kind", "body", "data", "thread", "extra"],
    "ACK": ["ack_id", "seq"],
    "NACK": ["ack_id", "code", "message"],
    "PING": ["nonce"],
    "PONG": ["nonce"],
    "LOG": ["data"],
    "SUBSCRIBE": [], "UNSUBSCRIBE": [], "BYE": [], "STATUS": [],
}
META = ["requires_ack", "ttl_ms", "importance", "replyTo"]


def base(kind):
    env = {"v": 1, "type": kind, "id": "f1", "ts": 0}
    if kind == "HELLO":
        env = hello("someone")
    elif kind == "SEND":
        env.update(to="bob", payload={"kind": "message", "body": "hi"},
                   payload_meta={"requires_ack": True})
    elif kind in ("ACK", "NACK"):
        env["payload"] = {"ack_id": "x-1", "seq": 1}
    elif kind in ("PING", "PONG"):
        env["payload"] = {"nonce": "n"}
    elif kind in ("SUBSCRIBE", "UNSUBSCRIBE"):
        env["topic"] = "t"
    elif kind == "LOG":
        env["payload"] = {"data": "a line"}
    else:
        env["payload"] = {}
    return env


def paths(kind):
    out = list(TOP) + ["payload." + p for p in PAYLOAD[kind]]
    if kind == "SEND":
        out += ["payload_meta." + p for p in META]
    return out


def put(env, path, value):
    parts = path.split(".")
    target = env
    for part in parts[:-1]:
        target = target.get(part) if isinstance(target, dict) else None
        if not isinstance(target, dict):
            return
    target[parts[-1]] = value


@st.composite
def frames(draw):
    kind = draw(st.sampled_from(sorted(PAYLOAD)))
    env = base(kind)
    for path in draw(st.lists(st.sampled_from(paths(kind)), min_size=1, max_size=3)):
        put(env, path, draw(VALUE))
    before_hello = kind == "HELLO" or draw(st.booleans())
    return before_hello, env


def encode(env):
    # The standard json module writes what orjson would refuse to (values
    # nested past 254 levels, integers past 64 bits).
    data = json.dumps(env).encode("utf-8")
    return struct.pack(">I", len(data)) + data


def problems(env, before_hello, answers, closed):
    """
    What is wrong with C{answers} (the frames the daemon sent back) and
    C{closed} (whether it closed the connection) for C{env}: a list of
    sentences, empty when all is right.
    """
    types = [a.get("type") for a in answers]
    errors = [a for a in answers if a.get("type") == "ERROR"]
    if any(e["payload"].get("fatal") is not False or e["payload"].get("code") != "BAD_REQUEST"
           for e in errors):
        return ["a fatal or non-BAD_REQUEST ERROR: %r" % (errors,)]
    try:
        parsed = orjson.loads(json.dumps(env))
    except orjson.JSONDecodeError:
        parsed = None
    kind = env.get("type")
    if parsed is None or not isinstance(kind, str) or kind not in PAYLOAD and kind != "WELCOME":
        expected = [["ERROR"]]
    elif before_hello and kind not in ("HELLO", "PING", "PONG", "BYE", "STATUS"):
        expected = [["ERROR"]]
    else:
        expected = {
            "HELLO": [["WELCOME"], ["ERROR"]] if before_hello else [["ERROR"]],
            "SEND": [[], ["NACK"]],
            "ACK": [[], ["ERROR"]],
            "NACK": [[]], "PONG": [[]], "LOG": [[]],
            "PING": [["PONG"]],
            "SUBSCRIBE": [[], ["ERROR"]], "UNSUBSCRIBE": [[], ["ERROR"]],
            "BYE": [["BYE"]],
            "STATUS": [["STATUS_REPLY"]],
            "WELCOME": [["ERROR"]],
        }[kind]
    out = []
    if types not in expected:
        out.append("answers %r, expected one of %r" % (types, expected))
    for nack in (a for a in answers if a.get("type") == "NACK"):
        if nack["payload"].get("code") != "INVALID":
            out.append("NACK %r" % (nack["payload"],))
    if closed != (types == ["BYE"]):
        out.append("connection closed: %r" % (closed,))
    return out


@st.composite
def one_field(draw, kind, path):
    env = base(kind)
    put(env, path, draw(VALUE))
    before_hello = kind == "HELLO" or draw(st.booleans())
    return before_hello, env


class _LogWatch:
    """
    Twisted log events at level error or above, or carrying a failure.
    """

    def __init__(self, testcase):
        self.bad = []
        globalLogPublisher.addObserver(self)
        testcase.addCleanup(globalLogPublisher.removeObserver, self)

    def __call__(self, event):
        if "log_failure" in event or event.get("log_level") in (LogLevel.error,
                                                                LogLevel.critical):
            self.bad.append(event)


class ArbitraryFrameTests(unittest.TestCase):
    """
    Arbitrary values in every field of every frame type through
    RelayProtocol with a real router and store.
    """

    timeout = 300

    @defer.inlineCallbacks
    def test_every_frame_answered(self):
        """
        For generated frames (each field of each frame type alone, twelve
        values each, then 400 frames with up to three fields changed), on a
        fresh connection (before HELLO) or a registered one: the answers are the ones PROTOCOL.md gives that
        frame type, only BYE closes the connection, no error or failure is
        logged, and afterwards every accepted SEND commits (no batch
        failure) and a receipted SEND still gets its receipt.
        """
        relay = Relay(self)
        # bob is online: generated SENDs to it are delivered live.
        yield relay.agent("bob")
        watch = _LogWatch(self)
        counter = [0]

        @settings(max_examples=400, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(frames())
        def check(case):
            before_hello, env = case
            run(env, before_hello)

        def run(env, before_hello):
            counter[0] += 1
            peer = relay.connect()
            if not before_hello:
                peer.feed(hello("p%d" % (counter[0],)))
                self.assertEqual([f["type"] for f in peer.new()], ["WELCOME"])
            peer.raw(encode(env))
            answers = [f for f in peer.new() if f.get("type") not in ("PING", "DELIVER")]
            wrong = problems(env, before_hello, answers, not peer.transport.connected)
            self.assertEqual(wrong, [], (before_hello, env))
            self.assertEqual(watch.bad, [])
            if peer.transport.connected:
                peer.transport.loseConnection()

        # Every field of every frame type on its own, then several at once.
        for kind in sorted(PAYLOAD):
            for path in paths(kind):
                given(one_field(kind, path))(settings(
                    max_examples=12, deadline=None, database=None,
                    suppress_health_check=list(HealthCheck))(lambda case: run(case[1], case[0])))()
        check()
        yield relay.flush()
        self.assertEqual(relay.store.batcher.metrics["failures"], 0)
        self.assertEqual(watch.bad, [])
        # A generated HELLO may have taken the name bob (it is among the
        # special values): the last message goes to an agent that said
        # HELLO after the generated frames.
        final = yield relay.agent("final-reader")
        alice = yield relay.agent("alice")
        alice.feed({"v": 1, "type": "SEND", "id": "last", "to": "final-reader",
                    "payload": {"body": "still fine"}, "payload_meta": {"requires_ack": True}})
        yield relay.flush()
        self.assertEqual([a["payload"]["ack_id"] for a in alice.of_type("ACK")], ["last"])
        deadline = reactor.seconds() + 10
        while "still fine" not in [d["payload"]["body"] for d in final.of_type("DELIVER")]:
            self.assertLess(reactor.seconds(), deadline, "the last SEND never reached its reader")
            yield task.deferLater(reactor, 0.02, lambda: None)


class ArbitraryFrameDaemonTests(unittest.TestCase):
    """
    A smoke run of generated frames through the real daemon's socket.
    """

    timeout = 300

    @defer.inlineCallbacks
    def test_smoke(self):
        """
        Sixty generated frames and the values that used to drop the
        connection, each on its own connection of the real
        daemon (after a HELLO where the case says so) and followed by a
        STATUS on the same connection: the answers before STATUS_REPLY are
        the expected ones, every connection but BYE's answers that STATUS,
        and the daemon logs no traceback.
        """
        cases = []

        @settings(max_examples=60, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(frames())
        def collect(case):
            cases.append(case)
        collect()
        # And the values that used to drop the connection, every run.
        known = [("SEND", "payload.kind", ["message"]), ("SEND", "payload.kind", {"a": 1}),
                 ("SEND", "payload.data", {"d": nested(300)}), ("SEND", "id", nested(300)),
                 ("SEND", "payload_meta.ttl_ms", 10 ** 15), ("SEND", "topic", ""),
                 ("PING", "payload.nonce", nested(300)), ("STATUS", "id", nested(300)),
                 ("HELLO", "id", nested(300))]
        for kind, path, value in known:
            env = base(kind)
            if kind == "SEND":
                env["to"] = "*" if path == "topic" else "bob"
            put(env, path, value)
            cases.append((kind != "SEND", env))
        daemon = DaemonProcess(self, ["--batch-delay-ms", "10"])
        yield daemon.start()
        self.addCleanup(daemon.stop)
        bob = yield connect_agent(daemon, "bob")
        agents = []
        for i, (before_hello, env) in enumerate(cases):
            agent = yield connect_agent(daemon, None if before_hello else "q%d" % (i,))
            agent.frames = [f for f in agent.frames if f["type"] == "WELCOME"]
            start = len(agent.frames)
            agent.write_raw(encode(env) + encode({"v": 1, "type": "STATUS", "id": "probe"}))
            agents.append((agent, before_hello, env, start))
        for agent, before_hello, env, start in agents:
            closing = env.get("type") == "BYE" and problems(env, before_hello, [
                {"type": "BYE"}], True) == []
            if closing:
                yield agent.wait_closed()
            else:
                yield agent.wait_for(
                    lambda a: any(f.get("id") == "probe" for f in a.of_type("STATUS_REPLY")))
            got = agent.frames[start:]
            answers = []
            for f in got:
                if f.get("type") == "STATUS_REPLY" and f.get("id") == "probe":
                    break
                if f.get("type") not in ("PING", "DELIVER", "ACK"):
                    answers.append(f)
            self.assertEqual(problems(env, before_hello, answers, closing), [],
                             (before_hello, env, got))
        self.assertFalse(bob.closed.called)
        self.assertNotIn("Traceback", daemon.output())
        self.assertNotIn("Unhandled", daemon.output())
