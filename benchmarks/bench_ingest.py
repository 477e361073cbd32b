# -*- test-case-name: tests.e2e.test_ingest_store -*-
"""
Benchmark of the ingest service's bulk insert strategies against the local
PostgreSQL, with C{psql \\copy} of the same rows as the ceiling.

    PYTHONPATH=. /work/venv/bin/python benchmarks/bench_ingest.py [--rows 100000]

It creates its own database (dropped at the end) and measures, in one run:

 - C{psql \\copy} of the rows straight into agent_messages (the ceiling);
 - per-row INSERT ... ON CONFLICT DO NOTHING (txpostgres, one statement per
   row, one transaction per 1,000-row batch; one run, it is slow);
 - the multi-row path (INSERT ... VALUES in chunks of 100) and the unnest
   path (INSERT ... SELECT FROM unnest(arrays)), in 1,000-row batches as the
   service receives them;
 - the COPY path (COPY into a temp staging table, then INSERT ... SELECT ...
   ON CONFLICT DO NOTHING) on one batch of all the rows;
   each of these with and without 50 % duplicates (every other row already
   stored);
 - the service end to end over HTTP: a real C{twistd -n relay-ingest},
   100 gzip requests of 1,000 rows, from a few concurrent clients.

It prints rows/s and the ratio to the ceiling measured in the same run.
"""

import argparse
import datetime
import gzip
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid

import orjson
import psycopg2
from psycopg2.extensions import make_dsn

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

from twisted.internet import defer, task  # noqa: E402

from relay.ingest import db, inserters, keys  # noqa: E402
from relay.ingest.schema import migrate  # noqa: E402
from relay.ingest.validate import parse_message  # noqa: E402

WS = "6f1d1c2e-8d8e-4a53-9a4b-0d5b3f3d6a01"
DAEMON = "11111111-2222-4333-8444-555555555555"
BASE_TS = 1767225600000
WORDS = ("the agent relay sends messages between tools quickly and durably "
         "caf\u00e9 \u00fcber na\u00efve \u4e16\u754c build test deploy review").split()


def make_messages(n, seed=1):
    """
    n realistic wire messages with unique ids.
    """
    rnd = random.Random(seed)
    kinds = ["message", "message", "message", "action", "state", "thinking"]
    out = []
    for i in range(n):
        body = " ".join(rnd.choice(WORDS) for _ in range(rnd.randint(10, 45)))
        if i % 3 == 0:
            body = body.replace(" build ", "\n- build ").replace(" test ", "\ttest ")
        m = {
            "id": "msg-%s" % (uuid.UUID(int=rnd.getrandbits(128)),),
            "ts": BASE_TS + i * 37,
            "from": "agent-%d" % (i % 17,),
            "to": "*" if i % 20 == 0 else "agent-%d" % ((i + 3) % 17,),
            "topic": "topic-%d" % (i % 5,) if i % 3 == 0 else None,
            "thread": "thread-%d" % (i % 50,) if i % 5 == 0 else None,
            "kind": kinds[i % len(kinds)],
            "body": body,
            "data": ({"tool": "bash", "args": {"cmd": "ls -la", "n": i, "flags": [1, 2, 3]}}
                     if i % 3 == 1 else None),
            "payload_meta": {"encoding": "utf-8", "size": len(body)} if i % 2 else None,
            "is_broadcast": i % 20 == 0,
            "is_urgent": i % 50 == 0,
        }
        if i % 10 == 0:
            m["channel"] = "#general"
        if i % 10 == 1:
            m["expires_at"] = BASE_TS + 86400000
        out.append(m)
    return out


def _esc(s):
    """
    Escape C{s} for COPY's text format.
    """
    return (s.replace("\\", "\\\\").replace("\n", "\\n")
            .replace("\r", "\\r").replace("\t", "\\t"))


def _iso(ms):
    """
    Milliseconds since the epoch as an ISO 8601 UTC timestamp.
    """
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc).isoformat()


