#!/usr/bin/env python
# -*- test-case-name: tests.test_loadgen -*-
"""
Core throughput benchmark: the real daemon under relay/bench/loadgen.py.

Starts ``twistd -n relay`` in a temporary directory (this tree first on
PYTHONPATH), runs the load generator against its socket (defaults: 1 sender,
1 receiver, 20000 messages of 200 bytes, durable receipts), samples the daemon's
RSS from /proc/PID/status meanwhile, stops the daemon with SIGTERM (the store
flushes), checks in the SQLite file that every accepted message was stored, and
prints a table with the ratio against agent-relay 1.6.0's measured 565 msg/s.
Then, in the same run, the same load against the bare Twisted relay of
benchmarks/bare_relay.py (no store, no receipts behind its ACKs, no flow
control; ``--no-bare`` skips it): relay's throughput is printed as a
fraction of it, and the load generator's CPU share for both runs.

    python benchmarks/bench_core.py
    python benchmarks/bench_core.py --senders 4 --receivers 4 --messages 50000
    python benchmarks/bench_core.py --receiver-rate 2000 --open-loop \\
        --daemon-arg=--batch-delay-ms --daemon-arg=5
    python benchmarks/bench_core.py --compare-http 2
    python benchmarks/bench_core.py --messages 100000 --profile docs/flame.svg

``--compare-http N`` runs the load N times without ``--http`` and N times with
``--http`` and a dashboard open (a client reading ``/api/events``), alternating,
in the same run, and prints the throughput ratio (issue 11: at most 10 %
slower).

Exit status: 0 when nothing was lost and every accepted message was stored,
1 otherwise, 3 when the daemon did not start.
"""

import argparse
import json
import os
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from relay.bench import loadgen  # noqa: E402  (stdlib-only module)
from relay.bench.report import (  # noqa: E402
    add_load_options, describe_run, format_table, progress_printer, result_rows)

BASELINE_NAME = "agent-relay 1.6.0"
BASELINE_MSGS_PER_S = 565.0
GOAL_MSGS_PER_S = 20000.0


def twistd_command():
    """The twistd next to this Python, else the one on PATH."""
    candidate = os.path.join(os.path.dirname(sys.executable), "twistd")
    if os.path.exists(candidate):
        return [candidate]
    found = shutil.which("twistd")
    if found:
        return [found]
    raise SystemExit("bench_core: twistd not found next to {} nor on PATH".format(
        sys.executable))


