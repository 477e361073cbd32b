# -*- test-case-name: tests.e2e.test_cli_send,tests.e2e.test_cli -*-
"""
``relay send``: send one message and wait for the daemon's receipt.
"""

import argparse
import json
import sys

from relay.cli import EXIT_FAILED, EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE, fail

EPILOG = """\
examples:
  relay send --as alice --to bob "build finished"
  git log -1 | relay send --as ci --to reviewer --thread pr-42
  relay send --as alice --to '*' --topic news "deploy at 15:00"
  relay send --socket /run/relay.sock --as alice --to bob --data '{"pr": 42}' "see data"

It prints the message's SEND id on stdout once the daemon has stored it
(its receipt). With --no-wait it returns once the frame is written.
Note: a connection says HELLO as --as; if an agent of that name is connected,
the daemon replaces it with this one (use a name of its own, e.g. alice-cli).

{connection}

exit codes: 0 stored (receipt received), 1 refused (NACK) or no receipt in
time, 2 bad usage or input, 3 the daemon could not be reached.
"""


def register(subparsers):
    from relay import wire
    from relay.cli.connection import CONNECTION_HELP, add_connection_options
    parser = subparsers.add_parser(
        "send", help="send a message and wait for its receipt",
        description="Send one message to an agent (or '*') and wait until the daemon "
        "has stored it.",
        epilog=EPILOG.replace("{connection}", CONNECTION_HELP),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--as", dest="agent", required=True, metavar="NAME",
                        help="the agent name to send as")
    parser.add_argument("--to", required=True, metavar="NAME",
                        help="the recipient, or '*' to broadcast")
    parser.add_argument("body", nargs="?", metavar="BODY",
                        help="the message text; read from stdin when absent or '-'")
    parser.add_argument("--kind", default=wire.DEFAULT_KIND, choices=list(wire.KINDS))
    parser.add_argument("--thread", help="thread id to group related messages")
    parser.add_argument("--topic", help="topic (with --to '*': only its subscribers)")
    parser.add_argument("--data", metavar="JSON", help="a JSON object sent as payload data")
    parser.add_argument("--ttl-ms", type=int, help="message time to live in ms")
    parser.add_argument("--no-wait", action="store_true",
                        help="do not ask for a receipt; exit once written")
    parser.add_argument("--timeout", type=float, default=10.0,
                        help="seconds to wait for connection and receipt (default 10)")
    add_connection_options(parser)
    parser.set_defaults(func=main)
    return parser


def _fail(code, message):
    return fail("send", code, message)


def main(args):
    from relay import wire
    from relay.cli.connection import endpoint_from_args, run_job, token_from_args
    from relay.client import check_agent_name

    try:
        check_agent_name(args.agent)
        args.token = token_from_args(args)
        if args.to != wire.BROADCAST:
            check_agent_name(args.to)
    except ValueError as e:
        return _fail(EXIT_USAGE, str(e))
    data = None
    if args.data is not None:
        try:
            data = json.loads(args.data)
        except ValueError as e:
            return _fail(EXIT_USAGE, "--data is not valid JSON: {}".format(e))
        if not isinstance(data, dict):
            return _fail(EXIT_USAGE, "--data must be a JSON object")
    body = args.body
    if body is None or body == "-":
        if sys.stdin is None or sys.stdin.isatty():
            return _fail(EXIT_USAGE, "give BODY or pipe it on stdin")
        body = sys.stdin.read()
        if body.endswith("\n") and args.body is None:
            body = body[:-1]
    from relay.cli.listen import log_to_stderr
    log_to_stderr("send", "critical")
    code, failure = run_job(_send, args, body, data, endpoint_from_args(args))
    if failure is not None:
        return _fail(EXIT_FAILED, "unexpected error: {}".format(failure.getErrorMessage()))
    if code is None:
        return _fail(EXIT_FAILED, "interrupted before the receipt arrived")
    return code


def _send(reactor, args, body, data, endpoint):
    from twisted.internet import defer

    from relay.client import ClientClosed, ConnectFailed, HandshakeRefused, SendRefused, connect

    @defer.inlineCallbacks
    def job():
        try:
            client = yield connect(reactor, endpoint, args.agent, reconnect=False,
                                   timeout=args.timeout, trust_uid=args.trust_uid,
                                   cli="relay send", token=getattr(args, "token", None))
        except ConnectFailed as e:
            return _fail(EXIT_USAGE if e.reason == "endpoint" else EXIT_UNREACHABLE, str(e))
        except HandshakeRefused as e:
            return _fail(EXIT_FAILED, str(e))
        try:
            d = client.send(args.to, body, kind=args.kind, data=data, thread=args.thread,
                            topic=args.topic, durable=not args.no_wait, ttl_ms=args.ttl_ms)
            d.addTimeout(args.timeout, reactor)
            try:
                send_id = yield d
            except SendRefused as e:
                return _fail(EXIT_FAILED, str(e))
            except defer.TimeoutError:
                return _fail(EXIT_FAILED, "no receipt from the daemon within {}s".format(
                    args.timeout))
            except ClientClosed as e:
                return _fail(EXIT_FAILED, str(e))
            sys.stdout.write(send_id + "\n")
            sys.stdout.flush()
            return EXIT_OK
        finally:
            yield client.close()
    return job()