def write_ceiling_file(rows, path):
    """
    The rows in COPY text format with agent_messages' own columns.
    """
    with open(path, "w", encoding="utf-8") as f:
        for (mid, sender, to, body, kind, topic, thread, channel, broadcast,
             urgent, data, meta, ts, expires) in rows:
            f.write("\t".join([
                WS, DAEMON, _esc(mid), _esc(sender), _esc(to), _esc(body), kind,
                "\\N" if topic is None else _esc(topic),
                "\\N" if thread is None else _esc(thread),
                "\\N" if channel is None else _esc(channel),
                "t" if broadcast else "f", "t" if urgent else "f",
                "\\N" if data is None else _esc(data),
                "\\N" if meta is None else _esc(meta),
                _iso(ts), "\\N" if expires is None else _iso(expires),
            ]) + "\n")


class PerRowInserter:
    """
    The baseline: one INSERT ... ON CONFLICT DO NOTHING per row, one
    transaction per batch, on txpostgres.
    """

    name = "per-row"
    sql = inserters.MultiRowInserter(None).statement(1)

    def __init__(self, pool):
        """
        @param pool: a L{relay.ingest.db.TxPostgresPool}.
        """
        self.pool = pool

    def insert(self, workspace_id, daemon_id, rows):
        """
        As L{relay.ingest.inserters.IBulkInserter.insert}.
        """
        return self.pool.runInteraction(self._interaction, workspace_id, daemon_id, rows)

    async def _run(self, cursor, workspace_id, daemon_id, rows):
        inserted = 0
        for row in rows:
            await cursor.execute(self.sql, (workspace_id, daemon_id) + row)
            inserted += cursor.rowcount
        return inserted, len(rows) - inserted

    def _interaction(self, cursor, *args):
        return defer.Deferred.fromCoroutine(self._run(cursor, *args))


