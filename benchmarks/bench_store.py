#!/usr/bin/env python
# -*- test-case-name: tests.test_store -*-
"""
Store throughput benchmark: stored rows per second through the daemon's
write path (relay.store.Store -> relay.batcher.Batcher -> adbapi's writer
thread -> SQLite) against a plain sqlite3 ``executemany`` of the same rows in
one transaction (the baseline), measured in the same run on the same disk.

The rows are what the router queues for each accepted SEND: one ``messages``
row and one ``deliveries`` row per recipient (``--recipients``).  The producer
queues them as fast as it can, ``--chunk`` messages per reactor turn (as if
that many frames arrived in one socket read), with the store's default batch
settings unless told otherwise; the clock stops when everything has committed
(the final ``batcher.flush()`` fires).  Both sides use the same schema and
pragmas (WAL, and ``--synchronous``: full, normal, or by default both, one
after the other in the same run); each run starts from an empty file; the
best of ``--repeat`` runs is reported for each.

    python benchmarks/bench_store.py
    python benchmarks/bench_store.py --messages 50000 --recipients 3
    python benchmarks/bench_store.py --batch-size 500 --batch-delay-ms 20
    python benchmarks/bench_store.py --synchronous full

Exit status 0 when every run stored every row, 1 otherwise.
"""

import argparse
import os
import shutil
import sqlite3
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import orjson  # noqa: E402
from twisted.internet import defer, task  # noqa: E402

from relay import store as store_module  # noqa: E402
from relay.store import STATUS_PENDING  # noqa: E402
from relay.store import SQL, Store  # noqa: E402


def make_messages(n, recipients, body_bytes):
    """
    The rows of C{n} accepted SENDs, built the way L{relay.router.Router.send}
    builds them: (message row, size, [(recipient, stream key, stream seq)]).
    """
    names = ["agent-%d" % (i,) for i in range(recipients)]
    body = "x" * body_bytes
    streams = {}
    now_ms = 1_700_000_000_000
    out = []
    for seq in range(1, n + 1):
        payload = {"kind": "message", "body": body, "thread": None}
        payload_text = orjson.dumps(payload).decode()
        to = names[0] if recipients == 1 else "*"
        row = [seq, None, "s%d" % (seq,), now_ms, "sender", to, None, None, "message",
               payload_text, '{"requires_ack":true}', None, now_ms + 86_400_000]
        deliveries = []
        for name in names:
            key = (name, "default", "sender")
            sseq = streams.get(key, 0) + 1
            streams[key] = sseq
            deliveries.append((name, key, sseq))
        out.append((row, len(payload_text) + 120, deliveries))
    return out


@defer.inlineCallbacks
def run_store(reactor, path, messages, chunk, batch_size, batch_delay, batch_bytes,
              receipts, synchronous="full"):
    """
    Queue every message through a real L{Store}; fires with (seconds,
    metrics) once all of it has committed.  With C{receipts}, each message
    also waits for a receipt after its commit, as a SEND with
    C{requires_ack} does in the router.
    """
    receipted = []
    store = Store(reactor, path, batch_size=batch_size, batch_delay=batch_delay,
                  batch_bytes=batch_bytes, synchronous=synchronous)
    store.open()
    try:
        started = reactor.seconds()
        for i in range(0, len(messages), chunk):
            now_ms = int(reactor.seconds() * 1000)
            for row, size, deliveries in messages[i:i + chunk]:
                seq = store.next_seq()
                row = list(row)
                row[0] = seq
                row[1] = store.message_id(seq)
                store.begin_send()
                store.add_message(row, size)
                for name, key, sseq in deliveries:
                    store.add_delivery(name, seq, key, sseq, STATUS_PENDING, now_ms)
                store.end_send()
                if receipts:
                    store.after_commit(receipted.append, seq)
                    store.batcher.soon()
            # One reactor turn per chunk, like one socket read of frames:
            # commits that landed meanwhile are processed here.
            yield task.deferLater(reactor, 0, lambda: None)
        yield store.batcher.flush()
        elapsed = reactor.seconds() - started
        metrics = dict(store.batcher.metrics)
        metrics["flushes_by_cause"] = dict(metrics["flushes_by_cause"])
        if receipts and len(receipted) != len(messages):
            raise AssertionError("%d receipts for %d messages" % (len(receipted), len(messages)))
    finally:
        yield store.close()
    return elapsed, metrics


def run_baseline(path, messages, synchronous="full"):
    """
    The same rows with plain sqlite3: one executemany per table in one
    transaction, same schema and pragmas.  Returns seconds.
    """
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        store_module._open_connection(conn, synchronous)
        store_module.upgrade(conn, _QuietLog(), path)
        message_rows = []
        delivery_rows = []
        for row, size, deliveries in messages:
            row = list(row) + [None]  # send_fp
            row[1] = "base-%d" % (row[0],)
            message_rows.append(row)
            for name, key, sseq in deliveries:
                delivery_rows.append((name, row[0], sseq, STATUS_PENDING, 0, row[3]))
        started = time.perf_counter()
        conn.execute("BEGIN")
        conn.executemany(SQL["message"], message_rows)
        conn.executemany(SQL["delivery"], delivery_rows)
        conn.execute("COMMIT")
        return time.perf_counter() - started
    finally:
        conn.close()


