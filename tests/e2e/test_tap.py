# -*- test-case-name: tests.e2e.test_tap -*-
"""
Tests for L{relay.tap}: option parsing and defaults, service construction,
and the real C{twistd} command line (help output, one-line failures with a
non-zero exit status).
"""

import os
import socket
import stat
import sys
import tempfile

from twisted.application import service
from twisted.internet import defer, reactor, utils
from twisted.python import usage
from twisted.trial import unittest

from relay import tap
from tests.support.daemon import REPO, TWISTD, DaemonProcess, connect_agent, send


class OptionsTests(unittest.TestCase):

    def parse(self, *args):
        options = tap.Options()
        options.parseOptions(list(args))
        return options

    def test_defaults(self):
        """
        Without arguments the daemon listens on the default Unix socket
        (mode 600, with a lock file) and uses the documented defaults.
        """
        o = self.parse()
        self.assertEqual(o["listen"], ["unix:/tmp/agent-relay.sock:mode=600:lockfile=1"])
        self.assertEqual(o["db"], "relay.sqlite")
        self.assertEqual((o["max-frame-bytes"], o["heartbeat-ms"], o["ack-timeout-ms"]),
                         (1048576, 5000, 5000))
        self.assertEqual((o["batch-size"], o["batch-delay-ms"], o["batch-bytes"]),
                         (50, 100, 1048576))
        self.assertEqual(o["message-ttl"], 86400)
        self.assertEqual(o["rate-limit-policy"], "throttle")
        self.assertFalse(o["no-rate-limit"])

    def test_values_converted(self):
        """
        Numeric options are converted to numbers; --listen repeats.
        """
        o = self.parse("--allow-anonymous-tcp",
                       "--listen", "unix:/tmp/a.sock", "--listen", "tcp:0:interface=127.0.0.1",
                       "--heartbeat-ms", "250", "--message-ttl", "1.5", "--db", "x.sqlite")
        self.assertEqual(o["listen"], ["unix:/tmp/a.sock:mode=600:lockfile=1",
                                       "tcp:0:interface=127.0.0.1"])
        self.assertEqual(o["heartbeat-ms"], 250)
        self.assertEqual(o["message-ttl"], 1.5)
        self.assertEqual(o["db"], "x.sqlite")

    def test_lockfile_not_doubled(self):
        """
        An explicit lockfile setting on a Unix endpoint is kept as given.
        """
        o = self.parse("--listen", "unix:/tmp/a.sock:lockfile=0")
        self.assertEqual(o["listen"], ["unix:/tmp/a.sock:lockfile=0:mode=600"])

    def test_unix_mode_defaults_to_600(self):
        """
        A Unix listener given without mode= gets mode=600 (Twisted would
        create it 0666); a mode given, in either spelling, is kept.
        """
        o = self.parse("--listen", "unix:/tmp/a.sock", "--listen", "unix:/tmp/b.sock:mode=660",
                       "--listen", "unix:address=/tmp/c.sock:lockfile=1")
        self.assertEqual(o["listen"], ["unix:/tmp/a.sock:mode=600:lockfile=1",
                                       "unix:/tmp/b.sock:mode=660:lockfile=1",
                                       "unix:address=/tmp/c.sock:lockfile=1:mode=600"])

    def assertUsage(self, words, *args):
        e = self.assertRaises(usage.UsageError, self.parse, *args)
        self.assertIn(words, str(e))
        self.assertNotIn("\n", str(e))

    def test_bad_numbers(self):
        """
        Non-numeric, zero and negative values get a one-line UsageError
        naming the option.
        """
        self.assertUsage("--heartbeat-ms must be an integer", "--heartbeat-ms", "fast")
        self.assertUsage("--batch-size must be positive", "--batch-size", "0")
        self.assertUsage("--ack-timeout-ms must be positive", "--ack-timeout-ms", "-1")
        self.assertUsage("--message-ttl must be a number", "--message-ttl", "forever")

    def test_bad_listen(self):
        """
        An unparsable --listen endpoint is refused at option time.
        """
        self.assertUsage("bad --listen endpoint", "--listen", "carrier-pigeon:42")

    def test_bad_policy(self):
        """
        Only throttle and reject are rate-limit policies.
        """
        self.assertUsage("--rate-limit-policy", "--rate-limit-policy", "shrug")

    def test_queue_marks_ordered(self):
        """
        The queue water marks must satisfy low < high <= max.
        """
        self.assertUsage("--queue-low < --queue-high", "--queue-low", "10", "--queue-high", "5")
        self.assertUsage("--queue-high <= --queue-max", "--queue-high", "3000")


