#!/usr/bin/env python
# -*- test-case-name: tests.test_loadgen -*-
"""
Light-load latency benchmark: the real daemon, a window of 10 in-flight
messages, 5000 messages of 200 bytes, durable receipts; p50 and p99 of the time
from SEND write to DELIVER read, against agent-relay 1.6.0 measured on this
machine (p50 19.7 ms, p99 41.9 ms). Goal: p50 under 1 ms, p99 under 5 ms.

    python benchmarks/bench_latency.py
    python benchmarks/bench_latency.py --messages 20000 --window 1
    python benchmarks/bench_latency.py --daemon-arg=--batch-delay-ms --daemon-arg=5

The daemon runs with --no-rate-limit (the default 500 msg/s per agent would
pace the run, though at window 10 it rarely matters) unless --rate-limited.
Exit status: 0 when both goals are met and nothing was lost, 1 otherwise,
3 when the daemon did not start.
"""

import argparse
import json
import os
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from bench_core import ROOT, start_daemon  # noqa: E402,F401  (ROOT puts the tree on sys.path)

from relay.bench import loadgen  # noqa: E402
from relay.bench.report import describe_run, format_table, progress_printer, result_rows  # noqa

BASELINE = {"name": "agent-relay 1.6.0", "p50_ms": 19.7, "p99_ms": 41.9}
GOAL = {"p50_ms": 1.0, "p99_ms": 5.0}


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="Latency of the real relay daemon at light load.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--window", type=int, default=10)
    parser.add_argument("--size", type=int, default=200)
    parser.add_argument("--no-durable", dest="durable", action="store_false")
    parser.add_argument("--daemon-arg", action="append", default=[])
    parser.add_argument("--rate-limited", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    daemon = start_daemon("bench_latency", "relay-lat-", args.daemon_arg, args.rate_limited)
    if daemon is None:
        return 3
    try:
        try:
            result = loadgen.run(daemon.socket_path, messages=args.messages, size=args.size,
                                 window=args.window, durable=args.durable,
                                 progress=None if args.json else progress_printer(sys.stderr))
        except loadgen.LoadgenError as e:
            sys.stderr.write("bench_latency: {}\n".format(e))
            return 3
    finally:
        daemon.stop()
        shutil.rmtree(daemon.directory, True)

    met = {key: result[key] is not None and result[key] < GOAL[key] for key in GOAL}
    ok = all(met.values()) and result["lost"] == 0 and result["complete"]
    if args.json:
        result["baseline"] = BASELINE
        result["goal_met"] = met
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
        return 0 if ok else 1
    lines = ["relay latency benchmark: " + describe_run(result),
             "daemon: twistd -n relay " + " ".join(daemon.extra_args)]
    rows = result_rows(result)
    for key, label in (("p50_ms", "p50"), ("p99_ms", "p99")):
        value = result[key]
        rows.append(("{} vs baseline".format(label),
                     "{} {:.1f} ms -> {:.1f}x faster; goal < {} ms {}".format(
                         BASELINE["name"], BASELINE[key],
                         BASELINE[key] / value if value else float("inf"), GOAL[key],
                         "met" if met[key] else "NOT met")))
    lines += format_table(rows)
    lines += ["note: " + e for e in result["errors"]]
    sys.stdout.write("\n".join(lines) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
