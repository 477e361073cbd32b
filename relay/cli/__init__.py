# -*- test-case-name: tests.test_cli -*-
"""
The ``relay`` command: one sub-command per module in this package.

Each module named in ``COMMANDS`` exposes ``register(subparsers)``, which adds
its parser and sets ``func`` (called with the parsed arguments, returning the
process exit code).

Exit codes (shared by every sub-command):
  0  success
  1  the operation failed (NACK, timeout, server error)
  2  bad usage or bad input
  3  the daemon (or service) could not be reached
"""

import argparse
import importlib
import sys

COMMANDS = ["send", "listen", "history", "status", "bench", "keys"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3


def fail(command, code, message):
    """
    Print C{relay COMMAND: message} on stderr and return C{code}, the exit
    status: every sub-command reports errors as this one line.
    """
    sys.stderr.write("relay {}: {}\n".format(command, message))
    return code


def build_parser():
    parser = argparse.ArgumentParser(
        prog="relay",
        description="Talk to a relay daemon, read its store, manage ingest keys.",
        epilog="Exit codes: 0 ok, 1 failed, 2 bad usage, 3 daemon unreachable.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module("relay.cli." + name).register(subparsers)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    return args.func(args)