class MakeServiceTests(unittest.TestCase):

    def test_service_tree(self):
        """
        makeService builds a RelayService holding one listener per --listen
        and the retention service (30 days by default), with the store on --db and the router configured from the options.
        """
        o = tap.Options()
        db = os.path.abspath(self.mktemp())
        o.parseOptions(["--listen", "unix:%s.a" % (db,), "--listen", "unix:%s.b" % (db,),
                        "--db", db, "--heartbeat-ms", "1500", "--ack-timeout-ms", "700",
                        "--no-rate-limit"])
        top = tap.makeService(o)
        self.assertIsInstance(top, tap.RelayService)
        listeners = [c for c in top if hasattr(c, "relay_endpoint")]
        self.assertEqual(len(listeners), 2)
        self.assertEqual([c.retention for c in top if c.name == "retention"], [30 * 86400.0])
        self.assertEqual(len(list(top)), 3)
        self.assertEqual(top.store.path, db)
        factory = list(top)[0].factory
        self.assertEqual(factory.heartbeat, 1.5)
        self.assertIs(factory.router, top.router)
        self.assertEqual(top.router.ack_timeout, 0.7)
        self.assertIsNone(top.router.limiter)

    def test_plugin_is_found(self):
        """
        The twistd plugin named relay points at relay.tap.
        """
        from twisted.plugin import getPlugins
        makers = {p.tapname: p for p in getPlugins(service.IServiceMaker)}
        self.assertIn("relay", makers)
        self.assertIs(makers["relay"].options, tap.Options)


