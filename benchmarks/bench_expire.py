#!/usr/bin/env python
# -*- test-case-name: tests.test_store -*-
"""
Cost of one run of the store's expiry (the statement the router queues once a
minute, run on the single writer) on a store holding many messages that all
expired long ago, as a daemon that has run for months has: before (schema 2,
the full query of relay before issue 13 point 12) and after (schema 3, the
incremental query of relay.store._expire, once its watermarks are set).

    python benchmarks/bench_expire.py                 # 1,000,000 messages
    python benchmarks/bench_expire.py --messages 100000 --repeat 5

Each message has one delivery, acked or expired (nothing left to expire), and
a few fresh ones are open; the best of --repeat runs is reported for each.
Exit status 0 when both queries marked the same rows, 1 otherwise.
"""

import argparse
import json
import os
import shutil
import sqlite3
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from relay import store as store_module  # noqa: E402

# The expiry statement of relay before issue 13 point 12: every message that
# ever expired, every run.
OLD_EXPIRE = (
    "UPDATE deliveries SET status = 'expired', updated_at = ?"
    " WHERE status IN ('pending', 'delivered')"
    " AND message_seq IN (SELECT seq FROM messages WHERE expires_at <= ?)"
)


class _QuietLog:
    def info(self, *args, **kwargs):
        pass


def build(path, n, fresh=100):
    """
    A schema-2 store with C{n} long-expired messages and C{fresh} open ones.
    """
    conn = sqlite3.connect(path, isolation_level=None)
    store_module._open_connection(conn)
    for version, script in store_module.schema_scripts():
        if version > 2:
            break
        with open(script) as f:
            conn.executescript("BEGIN;\n%s\nINSERT OR REPLACE INTO meta VALUES"
                               " ('schema_version', '%d');\nCOMMIT;" % (f.read(), version))
    base = 1_600_000_000_000
    conn.execute("BEGIN")
    total = n + fresh
    conn.executemany(
        "INSERT INTO messages (seq, id, send_id, ts, sender, recipient, topic, thread, kind,"
        " payload, payload_meta, extra, expires_at) VALUES (?,?,NULL,?,'a','b',NULL,NULL,"
        "'message','{\"body\":\"x\"}',NULL,NULL,?)",
        ((seq, "p-%d" % seq, base + seq, base + seq + (10 ** 12 if seq > n else 1000))
         for seq in range(1, total + 1)))
    conn.executemany(
        "INSERT INTO deliveries VALUES ('b', ?, ?, ?, 1, 0)",
        ((seq, seq, "pending" if seq > n else ("acked" if seq % 2 else "expired"))
         for seq in range(1, total + 1)))
    conn.execute("COMMIT")
    conn.close()


def best(fn, repeat):
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__)
    parser.add_argument("--messages", type=int, default=1000000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    directory = tempfile.mkdtemp(prefix="relay-expire-")
    try:
        path = os.path.join(directory, "relay.sqlite")
        started = time.perf_counter()
        build(path, args.messages)
        built = time.perf_counter() - started
        now_ms = 1_700_000_000_000
        conn = sqlite3.connect(path, isolation_level=None)
        store_module._open_connection(conn)

        def old():
            conn.execute("BEGIN")
            conn.execute(OLD_EXPIRE, (now_ms, now_ms))
            conn.execute("ROLLBACK")

        before = best(old, args.repeat)
        conn.execute("BEGIN")
        old_marked = conn.execute(OLD_EXPIRE, (now_ms, now_ms)).rowcount
        conn.execute("ROLLBACK")
        store_module.upgrade(conn, _QuietLog(), path)
        cur = conn.cursor()
        # The first run on an upgraded file looks at everything once.
        started = time.perf_counter()
        conn.execute("BEGIN")
        store_module._expire(cur, now_ms - 60000)
        conn.execute("COMMIT")
        first = time.perf_counter() - started

        def new():
            conn.execute("BEGIN")
            store_module._expire(cur, now_ms)
            conn.execute("ROLLBACK")

        after = best(new, args.repeat)
        conn.execute("BEGIN")
        store_module._expire(cur, now_ms)
        new_marked = conn.execute("SELECT changes()").fetchone()[0]
        conn.execute("COMMIT")
        conn.close()
        result = {"messages": args.messages, "build_s": round(built, 2),
                  "before_ms": round(before * 1000, 3), "first_run_after_upgrade_ms":
                  round(first * 1000, 3), "after_ms": round(after * 1000, 3),
                  "marked_before": old_marked}
        if args.json:
            print(json.dumps(result, indent=2))
        else:
            print("expiry of one run over %d expired messages:" % (args.messages,))
            print("  before (full query, schema 2):   %10.3f ms" % (result["before_ms"],))
            print("  first run after upgrade to 3:    %10.3f ms" %
                  (result["first_run_after_upgrade_ms"],))
            print("  after (incremental, schema 3):   %10.3f ms" % (result["after_ms"],))
        del new_marked
        return 0 if old_marked == 0 else 1
    finally:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
