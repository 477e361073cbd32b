# -*- test-case-name: tests.test_cli_agents,tests.e2e.test_federation -*-
"""
``relay agents``: the workspace directory as a federated daemon knows it
(``--federate``): every agent name, the daemon that is its home, and
whether it is online there or since when it is not.
"""

import argparse
import json
import sys

from relay.cli import EXIT_FAILED, EXIT_OK, fail, printable

EPILOG = """\
examples:
  relay agents
  relay agents --json | jq '.[] | select(.online) | .name'

{connection}

exit codes: 0 ok, 1 the daemon is not federated (or answered something
else), 2 bad usage, 3 the daemon could not be reached.
"""


def register(subparsers):
    from relay.cli.connection import CONNECTION_HELP, add_connection_options
    parser = subparsers.add_parser(
        "agents", help="list the workspace's agents and their home daemons (--federate)",
        description="List the agents of the workspace as the daemon's directory has them: "
        "name, home daemon (\"here\" for this one), online or since when offline.",
        epilog=EPILOG.replace("{connection}", CONNECTION_HELP),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print the entries as JSON")
    parser.add_argument("--timeout", type=float, default=10.0,
                        help="seconds to wait for the reply (default 10)")
    add_connection_options(parser)
    parser.set_defaults(func=main)
    return parser


def _since(since_ms, now):
    if not isinstance(since_ms, (int, float)):
        return "-"
    from relay.cli.status import _duration
    return _duration(max(0, now - since_ms / 1000.0)) + " ago"


def format_agents(fed, now):
    """
    The readable lines of a STATUS reply's C{federation} part.
    """
    from relay.cli.status import _table
    me = fed.get("daemon_id")
    rows = []
    for e in fed.get("directory") or []:
        home = "here" if e.get("home") == me else str(e.get("home"))
        rows.append([printable(str(e.get("name"))), home,
                     "online" if e.get("online") else "offline",
                     _since(e.get("since_ms"), now)])
    lines = ["{} agents in the workspace directory (daemon {}, {})".format(
        fed.get("directory_size", len(rows)), me, fed.get("state"))]
    if rows:
        lines.extend(_table(["NAME", "HOME", "STATE", "SINCE"], rows))
    if fed.get("directory_size", 0) > len(rows):
        lines.append("(first {} shown)".format(len(rows)))
    return lines


def main(args):
    from relay.cli.connection import endpoint_from_args, run_job
    endpoint = endpoint_from_args(args)
    code, failure = run_job(_agents, args, endpoint)
    if failure is not None:
        return fail("agents", EXIT_FAILED, "unexpected error: {}".format(failure.getErrorMessage()))
    if code is None:
        return fail("agents", EXIT_FAILED, "interrupted")
    return code


def _agents(reactor, args, endpoint):
    from relay.cli.status import fetch_and_show

    def shown(status):
        fed = status.get("federation")
        if not isinstance(fed, dict):
            return fail("agents", EXIT_FAILED, "the daemon at {} is not federated (run it with "
                        "--federate)".format(endpoint))
        if args.json:
            sys.stdout.write(json.dumps(fed.get("directory") or [], indent=2, sort_keys=True)
                             + "\n")
        else:
            sys.stdout.write("\n".join(format_agents(fed, reactor.seconds())) + "\n")
        sys.stdout.flush()
        return EXIT_OK
    return fetch_and_show(reactor, args, endpoint, "agents", shown)
