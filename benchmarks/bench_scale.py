#!/usr/bin/env python
# -*- test-case-name: tests.e2e.test_bare_relay -*-
"""
Cost as the work grows (issue 14): one table per curve, each with a baseline
measured in the same run, each figure named with the goal it is measured
against and whether it is met.

- ``idle``: N idle agents connected (they answer PINGs, nothing else) while
  two agents exchange messages with relay/bench/loadgen.py: throughput, HELLO
  rate of the N, daemon RSS per idle agent. Baseline: the same against the
  bare Twisted relay (benchmarks/bare_relay.py).
- ``fanout``: a topic with K subscribers (each ACKs every DELIVER), one
  sender with durable receipts: deliveries per second. Baseline: the bare
  relay with the same K.
- ``history``: stores with 0, M1 and M2 messages already in them, built with
  SQLite directly on relay.store's schema (relay.store.upgrade): startup
  time, the same 1 to 1 run, ``relay history --thread T --limit 50``.
  Baseline: the empty store. And a HELLO that finds B messages waiting:
  time to its first DELIVER and the daemon's RSS while it drains them.
  Baseline: a HELLO that finds nothing.
- ``soak``: S messages pushed 1 to 1 through the daemon with a short
  ``--retention`` (default 5s), in chunks: after each, the store file's size
  (main file and -wal), its message rows and what STATUS says retention
  deleted; then, after a wait of a few passes with no load, the same once
  more. Baseline: the same run with ``--retention 0`` (keeps everything),
  on fewer messages if ``--soak-baseline-messages`` says so (its bytes per
  message give the growth expected at S).

    python benchmarks/bench_scale.py                 # default sizes, minutes
    python benchmarks/bench_scale.py --full          # the issue's sizes
    python benchmarks/bench_scale.py --curve idle --idle 10,100,1000,10000
    python benchmarks/bench_scale.py --soak          # the soak alone, 2,000,000 messages

Exit status: 0 when every run completed without loss, 1 otherwise.
"""

import argparse
import json
import os
import selectors
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

from bench_core import Daemon, start_bare, start_daemon  # noqa: E402
from relay.bench import loadgen  # noqa: E402
from relay.bench.loadgen import FrameBuffer, encode_ack, encode_frame  # noqa: E402
from relay.fdlimit import raise_fd_limit  # noqa: E402

DEFAULTS = {"idle": [10, 100, 1000], "fanout": [10, 100], "history": [0, 100000, 500000],
            "backlog": 20000, "messages": 10000, "soak": 100000}
FULL = {"idle": [10, 100, 1000, 10000], "fanout": [10, 100, 1000],
        "history": [0, 1000000, 5000000], "backlog": 100000, "messages": 20000,
        "soak": 2000000}


def met(ok):
    return "met" if ok else "NOT met"


def hello_frame(name):
    return encode_frame({
        "v": 1, "type": "HELLO", "id": "hello-" + name, "ts": int(time.time() * 1000),
        "payload": {"agent": name, "capabilities": {
            "ack": True, "resume": False, "max_inflight": 256, "supports_topics": True}}})


