"""
systemd socket activation, end to end: C{systemd-socket-activate} binds the
socket, passes it as the named descriptor C{relay}, and starts
C{twistd -n relay --listen systemd:domain=UNIX:name=relay} on the first
connection (as C{etc/relay.socket} and C{etc/relay-activated.service} do).
"""

import json
import os
import shutil
import sqlite3
import tempfile

from twisted.internet import defer, reactor
from twisted.trial import unittest

from tests.support.daemon import REPO, TWISTD, connect_agent, send
from tests.support.deploy import _Collect
from tests.support.poll import poll_until

ACTIVATE = shutil.which("systemd-socket-activate")
LISTEN = "systemd:domain=UNIX:name=relay"


class SocketActivationTests(unittest.TestCase):
    """
    The daemon serves a socket it inherits by name.
    """

    timeout = 60

    def setUp(self):
        self.top = tempfile.mkdtemp(prefix="relay-sa-")
        self.addCleanup(shutil.rmtree, self.top, True)
        self.socket = os.path.join(self.top, "relay.sock")
        self.db = os.path.join(self.top, "relay.sqlite")

    def start(self):
        proto = _Collect()
        args = [ACTIVATE, "--listen", self.socket, "--fdname=relay",
                # systemd-socket-activate passes only the variables it is told.
                "--setenv=PYTHONPATH=" + REPO,
                TWISTD, "--pidfile=", "-n", "relay", "--listen", LISTEN, "--db", self.db]
        reactor.spawnProcess(proto, ACTIVATE, args, env=dict(os.environ), path=self.top)

        def cleanup():
            if not proto.ended.called:
                proto.transport.signalProcess("KILL")
            return proto.ended
        self.addCleanup(cleanup)
        return proto

    @defer.inlineCallbacks
    def test_first_connection_before_daemon_is_served(self):
        """
        The first agent connects while only the socket exists (no twistd
        has been started, no store created): it is served, not refused; its
        message is receipted; SIGTERM to the activated daemon (the same
        process, exec'd) flushes and exits 0 with the message in the store.
        """
        proto = self.start()

        def listening():
            if proto.ended.called:
                self.fail("no socket from systemd-socket-activate:\n" + proto.stderr())
            return os.path.exists(self.socket)
        yield poll_until(listening, 20, interval=0.02,
                         what=lambda: "a socket from systemd-socket-activate:\n" + proto.stderr())
        # Nothing but the socket yet: the daemon starts on this connection.
        self.assertFalse(os.path.exists(self.db))
        self.assertNotIn("Execing", proto.stderr())
        alice = yield connect_agent("unix:" + self.socket, "alice")
        self.addCleanup(alice.transport.loseConnection)
        alice.send(send("bob", "through an inherited socket", requires_ack=True))
        yield alice.wait_type("ACK")
        self.assertIn("Execing", proto.stderr())
        log = proto.stderr() + "\n".join(proto.lines)
        self.assertIn("RelayFactory starting on '%s'" % (self.socket,), log)

        proto.transport.signalProcess("TERM")
        yield proto.ended
        self.assertEqual(proto.exit_code, 0, proto.stderr() + "\n".join(proto.lines))
        db = sqlite3.connect(self.db)
        try:
            bodies = [json.loads(p)["body"] for (p,) in db.execute("SELECT payload FROM messages")]
        finally:
            db.close()
        self.assertEqual(bodies, ["through an inherited socket"])

    @defer.inlineCallbacks
    def test_no_descriptor_is_one_line_error(self):
        """
        Started without an inherited descriptor named C{relay} (run by hand,
        or a socket unit whose FileDescriptorName differs), the daemon stops
        with one line naming the endpoint and a non-zero status.
        """
        from twisted.internet import utils
        env = {k: v for k, v in os.environ.items() if not k.startswith("LISTEN_")}
        env["PYTHONPATH"] = REPO
        out, err, code = yield utils.getProcessOutputAndValue(
            TWISTD, ["--pidfile=", "-n", "relay", "--listen", LISTEN, "--db", self.db],
            env=env, path=self.top, reactor=reactor)
        output = (out + err).decode("utf-8", "replace")
        self.assertNotEqual(code, 0, output)
        lines = [line for line in output.splitlines() if LISTEN in line]
        self.assertEqual(len(lines), 1, output)
        self.assertIn("no inherited socket named 'relay'", lines[0])
        self.assertNotIn("Traceback", output)


class UnitFileTests(unittest.TestCase):
    """
    C{etc/relay.socket} and the unit it starts agree with what the test
    above runs.
    """

    def read(self, name):
        with open(os.path.join(REPO, "etc", name), encoding="utf-8") as f:
            return f.read()

    def test_socket_names_its_service_and_descriptor(self):
        """
        The socket unit names the descriptor C{relay} and a service file
        that exists in C{etc/}; that service listens on exactly the
        endpoint tested here and binds nothing else.
        """
        unit = self.read("relay.socket")
        settings = dict(line.split("=", 1) for line in unit.splitlines()
                        if "=" in line and not line.startswith("#"))
        self.assertEqual(settings["FileDescriptorName"], "relay")
        service_text = self.read(settings["Service"])
        self.assertIn("--listen " + LISTEN, service_text)
        self.assertEqual(service_text.count("--listen"), 1)
        self.assertIn("Requires=relay.socket", service_text)


if ACTIVATE is None:
    SocketActivationTests.skip = ("systemd-socket-activate is missing "
                                  "(apt-get install systemd; .ci/run does)")
