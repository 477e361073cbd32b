#!/usr/bin/env python
# -*- test-case-name: tests.test_loadgen,tests.e2e.test_flow -*-
"""
Flow-control benchmark: the real daemon under relay/bench/loadgen.py.

1. Flood: one sender open loop (no window) to one receiver that reads at a
   tenth of the sender's measured speed.  Reports delivered, lost, peak daemon
   RSS and its growth over the idle daemon, and how often the sender was
   paused (BUSY frames).
2. Cost: the core throughput run (closed loop, window 1000) with the default
   flow control against the same run with flow control effectively off
   (water marks, queue size and in-flight window set out of reach), in the
   same process, so the ratio shows what flow control costs.

    python benchmarks/bench_flow.py                 # 200,000-message flood
    python benchmarks/bench_flow.py --flood 50000   # quicker

Exit status 0 when nothing was lost in any run.
"""

import argparse
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from bench_core import Daemon  # noqa: E402
from relay.bench import loadgen  # noqa: E402
from relay.bench.report import format_table  # noqa: E402


def print_table(rows, out):
    for line in format_table(rows):
        out.write(line + "\n")


NO_RATE_LIMIT = ["--no-rate-limit"]
FLOW_OFF = ["--queue-high", "100000000", "--queue-low", "1", "--queue-max", "100000001",
            "--max-inflight", "100000000"]


def run(extra_args, **load):
    with tempfile.TemporaryDirectory(prefix="relay-bench-") as directory:
        daemon = Daemon(directory, NO_RATE_LIMIT + extra_args)
        daemon.start()
        try:
            idle_rss = daemon.status_kb("VmRSS")
            daemon.sample_rss(0.05)
            try:
                result = loadgen.run(daemon.socket_path, **load)
            finally:
                daemon.stop_sampling()
            result["idle_rss_kib"] = idle_rss
            result["peak_rss_kib"] = max(daemon.rss_samples or [idle_rss])
        finally:
            daemon.stop()
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--flood", type=int, default=200000, help="messages in the flood run")
    parser.add_argument("--messages", type=int, default=20000,
                        help="messages in each throughput run")
    parser.add_argument("--size", type=int, default=200)
    args = parser.parse_args(argv)

    on = run([], messages=args.messages, size=args.size, window=1000)
    off = run(FLOW_OFF, messages=args.messages, size=args.size, window=1000)
    rate = max(1.0, on["msgs_per_s"] / 10.0)
    flood = run([], messages=args.flood, size=args.size, open_loop=True, receiver_rate=rate)

    mib = 1024.0
    out = sys.stdout
    out.write("\nflood: 1 sender open loop -> 1 receiver reading at %.0f msg/s "
              "(a tenth of the sender), %d messages of %d B\n" % (rate, args.flood, args.size))
    print_table([
        ("delivered/sent", "%d/%d" % (flood["delivered"], flood["sent"])),
        ("lost", str(flood["lost"])),
        ("duplicates", str(flood["duplicates"])),
        ("out of order", str(flood["out_of_order"])),
        ("sender pauses (BUSY)", str(flood["busy_frames"])),
        ("idle daemon RSS", "%.1f MiB" % (flood["idle_rss_kib"] / mib)),
        ("peak daemon RSS", "%.1f MiB" % (flood["peak_rss_kib"] / mib)),
        ("RSS growth", "%.1f MiB (goal < 64 MiB)"
         % ((flood["peak_rss_kib"] - flood["idle_rss_kib"]) / mib)),
    ], out)
    out.write("\nthroughput: 1 sender -> 1 receiver, %d messages, window 1000, receipts\n"
              % args.messages)
    print_table([
        ("", "%-14s %-14s" % ("flow control", "flow off")),
        ("msg/s delivered", "%-14s %-14s" % ("{:,.0f}".format(on["msgs_per_s"]),
                                             "{:,.0f}".format(off["msgs_per_s"]))),
        ("lost", "%-14s %-14s" % (on["lost"], off["lost"])),
        ("p50 latency", "%-14s %-14s" % ("%.2f ms" % on["p50_ms"], "%.2f ms" % off["p50_ms"])),
        ("p99 latency", "%-14s %-14s" % ("%.2f ms" % on["p99_ms"], "%.2f ms" % off["p99_ms"])),
        ("peak RSS", "%-14s %-14s" % ("%.1f MiB" % (on["peak_rss_kib"] / mib),
                                      "%.1f MiB" % (off["peak_rss_kib"] / mib))),
        ("ratio on/off", "%.3f (cost %.1f%%, goal < 10%%)"
         % (on["msgs_per_s"] / off["msgs_per_s"],
            100.0 * (1 - on["msgs_per_s"] / off["msgs_per_s"]))),
    ], out)
    lost = flood["lost"] + on["lost"] + off["lost"]
    return 0 if lost == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
