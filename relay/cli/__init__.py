# -*- test-case-name: tests.test_cli,tests.e2e.test_cli -*-
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
import re
import sys

COMMANDS = ["send", "listen", "history", "status", "agents", "bench", "keys"]

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


# What a message must not write raw to a terminal: C0 controls but tab and
# newline (ESC starts the sequences that move the cursor, clear the screen,
# set the title or the clipboard), DEL and C1 controls (0x9b is a one-byte
# CSI), the bidi controls that reorder what is shown (U+061C, U+200E/F,
# U+202A-202E, U+2066-2069) and lone surrogates (which cannot be encoded).
_UNPRINTABLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f"
                          "\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def _escape(match):
    code = ord(match.group())
    return "\\x{:02x}".format(code) if code < 0x100 else "\\u{:04x}".format(code)


def printable(text):
    """
    C{text} with every character that could rewrite the reader's terminal
    shown as a visible escape (ESC as C{\\x1b}, U+202E as C{\\u202e}):
    for the human output of messages; --json output stays exact.
    Anything but a string is first turned into one with C{str}.
    """
    if not isinstance(text, str):
        text = str(text)
    return _UNPRINTABLE.sub(_escape, text)


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