class Agents:
    """
    Many agent connections in one selector loop on a thread of their own:
    they say HELLO all at once (C{connect} measures how long the WELCOMEs
    take), answer PINGs, ACK every DELIVER and count them.
    """

    def __init__(self, path, names, topic=None):
        self.path = path
        self.names = names
        self.topic = topic
        self.selector = selectors.DefaultSelector()
        self.conns = {}
        self.delivered = 0
        self.welcomed = 0
        self.pongs = 0
        self.errors = []
        self._stop = False
        self._thread = None
        self.first_deliver_at = None

    def connect(self, timeout=120.0):
        """Connect and HELLO every agent; return the seconds until all WELCOMEd."""
        started = time.monotonic()
        for name in self.names:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(self.path)
            sock.setblocking(False)
            out = bytearray(hello_frame(name))
            if self.topic is not None:
                out += encode_frame({"v": 1, "type": "SUBSCRIBE", "id": "sub-" + name,
                                     "ts": 0, "topic": self.topic, "payload": {}})
                # Frames of one connection are handled in order: the PONG
                # says the subscription is in place.
                out += encode_frame({"v": 1, "type": "PING", "id": "ping-" + name, "ts": 0,
                                     "payload": {"nonce": "subscribed"}})
            state = {"name": name, "sock": sock, "frames": FrameBuffer(), "out": out}
            self.conns[sock.fileno()] = state
            self._flush(state)
            self.selector.register(sock, selectors.EVENT_READ, state)
            # Read as we go so that the daemon's accept backlog never fills.
            self._poll(0)
        want = len(self.names)
        deadline = started + timeout
        while self.welcomed < want or (self.topic is not None and self.pongs < want):
            if time.monotonic() > deadline:
                raise RuntimeError("only {} of {} WELCOMEs within {}s".format(
                    self.welcomed, want, timeout))
            self._poll(0.05)
        return time.monotonic() - started

    def _flush(self, state):
        if state["out"]:
            try:
                sent = state["sock"].send(state["out"])
            except (BlockingIOError, InterruptedError):
                sent = 0
            del state["out"][:sent]

    def _poll(self, timeout):
        for key, _ in self.selector.select(timeout):
            state = key.data
            try:
                data = state["sock"].recv(1 << 16)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError as e:
                data = b""
                self.errors.append("{}: {}".format(state["name"], e))
            if not data:
                self.errors.append("{}: closed by the daemon".format(state["name"]))
                self.selector.unregister(state["sock"])
                continue
            frames = state["frames"]
            frames.feed(data)
            while True:
                env = frames.next_frame()
                if env is None:
                    break
                kind = env.get("type")
                if kind == "DELIVER":
                    if self.first_deliver_at is None:
                        self.first_deliver_at = time.monotonic()
                    self.delivered += 1
                    seq = (env.get("delivery") or env["payload"].get("delivery") or {}).get(
                        "seq")
                    state["out"] += encode_ack(env.get("id"), seq, 0)
                elif kind == "WELCOME":
                    self.welcomed += 1
                elif kind == "PING":
                    state["out"] += encode_frame({
                        "v": 1, "type": "PONG", "id": "pong", "ts": 0,
                        "payload": {"nonce": (env.get("payload") or {}).get("nonce")}})
                elif kind == "PONG":
                    self.pongs += 1
                elif kind == "ERROR":
                    self.errors.append("{}: ERROR {}".format(state["name"], env.get("payload")))
            self._flush(state)
        for state in self.conns.values():
            if state["out"]:
                self._flush(state)

    def background(self):
        """Keep answering (PINGs, DELIVERs) on a thread until C{close}."""
        def loop():
            while not self._stop:
                self._poll(0.05)
        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()

    def close(self):
        self._stop = True
        if self._thread is not None:
            self._thread.join()
        for state in self.conns.values():
            state["sock"].close()
        self.selector.close()


def one_to_one(path, messages):
    """The 1 to 1 loadgen run of bench_core (durable receipts, window 1000)."""
    return loadgen.run(path, senders=1, receivers=1, messages=messages, size=200,
                       durable=True, idle_timeout=30.0)


def rss_kb(proc):
    return proc.status_kb("VmRSS") or 0


# -- idle agents ---------------------------------------------------------------

def idle_point(target, n, messages):
    """(hello_s, rss_per_idle_bytes, loadgen result) for N idle agents."""
    rss_before = rss_kb(target)
    agents = Agents(target.socket_path, ["idle-{}".format(i) for i in range(n)])
    try:
        hello_s = agents.connect()
        agents.background()
        time.sleep(0.5)  # let the daemon settle what each connection allocated
        rss_after = rss_kb(target)
        result = one_to_one(target.socket_path, messages)
        errors = list(agents.errors)
    finally:
        agents.close()
    result["errors"] += errors
    return hello_s, (rss_after - rss_before) * 1024.0 / n, result


