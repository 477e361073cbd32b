# -*- test-case-name: tests.test_listeners -*-
"""
The C{--listen} endpoints of C{twistd relay}: safe defaults for Unix
sockets and a check that each endpoint string parses, at option time.
"""

import os

from twisted.internet import endpoints
from twisted.python import usage

DEFAULT_LISTEN = "unix:/tmp/agent-relay.sock:mode=600"


def unix_address(endpoint):
    """
    The socket path of a C{unix:} server endpoint string and its keyword
    arguments, or C{(None, None)} for any other endpoint (or one that does
    not parse: L{check_endpoint} reports that).
    """
    if not endpoint.startswith("unix:"):
        return None, None
    try:
        args, kwargs = endpoints._parse(endpoint)
    except Exception:
        return None, None
    path = kwargs.get("address") or (args[1] if len(args) > 1 else None)
    return path, kwargs


def unix_defaults(endpoint):
    """
    Unix sockets get C{mode=600} unless a mode is given (Twisted's default
    is 666: any local user could talk to the daemon), and C{lockfile=1}: a
    socket file left by a daemon that was killed is then replaced, while a
    live daemon's is never stolen.  Other endpoints are returned as given.
    """
    path, kwargs = unix_address(endpoint)
    if path is None:
        return endpoint
    if "mode" not in kwargs:
        endpoint += ":mode=600"
    if "lockfile" not in kwargs:
        endpoint += ":lockfile=1"
    return endpoint


def check_endpoint(endpoint, environ=None):
    """
    Parse C{endpoint} as a server endpoint string without binding anything
    (no reactor is needed yet).

    @raise usage.UsageError: one line saying why it does not parse.
    """
    environ = os.environ if environ is None else environ
    try:
        endpoints.serverFromString(None, endpoint)
    except KeyError as err:
        # systemd:...:name=N with no inherited descriptor named N.
        raise usage.UsageError("bad --listen endpoint %r: no inherited socket named %s"
                               " (LISTEN_FDNAMES=%r)"
                               % (endpoint, err, environ.get("LISTEN_FDNAMES", "")))
    except (ValueError, TypeError, OSError) as err:
        # OSError: an ssl: key or certificate file that cannot be read.
        raise usage.UsageError("bad --listen endpoint %r: %s" % (endpoint, err))