def run_twistd(*args, **kw):
    """
    Run the real twistd with this tree first on the path; fires with
    (output, exit code).
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    d = utils.getProcessOutputAndValue(TWISTD, list(args), env=env, path=kw.get("path", REPO),
                                       reactor=reactor)
    d.addCallback(lambda r: ((r[0] + r[1]).decode("utf-8", "replace"), r[2]))
    return d


class CommandLineTests(unittest.TestCase):

    def assertOneLineFailure(self, output, code, words):
        self.assertNotEqual(code, 0, output)
        lines = [line for line in output.splitlines() if words in line]
        self.assertEqual(len(lines), 1, output)
        self.assertNotIn("Traceback", output)

    @defer.inlineCallbacks
    def test_help_lists_relay(self):
        """
        C{twistd --help} lists the relay plugin.
        """
        output, code = yield run_twistd("--help")
        self.assertEqual(code, 0)
        self.assertTrue(any(line.split()[:1] == ["relay"] for line in output.splitlines()),
                        output)

    @defer.inlineCallbacks
    def test_relay_help_shows_options_and_defaults(self):
        """
        C{twistd relay --help} shows every core option with its default.
        """
        output, code = yield run_twistd("relay", "--help")
        self.assertEqual(code, 0)
        flat = " ".join(output.split())
        for option, default in [("--db", "relay.sqlite"), ("--max-frame-bytes", "1048576"),
                                ("--heartbeat-ms", "5000"), ("--ack-timeout-ms", "5000"),
                                ("--message-ttl", "86400"), ("--batch-size", "50"),
                                ("--batch-delay-ms", "100"), ("--batch-bytes", "1048576")]:
            self.assertIn(option + "=", flat)
            start = flat.index(option + "=")
            self.assertIn("[default: %s]" % (default,), flat[start:start + 200], option)
        self.assertIn("--listen=", flat)
        self.assertIn("[default:unix:/tmp/agent-relay.sock:mode=600]", "".join(output.split()))

    @defer.inlineCallbacks
    def test_bad_option(self):
        """
        A bad option value exits non-zero with a one-line message.
        """
        output, code = yield run_twistd("relay", "--heartbeat-ms", "-5")
        self.assertOneLineFailure(output, code, "--heartbeat-ms must be positive")

    @defer.inlineCallbacks
    def test_unusable_socket_path(self):
        """
        A socket path in a directory that does not exist: exit status 1 and
        one line saying the daemon cannot listen there.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        output, code = yield run_twistd(
            "--pidfile=", "-n", "relay", "--listen", "unix:/nonexistent-dir/r.sock",
            "--db", os.path.join(directory, "relay.sqlite"), path=directory)
        self.assertOneLineFailure(output, code, "relay: cannot listen on unix:/nonexistent-dir/r.sock")
        self.assertEqual(code, 1)

    @defer.inlineCallbacks
    def test_address_in_use(self):
        """
        A second daemon on the socket of a live one exits with status 1 and
        a one-line reason; the first keeps serving on its socket.
        """
        first = DaemonProcess(self, ["--batch-delay-ms", "10"])
        yield first.start()
        self.addCleanup(first.stop)
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        output, code = yield run_twistd(
            "--pidfile=", "-n", "relay", "--listen", "unix:%s:mode=600" % (first.socket_path,),
            "--db", os.path.join(directory, "other.sqlite"), path=directory)
        self.assertOneLineFailure(output, code, "relay: cannot listen on")
        self.assertEqual(code, 1)
        agent = yield connect_agent(first, "still-first")
        agent.send(send("still-first", "hello me", requires_ack=True))
        yield agent.wait_type("ACK")

    @defer.inlineCallbacks
    def test_tcp_address_in_use(self):
        """
        A TCP port already bound by another listener: exit status 1 and a
        one-line reason.
        """
        from twisted.internet.protocol import Factory
        port = reactor.listenTCP(0, Factory(), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        output, code = yield run_twistd(
            "--pidfile=", "-n", "relay", "--allow-anonymous-tcp", "--listen",
            "tcp:%d:interface=127.0.0.1" % (port.getHost().port,),
            "--db", os.path.join(directory, "relay.sqlite"), path=directory)
        self.assertOneLineFailure(output, code, "relay: cannot listen on tcp:")
        self.assertEqual(code, 1)

    @defer.inlineCallbacks
    def test_socket_of_another_user(self):
        """
        A socket path that exists and belongs to another user (nobody): the
        real daemon exits with status 1 and one line, and leaves the file.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        path = os.path.join(tempfile.mkdtemp(prefix="relay-o-"), "r.sock")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(listener.close)
        listener.bind(path)
        listener.listen(1)
        os.chown(path, 65534, -1)
        output, code = yield run_twistd(
            "--pidfile=", "-n", "relay", "--listen", "unix:" + path,
            "--db", os.path.join(directory, "relay.sqlite"), path=directory)
        self.assertOneLineFailure(output, code, "relay: refusing to listen on " + path)
        self.assertEqual(code, 1)
        self.assertEqual(os.stat(path).st_uid, 65534)

    @defer.inlineCallbacks
    def test_files_owner_only(self):
        """
        A daemon started with a Unix listener without mode= (and a umask
        of 0) creates its socket 0600, and its store with the -wal and -shm
        files 0600, once a message is stored.
        """
        daemon = DaemonProcess(self, ["--batch-delay-ms", "10"])
        daemon.listen = "unix:" + daemon.socket_path
        old = os.umask(0)
        try:
            yield daemon.start()
        finally:
            os.umask(old)
        self.addCleanup(daemon.stop)
        agent = yield connect_agent(daemon, "alice")
        agent.send(send("bob", "secret", requires_ack=True))
        yield agent.wait_type("ACK")
        modes = {name: stat.S_IMODE(os.stat(name).st_mode)
                 for name in (daemon.socket_path, daemon.db_path, daemon.db_path + "-wal",
                              daemon.db_path + "-shm")}
        self.assertEqual(modes, dict.fromkeys(modes, 0o600))

    @defer.inlineCallbacks
    def test_unusable_db(self):
        """
        A store path in a missing directory: exit status 1 and one line
        naming the store.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        output, code = yield run_twistd(
            "--pidfile=", "-n", "relay", "--listen",
            "unix:%s:mode=600" % (os.path.join(directory, "r.sock"),),
            "--db", "/nonexistent-dir/relay.sqlite", path=directory)
        self.assertOneLineFailure(output, code, "relay: cannot open store")
        self.assertEqual(code, 1)


if not os.path.exists(TWISTD):
    CommandLineTests.skip = "no twistd next to %s" % (sys.executable,)
