# -*- test-case-name: tests.e2e.test_node_compat -*-
"""
agent-relay's own Node client (``RelayClient`` from agent-relay@1.6.0,
dist/wrapper/client.js) against our daemon.

Optional: it needs ``node`` and the package, installed by
``.ci/node-compat-setup`` which exports ``RELAY_NODE_MODULES``; without them the
test is skipped with the reason.

What the Node client does and expects (read from dist/wrapper/client.js):
- legacy framing (4-byte big-endian length, JSON); HELLO with capabilities
  ``{ack, resume: true, max_inflight: 256, supports_topics}``, its optional
  fields left out when undefined; ``session.resume_token`` on reconnect;
- it waits for WELCOME (``payload.session_id``, ``payload.resume_token``);
- on DELIVER it reads ``envelope.delivery.seq`` at the TOP of the envelope (not
  inside payload: without it the handler throws and never ACKs) and
  ``payload.body`` as a string, ACKs with ``{ack_id: <DELIVER id>, seq}``, and
  de-duplicates on the DELIVER ``id``;
- PONG echoes the PING's payload; SEND carries no ``from`` and no
  ``payload_meta`` unless given (so it asks for no receipt); it ignores ACK,
  NACK and STATUS_REPLY frames, logs BUSY and ERROR.
"""

import json
import os
import shutil
import sqlite3

from twisted.internet import defer, reactor
from twisted.trial import unittest

from relay.client import connect
from tests.support.daemon import DaemonProcess
from tests.support.process import ProcessOutput

NODE = shutil.which("node")
MODULES = os.environ.get("RELAY_NODE_MODULES")
CLIENT_JS = os.path.join(MODULES, "agent-relay", "dist", "wrapper", "client.js") \
    if MODULES else None


def skip_reason():
    if NODE is None:
        return "node is not installed (run .ci/node-compat-setup)"
    if not MODULES:
        return "RELAY_NODE_MODULES is not set (eval \"$(.ci/node-compat-setup)\")"
    if not os.path.exists(CLIENT_JS):
        return "agent-relay is not installed under RELAY_NODE_MODULES={}".format(MODULES)
    return None


# Two RelayClients: they converse both ways, alice broadcasts, both stay
# connected through many PINGs; the script prints one RESULT line of JSON.
SCRIPT = r"""
import { pathToFileURL } from 'node:url';
const { RelayClient } = await import(pathToFileURL(process.env.CLIENT_JS).href);
const socketPath = process.env.SOCKET;
const hold = Number(process.env.HOLD_MS);
const got = { alice: [], bob: [] };
const states = { alice: [], bob: [] };
const errors = [];
function make(name) {
  const c = new RelayClient({ socketPath, agentName: name, quiet: true, reconnect: false,
                              cli: 'node-compat', program: 'test' });
  c.onMessage = (from, payload, id, meta, originalTo) =>
    got[name].push({ from, body: payload.body, data: payload.data ?? null, id,
                     originalTo: originalTo ?? null });
  c.onStateChange = (s) => states[name].push(s);
  c.onError = (e) => errors.push(name + ': ' + e.message);
  return c;
}
const alice = make('alice'), bob = make('bob');
await alice.connect();
await bob.connect();
const wait = (ms) => new Promise((r) => setTimeout(r, ms));
async function until(cond, what) {
  for (let i = 0; i < 500; i++) { if (cond()) return; await wait(20); }
  throw new Error('timed out waiting for ' + what);
}
alice.sendMessage('bob', 'hi bob', 'message', { n: 1 }, 'th-1');
await until(() => got.bob.length === 1, 'bob to get hi');
bob.sendMessage('alice', 'hi alice');
await until(() => got.alice.length === 1, 'alice to get the reply');
alice.sendMessage('python', 'hi python');
await until(() => got.alice.length === 2, 'python to answer');
alice.broadcast('everyone');
await until(() => got.bob.length === 2, 'bob to get the broadcast');
bob.subscribe('news');            // RelayClient's SEND has no topic: python publishes
await wait(100);
alice.sendMessage('python', 'publish news');
await until(() => got.bob.length === 3, 'bob to get the topic broadcast');
alice.sendLog('a LOG frame: agent output, accepted without an ERROR');
await wait(hold);          // many heartbeats: PINGs must be answered
const stillReady = alice.state === 'READY' && bob.state === 'READY';
alice.sendMessage('bob', 'after the pings');
await until(() => got.bob.length === 4, 'bob to get the last one');
alice.disconnect();
bob.disconnect();
await wait(100);
console.log('RESULT ' + JSON.stringify({ got, states, errors, stillReady,
                                          session: alice.currentSessionId ?? null }));
process.exit(0);
"""


