"""
End-to-end: the real daemon raises its soft file-descriptor limit at
startup (L{relay.fdlimit}).
"""

import os
import resource
import sys

from twisted.internet import defer
from twisted.trial import unittest

from tests.support.daemon import DaemonProcess, connect_agent

# Start twistd with a low soft limit, as a login shell's default 1,024 would.
_LOWER = ("import os, resource, sys; "
          "resource.setrlimit(resource.RLIMIT_NOFILE, "
          "(int(sys.argv[1]), resource.getrlimit(resource.RLIMIT_NOFILE)[1])); "
          "os.execv(sys.argv[2], sys.argv[2:])")


class _LowLimitDaemon(DaemonProcess):
    soft = 128

    def args(self):
        return [sys.executable, "-c", _LOWER, str(self.soft)] + DaemonProcess.args(self)


class DaemonFdLimitTests(unittest.TestCase):
    """
    The real daemon, started with a soft limit of 128.
    """

    @defer.inlineCallbacks
    def test_daemon_raises_its_soft_limit(self):
        """
        C{/proc/<pid>/limits} of the running daemon shows the soft limit
        raised to the hard limit, its log says so, and it still serves.
        """
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        if hard != resource.RLIM_INFINITY and hard <= _LowLimitDaemon.soft:
            raise unittest.SkipTest("hard limit {} is not above 128".format(hard))
        if not os.path.exists("/proc/self/limits"):
            raise unittest.SkipTest("no /proc/<pid>/limits here")
        daemon = _LowLimitDaemon(self)
        yield daemon.start()
        self.addCleanup(daemon.stop)
        with open("/proc/{}/limits".format(daemon.pid)) as f:
            line = [l for l in f if l.startswith("Max open files")][0]
        soft_now, hard_now = line.split()[3:5]
        self.assertEqual(soft_now, hard_now)
        self.assertNotEqual(soft_now, "128")
        self.assertIn("relay file descriptor limit raised from 128 to {}".format(soft_now),
                      daemon.output())
        agent = yield connect_agent(daemon, "alice")
        self.assertTrue(agent.of_type("WELCOME"))