class Bench:
    """
    One run of the benchmark in a scratch database: every path measured,
    then the report.

    @ivar results: C{(name, rows, seconds, check)} of every measurement, in
        order (the ceiling first).
    """

    def __init__(self, reactor, args):
        """
        @param reactor: the reactor the pools and HTTP clients run on.
        @param args: the parsed command line.
        """
        self.reactor = reactor
        self.args = args
        self.results = []

    def sql(self, statement):
        """
        Run one statement on its own autocommit connection.

        @return: its rows, or L{None} for a statement without any.
        """
        conn = psycopg2.connect(self.dsn)
        conn.autocommit = True
        with conn.cursor() as c:
            c.execute(statement)
            result = c.fetchall() if c.description else None
        conn.close()
        return result

    def reset(self):
        """
        Empty C{agent_messages} and start from a checkpoint.
        """
        self.sql("TRUNCATE agent_messages RESTART IDENTITY")
        self.sql("VACUUM ANALYZE agent_messages")
        # Every measurement starts right after a checkpoint, so none pays
        # for flushing the WAL of the previous one.
        self.sql("CHECKPOINT")

    def record(self, name, n, seconds, check=""):
        """
        Keep and print one measurement.
        """
        self.results.append((name, n, seconds, check))
        print("  %-44s %8d rows %8.2f s %10.0f rows/s %s"
              % (name, n, seconds, n / seconds, check), flush=True)

    def ceiling(self, rows):
        """
        Time C{psql \\copy} of C{rows} (the ceiling).

        @return: the best time, in seconds.
        """
        path = os.path.join(self.tmp, "ceiling.copy")
        write_ceiling_file(rows, path)
        cols = ("workspace_id, daemon_id, original_id, from_agent, to_agent, body, kind, "
                "topic, thread, channel, is_broadcast, is_urgent, data, payload_meta, "
                "message_ts, expires_at")
        best = None
        for _ in range(self.args.repeat):
            self.reset()
            started = time.perf_counter()
            subprocess.run(
                ["psql", self.dsn, "-q", "-v", "ON_ERROR_STOP=1", "-c",
                 "\\copy agent_messages (%s) FROM '%s'" % (cols, path)],
                check=True)
            elapsed = time.perf_counter() - started
            best = elapsed if best is None else min(best, elapsed)
        count = self.sql("SELECT count(*) FROM agent_messages")[0][0]
        assert count == len(rows), count
        self.record("psql \\copy (ceiling)", len(rows), best)
        return best

    @defer.inlineCallbacks
    def strategy(self, name, inserter, rows, batch_size, duplicates, repeat=None):
        """
        Time C{inserter} on C{rows} in batches of C{batch_size}, with every
        other row already stored when C{duplicates}; the best of
        C{repeat} runs (default C{--repeat}) is recorded.
        """
        best = None
        for _ in range(self.args.repeat if repeat is None else repeat):
            self.reset()
            expect_new = len(rows)
            if duplicates:
                pre = rows[::2]
                yield inserters.CopyInserter(self.thread_pool).insert(WS, DAEMON, pre)
                self.sql("VACUUM ANALYZE agent_messages")
                self.sql("CHECKPOINT")
                expect_new = len(rows) - len(pre)
            synced = dups = 0
            started = time.perf_counter()
            for start in range(0, len(rows), batch_size):
                s, d = yield inserter.insert(WS, DAEMON, rows[start:start + batch_size])
                synced += s
                dups += d
            elapsed = time.perf_counter() - started
            assert (synced, dups) == (expect_new, len(rows) - expect_new), (synced, dups)
            best = elapsed if best is None else min(best, elapsed)
        label = "%s%s" % (name, ", 50% duplicates" if duplicates else "")
        self.record(label, len(rows), best, "synced %d duplicates %d" % (synced, dups))

    @defer.inlineCallbacks
    def http(self, messages, requests, per_request, concurrency):
        """
        Time C{requests} gzip POSTs of C{per_request} messages each to a
        real C{twistd -n relay-ingest}, from C{concurrency} clients.
        """
        import treq
        from twisted.web.client import HTTPConnectionPool

        from tests.support.ingest_process import IngestProcess
        self.reset()
        conn = psycopg2.connect(self.dsn)
        key = keys.create_key(conn, WS)[1]
        conn.close()
        service = IngestProcess(self.reactor, self.dsn, ["--pool-size", str(self.args.pool_size)])
        yield service.start()
        try:
            bodies = []
            for r in range(requests):
                chunk = messages[r * per_request:(r + 1) * per_request]
                bodies.append(gzip.compress(orjson.dumps(
                    {"daemon_id": DAEMON, "workspace_id": WS, "messages": chunk}), 5))
            pool = HTTPConnectionPool(self.reactor, persistent=True)
            pool.maxPersistentPerHost = concurrency
            headers = {b"Content-Type": [b"application/json"],
                       b"Content-Encoding": [b"gzip"],
                       b"Authorization": [b"Bearer " + key.encode("ascii")]}
            totals = [0, 0]
            pending = list(bodies)

            @defer.inlineCallbacks
            def worker():
                while pending:
                    body = pending.pop()
                    response = yield treq.post(
                        service.url + "/api/daemons/messages/sync", data=body,
                        headers=headers, pool=pool, timeout=120)
                    result = yield response.json()
                    if response.code != 200:
                        raise RuntimeError("HTTP %d: %r" % (response.code, result))
                    totals[0] += result["synced"]
                    totals[1] += result["duplicates"]

            started = time.perf_counter()
            yield defer.gatherResults([worker() for _ in range(concurrency)])
            elapsed = time.perf_counter() - started
            yield pool.closeCachedConnections()
        finally:
            yield service.stop()
        n = requests * per_request
        assert totals == [n, 0], totals
        self.record("HTTP end to end (%d x %d rows, gzip, %d clients)"
                    % (requests, per_request, concurrency), n, elapsed,
                    "synced %d duplicates %d" % tuple(totals))

    @defer.inlineCallbacks
    def run(self):
        """
        Create the scratch database, measure every path, report, and drop
        the database.
        """
        args = self.args
        admin = args.postgres
        name = "relay_ingest_bench_%d" % (os.getpid(),)
        conn = psycopg2.connect(admin)
        conn.autocommit = True
        with conn.cursor() as c:
            c.execute('CREATE DATABASE "%s"' % (name,))
        conn.close()
        self.dsn = make_dsn(admin, dbname=name)
        self.tmp = tempfile.mkdtemp(prefix="bench-ingest-")
        try:
            conn = psycopg2.connect(self.dsn)
            migrate(conn)
            conn.close()
            self.tx_pool = db.TxPostgresPool(self.dsn, 2, self.reactor)
            yield self.tx_pool.start()
            self.thread_pool = db.thread_pool(self.dsn, 2, self.reactor)
            print("Generating %d messages..." % (args.rows,), flush=True)
            messages = make_messages(args.rows)
            rows = [parse_message(i, m) for i, m in enumerate(messages)]
            print("PostgreSQL: %s" % (self.sql("SHOW server_version")[0][0],))
            print("Best of %d runs each; batches of %d rows for the small-batch paths.\n"
                  % (args.repeat, args.batch))
            ceiling = self.ceiling(rows)
            per_row_rows = rows[:args.per_row_rows or len(rows)]
            for duplicates in (False, True):
                # The slow baseline runs once (it takes about 13 s a run).
                yield self.strategy("per-row INSERT (one run)" if len(per_row_rows) == len(rows)
                                    else "per-row INSERT (first %d rows, one run)" % (len(per_row_rows),),
                                    PerRowInserter(self.tx_pool), per_row_rows, args.batch,
                                    duplicates, repeat=1)
                yield self.strategy("multi-row INSERT (chunks of %d)" % (args.chunk_size,),
                                    inserters.MultiRowInserter(self.tx_pool, args.chunk_size),
                                    rows, args.batch, duplicates)
                yield self.strategy("unnest INSERT ... SELECT",
                                    inserters.UnnestInserter(self.tx_pool),
                                    rows, args.batch, duplicates)
                yield self.strategy("COPY path (one batch)",
                                    inserters.CopyInserter(self.thread_pool),
                                    rows, len(rows), duplicates)
            requests = min(100, len(messages) // 1000)
            for concurrency in args.concurrency:
                yield self.http(messages, requests, 1000, concurrency)
            self.report(ceiling)
        finally:
            if getattr(self, "tx_pool", None):
                self.tx_pool.close()
            if getattr(self, "thread_pool", None):
                self.thread_pool.close()
            conn = psycopg2.connect(admin)
            conn.autocommit = True
            with conn.cursor() as c:
                c.execute('DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % (name,))
            conn.close()

    def report(self, ceiling):
        """
        Print every rate, its ratio to the ceiling, and the issue's goals.
        """
        ceiling_rate = self.results[0][1] / ceiling
        rates = {}
        print("\n%-50s %12s %10s" % ("path", "rows/s", "x ceiling"))
        print("-" * 74)
        for name, n, seconds, _ in self.results:
            rates[name] = n / seconds
            print("%-50s %12.0f %9.2fx" % (name, n / seconds, (n / seconds) / ceiling_rate))
        print()
        names = [r[0] for r in self.results]
        per_row = rates[next(n for n in names if n.startswith("per-row") and "dup" not in n)]
        multi = rates[next(n for n in names if n.startswith("multi-row") and "dup" not in n)]
        unnest = rates[next(n for n in names if n.startswith("unnest") and "dup" not in n)]
        copy = rates[next(n for n in names if n.startswith("COPY") and "dup" not in n)]
        http = max(rates[n] for n in names if n.startswith("HTTP"))
        print("Goals:")
        print("  COPY path / ceiling          %5.2fx  (goal >= 0.6x)" % (copy / ceiling_rate,))
        print("  multi-row / per-row INSERT   %5.2fx  (goal >= 2x)" % (multi / per_row,))
        print("  unnest / multi-row           %5.2fx" % (unnest / multi,))
        print("  HTTP end to end            %7.0f rows/s  (goal >= 15000)" % (http,))


def main():
    """
    Parse the command line and run the benchmark on the global reactor.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--postgres", default=os.environ.get("RELAY_TEST_POSTGRES_DSN")
                        or "host=127.0.0.1 port=5432 user=postgres dbname=postgres",
                        help="DSN of a server where a scratch database can be created")
    parser.add_argument("--rows", type=int, default=100000)
    parser.add_argument("--per-row-rows", type=int, default=0,
                        help="rows for the slow per-row baseline (default: all)")
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--chunk-size", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3,
                        help="best of this many runs per path (default 3)")
    parser.add_argument("--pool-size", type=int, default=4)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4])
    args = parser.parse_args()
    task.react(lambda reactor: Bench(reactor, args).run())


if __name__ == "__main__":
    main()
