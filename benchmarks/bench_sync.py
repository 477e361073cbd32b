#!/usr/bin/env python
# -*- test-case-name: tests.e2e.test_sync -*-
"""
Cloud sync benchmark: the real daemon syncing stored messages to a
loopback HTTP server.

Builds a SQLite store holding N messages of typical agent text (default
100,000), starts ``twistd -n relay --sync-url ...`` on it (this tree first on
PYTHONPATH), and counts what a small twisted.web server in this process
receives: messages/s from the first request to the last message, mean batch
size, and bytes on the wire (gzip) against the uncompressed JSON.  Every
message must arrive (exactly the stored ids), or the run fails.

The baseline, measured in the same run, is the same daemon sending one
message per POST without compression (``--sync-batch-size 1
--sync-compress-threshold 1000000000``), on fewer messages (default 3,000).

    python benchmarks/bench_sync.py
    python benchmarks/bench_sync.py --messages 20000 --sync-arg=--sync-batch-size --sync-arg=1000

Exit status: 0 when every message arrived in every run, 1 otherwise.
"""

import argparse
import gzip
import os
import random
import signal
import sqlite3
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import orjson  # noqa: E402
from twisted.internet import defer, protocol, task  # noqa: E402
from twisted.logger import Logger  # noqa: E402
from twisted.web import resource, server  # noqa: E402

from relay.store import upgrade  # noqa: E402

WORKSPACE = "2f1c9a4e-5b7d-4c3e-9a10-8e6f2b3c4d5e"
KEY = "bench-key"
GOAL_MSGS_PER_S = 20000.0
GOAL_RATIO = 4.0

AGENTS = ["planner", "coder-1", "coder-2", "reviewer", "tester", "docs-writer", "lead"]
SENTENCES = [
    "I finished the refactor of {file}; all {n} tests pass locally.",
    "Can you review the change to {file} before I merge it?",
    "The build failed on step {n}: ImportError in {file}.",
    "Next I will profile the store batcher under {n} msgs/s.",
    "Blocked: waiting for the schema migration in {file} to land.",
    "Found the flaky test: it sleeps {n} ms instead of waiting on a Deferred.",
    "Summary of today: {n} commits, two reviews, the retry logic in {file} is done.",
    "Please rerun the integration suite; I pushed a fix to {file}.",
    "The benchmark shows {n} messages per second with batching enabled.",
    "I am picking up task #{n}: spill files for the sync queue.",
    "Commit {sha} fixes the off-by-one in the cursor; see {file} line {n}.",
    "Traceback points at {file}:{n}, KeyError: 'payload_meta' when the sender omits it.",
    "Merged {sha}. Coverage went from 81% to {n}% on {file}.",
    "Heads up: {file} now requires --workspace-id; the old default was removed in {sha}.",
    "Load test at {n} agents: p99 delivery latency 4.{n} ms, no BUSY frames.",
    "Question: should the retry delay cap be {n} s or follow Retry-After strictly?",
    "Rebased onto main ({sha}); two conflicts in {file}, resolved by keeping both checks.",
    "The PostgreSQL COPY path takes {n} ms per 1000 rows; multi-row INSERT is 3x slower.",
    "Done with the docs for {file}; please check the example config near line {n}.",
    "Ack. I will hold off on {file} until {sha} is deployed.",
]
FILES = ["relay/router.py", "relay/store.py", "relay/sync/service.py", "tests/test_router.py",
         "relay/protocol.py", "README.rst", "relay/outbox.py", "benchmarks/bench_core.py"]


