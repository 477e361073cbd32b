# -*- test-case-name: tests.test_cli_connection -*-
"""
What the ``relay send|listen|status|bench`` commands share: the connection
options, the endpoint they resolve to, and running one Twisted job to an exit
code. Nothing here prints (the command modules beside it do).
"""

import argparse
import os
import pwd

from relay.client import default_endpoint

CONNECTION_HELP = (
    "Connection: --connect ENDPOINT (any Twisted client endpoint string) wins over "
    "--socket PATH (means unix:PATH), which wins over $RELAY_SOCKET; the default is "
    "unix:/tmp/agent-relay.sock.")


def user_id(text):
    """``--trust-user``'s value, a user name or a numeric uid, as a uid."""
    if text.isdigit():
        return int(text)
    try:
        return pwd.getpwnam(text).pw_uid
    except KeyError:
        raise argparse.ArgumentTypeError("no user {!r}".format(text))


def add_connection_options(parser):
    """
    ``--socket PATH`` / ``--connect ENDPOINT`` (mutually exclusive), and
    ``--trust-user``: the user the daemon behind a Unix socket may run as
    (by default only our own).
    """
    parser.add_argument("--trust-user", metavar="USER", type=user_id, dest="trust_uid",
                        help="talk to a daemon running as USER (name or uid); by default a "
                        "daemon behind a Unix socket must run as you")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--socket", metavar="PATH",
                       help="the daemon's Unix socket (default $RELAY_SOCKET or "
                       "/tmp/agent-relay.sock)")
    group.add_argument("--connect", metavar="ENDPOINT",
                       help="a Twisted client endpoint string, e.g. unix:/run/relay.sock "
                       "or tcp:host=10.0.0.2:port=7777")
    # Never a token on the command line: ps shows it to every local user.
    parser.add_argument("--token-file", metavar="PATH",
                        help="a file holding this agent's token for a daemon run with --auth "
                        "(default $RELAY_TOKEN)")


def token_from_args(args, environ=None):
    """
    The agent's token: the first line of ``--token-file``, else ``$RELAY_TOKEN``,
    else None. Raises ValueError (with a one-line reason) for an unusable file.
    """
    path = getattr(args, "token_file", None)
    if path:
        try:
            with open(path, encoding="utf-8") as f:
                token = f.readline().rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as e:
            raise ValueError("cannot read --token-file {}: {}".format(
                path, getattr(e, "strerror", None) or e))
        if not token:
            raise ValueError("--token-file {} is empty".format(path))
        return token
    environ = os.environ if environ is None else environ
    return environ.get("RELAY_TOKEN") or None


def endpoint_from_args(args, environ=None):
    """The endpoint string the options ask for."""
    if getattr(args, "connect", None):
        return args.connect
    if getattr(args, "socket", None):
        return "unix:" + args.socket
    return default_endpoint(os.environ if environ is None else environ)


def run_job(job, *args, **kwargs):
    """
    Run ``job(reactor, *args, **kwargs)`` (returning a Deferred or a value: the
    exit code) on the global reactor until it finishes; return
    ``(exit_code, failure)``. A job's failure is returned, not raised; on SIGINT
    or SIGTERM the reactor stops and ``(None, None)`` is returned.
    """
    from twisted.internet import defer, reactor

    outcome = {}

    def start():
        d = defer.maybeDeferred(job, reactor, *args, **kwargs)

        def done(result):
            outcome["result"] = result
            if reactor.running:
                reactor.stop()
        d.addBoth(done)
    reactor.callWhenRunning(start)
    reactor.run()
    result = outcome.get("result")
    from twisted.python.failure import Failure
    if isinstance(result, Failure):
        return None, result
    return result, None
