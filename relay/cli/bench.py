# -*- test-case-name: tests.test_cli -*-
"""
``relay bench``: load a running daemon with relay/loadgen.py and print the
results (a progress bar on a terminal, plain lines otherwise, then a table).
benchmarks/bench_core.py uses the same progress and table code around a daemon
it starts itself.
"""

import argparse
import json
import sys

from relay.cli import EXIT_FAILED, EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE

EPILOG = """\
examples:
  relay bench                                   # 20000 messages, 1 sender, 1 receiver
  relay bench --window 10 --messages 5000       # light load: latency
  relay bench --senders 4 --receivers 4 --open-loop
  relay bench --receiver-rate 1000 --json       # a slow reader: flow control

Agents are named lg<pid>x<random>-s<i> / -r<j>, so a run never meets the
messages of another. The daemon's own rate limit (default 500 msg/s per agent)
applies: start it with --no-rate-limit to measure the core.

Connection: --socket PATH, or --connect unix:PATH, or $RELAY_SOCKET; the default
is /tmp/agent-relay.sock (Unix sockets only: the load generator is stdlib-only).

exit codes: 0 nothing lost, 1 messages lost or the run did not finish,
2 bad usage, 3 the daemon could not be reached.
"""


def register(subparsers):
    from relay.client.commandline import add_connection_options
    parser = subparsers.add_parser(
        "bench", help="load a running daemon and report throughput and latency",
        description="Load a running daemon with the stdlib load generator and report "
        "throughput, latency, loss and duplicates.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_load_options(parser)
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    add_connection_options(parser)
    parser.set_defaults(func=main)
    return parser


def add_load_options(parser):
    """The load generator's knobs (shared with benchmarks/)."""
    parser.add_argument("--senders", type=int, default=1)
    parser.add_argument("--receivers", type=int, default=1)
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--size", type=int, default=200, help="body bytes (default 200)")
    parser.add_argument("--window", type=int, default=None,
                        help="in-flight messages per sender (default 1000)")
    parser.add_argument("--open-loop", action="store_true",
                        help="no window: write as fast as the socket accepts")
    parser.add_argument("--receiver-rate", type=float, default=None,
                        help="each receiver reads at most this many msgs/s")
    parser.add_argument("--no-durable", dest="durable", action="store_false",
                        help="do not ask for receipts (requires_ack false)")
    parser.add_argument("--idle-timeout", type=float, default=20.0,
                        help="give up after this many seconds without any frame")


def check_load_options(args):
    """A one-line complaint about the load options, or None."""
    if args.senders < 1 or args.receivers < 1:
        return "--senders and --receivers must be at least 1"
    if args.messages < 1:
        return "--messages must be at least 1"
    if args.size < 0:
        return "--size must not be negative"
    if args.window is not None and args.window < 1:
        return "--window must be at least 1"
    if args.receiver_rate is not None and args.receiver_rate <= 0:
        return "--receiver-rate must be positive"
    return None


def progress_printer(stream):
    """A progress bar on a terminal, a plain line every 10% otherwise."""
    state = {"last": -1}

    def show(done, total):
        if not total:
            return
        fraction = done / total
        if stream.isatty():
            width = 40
            filled = int(width * fraction)
            stream.write("\r[{}{}] {:6.1%} {}/{}".format(
                "#" * filled, "." * (width - filled), fraction, done, total))
            if done >= total:
                stream.write("\n")
            stream.flush()
        else:
            step = int(fraction * 10)
            if step > state["last"]:
                state["last"] = step
                stream.write("{}/{} settled\n".format(done, total))
                stream.flush()
    return show


def _ms(value):
    return "-" if value is None else "{:.2f} ms".format(value)


def result_rows(result):
    """(name, value) rows describing a loadgen result."""
    return [
        ("delivered/sent", "{}/{}".format(result["delivered"], result["sent"])),
        ("lost", str(result["lost"])),
        ("duplicates", str(result["duplicates"])),
        ("out of order", str(result["out_of_order"])),
        ("receipts", str(result["receipts"])),
        ("NACK frames", "{} {}".format(result["nacked"], result["nack_codes"] or "").strip()),
        ("BUSY frames", str(result["busy_frames"])),
        ("elapsed", "{:.2f} s (load generator CPU {:.0%})".format(
            result["elapsed_s"], result.get("loadgen_cpu", 0.0))),
        ("msg/s delivered", "{:,.0f}".format(result["msgs_per_s"])),
        ("latency p50", _ms(result["p50_ms"])),
        ("latency p90", _ms(result.get("p90_ms"))),
        ("latency p99", _ms(result["p99_ms"])),
        ("latency max", _ms(result.get("max_ms"))),
    ]


def describe_run(result, receiver_rate=None):
    return "{} sender(s), {} receiver(s), {} messages of {} B, {}, {}{}".format(
        result["senders"], result["receivers"], result["messages"], result["size"],
        "open loop" if result["window"] is None else "window {}".format(result["window"]),
        "durable receipts" if result["durable"] else "no receipts",
        ", receiver rate {}/s".format(receiver_rate) if receiver_rate else "")


def format_table(rows):
    width = max(len(name) for name, _ in rows)
    return ["{}  {}".format(name.ljust(width), value) for name, value in rows]


def _untrusted(path, endpoint, trust_uid):
    """
    Why the daemon at ``path`` must not be loaded (it runs as another user
    than ``trust_uid``, by default ours), or None; the load generator (no
    relay imports) reports a socket it cannot reach by itself.
    """
    import socket

    from relay.client.protocol import untrusted_peer

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
        return untrusted_peer(sock, endpoint, trust_uid)
    except OSError:
        return None
    finally:
        sock.close()


def main(args):
    from relay import loadgen
    from relay.client.commandline import endpoint_from_args

    problem = check_load_options(args)
    if problem:
        sys.stderr.write("relay bench: {}\n".format(problem))
        return EXIT_USAGE
    endpoint = endpoint_from_args(args)
    try:
        path = loadgen.endpoint_to_path(endpoint)
    except loadgen.LoadgenError as e:
        sys.stderr.write("relay bench: {}\n".format(e))
        return EXIT_USAGE
    problem = _untrusted(path, endpoint, args.trust_uid)
    if problem:
        sys.stderr.write("relay bench: {}\n".format(problem))
        return EXIT_UNREACHABLE
    try:
        result = loadgen.run(
            path, senders=args.senders, receivers=args.receivers, messages=args.messages,
            size=args.size, window=args.window, open_loop=args.open_loop,
            receiver_rate=args.receiver_rate, durable=args.durable,
            progress=None if args.json else progress_printer(sys.stderr),
            idle_timeout=args.idle_timeout)
    except loadgen.LoadgenError as e:
        sys.stderr.write("relay bench: {}\n".format(e))
        return EXIT_UNREACHABLE
    except KeyboardInterrupt:
        sys.stderr.write("\nrelay bench: interrupted\n")
        return EXIT_FAILED
    ok = result["lost"] == 0 and result["complete"]
    if args.json:
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
    else:
        lines = ["relay bench against {}: {}".format(endpoint, describe_run(
            result, args.receiver_rate))]
        lines += format_table(result_rows(result))
        lines += ["note: " + e for e in result["errors"]]
        sys.stdout.write("\n".join(lines) + "\n")
    return EXIT_OK if ok else EXIT_FAILED
