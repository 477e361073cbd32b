# -*- test-case-name: tests.e2e.test_cli_listen,tests.e2e.test_cli -*-
"""
``relay listen``: connect as an agent and print every delivery, ACKing each
after it is printed.
"""

import argparse
import json
import sys
import time

from relay.cli import EXIT_FAILED, EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE, fail, printable

EPILOG = """\
examples:
  relay listen --as bob
  relay listen --as bob --count 1 --json | jq .body
  relay listen --as watcher --topic deploys --topic alerts

Each delivery is printed (one line of text, or with --json one JSON object a
line: id, from, to, topic, kind, body, data, thread, seq, original_to, meta,
ts) and then ACKed, so a message is never ACKed before it was written out.
Redeliveries of a message already printed are not printed again. If the
daemon restarts, listen reconnects (with backoff) and carries on.

{connection}

exit codes: 0 after --count messages (or Ctrl-C), 1 the output broke or the
daemon refused, 2 bad usage, 3 the daemon could not be reached.
"""


def register(subparsers):
    from relay.cli.connection import CONNECTION_HELP, add_connection_options
    parser = subparsers.add_parser(
        "listen", help="print the messages delivered to an agent",
        description="Connect as an agent and print each message delivered to it.",
        epilog=EPILOG.replace("{connection}", CONNECTION_HELP),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--as", dest="agent", required=True, metavar="NAME",
                        help="the agent name to listen as")
    parser.add_argument("--count", type=int, metavar="N",
                        help="exit after N messages")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument("--topic", action="append", default=[], metavar="T",
                        help="subscribe to topic T (repeatable)")
    parser.add_argument("--timeout", type=float, default=10.0,
                        help="seconds to wait for the first connection (default 10)")
    add_connection_options(parser)
    parser.set_defaults(func=main)
    return parser


def _fail(code, message):
    return fail("listen", code, message)


def format_message(message):
    """
    The human one-line form of a delivery; characters that could rewrite
    the terminal are shown escaped (L{relay.cli.printable}).
    """
    when = ""
    if isinstance(message.ts, (int, float)):
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(message.ts / 1000.0)) + " "
    where = message.sender or "?"
    target = "*" if message.is_broadcast else (message.to or "?")
    where = "{} -> {}".format(where, target)
    if message.topic:
        where += " #{}".format(message.topic)
    if message.thread:
        where += " [{}]".format(message.thread)
    kind = "" if message.kind == "message" else "({}) ".format(message.kind)
    body = message.body if isinstance(message.body, str) else json.dumps(message.body)
    line = printable("{}{}: {}{}".format(when, where, kind, body)).replace("\n", "\n    ")
    if message.data:
        line += "\n    data: " + json.dumps(message.data, sort_keys=True)
    return line


def log_to_stderr(command, level="info"):
    """
    Show relay.client's log events of ``level`` and above on stderr, one line
    each (``relay listen: ...``), without tracebacks.
    """
    from twisted.logger import (
        FilteringLogObserver, LogLevel, LogLevelFilterPredicate, formatEvent,
        globalLogBeginner)

    threshold = LogLevel.lookupByName(level)

    def observer(event):
        # The client's own events; Twisted's chatter ("Starting factory") only
        # when it is a warning or worse.
        if not event.get("log_namespace", "").startswith("relay.") and \
                event.get("log_level", LogLevel.info) < LogLevel.warn:
            return
        text = formatEvent(event)
        if text:
            sys.stderr.write("relay {}: {}\n".format(command, text.splitlines()[0]))
            sys.stderr.flush()
    predicate = LogLevelFilterPredicate(defaultLogLevel=threshold)
    globalLogBeginner.beginLoggingTo([FilteringLogObserver(observer, [predicate])],
                                     redirectStandardIO=False)


def main(args):
    from relay.client import check_agent_name
    from relay.cli.connection import endpoint_from_args, run_job, token_from_args

    try:
        check_agent_name(args.agent)
        args.token = token_from_args(args)
    except ValueError as e:
        return _fail(EXIT_USAGE, str(e))
    if args.count is not None and args.count < 1:
        return _fail(EXIT_USAGE, "--count must be at least 1")
    for topic in args.topic:
        if not topic:
            return _fail(EXIT_USAGE, "--topic must not be empty")
    log_to_stderr("listen")
    code, failure = run_job(_listen, args, endpoint_from_args(args))
    if failure is not None:
        return _fail(EXIT_FAILED, "unexpected error: {}".format(failure.getErrorMessage()))
    if code is None:        # Ctrl-C / SIGTERM: the normal way to stop listening
        return EXIT_OK
    return code


def _listen(reactor, args, endpoint):
    from twisted.internet import defer

    from relay.client import ConnectFailed, HandshakeRefused, connect

    finished = defer.Deferred()
    state = {"count": 0}

    def on_message(message):
        if finished.called:
            # Past --count (or the output broke): a Deferred that never fires
            # keeps it un-ACKed, so the daemon gives it to the next reader.
            return defer.Deferred()
        if args.json:
            line = json.dumps(message.as_dict(), ensure_ascii=False)
        else:
            line = format_message(message)
        try:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
        except (BrokenPipeError, OSError) as e:
            if not finished.called:
                finished.callback(_fail(EXIT_FAILED, "cannot write the output: {}".format(e)))
            return defer.Deferred()
        state["count"] += 1
        if args.count is not None and state["count"] >= args.count:
            # ACKed once this returns; stop after that ACK is written.
            reactor.callLater(0, lambda: finished.called or finished.callback(EXIT_OK))

    @defer.inlineCallbacks
    def job():
        try:
            client = yield connect(reactor, endpoint, args.agent, on_message=on_message,
                                   timeout=args.timeout, trust_uid=args.trust_uid,
                                   cli="relay listen", token=getattr(args, "token", None))
        except ConnectFailed as e:
            return _fail(EXIT_USAGE if e.reason == "endpoint" else EXIT_UNREACHABLE, str(e))
        except HandshakeRefused as e:
            return _fail(EXIT_FAILED, str(e))
        for topic in args.topic:
            client.subscribe(topic)

        def closed(reason):
            if not finished.called:
                finished.callback(_fail(EXIT_FAILED, str(reason)))
        client.when_closed().addCallback(closed)
        sys.stderr.write("relay listen: listening as {} on {}{}\n".format(
            args.agent, endpoint, " (topics: {})".format(", ".join(args.topic))
            if args.topic else ""))
        sys.stderr.flush()
        try:
            code = yield finished
        finally:
            yield client.close()
        return code
    return job()