class _QuietLog:
    def info(self, *args, **kwargs):
        pass


def count_rows(path):
    conn = sqlite3.connect(path)
    try:
        return (conn.execute("SELECT count(*) FROM messages").fetchone()[0],
                conn.execute("SELECT count(*) FROM deliveries").fetchone()[0])
    finally:
        conn.close()


def fresh(directory, name):
    path = os.path.join(directory, name)
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)
    return path


@defer.inlineCallbacks
def main(reactor, argv):
    parser = argparse.ArgumentParser(
        description="Stored rows/s of the Batcher/Store path vs one plain sqlite3 transaction.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--recipients", type=int, default=1,
                        help="delivery rows per message (1 = direct, more = broadcast)")
    parser.add_argument("--body-bytes", type=int, default=200)
    parser.add_argument("--chunk", type=int, default=256,
                        help="messages queued per reactor turn")
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--batch-delay-ms", type=float, default=100.0)
    parser.add_argument("--batch-bytes", type=int, default=1048576)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--dir", default=None, help="where the files go (default: a temp dir)")
    parser.add_argument("--synchronous", choices=("full", "normal", "both"), default="both",
                        help="SQLite synchronous setting of both sides (default: both, in turn)")
    args = parser.parse_args(argv)

    directory = args.dir or tempfile.mkdtemp(prefix="bench-store-")
    messages = make_messages(args.messages, args.recipients, args.body_bytes)
    rows = args.messages * (1 + args.recipients)
    ok = True
    settings = ("full", "normal") if args.synchronous == "both" else (args.synchronous,)
    best = {}
    best_base = {}
    try:
        for _ in range(args.repeat):
            for sync in settings:
                for receipts in (True, False):
                    path = fresh(directory, "store.sqlite")
                    elapsed, metrics = yield run_store(
                        reactor, path, messages, args.chunk, args.batch_size,
                        args.batch_delay_ms / 1000.0, args.batch_bytes, receipts, sync)
                    if count_rows(path) != (args.messages, args.messages * args.recipients):
                        ok = False
                        print("store run lost rows: %r" % (count_rows(path),), file=sys.stderr)
                    key = (sync, receipts)
                    if key not in best or elapsed < best[key][0]:
                        best[key] = (elapsed, metrics)
                path = fresh(directory, "baseline.sqlite")
                elapsed = run_baseline(path, messages, sync)
                if count_rows(path) != (args.messages, args.messages * args.recipients):
                    ok = False
                if sync not in best_base or elapsed < best_base[sync]:
                    best_base[sync] = elapsed
    finally:
        if args.dir is None:
            shutil.rmtree(directory, ignore_errors=True)

    print("relay store benchmark: %d messages x (1 message + %d delivery rows) = %d rows,"
          " %d B bodies, %d messages per reactor turn, best of %d"
          % (args.messages, args.recipients, rows, args.body_bytes, args.chunk, args.repeat))
    print("batch settings: size %d, delay %g ms, bytes %d"
          % (args.batch_size, args.batch_delay_ms, args.batch_bytes))
    print()
    print("%-52s %8s %8s %10s %8s %8s %8s" % ("path", "rows", "seconds", "rows/s", "commits",
                                               "rows/cmt", "ratio"))
    for sync in settings:
        base_rate = rows / best_base[sync]
        for receipts, label in ((True, "Store, every message receipted"),
                                (False, "Store, no receipts")):
            elapsed, m = best[(sync, receipts)]
            print("%-52s %8d %8.3f %10s %8d %8.0f %7.2fx" % (
                "%s [synchronous=%s]" % (label, sync), rows, elapsed,
                "{:,.0f}".format(rows / elapsed), m["batches"],
                m["rows"] / max(1, m["batches"]), (rows / elapsed) / base_rate))
        print("%-52s %8d %8.3f %10s %8d %8d %7.2fx" % (
            "baseline: sqlite3 executemany, 1 txn [%s]" % (sync,), rows, best_base[sync],
            "{:,.0f}".format(base_rate), 1, rows, 1.0))
    print()
    for sync in settings:
        for receipts, label in ((True, "receipted"), (False, "no receipts")):
            causes = best[(sync, receipts)][1]["flushes_by_cause"]
            print("flushes by cause (%s, synchronous=%s): %s" % (label, sync, ", ".join(
                "%s %d" % kv for kv in sorted(causes.items()) if kv[1])))
    print("ratio = rows/s of the Store path / rows/s of the baseline with the same setting,"
          " same run, same disk")
    print("all rows stored: %s" % ("yes" if ok else "NO"))
    if not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    task.react(main, (sys.argv[1:],))