def curve_idle(sizes, messages, out):
    rows = [("agents", "relay msg/s", "bare msg/s", "HELLO/s (relay)", "RSS/idle agent",
             "lost")]
    results = []
    ok = True
    for n in sizes:
        point = {}
        for which in ("relay", "bare"):
            target = (start_daemon("bench_scale", "relay-scale-", [], False)
                      if which == "relay" else start_bare("bench_scale"))
            if target is None:
                return False, results
            try:
                point[which] = idle_point(target, n, messages)
            finally:
                target.stop()
                shutil.rmtree(target.directory, True)
        hello_s, per_agent, result = point["relay"]
        _, bare_per_agent, bare = point["bare"]
        ok = ok and result["lost"] == 0 and result["complete"]
        results.append({"agents": n, "relay": result, "bare": bare, "hello_s": hello_s,
                        "rss_per_agent_b": per_agent, "bare_rss_per_agent_b": bare_per_agent})
        rows.append((str(n), "{:,.0f}".format(result["msgs_per_s"]),
                     "{:,.0f}".format(bare["msgs_per_s"]),
                     "{:,.0f} ({} in {:.2f} s)".format(n / hello_s, n, hello_s),
                     "{:.1f} KiB (bare {:.1f})".format(per_agent / 1024, bare_per_agent / 1024),
                     str(result["lost"])))
    out.write("\nIdle agents connected while 2 agents exchange {:,} messages "
              "(1 to 1, durable receipts)\n".format(messages))
    out.write(table(rows))
    first, last = results[0], results[-1]
    drop = 1 - last["relay"]["msgs_per_s"] / first["relay"]["msgs_per_s"]
    worst = max(r["rss_per_agent_b"] for r in results if r["agents"] >= 100) \
        if any(r["agents"] >= 100 for r in results) else float("nan")
    big = [r for r in results if r["agents"] >= 10000]
    out.write("goal: throughput within 10 % from {} to {} agents: {:+.1f} % -> {}\n".format(
        first["agents"], last["agents"], -drop * 100, met(drop <= 0.10)))
    out.write("goal: at most 20 KiB per idle agent (worst at >= 100 agents): {:.1f} KiB -> {}\n"
              .format(worst / 1024, met(worst <= 20 * 1024)))
    if big:
        out.write("goal: 10,000 HELLOs in under 10 s: {:.2f} s -> {}\n".format(
            big[0]["hello_s"], met(big[0]["hello_s"] < 10)))
    else:
        out.write("goal: 10,000 HELLOs in under 10 s: not measured at these sizes (--full)\n")
    return ok, results


# -- fan-out -------------------------------------------------------------------

def fanout_point(target, k, messages, window=20):
    """Deliveries per second to K subscribers of one topic; (per_s, result dict)."""
    topic = "fan"
    subs = Agents(target.socket_path, ["sub-{}".format(i) for i in range(k)], topic=topic)
    sock = None
    try:
        subs.connect()
        subs.background()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(target.socket_path)
        sock.sendall(hello_frame("fan-sender"))
        frames = FrameBuffer()
        receipts = 0
        sent = 0
        welcomed = False
        started = time.monotonic()
        deadline = started + 300
        total = k * messages
        body = "x" * 200
        while subs.delivered < total or receipts < messages:
            if time.monotonic() > deadline:
                break
            out = bytearray()
            # At most `window` messages not yet receipted nor delivered to all.
            while welcomed and sent < messages and sent - receipts < window and \
                    sent * k - subs.delivered < window * k:
                out += encode_frame({
                    "v": 1, "type": "SEND", "id": "fan-{}".format(sent), "ts": 0,
                    "from": "fan-sender", "to": "*", "topic": topic,
                    "payload": {"kind": "message", "body": body},
                    "payload_meta": {"requires_ack": True}})
                sent += 1
            if out:
                sock.sendall(out)
            sock.settimeout(0.01)
            try:
                data = sock.recv(1 << 16)
            except socket.timeout:
                continue
            if not data:
                break
            frames.feed(data)
            while True:
                env = frames.next_frame()
                if env is None:
                    break
                if env.get("type") == "WELCOME":
                    welcomed = True
                    started = time.monotonic()
                elif env.get("type") == "ACK":
                    receipts += 1
                elif env.get("type") == "PING":
                    sock.sendall(encode_frame({"v": 1, "type": "PONG", "id": "p", "ts": 0,
                                               "payload": env.get("payload") or {}}))
                elif env.get("type") in ("NACK", "ERROR"):
                    subs.errors.append("sender: {}".format(env))
        elapsed = time.monotonic() - started
        return subs.delivered / elapsed, {
            "subscribers": k, "messages": messages, "deliveries": subs.delivered,
            "expected": total, "receipts": receipts, "elapsed_s": elapsed,
            "errors": subs.errors[:5]}
    finally:
        if sock is not None:
            sock.close()
        subs.close()


