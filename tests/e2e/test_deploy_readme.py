"""
README.rst's commands for a fresh machine are the ones that work: the test
command is what C{.ci/run} runs, line for line, and the install-and-run
command, copied from README.rst, installs the project into a new venv and
starts the daemon on its embedded default.
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile

from twisted.internet import defer, reactor
from twisted.trial import unittest

from tests.support.daemon import REPO
from tests.support.frames import FrameReader, encode, hello
from tests.support.poll import poll_until
from tests.support.process import ProcessOutput


def _section(text, title):
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line == title and i + 1 < len(lines) and set(lines[i + 1]) <= set("=-") \
                and lines[i + 1]:
            body = []
            for j in range(i + 2, len(lines)):
                if j + 1 < len(lines) and lines[j + 1] and set(lines[j + 1]) <= set("=-") \
                        and len(lines[j + 1]) >= len(lines[j]) > 0:
                    break
                body.append(lines[j])
            return body
    raise AssertionError("no section %r in README.rst" % (title,))


def literal_blocks(title):
    """
    The literal blocks (after a C{::} line) of one README.rst section, each
    a list of its lines, unindented.
    """
    with open(os.path.join(REPO, "README.rst"), encoding="utf-8") as f:
        body = _section(f.read(), title)
    blocks, i = [], 0
    while i < len(body):
        if body[i].rstrip().endswith("::"):
            i += 1
            block = []
            while i < len(body) and (not body[i].strip() or body[i].startswith("    ")):
                block.append(body[i][4:])
                i += 1
            blocks.append([line for line in block if line.strip()])
        else:
            i += 1
    return blocks


def _ci_lines():
    with open(os.path.join(REPO, ".ci", "run"), encoding="utf-8") as f:
        return [line.strip() for line in f.read().splitlines()]


class CommandTests(unittest.TestCase):
    """
    Each README command stands alone and is used verbatim.
    """

    def test_test_commands_are_what_ci_runs(self):
        """
        The whole-suite command (one line, making its own venv) and the two
        lines for the oldest Twisted appear in C{.ci/run} exactly as
        README.rst gives them.
        """
        blocks = literal_blocks("Running the tests")
        newest, oldest = blocks[0], blocks[1]
        self.assertEqual(len(newest), 1, newest)
        self.assertTrue(newest[0].startswith("python3 -m venv .venv && "), newest)
        self.assertIn("pip install '.[test]'", newest[0])
        self.assertTrue(newest[0].endswith("-m twisted.trial tests"), newest)
        ci = _ci_lines()
        for line in newest + oldest:
            self.assertIn(line, ci)
        self.assertLess(ci.index(newest[0]), ci.index(oldest[0]))

    def test_install_command_stands_alone(self):
        """
        The install-and-run command is one line that makes its venv,
        installs the project and starts the daemon in the foreground.
        """
        (command,), = literal_blocks("Install and run")[:1]
        self.assertTrue(command.startswith("python3 -m venv .venv && "), command)
        self.assertIn("pip install . ", command)
        self.assertTrue(command.endswith("twistd -n relay"), command)


def _unavailable():
    if os.geteuid() != 0:
        return "needs root for a private /tmp (unshare --mount)"
    if shutil.which("unshare") is None or shutil.which("python3") is None:
        return "needs unshare and python3 on PATH"
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "true"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if probe.returncode != 0:
        return "unshare --mount is not permitted here"
    return None


class FreshInstallTests(unittest.TestCase):
    """
    The install-and-run command on a fresh copy of the source.
    """

    timeout = 600

    @defer.inlineCallbacks
    def test_install_and_run(self):
        """
        README's install-and-run command, run verbatim by bash in a copy of
        the source (with its own /tmp, so that the default socket
        /tmp/agent-relay.sock is this test's alone): it installs from the
        package index, the daemon starts on its default socket and store,
        answers HELLO with WELCOME, and stops on SIGTERM with status 0.
        """
        (command,), = literal_blocks("Install and run")[:1]
        # The copy lives outside /tmp, which the command gets a private one
        # of: a checkout under /tmp (CI clones there) would vanish under it.
        work = tempfile.mkdtemp(prefix="relay-fresh-install-", dir="/var/tmp")
        self.addCleanup(shutil.rmtree, work, True)
        source = os.path.join(work, "src")
        shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(
            ".git", "_trial_temp*", "build", "dist", "*.egg-info", "__pycache__", "*.pyc",
            ".venv*", "dropin.cache", "*.sqlite*", "node_modules", ".hypothesis"))
        env = {k: v for k, v in os.environ.items()
               if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
        # A fresh machine: not this venv's python3 or twistd first on PATH.
        if sys.prefix != sys.base_prefix:
            env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                          if not p.startswith(sys.prefix))
        # cd first: the copy may itself live under /tmp (a CI clone there),
        # and the working directory stays reachable under the new mount.
        script = "cd \"$1\" && mount -t tmpfs relay-test-tmp /tmp && exec bash -c \"$2\""
        proto = ProcessOutput()
        reactor.spawnProcess(proto, "unshare", ["unshare", "--mount", "--propagation", "private",
                                                "sh", "-c", script, "sh", source, command],
                             env=env, path=work)
        pidfile = os.path.join(source, "twistd.pid")

        def cleanup():
            if not proto.ended.called:
                proto.transport.signalProcess("KILL")
                try:
                    with open(pidfile) as f:
                        os.kill(int(f.read()), signal.SIGKILL)
                except (OSError, ValueError):
                    pass
            return proto.ended
        self.addCleanup(cleanup)

        sock = "/proc/%d/root/tmp/agent-relay.sock" % (proto.transport.pid,)

        def daemon_up():
            if proto.ended.called:
                self.fail("the command ended (status %s):\n%s" % (proto.exit_code, proto.text()))
            return (os.path.exists(sock) and os.path.exists(pidfile)
                    and os.path.exists(os.path.join(source, "relay.sqlite")))
        yield poll_until(daemon_up, 540, interval=0.2,
                         what=lambda: "the daemon:\n" + proto.text())
        self.assertTrue(os.path.exists(os.path.join(source, ".venv", "bin", "relay")))

        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.settimeout(15)
        try:
            client.connect(sock)
            client.sendall(encode(hello("readme")))
            reader, answers = FrameReader(), []
            while not answers:
                data = client.recv(65536)
                if not data:
                    break
                answers = reader.feed(data)
        finally:
            client.close()
        self.assertTrue(answers, "the daemon closed without answering HELLO")
        self.assertEqual(answers[0]["type"], "WELCOME")

        with open(pidfile) as f:
            os.kill(int(f.read()), signal.SIGTERM)
        yield proto.ended
        self.assertEqual(proto.exit_code, 0, proto.text())
        self.assertTrue(re.search(r"flushed and closed", proto.text()), proto.text())


_reason = _unavailable()
if _reason is not None:
    FreshInstallTests.skip = _reason