def build_store(path, count, seed=1):
    """
    Create a store with C{count} messages; return their ids.
    """
    rng = random.Random(seed)
    conn = sqlite3.connect(path, isolation_level=None)
    upgrade(conn, Logger(), path)
    conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('id_prefix', 'bench')")
    base_ts = 1764000000000
    rows = []
    for seq in range(1, count + 1):
        text = " ".join(rng.choice(SENTENCES).format(
            file=rng.choice(FILES), n=rng.randint(1, 5000), sha="%07x" % rng.getrandbits(28))
            for _ in range(rng.randint(1, 4)))
        sender, recipient = rng.sample(AGENTS, 2)
        payload = {"kind": "message", "body": text, "thread": "task-{}".format(rng.randint(1, 40))}
        if rng.random() < 0.3:
            payload["data"] = {"files": rng.sample(FILES, 2), "step": rng.randint(1, 9)}
        meta = {"requires_ack": True, "importance": rng.choice([1, 5, 50, 90])}
        rows.append((seq, "bench-{}".format(seq), "s{}".format(seq), base_ts + seq * 10, sender,
                     recipient, None, payload["thread"], "message", orjson.dumps(payload).decode(),
                     orjson.dumps(meta).decode(), None, base_ts + seq * 10 + 86400000))
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO messages (seq, id, send_id, ts, sender, recipient, topic, thread, kind,"
        " payload, payload_meta, extra, expires_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
    conn.execute("COMMIT")
    conn.close()
    return {r[1] for r in rows}


class CountingIngest(resource.Resource):
    """
    The sync endpoint, counting: requests, messages, ids, bytes.
    """

    isLeaf = True

    def __init__(self, clock):
        resource.Resource.__init__(self)
        self.clock = clock
        self.reset()

    def reset(self):
        self.requests = 0
        self.messages = 0
        self.ids = set()
        self.wire = 0
        self.raw = 0
        self.first = None
        self.last = None

    def render_POST(self, request):
        data = request.content.read()
        if self.first is None:
            self.first = self.clock.seconds()
        body = gzip.decompress(data) if request.getHeader("content-encoding") == "gzip" else data
        doc = orjson.loads(body)
        self.requests += 1
        self.messages += len(doc["messages"])
        self.ids.update(m["id"] for m in doc["messages"])
        self.wire += len(data)
        self.raw += len(body)
        self.last = self.clock.seconds()
        request.setHeader(b"content-type", b"application/json")
        return orjson.dumps({"synced": len(doc["messages"]), "duplicates": 0})


class _Proc(protocol.ProcessProtocol):
    def __init__(self):
        self.ended = defer.Deferred()
        self.output = []

    def outReceived(self, data):
        self.output.append(data)

    errReceived = outReceived

    def processEnded(self, reason):
        self.ended.callback(None)


@defer.inlineCallbacks
def run_one(reactor, ingest, port, label, count, sync_args, timeout):
    directory = tempfile.mkdtemp(prefix="bench-sync-")
    db = os.path.join(directory, "relay.sqlite")
    ids = build_store(db, count)
    ingest.reset()
    twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
    args = [twistd, "-n", "--pidfile=", "relay", "--listen",
            "unix:{}:mode=600".format(os.path.join(directory, "s")), "--db", db,
            "--sync-url", "http://127.0.0.1:{}".format(port), "--workspace-id", WORKSPACE,
            ] + list(sync_args)
    env = dict(os.environ, RELAY_SYNC_KEY=KEY,
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = _Proc()
    started = reactor.seconds()
    transport = reactor.spawnProcess(proc, twistd, args, env=env, path=directory)
    while len(ingest.ids) < count and reactor.seconds() - started < timeout and not proc.ended.called:
        yield task.deferLater(reactor, 0.05, lambda: None)
    done = reactor.seconds()
    if not proc.ended.called:
        transport.signalProcess(signal.SIGTERM)
    yield proc.ended
    ok = ingest.ids == ids
    span = (ingest.last - ingest.first) if ingest.first is not None else float("nan")
    result = {
        "label": label, "messages": count, "ok": ok, "received": len(ingest.ids),
        "seconds": span, "total_seconds": done - started,
        "rate": count / span if span and span > 0 else 0.0,
        "mean_batch": ingest.messages / ingest.requests if ingest.requests else 0.0,
        "requests": ingest.requests, "raw": ingest.raw, "wire": ingest.wire,
    }
    if not ok:
        sys.stderr.write("bench_sync: {}: received {} of {} ids; daemon output:\n{}\n".format(
            label, len(ingest.ids), count, b"".join(proc.output).decode("utf-8", "replace")[-4000:]))
    return result


def table(results, baseline):
    lines = ["{:<34} {:>8} {:>8} {:>10} {:>7} {:>11} {:>11} {:>6} {:>8}".format(
        "run", "msgs", "secs", "msgs/s", "batch", "raw bytes", "wire bytes", "gzip", "vs base")]
    for r in results:
        lines.append("{:<34} {:>8} {:>8.2f} {:>10.0f} {:>7.1f} {:>11} {:>11} {:>5.1f}x {:>7.1f}x".format(
            r["label"], r["messages"], r["seconds"], r["rate"], r["mean_batch"], r["raw"], r["wire"],
            r["raw"] / r["wire"] if r["wire"] else 0.0,
            r["rate"] / baseline["rate"] if baseline["rate"] else 0.0))
    return "\n".join(lines)


@defer.inlineCallbacks
def main(reactor, argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=100000)
    parser.add_argument("--baseline-messages", type=int, default=3000)
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--sync-arg", action="append", default=[],
                        help="extra twistd relay argument for the measured run (repeatable)")
    options = parser.parse_args(argv)

    ingest = CountingIngest(reactor)
    site = server.Site(ingest)
    site.noisy = False
    listening = reactor.listenTCP(0, site, interface="127.0.0.1")
    port = listening.getHost().port
    results = []
    baseline = yield run_one(
        reactor, ingest, port, "baseline: 1 msg/POST, no gzip", options.baseline_messages,
        ["--sync-batch-size", "1", "--sync-compress-threshold", "1000000000",
         "--sync-batch-delay-ms", "0"], options.timeout)
    results.append(baseline)
    label = "sync defaults" + (" " + " ".join(options.sync_arg) if options.sync_arg else "")
    measured = yield run_one(reactor, ingest, port, label, options.messages, options.sync_arg,
                             options.timeout)
    results.append(measured)
    yield listening.stopListening()
    print("bench_sync: {} stored messages -> loopback HTTP server (python {}, {} cores)".format(
        options.messages, sys.version.split()[0], os.cpu_count()))
    print(table(results, baseline))
    ratio = measured["raw"] / measured["wire"] if measured["wire"] else 0.0
    print("goal: >= {:.0f} msgs/s -> {}; gzip >= {:.0f}x -> {}".format(
        GOAL_MSGS_PER_S, "met" if measured["rate"] >= GOAL_MSGS_PER_S else "NOT met",
        GOAL_RATIO, "met" if ratio >= GOAL_RATIO else "NOT met"))
    if not all(r["ok"] for r in results):
        print("FAILED: not every stored message arrived")
        raise SystemExit(1)


if __name__ == "__main__":
    task.react(main, (sys.argv[1:],))