class Daemon:
    """The real ``twistd -n relay`` process in its own temporary directory."""

    def __init__(self, directory, extra_args):
        self.directory = directory
        self.socket_path = os.path.join(directory, "relay.sock")
        self.db_path = os.path.join(directory, "relay.sqlite")
        self.log_path = os.path.join(directory, "twistd.log")
        self.extra_args = list(extra_args)
        self.process = None
        self.rss_samples = []
        self._sampling = False

    def start(self, timeout=30.0):
        env = dict(os.environ)
        env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"]
                                    if env.get("PYTHONPATH") else "")
        self.process = subprocess.Popen(self.command(), env=env, cwd=self.directory,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("the daemon exited with {}: {}".format(
                    self.process.returncode, self.log_tail()))
            if self._accepts():
                return
            time.sleep(0.05)
        raise RuntimeError("the daemon's socket did not accept within {}s: {}".format(
            timeout, self.log_tail()))

    def command(self):
        return twistd_command() + [
            "-n", "--pidfile", os.path.join(self.directory, "twistd.pid"),
            "--logfile", self.log_path, "relay",
            "--listen", "unix:{}:mode=600".format(self.socket_path),
            "--db", self.db_path] + self.extra_args

    def _accepts(self):
        sock = socket.socket(socket.AF_UNIX)
        try:
            sock.connect(self.socket_path)
            return True
        except OSError:
            return False
        finally:
            sock.close()

    def log_tail(self, lines=15):
        text = ""
        if self.process is not None and self.process.stderr is not None and \
                self.process.poll() is not None:
            text = self.process.stderr.read().decode("utf-8", "replace")
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                text += f.read()
        except OSError:
            pass
        return "\n".join(text.splitlines()[-lines:])

    def status_kb(self, field):
        """A ``kB`` field (VmRSS, VmHWM) of /proc/PID/status, or None."""
        try:
            with open("/proc/{}/status".format(self.process.pid)) as f:
                for line in f:
                    if line.startswith(field + ":"):
                        return int(line.split()[1])
        except (OSError, ValueError):
            return None
        return None

    def cpu_seconds(self):
        """User + system CPU time the daemon used so far, or None."""
        try:
            with open("/proc/{}/stat".format(self.process.pid)) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            return None

    def sample_rss(self, interval=0.1):
        """Sample VmRSS in a thread until ``stop_sampling``."""
        self._sampling = True

        def loop():
            while self._sampling:
                value = self.status_kb("VmRSS")
                if value is not None:
                    self.rss_samples.append(value)
                time.sleep(interval)
        self._sampler = threading.Thread(target=loop, daemon=True)
        self._sampler.start()

    def stop_sampling(self):
        self._sampling = False
        self._sampler.join()

    def stop(self, timeout=60.0):
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class BareRelay(Daemon):
    """
    The baseline: benchmarks/bare_relay.py as its own process, on a socket
    like the daemon's (no store: C{db_path} is never written).
    """

    def command(self):
        return [sys.executable, os.path.join(ROOT, "benchmarks", "bare_relay.py"),
                "--listen", "unix:{}:mode=600".format(self.socket_path)]


def start_bare(bench, prefix="relay-bare-"):
    """Start the bare relay baseline, or print one line and return None."""
    bare = BareRelay(tempfile.mkdtemp(prefix=prefix), [])
    try:
        bare.start()
    except RuntimeError as e:
        sys.stderr.write("{}: bare relay: {}\n".format(bench, e))
        bare.stop()
        shutil.rmtree(bare.directory, True)
        return None
    return bare


def measure_bare(args):
    """
    The same load as C{args} against the bare relay, in the same run;
    returns the load generator's result (plus daemon_cpu_s), or None.
    """
    bare = start_bare("bench_core")
    if bare is None:
        return None
    try:
        cpu_before = bare.cpu_seconds()
        result = loadgen.run(
            bare.socket_path, senders=args.senders, receivers=args.receivers,
            messages=args.messages, size=args.size, window=args.window,
            open_loop=args.open_loop, receiver_rate=args.receiver_rate,
            durable=args.durable, progress=None, idle_timeout=args.idle_timeout)
        result["daemon_cpu_s"] = bare.cpu_seconds() - cpu_before
        return result
    finally:
        bare.stop()
        shutil.rmtree(bare.directory, True)


def start_daemon(bench, prefix, daemon_arg, rate_limited):
    """
    Start the real daemon in a new temporary directory with C{daemon_arg}
    (plus --no-rate-limit unless C{rate_limited}); on failure print one line
    naming C{bench} and return None.
    """
    daemon_args = list(daemon_arg)
    if not rate_limited and "--no-rate-limit" not in daemon_args:
        daemon_args.insert(0, "--no-rate-limit")
    daemon = Daemon(tempfile.mkdtemp(prefix=prefix), daemon_args)
    try:
        daemon.start()
    except RuntimeError as e:
        sys.stderr.write("{}: {}\n".format(bench, e))
        daemon.stop()
        shutil.rmtree(daemon.directory, True)
        return None
    return daemon


def stored_rows(db_path, prefix):
    """Rows in ``messages`` sent by this run's agents (read-only open)."""
    db = sqlite3.connect("file:{}?mode=ro".format(db_path), uri=True)
    try:
        (count,) = db.execute(
            "SELECT count(*) FROM messages WHERE sender >= ? AND sender < ?",
            (prefix, prefix + "\uffff")).fetchone()
        return count
    finally:
        db.close()


READER = r"""
import signal, socket, sys
# A shell's background job starts with SIGINT ignored, and Python then
# never raises KeyboardInterrupt: close() would wait for ever.
signal.signal(signal.SIGINT, signal.default_int_handler)
sock = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
sock.sendall(b"GET /api/events HTTP/1.1\r\nHost: bench\r\n\r\n")
sock.settimeout(None)
total = 0
try:
    while True:
        data = sock.recv(1 << 16)
        if not data:
            break
        total += len(data)
except KeyboardInterrupt:
    pass
finally:
    sys.stdout.write("%d\n" % (total,))
"""


class EventReader:
    """
    A dashboard's event stream: a separate process (as a browser would be)
    reading C{/api/events} as fast as it comes.
    """

    def __init__(self, port):
        self.process = subprocess.Popen([sys.executable, "-c", READER, str(port)],
                                        stdout=subprocess.PIPE)
        self.bytes = None

    def close(self):
        self.process.send_signal(signal.SIGINT)
        out, _ = self.process.communicate(timeout=30)
        try:
            self.bytes = int(out.split()[0])
        except (IndexError, ValueError):
            self.bytes = 0


def free_port():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


def measure(args, daemon_arg, http=False):
    """
    One run of the load against a fresh daemon; with C{http}, the daemon
    has C{--http} and an event stream reader is connected throughout.
    Returns the load generator's result (plus stored_rows, events_read),
    or None when the daemon did not start.
    """
    daemon_arg = list(daemon_arg)
    port = None
    if http:
        port = free_port()
        daemon_arg += ["--http", "tcp:{}:interface=127.0.0.1".format(port)]
    daemon = start_daemon("bench_core", "relay-bench-", daemon_arg, args.rate_limited)
    if daemon is None:
        return None
    reader = EventReader(port) if http else None
    cpu_before = daemon.cpu_seconds()
    try:
        result = loadgen.run(
            daemon.socket_path, senders=args.senders, receivers=args.receivers,
            messages=args.messages, size=args.size, window=args.window,
            open_loop=args.open_loop, receiver_rate=args.receiver_rate,
            durable=args.durable, progress=None, idle_timeout=args.idle_timeout)
        # Startup (imports: more of them with --http) is not the load's.
        result["daemon_cpu_s"] = daemon.cpu_seconds() - cpu_before
        if reader is not None:
            reader.close()
            result["event_bytes_read"] = reader.bytes
            reader = None
        daemon.stop()
        result["stored_rows"] = stored_rows(daemon.db_path, result["agent_prefix"])
        return result
    finally:
        if reader is not None:
            reader.close()
        daemon.stop()
        shutil.rmtree(daemon.directory, True)


def cpu_per_message(result):
    """The daemon's CPU time during the load per message, in us."""
    if result.get("daemon_cpu_s") is None or not result["sent"]:
        return float("nan")
    return result["daemon_cpu_s"] / result["sent"] * 1e6


def start_profiler(daemon, args):
    """
    C{--profile PATH}: py-spy (next to this Python, else on PATH) records the
    daemon while the load runs, as a flame graph SVG (or C{--profile-format}).
    """
    candidate = os.path.join(os.path.dirname(sys.executable), "py-spy")
    spy = candidate if os.path.exists(candidate) else shutil.which("py-spy")
    if spy is None:
        raise SystemExit("bench_core: --profile needs py-spy (pip install py-spy)")
    process = subprocess.Popen(
        [spy, "record", "--pid", str(daemon.process.pid), "--rate", str(args.profile_rate),
         "--format", args.profile_format, "--output", args.profile],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(1.0)  # py-spy attaches before the load starts
    if process.poll() is not None:
        raise SystemExit("bench_core: py-spy failed: {}".format(
            process.stderr.read().decode("utf-8", "replace")))
    return process


def stop_profiler(process, path):
    process.send_signal(signal.SIGINT)
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        process.kill()
    sys.stderr.write("profile written to {}\n".format(path))


def loadgen_note(result):
    """The load generator's CPU share, and whether it may be the limit."""
    share = result.get("loadgen_cpu", 0.0)
    return "{:.0%} of one core ({})".format(
        share, "it may be the limit" if share >= 0.9 else "not the limit")


def compare_http(args):
    """
    C{--compare-http N}: N runs off and N runs on, alternating; prints the
    best throughput of each and their ratio, and the medians (on a shared
    machine one lucky run moves the best; the median it does not).
    """
    runs = {False: [], True: []}
    for i in range(args.compare_http):
        for http in (False, True):
            try:
                result = measure(args, args.daemon_arg, http)
            except loadgen.LoadgenError as e:
                sys.stderr.write("bench_core: {}\n".format(e))
                return 3
            if result is None:
                return 3
            runs[http].append(result)
            sys.stderr.write("run {} {}: {:,.0f} msg/s, daemon CPU {:.1f} us/msg{}\n".format(
                i + 1, "--http + SSE client" if http else "no --http", result["msgs_per_s"],
                cpu_per_message(result),
                ", {:,} bytes of events read".format(result["event_bytes_read"]) if http else ""))
    best = {k: max(r["msgs_per_s"] for r in v) for k, v in runs.items()}
    ratio = best[True] / best[False]
    cpu = {k: min(cpu_per_message(r) for r in v) for k, v in runs.items()}
    median = {k: statistics.median(r["msgs_per_s"] for r in v) for k, v in runs.items()}
    median_cpu = {k: statistics.median(cpu_per_message(r) for r in v) for k, v in runs.items()}
    ok = all(r["lost"] == 0 and r["complete"] and r["stored_rows"] == r["sent"] - r["rejected"]
             for v in runs.values() for r in v)
    if args.json:
        sys.stdout.write(json.dumps({"off": runs[False], "on": runs[True], "ratio": ratio,
                                     "median_ratio": median[True] / median[False]},
                                    indent=2) + "\n")
    else:
        sys.stdout.write("\n".join(format_table([
            ("runs", "{} each, alternating, best of each".format(args.compare_http)),
            ("without --http", "{:,.0f} msg/s".format(best[False])),
            ("--http + SSE client", "{:,.0f} msg/s".format(best[True])),
            ("ratio on/off", "{:.3f} ({:.1f} % {}; goal: at most 10 % slower) {}".format(
                ratio, abs(1 - ratio) * 100, "slower" if ratio < 1 else "faster",
                "met" if ratio >= 0.9 else "NOT met")),
            ("daemon CPU per message", "{:.1f} us without, {:.1f} us with (+{:.1f} %, "
             "least of each; less noisy than throughput on a shared machine)".format(
                 cpu[False], cpu[True], (cpu[True] / cpu[False] - 1) * 100)),
            ("medians", "{:,.0f} msg/s without, {:,.0f} with (ratio {:.3f}); CPU {:.1f} us "
             "without, {:.1f} us with (+{:.1f} %)".format(
                 median[False], median[True], median[True] / median[False],
                 median_cpu[False], median_cpu[True],
                 (median_cpu[True] / median_cpu[False] - 1) * 100)),
            ("nothing lost", "yes" if ok else "NO"),
        ])) + "\n")
    return 0 if ok else 1


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="Throughput of the real relay daemon under relay/bench/loadgen.py.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    add_load_options(parser)
    parser.add_argument("--daemon-arg", action="append", default=[],
                        help="extra argument for `twistd relay` (repeatable)")
    parser.add_argument("--rate-limited", action="store_true",
                        help="keep the daemon's per-agent rate limit (default: the bench "
                        "passes --no-rate-limit, since one sender at the default 500 msg/s "
                        "would measure the limit, not the core)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary directory (db, log)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--profile", metavar="PATH",
                        help="record the daemon with py-spy during the load into PATH")
    parser.add_argument("--profile-format", default="flamegraph",
                        choices=["flamegraph", "raw", "speedscope"],
                        help="py-spy's output format (default flamegraph, an SVG)")
    parser.add_argument("--profile-rate", type=int, default=250,
                        help="py-spy samples per second (default 250)")
    parser.add_argument("--no-bare", action="store_true",
                        help="skip the baseline run against benchmarks/bare_relay.py")
    parser.add_argument("--compare-http", type=int, default=0, metavar="N",
                        help="run N times without and N times with --http and an SSE "
                        "client reading /api/events, alternating; report the ratio")
    args = parser.parse_args(argv)
    if args.compare_http:
        return compare_http(args)

    daemon = start_daemon("bench_core", "relay-bench-", args.daemon_arg, args.rate_limited)
    if daemon is None:
        return 3
    profiler = start_profiler(daemon, args) if args.profile else None
    try:
        daemon.sample_rss()
        cpu_before = daemon.cpu_seconds()
        try:
            result = loadgen.run(
                daemon.socket_path, senders=args.senders, receivers=args.receivers,
                messages=args.messages, size=args.size, window=args.window,
                open_loop=args.open_loop, receiver_rate=args.receiver_rate,
                durable=args.durable, progress=progress_printer(sys.stderr),
                idle_timeout=args.idle_timeout)
        except loadgen.LoadgenError as e:
            sys.stderr.write("bench_core: {}\n{}\n".format(e, daemon.log_tail()))
            return 3
        else:
            result["daemon_cpu_s"] = daemon.cpu_seconds() - cpu_before
        finally:
            if profiler is not None:
                stop_profiler(profiler, args.profile)
            daemon.stop_sampling()
            peak_kb = max([daemon.status_kb("VmHWM") or 0] + daemon.rss_samples)
            daemon.stop()
        rows = stored_rows(daemon.db_path, result["agent_prefix"])
    finally:
        daemon.stop()
        if args.keep:
            sys.stderr.write("kept {}\n".format(daemon.directory))
        else:
            shutil.rmtree(daemon.directory, True)

    bare = None
    if not args.no_bare:
        try:
            bare = measure_bare(args)
        except loadgen.LoadgenError as e:
            sys.stderr.write("bench_core: bare relay: {}\n".format(e))
    accepted = result["sent"] - result["rejected"]
    result["stored_rows"] = rows
    if bare is not None:
        result["bare"] = bare
        result["fraction_of_bare"] = result["msgs_per_s"] / bare["msgs_per_s"]
    result["peak_rss_kb"] = peak_kb
    result["baseline_msgs_per_s"] = BASELINE_MSGS_PER_S
    result["ratio_vs_baseline"] = result["msgs_per_s"] / BASELINE_MSGS_PER_S
    ok = result["lost"] == 0 and rows == accepted and result["complete"]
    if args.json:
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
        return 0 if ok else 1
    out = sys.stdout
    out.write("relay core benchmark: {}\n".format(describe_run(result, args.receiver_rate)))
    out.write("daemon: twistd -n relay {}\n".format(" ".join(daemon.extra_args)))
    rows_table = result_rows(result) + [
        ("stored rows", "{} (accepted {}) {}".format(
            rows, accepted, "OK" if rows == accepted else "MISMATCH")),
        ("peak RSS", "{:.1f} MiB".format(peak_kb / 1024.0)),
        ("baseline", "{} {:.0f} msg/s (stated, measured on this machine)".format(
            BASELINE_NAME, BASELINE_MSGS_PER_S)),
        ("ratio", "{:.1f}x baseline; goal {:,.0f} msg/s {}".format(
            result["ratio_vs_baseline"], GOAL_MSGS_PER_S,
            "met" if result["msgs_per_s"] >= GOAL_MSGS_PER_S else "NOT met")),
        ("daemon CPU per message", "{:.1f} us".format(cpu_per_message(result))),
        ("load generator CPU", loadgen_note(result)),
    ]
    if bare is not None:
        rows_table += [
            ("bare Twisted relay", "{:,.0f} msg/s, p50 {:.2f} ms, {:.1f} us CPU per message, "
             "lost {} (benchmarks/bare_relay.py, same load, same run)".format(
                 bare["msgs_per_s"], bare["p50_ms"] or 0.0, cpu_per_message(bare),
                 bare["lost"])),
            ("bare: load generator CPU", loadgen_note(bare)),
            ("relay / bare relay", "{:.2f} of the bare relay's throughput".format(
                result["fraction_of_bare"])),
        ]
    out.write("\n".join(format_table(rows_table)) + "\n")
    for error in result["errors"]:
        out.write("note: {}\n".format(error))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
