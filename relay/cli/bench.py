# -*- test-case-name: tests.e2e.test_cli_bench,tests.e2e.test_cli -*-
"""
``relay bench``: load a running daemon with relay/bench/loadgen.py and print the
results (a progress bar on a terminal, plain lines otherwise, then a table).
benchmarks/bench_core.py uses the same progress and table code around a daemon
it starts itself.
"""

import argparse
import json
import sys

from relay.bench.report import (add_load_options, check_load_options, describe_run,
                                format_table, progress_printer, result_rows)
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
    from relay.cli.connection import add_connection_options
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
    from relay.bench import loadgen
    from relay.cli.connection import endpoint_from_args

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
