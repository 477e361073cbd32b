# -*- test-case-name: tests.e2e.test_core,tests.test_support -*-
"""
Run the real daemon (C{twistd -n relay}) as a subprocess for end-to-end
tests, and talk to it over real sockets.
"""

import os
import signal
import socket
import sys

from twisted.internet import defer, protocol, reactor

from tests.support import frames
from tests.support.frames import FrameReader, encode, hello
from tests.support.poll import poll_until
from tests.support.process import ProcessOutput

# tests/support/daemon.py -> the repository root.
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")

# How long a daemon may take to start or stop before a test fails.
START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0


class DaemonProcess:
    """
    The real C{twistd -n relay}, in a temporary directory of the test.

    @ivar socket_path: its Unix socket.
    @ivar db_path: its SQLite store.
    @ivar endpoint: a client endpoint string for the socket.
    """

    def __init__(self, testcase, extra_args=(), env=None, directory=None, plugin="relay",
                 listen=None):
        self.testcase = testcase
        self.directory = directory or os.path.abspath(testcase.mktemp())
        os.makedirs(self.directory, exist_ok=True)
        # Unix socket paths are limited to ~107 bytes: keep it short.
        self.socket_path = os.path.join(self.directory, "r.sock")
        if len(self.socket_path) > 100:
            import tempfile
            short = tempfile.mkdtemp(prefix="relay-")
            self.socket_path = os.path.join(short, "r.sock")
        self.db_path = os.path.join(self.directory, "relay.sqlite")
        self.endpoint = "unix:" + self.socket_path
        self.extra_args = list(extra_args)
        self.env = env or {}
        self.plugin = plugin
        self.listen = listen
        self.proto = None
        self.starts = 0
        testcase.addCleanup(self._cleanup)

    def args(self):
        listen = self.listen or "unix:%s:mode=600" % (self.socket_path,)
        return [TWISTD, "--pidfile=", "-n", self.plugin, "--listen", listen,
                "--db", self.db_path] + self.extra_args

    @property
    def exit_code(self):
        """
        The last run's exit status (L{None} while it runs, or if killed).
        """
        return self.proto.exit_code if self.proto is not None else None

    @property
    def exit_signal(self):
        return self.proto.exit_signal if self.proto is not None else None

    @property
    def pid(self):
        return self.proto.transport.pid if self.proto is not None else None

    def output(self):
        return self.proto.text() if self.proto else ""

    def start(self):
        """
        Spawn the daemon; fires once its socket accepts connections.
        """
        env = dict(os.environ)
        env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
        env.update(self.env)
        self.proto = ProcessOutput()
        self.starts += 1
        args = self.args()
        reactor.spawnProcess(self.proto, args[0], args, env=env, path=self.directory)
        return self._wait_ready()

    def _wait_ready(self):
        def ready():
            if self.proto.ended.called:
                raise AssertionError("daemon exited during startup (code %s):\n%s"
                                     % (self.exit_code, self.output()))
            return self._accepts()
        d = poll_until(ready, START_TIMEOUT,
                       what=lambda: "the daemon to accept:\n" + self.output())
        return d.addCallback(lambda _: None)

    def _accepts(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(self.socket_path)
            return True
        except OSError:
            return False
        finally:
            s.close()

    def _signal(self, sig):
        if self.proto is None or self.proto.ended.called:
            return defer.succeed(None)
        os.kill(self.pid, sig)
        ended = self.proto.ended
        timeout = reactor.callLater(STOP_TIMEOUT, self._force)
        ended.addBoth(lambda r: (timeout.cancel() if timeout.active() else None, r)[1])
        return ended

    def _force(self):
        if self.proto is not None and not self.proto.ended.called:
            os.kill(self.pid, signal.SIGKILL)

    def stop(self):
        """
        SIGTERM: the daemon flushes its store and exits.
        """
        return self._signal(signal.SIGTERM)

    def kill(self):
        """
        SIGKILL: no chance to flush anything.
        """
        return self._signal(signal.SIGKILL)

    def _cleanup(self):
        return self.kill()


class AgentConnection(protocol.Protocol):
    """
    A minimal test agent speaking the wire protocol over a real socket,
    collecting every frame it receives.

    @ivar counts: frames received, by type.
    """

    def __init__(self):
        self.reader = FrameReader()
        self.frames = []
        self.counts = {}
        self._waiters = []
        self.closed = defer.Deferred()
        self.auto_ack = True
        self.auto_pong = True

    def dataReceived(self, data):
        acks = []
        for env in self.reader.feed(data):
            self.frames.append(env)
            kind = env.get("type")
            self.counts[kind] = self.counts.get(kind, 0) + 1
            if self.auto_ack and kind == "DELIVER":
                acks.append(encode({"v": 1, "type": "ACK", "id": "a" + env["id"],
                                    "payload": {"ack_id": env["id"],
                                                "seq": env["delivery"]["seq"]}}))
            elif self.auto_pong and kind == "PING":
                acks.append(encode({"v": 1, "type": "PONG", "payload": env.get("payload", {})}))
        if acks:
            self.transport.write(b"".join(acks))
        self._check()

    def connectionLost(self, reason):
        self.closed.callback(None)
        self._check()

    def send(self, env):
        self.write_raw(encode(env))

    def send_many(self, envs):
        self.write_raw(b"".join(encode(e) for e in envs))

    def write_raw(self, data):
        self.transport.write(data)

    def of_type(self, kind):
        return [f for f in self.frames if f.get("type") == kind]

    def wait_for(self, predicate, timeout=15.0):
        """
        Fire with the frames once C{predicate(self)} holds.
        """
        d = defer.Deferred()
        entry = [predicate, d, None]
        entry[2] = reactor.callLater(timeout, self._timeout, entry)
        self._waiters.append(entry)
        self._check()
        return d

    def wait_type(self, kind, count=1, timeout=15.0):
        return self.wait_for(lambda a: a.counts.get(kind, 0) >= count, timeout)

    def wait_closed(self, timeout=15.0):
        return self.wait_for(lambda a: a.closed.called, timeout)

    def _timeout(self, entry):
        if entry in self._waiters:
            self._waiters.remove(entry)
            entry[1].errback(AssertionError(
                "condition not met in time; got %r, last frames: %r" % (
                    self.counts, [f.get("type") for f in self.frames][-10:])))

    def _check(self):
        for entry in list(self._waiters):
            predicate, d, call = entry
            if predicate(self):
                self._waiters.remove(entry)
                call.cancel()
                d.callback(self.frames)


def send(to, body, topic=None, requires_ack=False, **payload_extra):
    """
    A SEND (see L{frames.send}); keyword arguments go into its payload.
    """
    return frames.send(to, body, topic=topic, requires_ack=requires_ack,
                       payload_extra=payload_extra)


@defer.inlineCallbacks
def connect_agent(daemon, name=None, **hello_extra):
    """
    Connect to C{daemon} over its socket; with C{name}, say HELLO and wait
    for WELCOME.
    """
    endpoint = "unix:" + daemon.socket_path if hasattr(daemon, "socket_path") else daemon
    from twisted.internet.endpoints import clientFromString
    agent = yield clientFromString(reactor, endpoint).connect(
        protocol.Factory.forProtocol(AgentConnection))
    agent.daemon = daemon
    if name is not None:
        agent.send(hello(name, **hello_extra))
        yield agent.wait_type("WELCOME")
    return agent


@defer.inlineCallbacks
def daemon_status(daemon):
    """
    The daemon's STATUS reply payload, asked over a fresh connection.
    """
    probe = yield connect_agent(daemon)
    probe.send({"v": 1, "type": "STATUS", "id": "status-probe"})
    yield probe.wait_type("STATUS_REPLY")
    probe.transport.loseConnection()
    return probe.of_type("STATUS_REPLY")[0]["payload"]


def wait_status(daemon, predicate, timeout=15.0):
    """
    Poll the daemon's STATUS until C{predicate(payload)} holds; fire with
    that payload.
    """
    last = [None]

    def matches(status):
        last[0] = status
        return status if predicate(status) else None
    return poll_until(lambda: daemon_status(daemon).addCallback(matches), timeout,
                      what=lambda: "daemon status to match: %r" % (last[0],))


@defer.inlineCallbacks
def send_receipted(daemon, name, envelopes, timeout=30.0):
    """
    Connect as C{name}, send C{envelopes} (SENDs asking for receipts), wait
    for every receipt, then disconnect.
    """
    agent = yield connect_agent(daemon, name)
    agent.send_many(envelopes)
    yield agent.wait_type("ACK", len(envelopes), timeout=timeout)
    agent.transport.loseConnection()
    yield agent.closed


def rss_kib(pid):
    """
    The resident memory of process C{pid} in KiB (C{VmRSS} of /proc).
    """
    with open("/proc/%d/status" % (pid,)) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS for pid %d" % (pid,))


def stored(db_path, sql, *args):
    """
    The rows of C{sql} on the store file at C{db_path} (a connection of its
    own, closed afterwards).
    """
    import sqlite3
    conn = sqlite3.connect(db_path)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()
