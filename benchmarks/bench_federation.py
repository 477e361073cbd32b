#!/usr/bin/env python
# -*- test-case-name: tests.e2e.test_federation -*-
"""
Federation benchmark (issue 10): an agent on daemon A sending to an agent
on daemon B through the ingest service and PostgreSQL on loopback, against
the same two agents on one daemon, in the same run.

Starts ``twistd -n relay-ingest`` (a database of its own, created if
missing, emptied first) and two ``twistd -n relay --federate`` daemons with
this tree first on PYTHONPATH, then for each case:

  - throughput: relay/bench/loadgen.py, ``--messages`` durable SENDs with
    ``--window`` of them unreceipted at a time, its receiver on daemon B;
    messages/s delivered;
  - latency: ``--latency-messages`` SENDs one at a time (the next after the
    previous DELIVER): SEND-to-DELIVER p50/p99.

    python benchmarks/bench_federation.py
    python benchmarks/bench_federation.py --messages 50000 --window 2000

Goal (issue 10): at least 5,000 messages/s across daemons, p50 below 25 ms.
Exit status 0 when every message arrived exactly once, 1 otherwise.
"""

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from relay.bench.report import format_table  # noqa: E402

GOAL_RATE = 5000.0
GOAL_P50_MS = 25.0


def twistd():
    candidate = os.path.join(os.path.dirname(sys.executable), "twistd")
    return candidate if os.path.exists(candidate) else shutil.which("twistd")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def prepare_database(dsn, name):
    import psycopg2
    admin = psycopg2.connect(dsn)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
        if not cur.fetchone():
            cur.execute('CREATE DATABASE "%s"' % (name,))
    admin.close()
    return dsn.replace("dbname=" + dsn.split("dbname=")[1].split()[0], "dbname=" + name) \
        if "dbname=" in dsn else dsn + " dbname=" + name


def env():
    e = dict(os.environ)
    e["PYTHONPATH"] = ROOT + (os.pathsep + e["PYTHONPATH"] if e.get("PYTHONPATH") else "")
    return e


def wait(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise SystemExit("bench_federation: timed out waiting for " + what)


def healthy(url):
    try:
        return urllib.request.urlopen(url + "/healthz", timeout=1).status == 200
    except Exception:
        return False


class Processes:

    def __init__(self):
        self.procs = []
        self.dir = tempfile.mkdtemp(prefix="relay-bench-fed-")

    def spawn(self, args, name, extra_env=None):
        log = open(os.path.join(self.dir, name + ".log"), "w")
        e = env()
        e.update(extra_env or {})
        p = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=e, cwd=self.dir)
        self.procs.append(p)
        return p

    def close(self):
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def start(args, procs):
    import psycopg2
    from relay.ingest import keys
    dsn = prepare_database(args.postgres, args.database)
    port = free_port()
    url = "http://127.0.0.1:%d" % (port,)
    procs.spawn([twistd(), "-n", "--pidfile=", "relay-ingest", "--listen",
                 "tcp:%d:interface=127.0.0.1" % (port,), "--postgres", dsn], "ingest")
    wait(lambda: healthy(url), 60, "the ingest")
    conn = psycopg2.connect(dsn)
    with conn, conn.cursor() as cur:
        cur.execute("TRUNCATE agent_messages, api_keys, fed_directory, fed_daemons, fed_inbound")
    workspace = str(uuid.uuid4())
    key = keys.create_key(conn, workspace)[1]
    conn.close()
    sockets = {}
    for name in ("a", "b"):
        path = os.path.join(procs.dir, name + ".sock")
        sockets[name] = path
        procs.spawn([twistd(), "-n", "--pidfile=", "relay", "--listen", "unix:%s:mode=600" % path,
                     "--db", os.path.join(procs.dir, name + ".sqlite"), "--federate",
                     # As bench_core.py: the load generator is not rate limited.
                     "--no-rate-limit", "--sync-url", url, "--workspace-id", workspace, "--federate-wait", "20"],
                    "daemon-" + name, {"RELAY_SYNC_KEY": key})
    for path in sockets.values():
        wait(lambda: os.path.exists(path), 60, "a daemon's socket")
    return sockets