def curve_fanout(sizes, deliveries, out):
    rows = [("subscribers", "messages", "relay deliveries/s", "bare deliveries/s",
             "relay/bare", "all delivered")]
    results = []
    ok = True
    for k in sizes:
        messages = max(20, deliveries // k)
        point = {}
        for which in ("relay", "bare"):
            target = (start_daemon("bench_scale", "relay-scale-", [], False)
                      if which == "relay" else start_bare("bench_scale"))
            if target is None:
                return False, results
            try:
                point[which] = fanout_point(target, k, messages)
            finally:
                target.stop()
                shutil.rmtree(target.directory, True)
        (rate, res), (bare_rate, bare_res) = point["relay"], point["bare"]
        complete = res["deliveries"] >= res["expected"] and res["receipts"] == messages
        ok = ok and complete
        results.append({"relay": res, "bare": bare_res, "relay_per_s": rate,
                        "bare_per_s": bare_rate})
        rows.append((str(k), str(messages), "{:,.0f}".format(rate), "{:,.0f}".format(bare_rate),
                     "{:.2f}".format(rate / bare_rate if bare_rate else float("nan")),
                     "yes" if complete else "NO ({}/{})".format(res["deliveries"],
                                                               res["expected"])))
    out.write("\nFan-out: one sender (durable receipts, window 20) to a topic with K "
              "subscribers, each ACKing every DELIVER\n")
    out.write(table(rows))
    at100 = [r for r in results if r["relay"]["subscribers"] == 100]
    if at100:
        out.write("goal: at least 50,000 deliveries/s at 100 subscribers: {:,.0f} -> {}\n"
                  .format(at100[0]["relay_per_s"], met(at100[0]["relay_per_s"] >= 50000)))
    return ok, results


# -- history -------------------------------------------------------------------

class _Quiet:
    def info(self, *a, **k):
        pass


def build_store(path, rows, backlog=0, backlog_to="waiting"):
    """
    A store file with C{rows} acked messages (alice to bob, threads of 100)
    and C{backlog} pending ones to C{backlog_to}, written with SQLite
    directly on relay.store's schema; returns the seconds it took.
    """
    from relay.store import upgrade
    started = time.monotonic()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    upgrade(conn, _Quiet(), path)
    now = int(time.time() * 1000)
    base = now - 24 * 3600 * 1000
    payload = json.dumps({"kind": "message", "body": "x" * 200})
    total = rows + backlog
    chunk = 100000
    conn.execute("BEGIN")
    for start in range(0, total, chunk):
        stop = min(total, start + chunk)
        msgs = []
        dels = []
        for i in range(start, stop):
            seq = i + 1
            waiting = i >= rows
            recipient = backlog_to if waiting else "bob"
            ts = now - 1000 if waiting else base + i // 100
            msgs.append((seq, "h-%d" % seq, None, ts, "alice", recipient, None,
                         "t%d" % (i // 100), "message", payload, None, None,
                         ts + 30 * 24 * 3600 * 1000))
            dels.append((recipient, seq, (i - rows + 1) if waiting else (i + 1),
                         "pending" if waiting else "acked", ts))
        conn.executemany(
            "INSERT INTO messages (seq, id, send_id, ts, sender, recipient, topic, thread, "
            "kind, payload, payload_meta, extra, expires_at) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", msgs)
        conn.executemany(
            "INSERT INTO deliveries (recipient, message_seq, stream_seq, status, attempts, "
            "updated_at) VALUES (?,?,?,?,0,?)", dels)
    if rows:
        conn.execute("INSERT INTO streams VALUES ('bob', 'default', 'alice', ?)", (rows,))
    if backlog:
        conn.execute("INSERT INTO streams VALUES (?, 'default', 'alice', ?)",
                     (backlog_to, backlog))
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return time.monotonic() - started


def start_on(db_path, directory):
    """Start the real daemon on an existing store; (daemon, seconds to accept)."""
    daemon = Daemon(directory, ["--no-rate-limit"])
    daemon.db_path = db_path
    started = time.monotonic()
    daemon.start(timeout=300.0)
    return daemon, time.monotonic() - started


def history_seconds(db_path, thread):
    """Wall time of ``relay history --thread T --limit 50`` (best of 3)."""
    relay_cli = os.path.join(os.path.dirname(sys.executable), "relay")
    command = ([relay_cli] if os.path.exists(relay_cli) else
               [sys.executable, "-m", "relay.cli"]) + [
        "history", "--db", db_path, "--thread", thread, "--limit", "50", "--json"]
    env = dict(os.environ, PYTHONPATH=ROOT)
    best = None
    for _ in range(3):
        started = time.monotonic()
        done = subprocess.run(command, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
        took = time.monotonic() - started
        if done.returncode != 0:
            raise RuntimeError("relay history failed: {}".format(done.stderr[-300:]))
        best = took if best is None else min(best, took)
    return best, len(done.stdout.splitlines())


def history_query_seconds(db_path, thread):
    """The same query in this process (relay.cli.history), best of 3: no startup."""
    from relay.cli.history import open_store, query_messages
    best = None
    for _ in range(3):
        started = time.monotonic()
        db = open_store(db_path)
        try:
            query_messages(db, thread=thread, limit=50)
        finally:
            db.close()
        took = time.monotonic() - started
        best = took if best is None else min(best, took)
    return best


def curve_history(sizes, messages, out):
    rows = [("stored", "built in", "startup", "1 to 1 msg/s", "history --thread",
             "its query", "rows")]
    results = []
    ok = True
    for n in sizes:
        directory = tempfile.mkdtemp(prefix="relay-hist-")
        try:
            db = os.path.join(directory, "relay.sqlite")
            built = build_store(db, n)
            # A thread near the end of the file, as `relay history` would be asked.
            thread = "t%d" % (max(0, n - 1) // 100 // 2)
            hist_s, hist_rows = history_seconds(db, thread)
            query_s = history_query_seconds(db, thread)
            daemon, startup = start_on(db, directory)
            try:
                result = one_to_one(daemon.socket_path, messages)
            finally:
                daemon.stop(timeout=300)
        finally:
            shutil.rmtree(directory, True)
        ok = ok and result["lost"] == 0 and result["complete"]
        results.append({"stored": n, "build_s": built, "startup_s": startup,
                        "history_s": hist_s, "query_s": query_s, "history_rows": hist_rows, "run": result})
        rows.append(("{:,}".format(n) + (" (baseline)" if n == 0 else ""),
                     "{:.1f} s".format(built), "{:.2f} s".format(startup),
                     "{:,.0f}".format(result["msgs_per_s"]),
                     "{:.0f} ms".format(hist_s * 1000), "{:.1f} ms".format(query_s * 1000),
                     str(hist_rows)))
    out.write("\nHistory: the same 1 to 1 run ({:,} messages) on stores already holding "
              "N messages\n".format(messages))
    out.write(table(rows))
    base = results[0]
    last = results[-1]
    drop = 1 - last["run"]["msgs_per_s"] / base["run"]["msgs_per_s"]
    out.write("goal: throughput within 10 % from {:,} to {:,} stored: {:+.1f} % -> {}\n".format(
        base["stored"], last["stored"], -drop * 100, met(drop <= 0.10)))
    at1m = [r for r in results if r["stored"] >= 1000000]
    if at1m:
        out.write("goal: startup with 1 million rows under 5 s: {:.2f} s -> {}\n".format(
            at1m[0]["startup_s"], met(at1m[0]["startup_s"] < 5)))
    else:
        out.write("goal: startup with 1 million rows under 5 s: largest here {:,} rows, "
                  "{:.2f} s (not the goal's size; --full)\n".format(
                      last["stored"], last["startup_s"]))
    out.write("goal: `relay history --thread T --limit 50` under 100 ms on {} rows: "
              "command {:.0f} ms (empty store: {:.0f} ms, the CLI's start), its query "
              "{:.1f} ms -> {}\n".format(
                  "{:,}".format(last["stored"]), last["history_s"] * 1000,
                  base["history_s"] * 1000, last["query_s"] * 1000,
                  ("command " + met(last["history_s"] < 0.1) + ", query "
                   + met(last["query_s"] < 0.1)) if last["stored"] >= 5000000
                  else "not the goal's size (--full)"))
    return ok, results


def backlog_point(backlog):
    """A store with C{backlog} waiting for one agent: see L{backlog_point_on}."""
    directory = tempfile.mkdtemp(prefix="relay-backlog-")
    try:
        db = os.path.join(directory, "relay.sqlite")
        build_store(db, 0, backlog=backlog)
        return backlog_point_on(db, directory, backlog)
    finally:
        shutil.rmtree(directory, True)


def backlog_point_on(db, directory, backlog):
    """
    Start the daemon on C{db}, say HELLO as the agent C{backlog} messages
    wait for, and drain them (ACKing each): time to WELCOME and to the first
    DELIVER, RSS before and at its peak, how many arrived and how long it took.
    """
    daemon, _ = start_on(db, directory)
    try:
        time.sleep(0.5)
        before = rss_kb(daemon)
        peak = [before]
        agents = Agents(daemon.socket_path, ["waiting"])
        sampling = [True]

        def sample():
            while sampling[0]:
                peak.append(rss_kb(daemon))
                time.sleep(0.05)
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        started = time.monotonic()
        try:
            welcome_s = agents.connect()
            deadline = time.monotonic() + 300
            while agents.delivered < backlog and time.monotonic() < deadline:
                agents._poll(0.05)
                if agents.first_deliver_at is None and \
                        time.monotonic() - started > 30 and backlog:
                    break
            drained_s = time.monotonic() - started
        finally:
            sampling[0] = False
            sampler.join()
            agents.close()
        first = (agents.first_deliver_at - started) if agents.first_deliver_at else None
        return {"backlog": backlog, "welcome_s": welcome_s, "first_deliver_s": first,
                "rss_before_kb": before, "rss_peak_kb": max(peak),
                "delivered": agents.delivered, "drained_s": drained_s}
    finally:
        daemon.stop(timeout=300)


def curve_backlog(backlog, out):
    rows = [("waiting", "HELLO -> WELCOME", "HELLO -> first DELIVER", "RSS before",
             "RSS peak (growth)", "delivered", "drained in")]
    results = [backlog_point(0), backlog_point(backlog)]
    for r in results:
        rows.append(("{:,}".format(r["backlog"]) + (" (baseline)" if not r["backlog"] else ""),
                     "{:.0f} ms".format(r["welcome_s"] * 1000),
                     "-" if r["first_deliver_s"] is None else
                     "{:.0f} ms".format(r["first_deliver_s"] * 1000),
                     "{:.1f} MiB".format(r["rss_before_kb"] / 1024),
                     "{:.1f} MiB (+{:.1f})".format(r["rss_peak_kb"] / 1024,
                                                    (r["rss_peak_kb"] - r["rss_before_kb"])
                                                    / 1024),
                     "{:,}".format(r["delivered"]), "{:.1f} s".format(r["drained_s"])))
    out.write("\nBacklog: a HELLO that finds N messages waiting in the store\n")
    out.write(table(rows))
    r = results[1]
    first = r["first_deliver_s"]
    out.write("goal: starts delivering within 1 s: {} -> {}\n".format(
        "never" if first is None else "{:.2f} s".format(first),
        met(first is not None and first <= 1.0)))
    growth = (r["rss_peak_kb"] - r["rss_before_kb"]) - (
        results[0]["rss_peak_kb"] - results[0]["rss_before_kb"])
    out.write("goal: RSS does not grow with the backlog: +{:.1f} MiB for {:,} waiting "
              "({:.0f} bytes per message) -> {}\n".format(
                  growth / 1024, r["backlog"], growth * 1024.0 / max(1, r["backlog"]),
                  met(growth < 16 * 1024)))
    ok = r["delivered"] >= r["backlog"]
    return ok, results


# -- soak: a store that stays bounded ------------------------------------------

def daemon_status(path, timeout=10.0):
    """The daemon's STATUS reply payload, asked (before any HELLO) on a new connection."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
        sock.sendall(encode_frame({"v": 1, "type": "STATUS", "id": "soak-status", "ts": 0,
                                   "payload": {}}))
        frames = FrameBuffer()
        while True:
            data = sock.recv(1 << 16)
            if not data:
                raise RuntimeError("the daemon closed the STATUS connection")
            frames.feed(data)
            while True:
                env = frames.next_frame()
                if env is None:
                    break
                if env.get("type") == "STATUS_REPLY":
                    return env.get("payload") or {}
    finally:
        sock.close()


def store_sizes(db_path):
    """(main file bytes, -wal bytes) of a store; 0 for a file not there."""
    def size(path):
        try:
            return os.path.getsize(path)
        except OSError:
            return 0
    return size(db_path), size(db_path + "-wal")


def message_rows(db_path):
    db = sqlite3.connect("file:{}?mode=ro".format(db_path), uri=True)
    try:
        return db.execute("SELECT count(*) FROM messages").fetchone()[0]
    finally:
        db.close()


def soak_sample(daemon, pushed, started):
    main, wal = store_sizes(daemon.db_path)
    retention = daemon_status(daemon.socket_path).get("retention") or {}
    return {"pushed": pushed, "elapsed_s": time.monotonic() - started, "main_b": main,
            "wal_b": wal, "rows": message_rows(daemon.db_path),
            "deleted": retention.get("deleted_messages"),
            "vacuumed_pages": retention.get("vacuumed_pages"),
            "free_pages": retention.get("free_pages"), "passes": retention.get("passes"),
            "last_run_s": retention.get("last_run_s"), "rss_kb": rss_kb(daemon)}


def soak_run(retention, messages, samples, settle_s):
    """
    Push C{messages} 1 to 1 through a daemon with C{--retention retention}
    in C{samples} chunks, sampling the store after each; then wait
    C{settle_s} with no load and sample once more (when C{settle_s}).
    """
    daemon = start_daemon("bench_scale", "relay-soak-", ["--retention", retention], False)
    if daemon is None:
        return None
    points = []
    lost = 0
    complete = True
    try:
        started = time.monotonic()
        pushed = 0
        for i in range(samples):
            chunk = messages * (i + 1) // samples - pushed
            result = one_to_one(daemon.socket_path, chunk)
            pushed += result["delivered"]
            lost += result["lost"]
            complete = complete and result["complete"]
            points.append(soak_sample(daemon, pushed, started))
            sys.stderr.write("soak --retention {}: {:,} of {:,}, store {:.1f} MiB\n".format(
                retention, pushed, messages,
                (points[-1]["main_b"] + points[-1]["wal_b"]) / 2.0 ** 20))
        push_s = time.monotonic() - started
        if settle_s:
            time.sleep(settle_s)
            points.append(dict(soak_sample(daemon, pushed, started), idle=True))
    finally:
        daemon.stop(timeout=300)
        shutil.rmtree(daemon.directory, True)
    return {"retention": retention, "messages": messages, "points": points, "lost": lost,
            "complete": complete, "push_s": push_s}


def _mib(n):
    return "{:.1f} MiB".format(n / 2.0 ** 20)


def soak_table(run):
    rows = [("pushed", "elapsed", "main file", "-wal", "file + wal", "message rows",
             "deleted (STATUS)", "pages vacuumed", "last pass", "daemon RSS")]
    for p in run["points"]:
        rows.append(("{:,}".format(p["pushed"]) + (" + idle" if p.get("idle") else ""),
                     "{:.0f} s".format(p["elapsed_s"]), _mib(p["main_b"]), _mib(p["wal_b"]),
                     _mib(p["main_b"] + p["wal_b"]), "{:,}".format(p["rows"]),
                     "-" if p["deleted"] is None else "{:,}".format(p["deleted"]),
                     "-" if p["vacuumed_pages"] is None else "{:,}".format(p["vacuumed_pages"]),
                     "-" if p["last_run_s"] is None else "{:.0f} ms".format(
                         p["last_run_s"] * 1000),
                     "{:.0f} MiB".format(p["rss_kb"] / 1024.0)))
    return table(rows)


def levels_off(size):
    """
    The goal line for store sizes sampled at even steps of a soak: the
    file levels off when the second half's largest sample is at most 10 %
    above the first half's (one sample moves with where the retention pass
    happens to be, so the largest of each half, not the last one, is what
    shows growth).
    """
    first, second = size[:max(1, len(size) // 2)], size[max(1, len(size) // 2):] or size
    growth = max(second) / float(max(first)) - 1 if max(first) else 0.0
    return ("goal: the file size levels off: largest {} in the first half, {} in the second "
            "({:+.1f} %), {} at the end -> {}".format(
                _mib(max(first)), _mib(max(second)), growth * 100, _mib(size[-1]),
                met(growth <= 0.10)))


def curve_soak(messages, retention, baseline_messages, samples, out):
    from relay.options import duration
    settle_s = duration("soak-retention")(retention) * 2 + 5
    kept = soak_run(retention, messages, samples, settle_s)
    if kept is None:
        return False, {}
    results = {"retention": kept}
    out.write("\nSoak: {:,} messages 1 to 1 (durable receipts, each acked) through the daemon "
              "with --retention {}, sampled every {:,}; the last row after {:.0f} s with no "
              "load\n".format(messages, retention, messages // samples, settle_s))
    out.write(soak_table(kept))
    size = [p["main_b"] + p["wal_b"] for p in kept["points"] if not p.get("idle")]
    out.write("{:,} messages in {:.0f} s ({:,.0f} msg/s), lost {}\n".format(
        kept["points"][-1]["pushed"], kept["push_s"],
        kept["points"][-1]["pushed"] / kept["push_s"], kept["lost"]))
    out.write(levels_off(size) + "\n")
    ok = kept["lost"] == 0 and kept["complete"]
    if baseline_messages:
        base = soak_run("0", baseline_messages, samples, 0)
        if base is None:
            return False, results
        results["baseline"] = base
        out.write("\nBaseline: {:,} messages the same way with --retention 0 (keeps "
                  "everything)\n".format(baseline_messages))
        out.write(soak_table(base))
        last = base["points"][-1]
        per = (last["main_b"] + last["wal_b"]) / float(max(1, last["pushed"]))
        out.write("kept: {:.0f} bytes per message: {:,} messages would take about {} without "
                  "retention ({:.0f} times the {} with --retention {})\n".format(
                      per, messages, _mib(per * messages), per * messages / max(1, size[-1]),
                      _mib(size[-1]), retention))
        ok = ok and base["lost"] == 0 and base["complete"]
    return ok, results


def table(rows):
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines) + "\n"


def sizes(text):
    return [int(x.replace("_", "")) for x in text.split(",") if x.strip()]


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="Cost as the work grows: a table per curve, each with a baseline.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--full", action="store_true",
                        help="the issue's sizes (10,000 agents, 1,000 subscribers, 5 million "
                        "rows, 100,000 waiting): a long run")
    parser.add_argument("--curve", action="append",
                        choices=["idle", "fanout", "history", "backlog", "soak"],
                        help="run only this curve (repeatable; default all)")
    parser.add_argument("--idle", type=sizes, help="idle agent counts, e.g. 10,100,1000")
    parser.add_argument("--fanout", type=sizes, help="subscriber counts, e.g. 10,100")
    parser.add_argument("--history", type=sizes, help="stored messages, e.g. 0,1000000")
    parser.add_argument("--backlog", type=int, help="messages waiting for one HELLO")
    parser.add_argument("--messages", type=int, help="messages of each 1 to 1 run")
    parser.add_argument("--fanout-deliveries", type=int, default=40000,
                        help="deliveries per fan-out point (messages = this / K)")
    parser.add_argument("--soak", action="store_true",
                        help="run the soak alone at the issue's size (2,000,000 messages "
                        "unless --soak-messages)")
    parser.add_argument("--soak-messages", type=int,
                        help="messages of the soak (default 100,000; 2,000,000 with --full "
                        "or --soak)")
    parser.add_argument("--soak-retention", default="5s",
                        help="the soak's --retention (default 5s)")
    parser.add_argument("--soak-baseline-messages", type=int,
                        help="messages of the --retention 0 baseline (default: as many as "
                        "the soak; 0: none)")
    parser.add_argument("--soak-samples", type=int, default=10,
                        help="store samples during the soak (default 10)")
    parser.add_argument("--json", metavar="PATH", help="also write every result here")
    args = parser.parse_args(argv)
    chosen = dict(FULL if args.full or args.soak else DEFAULTS)
    for key in ("idle", "fanout", "history", "backlog", "messages"):
        if getattr(args, key) is not None:
            chosen[key] = getattr(args, key)
    if args.soak_messages is not None:
        chosen["soak"] = args.soak_messages
    if chosen["soak"] < 1 or args.soak_samples < 1:
        parser.error("--soak-messages and --soak-samples must be at least 1")
    baseline = chosen["soak"] if args.soak_baseline_messages is None \
        else args.soak_baseline_messages
    # This process holds one socket per idle agent (and the daemon one more).
    raise_fd_limit()
    curves = args.curve or (["soak"] if args.soak else
                            ["idle", "fanout", "history", "backlog", "soak"])
    out = sys.stdout
    out.write("bench_scale: {} on {} cores, load average {:.1f} at start\n".format(
        ", ".join(curves), os.cpu_count(), os.getloadavg()[0]))
    ok = True
    everything = {}
    for curve in curves:
        if curve == "idle":
            good, res = curve_idle(chosen["idle"], chosen["messages"], out)
        elif curve == "fanout":
            good, res = curve_fanout(chosen["fanout"], args.fanout_deliveries, out)
        elif curve == "history":
            good, res = curve_history(chosen["history"], chosen["messages"], out)
        elif curve == "soak":
            good, res = curve_soak(chosen["soak"], args.soak_retention, baseline,
                                   args.soak_samples, out)
        else:
            good, res = curve_backlog(chosen["backlog"], out)
        out.flush()
        ok = ok and good
        everything[curve] = res
    if args.json:
        with open(args.json, "w") as f:
            json.dump(everything, f, indent=2)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
