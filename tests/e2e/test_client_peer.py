# -*- test-case-name: tests.e2e.test_client_peer -*-
"""
relay.client and the CLI check who runs the daemon behind a Unix socket
(SO_PEERCRED): a listener run as another user (nobody, by a child process
that drops to uid 65534) is refused unless trusted by uid; the daemon the
tests run as the same user is accepted (the other client tests).
"""

import os
import socket
import tempfile

from twisted.internet import defer, reactor
from twisted.trial import unittest

from relay.client import ConnectFailed, connect, fetch_status
from relay.client.protocol import peer_uid, untrusted_peer
from tests.support.cli import run_cli
from tests.support.daemon import DaemonProcess
from tests.support.process import ProcessOutput

NOBODY = 65534

# nobody cannot run the venv's interpreter (it lives under /root): the
# squatter needs only the standard library.
SYSTEM_PYTHON = "/usr/bin/python3"

# Accept connections as nobody and report how many bytes each one sent.
SQUATTER = r"""
import os, socket, sys
path = sys.argv[1]
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(path)
s.listen(8)
print("ready", flush=True)
while True:
    c, _ = s.accept()
    n = 0
    while True:
        data = c.recv(65536)
        if not data:
            break
        n += len(data)
    c.close()
    print("got %d" % n, flush=True)
"""


class _Lines(ProcessOutput):
    """The squatter's output: C{ready} fires on its "ready" line."""

    def __init__(self):
        ProcessOutput.__init__(self)
        self.ready = defer.Deferred()
        self.waiters = []

    def line_received(self):
        if "ready" in self.lines and not self.ready.called:
            self.ready.callback(None)
        for count, d in list(self.waiters):
            if len([l for l in self.lines if l.startswith("got")]) >= count:
                self.waiters.remove((count, d))
                d.callback(None)

    def connections(self, count):
        d = defer.Deferred()
        self.waiters.append((count, d))
        self.line_received()
        return d.addTimeout(15, reactor)

    def sent(self):
        return [int(l.split()[1]) for l in self.lines if l.startswith("got")]


class PeerCredentialTests(unittest.TestCase):
    """
    A socket squatted by another user is refused by connect(),
    fetch_status() and the CLI, before anything is sent; trusting that uid
    lets the client talk to it.
    """

    @defer.inlineCallbacks
    def setUp(self):
        directory = tempfile.mkdtemp(prefix="relay-peer-")
        os.chmod(directory, 0o777)
        self.path = os.path.join(directory, "agent-relay.sock")
        self.endpoint = "unix:" + self.path
        self.squatter = _Lines()
        self.process = reactor.spawnProcess(
            self.squatter, SYSTEM_PYTHON, [SYSTEM_PYTHON, "-c", SQUATTER, self.path],
            env={}, path="/", uid=NOBODY, gid=NOBODY)
        self.addCleanup(self._stop)
        yield self.squatter.ready.addTimeout(15, reactor)
        self.assertEqual(os.stat(self.path).st_uid, NOBODY)

    def _stop(self):
        if not self.squatter.ended.called:
            self.process.signalProcess("KILL")
        return self.squatter.ended

    @defer.inlineCallbacks
    def test_connect_refused(self):
        """
        connect() to a daemon running as nobody fails with ConnectFailed
        (reason untrusted, naming the user) and writes nothing: not even
        the HELLO with our agent name.
        """
        e = yield self.assertFailure(connect(reactor, self.endpoint, "alice", reconnect=False),
                                     ConnectFailed)
        self.assertEqual(e.reason, "untrusted")
        self.assertIn("nobody (uid 65534)", str(e))
        self.assertIn("--trust-user 65534", str(e))
        yield self.squatter.connections(1)
        self.assertEqual(self.squatter.sent(), [0])

    @defer.inlineCallbacks
    def test_trusted_uid(self):
        """
        With trust_uid=65534 the same socket is talked to: the HELLO is
        written (the squatter, no daemon, never answers it: timeout).
        """
        e = yield self.assertFailure(
            connect(reactor, self.endpoint, "alice", reconnect=False, timeout=0.5,
                    trust_uid=NOBODY), ConnectFailed)
        self.assertEqual(e.reason, "timeout")
        yield self.squatter.connections(1)
        [sent] = self.squatter.sent()
        self.assertGreater(sent, 20)

    @defer.inlineCallbacks
    def test_status_refused(self):
        """
        fetch_status() refuses the squatter the same way.
        """
        e = yield self.assertFailure(fetch_status(reactor, self.endpoint), ConnectFailed)
        self.assertEqual(e.reason, "untrusted")
        yield self.squatter.connections(1)
        self.assertEqual(self.squatter.sent(), [0])

    @defer.inlineCallbacks
    def test_cli(self):
        """
        relay send and relay status refuse the squatter in one line (exit
        3); with --trust-user nobody relay status talks to it (and times
        out waiting for its reply).
        """
        for args in (["send", "--as", "alice", "--to", "bob", "secret"], ["status"]):
            out, err, code = yield run_cli(args + ["--socket", self.path])
            self.assertEqual(code, 3, err)
            self.assertIn("refusing it", err)
            self.assertEqual(len(err.splitlines()), 1, err)
        out, err, code = yield run_cli(["status", "--trust-user", "nobody", "--timeout", "0.5",
                                        "--socket", self.path])
        self.assertEqual(code, 3, err)
        self.assertIn("no STATUS_REPLY", err)
        yield self.squatter.connections(3)
        self.assertEqual(self.squatter.sent()[:2], [0, 0])
        self.assertGreater(self.squatter.sent()[2], 0)


if os.geteuid() != 0 or not os.path.exists(SYSTEM_PYTHON):
    PeerCredentialTests.skip = "needs root (to run a listener as nobody) and " + SYSTEM_PYTHON


class PeerUidTests(unittest.TestCase):
    """
    peer_uid/untrusted_peer read SO_PEERCRED of a real connection.
    """

    @defer.inlineCallbacks
    def test_own_daemon(self):
        """
        Our own daemon's socket reports our uid and is trusted; expecting
        another uid refuses it; a TCP socket is not checked.
        """
        daemon = DaemonProcess(self)
        yield daemon.start()
        self.addCleanup(daemon.stop)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(sock.close)
        sock.connect(daemon.socket_path)
        self.assertEqual(peer_uid(sock), os.geteuid())
        self.assertIsNone(untrusted_peer(sock, daemon.endpoint))
        self.assertIn("refusing", untrusted_peer(sock, daemon.endpoint, os.geteuid() + 1))
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(tcp.close)
        self.assertIsNone(peer_uid(tcp))