def measure(args, sockets):
    from twisted.internet import defer, task
    from relay import client as relay_client
    from relay.client.status import fetch_status

    from relay.bench import loadgen
    results = {}
    throughput = {}
    # Throughput first, with the stdlib load generator (pre-encoded frames,
    # closed loop: --window unreceipted SENDs per sender); receivers on
    # daemon B for the federated case.
    for label, receivers_on in (("one daemon (A to A)", sockets["a"]),
                                ("across daemons (A to B)", sockets["b"])):
        r = loadgen.run(sockets["a"], messages=args.messages, size=args.size,
                        window=args.window, durable=args.durable, idle_timeout=30.0,
                        receiver_path=receivers_on)
        throughput[label] = {"rate": r["msgs_per_s"], "received": r["delivered"],
                             "twice": r["duplicates"], "lost": r["lost"],
                             "loadgen_p50": r["p50_ms"]}

    async def known(reactor, endpoint, name):
        for _ in range(600):
            status = await fetch_status(reactor, endpoint)
            fed = status.get("federation") or {}
            if any(e["name"] == name for e in fed.get("directory", [])):
                return
            await task.deferLater(reactor, 0.05, lambda: None)
        raise SystemExit("bench_federation: %s never appeared in the directory" % (name,))

    async def case(reactor, label, send_sock, recv_sock):
        arrivals = {}
        waiter = [None]

        def got(message):
            n = int(message.body.split(" ", 1)[0])
            arrivals.setdefault(n, []).append(time.perf_counter())
            if waiter[0] is not None and waiter[0][0] == n:
                d = waiter[0][1]
                waiter[0] = None
                d.callback(None)

        tag = label.split()[0]
        recv = await relay_client.connect(reactor, "unix:" + recv_sock, "recv-" + tag,
                                          on_message=got)
        sender = await relay_client.connect(reactor, "unix:" + send_sock, "send-" + tag)
        await known(reactor, "unix:" + send_sock, "recv-" + tag)
        body = "x" * args.size
        # Latency, one at a time (after a warm-up message).
        lat = []
        receipts = []
        for n in range(-1, args.latency_messages):
            d = defer.Deferred()
            waiter[0] = (1_000_000 + n, d)
            t0 = time.perf_counter()
            receipts.append(sender.send("recv-" + tag, "%d %s" % (1_000_000 + n, body)))
            await d
            if n >= 0:
                lat.append((arrivals[1_000_000 + n][0] - t0) * 1000.0)
        lat.sort()
        results[label] = {"p50": lat[len(lat) // 2],
                          "p99": lat[min(len(lat) - 1, int(len(lat) * 0.99))]}
        await defer.gatherResults(receipts)
        await sender.close()
        await recv.close()

    async def main(reactor):
        await case(reactor, "one daemon (A to A)", sockets["a"], sockets["a"])
        await case(reactor, "across daemons (A to B)", sockets["a"], sockets["b"])

    from twisted.internet import reactor
    outcome = []
    d = defer.ensureDeferred(main(reactor))
    d.addBoth(outcome.append)
    d.addBoth(lambda _: reactor.stop())
    reactor.run()
    if outcome and hasattr(outcome[0], "raiseException"):
        outcome[0].raiseException()
    for label in results:
        results[label].update(throughput[label])
    return results


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--messages", type=int, default=20000)
    p.add_argument("--window", type=int, default=1000)
    p.add_argument("--size", type=int, default=200)
    p.add_argument("--latency-messages", type=int, default=300)
    p.add_argument("--no-durable", dest="durable", action="store_false",
                   help="SENDs without receipts (the window is then of writes)")
    p.add_argument("--postgres", default=os.environ.get(
        "RELAY_TEST_POSTGRES_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=postgres"))
    p.add_argument("--database", default="relay_bench_federation")
    args = p.parse_args(argv)
    procs = Processes()
    try:
        sockets = start(args, procs)
        results = measure(args, sockets)
    finally:
        procs.close()
    rows = [("messages", "%d of %d bytes, window %d; latency over %d one at a time"
             % (args.messages, args.size, args.window, args.latency_messages))]
    for label, r in results.items():
        rows.append((label, "%8.0f msg/s   p50 %6.2f ms   p99 %6.2f ms   received %d, twice %d"
                     % (r["rate"], r["p50"], r["p99"], r["received"], r["twice"])))
    local, fed = results["one daemon (A to A)"], results["across daemons (A to B)"]
    rows.append(("across / one daemon", "%.2f of the throughput" % (fed["rate"] / local["rate"])))
    rows.append(("goal", "%s: >= %d msg/s across daemons (%.0f), p50 < %d ms (%.2f)"
                 % ("met" if fed["rate"] >= GOAL_RATE and fed["p50"] < GOAL_P50_MS
                    else "NOT met", GOAL_RATE, fed["rate"], GOAL_P50_MS, fed["p50"])))
    print("\n".join(format_table(rows)))
    ok = all(r["received"] == args.messages and r["twice"] == 0 for r in results.values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
