# -*- test-case-name: tests.e2e.test_client_examples -*-
"""
The examples in examples/ (quoted in README.rst) run against the real daemon.
"""

import os
import sys

from twisted.internet import defer, reactor
from twisted.trial import unittest

from relay.client import connect
from tests.support.daemon import REPO, DaemonProcess
from tests.support.cli import CliOutput as _Collect

EXAMPLES = os.path.join(REPO, "examples")


def run_example(name, args):
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    proto = _Collect(None)
    script = os.path.join(EXAMPLES, name)
    reactor.spawnProcess(proto, sys.executable, [sys.executable, script] + args, env=env,
                         path=REPO)
    return proto.ended


class ExampleTests(unittest.TestCase):
    """examples/echo_agent.py and examples/blocking_agent.py."""

    def test_echo_agent_is_short(self):
        """The README's example agent stays under 30 lines."""
        with open(os.path.join(EXAMPLES, "echo_agent.py")) as f:
            self.assertLess(len(f.read().splitlines()), 30)

    @defer.inlineCallbacks
    def test_echo_and_blocking(self):
        """The echo agent answers a relay.client agent and the blocking script,
        each in upper case, then exits after the COUNT it was given."""
        daemon = DaemonProcess(self)
        yield daemon.start()
        echo = run_example("echo_agent.py", ["echo", daemon.endpoint, "2"])
        alice = yield connect(reactor, daemon.endpoint, "alice")
        try:
            yield alice.send("echo", "hello echo", thread="t-1")
            reply = yield alice.next_message()
        finally:
            yield alice.close()
        self.assertEqual((reply.sender, reply.body, reply.thread),
                         ("echo", "HELLO ECHO", "t-1"))
        out, err, code = yield run_example("blocking_agent.py", ["echo", daemon.endpoint])
        self.assertEqual((out, code), ("HELLO FROM A PLAIN SCRIPT\n", 0), err)
        out, err, code = yield echo
        self.assertEqual(code, 0, err)
        self.assertIn("echo is listening", out)
        yield daemon.stop()
