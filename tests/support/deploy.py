# -*- test-case-name: tests.e2e.test_deploy_twistd,tests.e2e.test_deploy_activation -*-
"""
Helpers for the deployment tests: classic (daemonizing) twistd runs whose
exit status a test can still see.

A daemonized twistd double-forks, so the daemon is nobody's child.
L{LAUNCHER} makes itself a child subreaper (Linux C{PR_SET_CHILD_SUBREAPER})
before it runs the twistd command, so the orphaned daemon is re-parented to
it; it prints C{launcher-rc N} when the command returns and C{daemon-exit N}
when the daemon named in the pid file exits.
"""

import os
import sys

from twisted.internet import defer, reactor

from tests.support.daemon import REPO
from tests.support.process import ProcessOutput

LAUNCHER = r"""
import ctypes, os, subprocess, sys
PR_SET_CHILD_SUBREAPER = 36
if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
    print("launcher-error prctl", flush=True)
    sys.exit(2)
pidfile, command = sys.argv[1], sys.argv[2:]
rc = subprocess.call(command)
print("launcher-rc", rc, flush=True)
pid = None
if rc == 0:
    with open(pidfile) as f:
        pid = int(f.read().strip())
    print("daemon-pid", pid, flush=True)
while True:
    try:
        child, status = os.wait()
    except ChildProcessError:
        break
    if child == pid:
        print("daemon-exit", os.waitstatus_to_exitcode(status), flush=True)
        break
"""


class _Collect(ProcessOutput):
    """
    The launcher's output: its C{key N} lines can be waited for.
    """

    def __init__(self):
        ProcessOutput.__init__(self)
        self._waiters = []

    def line_received(self):
        self._check()

    def processEnded(self, reason):
        ProcessOutput.processEnded(self, reason)
        self._check()

    def value(self, key):
        for line in self.lines:
            words = line.split()
            if len(words) == 2 and words[0] == key:
                return int(words[1])
        return None

    def wait_for(self, key):
        """
        Fire with the number on the launcher's C{key N} line, or L{None} if
        it ends without one.
        """
        d = defer.Deferred()
        self._waiters.append((key, d))
        self._check()
        return d

    def _check(self):
        for key, d in list(self._waiters):
            found = self.value(key)
            if found is not None or self.ended.called:
                self._waiters.remove((key, d))
                d.callback(found)


def launch(command, pidfile, cwd, env=None):
    """
    Run C{command} (a classic twistd command line, daemonizing) under the
    subreaper launcher; returns the collecting protocol.
    """
    full = dict(os.environ)
    full["PYTHONPATH"] = REPO + os.pathsep + full.get("PYTHONPATH", "")
    full.update(env or {})
    proto = _Collect()
    reactor.spawnProcess(proto, sys.executable, [sys.executable, "-c", LAUNCHER, pidfile]
                         + list(command), env=full, path=cwd)
    return proto
