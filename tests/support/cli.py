# -*- test-case-name: tests.e2e.test_cli -*-
"""
Run the C{relay} command line (C{python -m relay.cli}) as a real process.
"""

import os
import sys

from twisted.internet import defer, reactor

from tests.support.daemon import REPO
from tests.support.poll import poll_until
from tests.support.process import ProcessOutput


class CliOutput(ProcessOutput):
    """
    A command's output; its stdin gets C{stdin} (if any) and is then closed.
    L{ended} fires with C{(stdout, stderr, exit code)}.
    """

    def __init__(self, stdin=None):
        ProcessOutput.__init__(self, stdin, close_stdin=True)

    def result(self):
        return (self.stdout(), self.stderr(), self.exit_code)


def spawn_cli(args, stdin=None, env=None):
    """
    Start C{python -m relay.cli ARGS} from this tree (C{RELAY_SOCKET} unset
    unless C{env} sets it).

    @return: the L{CliOutput}; its C{ended} fires with C{(stdout, stderr,
        exit code)}.
    """
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = REPO + os.pathsep + full_env.get("PYTHONPATH", "")
    full_env.pop("RELAY_SOCKET", None)
    full_env.update(env or {})
    proto = CliOutput(stdin)
    reactor.spawnProcess(proto, sys.executable, [sys.executable, "-m", "relay.cli"] + args,
                         env=full_env, path=REPO)
    return proto


def run_cli(args, stdin=None, env=None):
    """
    L{spawn_cli}, then fire with C{(stdout, stderr, exit code)}.
    """
    return spawn_cli(args, stdin, env).ended


def wait_for(condition, bound=15.0):
    """
    L{poll_until} as the CLI tests call it.
    """
    return poll_until(condition, bound)


# A message text that would rewrite a terminal printed raw: escape
# sequences (ESC, OSC with BEL, a C1 CSI), a bidi override, CR, NUL, TAB.
HOSTILE = "hi\x1b[2J\x1b]0;pwned\x07\x9b5A\u202eevil\rover\x00\ttab"


class DaemonMixin:
    """
    For a TestCase whose tests each run the CLI against one fresh real
    daemon: C{self.daemon}, and C{self.sock}, the arguments that point a
    command at it.
    """

    @defer.inlineCallbacks
    def setUp(self):
        from tests.support.daemon import DaemonProcess
        self.daemon = DaemonProcess(self)
        yield self.daemon.start()
        self.sock = ["--socket", self.daemon.socket_path]

    def tearDown(self):
        return self.daemon.stop()