class NodeClientTests(unittest.TestCase):
    """agent-relay 1.6.0's RelayClient works against our daemon unchanged."""

    timeout = 60

    def setUp(self):
        reason = skip_reason()
        if reason:
            raise unittest.SkipTest(reason)

    @defer.inlineCallbacks
    def test_two_node_clients(self):
        """Two Node RelayClients exchange messages both ways (and with a Python
        client), receive a broadcast, stay connected through PINGs every 50 ms
        (dead after 300 ms) for 1.5 s, and ACK every delivery (the store shows
        them acked)."""
        daemon = DaemonProcess(self, extra_args=["--heartbeat-ms", "50"])
        yield daemon.start()
        python_inbox = []

        python = None

        def answer(message):
            python_inbox.append(message)
            if message.body == "hi python":
                return python.send(message.sender, "hello from python", durable=False)
            if message.body == "publish news":
                return python.broadcast("topic news", topic="news")
        python = yield connect(reactor, daemon.endpoint, "python", on_message=answer)
        try:
            script = os.path.join(os.path.abspath(self.mktemp()) + ".mjs")
            with open(script, "w") as f:
                f.write(SCRIPT)
            node = ProcessOutput()
            env = dict(os.environ, CLIENT_JS=CLIENT_JS, SOCKET=daemon.socket_path,
                       HOLD_MS="1500")
            reactor.spawnProcess(node, NODE, [NODE, script], env=env)
            code = yield node.ended
            out = b"".join(node.out).decode("utf-8", "replace")
            err = b"".join(node.err).decode("utf-8", "replace")
            lines = [l for l in out.splitlines() if l.startswith("RESULT ")]
            self.assertEqual(code, 0, "node failed:\n{}\n{}".format(out, err))
            self.assertEqual(len(lines), 1, out)
            result = json.loads(lines[0][len("RESULT "):])
        finally:
            yield python.close()

        self.assertEqual(result["errors"], [])
        # The LOG frame (agent output) is accepted quietly: no ERROR at all,
        # so the Node client prints no "Server error".
        self.assertNotIn("Server error", err)
        self.assertNotIn("fatal: true", err)
        self.assertTrue(result["stillReady"], result["states"])
        for name in ("alice", "bob"):
            # One connection each, never dropped: READY until our disconnect().
            states = result["states"][name]
            self.assertEqual(states[:4], ["CONNECTING", "HANDSHAKING", "READY",
                                          "DISCONNECTED"], states)
            self.assertEqual(set(states[3:]), {"DISCONNECTED"}, states)
        bob = result["got"]["bob"]
        alice = result["got"]["alice"]
        self.assertEqual([(m["from"], m["body"]) for m in bob],
                         [("alice", "hi bob"), ("alice", "everyone"),
                          ("python", "topic news"), ("alice", "after the pings")])
        self.assertEqual(bob[0]["data"], {"n": 1})
        self.assertEqual(bob[1]["originalTo"], "*")
        self.assertEqual([(m["from"], m["body"]) for m in alice],
                         [("bob", "hi alice"), ("python", "hello from python")])
        self.assertEqual([(m.sender, m.body) for m in python_inbox],
                         [("alice", "hi python"), ("alice", "everyone"),
                          ("alice", "publish news")])
        yield daemon.stop()
        db = sqlite3.connect("file:{}?mode=ro".format(daemon.db_path), uri=True)
        self.addCleanup(db.close)
        statuses = db.execute(
            "SELECT d.recipient, d.status, d.attempts FROM deliveries d JOIN messages m "
            "ON m.seq = d.message_seq WHERE d.recipient IN ('alice', 'bob') "
            "ORDER BY m.seq").fetchall()
        self.assertEqual(len(statuses), 6)
        self.assertEqual({s for _, s, _ in statuses}, {"acked"}, statuses)
