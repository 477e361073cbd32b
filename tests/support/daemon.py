"""
Run the real daemon (C{twistd -n relay}) as a subprocess for end-to-end
tests, and talk to it over real sockets.
"""

import os
import signal
import socket
import struct
import sys

import orjson
from twisted.internet import defer, protocol, reactor, task
from twisted.internet.error import ProcessDone, ProcessTerminated

# tests/support/daemon.py -> the repository root.
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")

# How long a daemon may take to start or stop before a test fails.
START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0


class _ProcessProtocol(protocol.ProcessProtocol):
    def __init__(self, owner):
        self.owner = owner
        self.ended = defer.Deferred()
        self.output = []

    def outReceived(self, data):
        self.output.append(data)

    errReceived = outReceived

    def processEnded(self, reason):
        if isinstance(reason.value, (ProcessDone, ProcessTerminated)):
            self.owner.exit_code = reason.value.exitCode
            self.owner.exit_signal = getattr(reason.value, "signal", None)
        self.ended.callback(None)


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
        self.exit_code = None
        self.exit_signal = None
        self.starts = 0
        testcase.addCleanup(self._cleanup)

    def args(self):
        listen = self.listen or "unix:%s:mode=600" % (self.socket_path,)
        return [TWISTD, "--pidfile=", "-n", self.plugin, "--listen", listen,
                "--db", self.db_path] + self.extra_args

    @property
    def pid(self):
        return self.proto.transport.pid if self.proto is not None else None

    def output(self):
        return b"".join(self.proto.output).decode("utf-8", "replace") if self.proto else ""

    def start(self):
        """
        Spawn the daemon; fires once its socket accepts connections.
        """
        env = dict(os.environ)
        env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
        env.update(self.env)
        self.proto = _ProcessProtocol(self)
        self.exit_code = self.exit_signal = None
        self.starts += 1
        reactor.spawnProcess(self.proto, TWISTD, self.args(), env=env, path=self.directory)
        return self._wait_ready()

    @defer.inlineCallbacks
    def _wait_ready(self):
        deadline = reactor.seconds() + START_TIMEOUT
        while True:
            if self.proto.ended.called:
                raise AssertionError("daemon exited during startup (code %s):\n%s"
                                     % (self.exit_code, self.output()))
            if self._accepts():
                return
            if reactor.seconds() > deadline:
                raise AssertionError("daemon not ready after %ss:\n%s"
                                     % (START_TIMEOUT, self.output()))
            yield task.deferLater(reactor, 0.05, lambda: None)

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
        self.buffer = b""
        self.frames = []
        self.counts = {}
        self._waiters = []
        self.closed = defer.Deferred()
        self.auto_ack = True
        self.auto_pong = True

    def dataReceived(self, data):
        buf = self.buffer + data if self.buffer else data
        offset = 0
        end = len(buf)
        acks = []
        while end - offset >= 4:
            (n,) = struct.unpack_from(">I", buf, offset)
            if end - offset - 4 < n:
                break
            env = orjson.loads(buf[offset + 4:offset + 4 + n])
            offset += 4 + n
            self.frames.append(env)
            kind = env.get("type")
            self.counts[kind] = self.counts.get(kind, 0) + 1
            if self.auto_ack and kind == "DELIVER":
                acks.append(encode({"v": 1, "type": "ACK", "id": "a" + env["id"],
                                    "payload": {"ack_id": env["id"],
                                                "seq": env["delivery"]["seq"]}}))
            elif self.auto_pong and kind == "PING":
                acks.append(encode({"v": 1, "type": "PONG", "payload": env.get("payload", {})}))
        self.buffer = buf[offset:]
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


def encode(env):
    data = orjson.dumps(env)
    return struct.pack(">I", len(data)) + data


def hello(name, **extra):
    payload = {"agent": name, "capabilities": {"ack": True, "resume": True,
                                               "max_inflight": 256, "supports_topics": True}}
    payload.update(extra)
    return {"v": 1, "type": "HELLO", "id": "h-" + name, "ts": 0, "payload": payload}


_counter = [0]


def send(to, body, topic=None, requires_ack=False, **payload_extra):
    _counter[0] += 1
    env = {"v": 1, "type": "SEND", "id": "s%d" % _counter[0], "ts": 0, "to": to,
           "payload": dict({"kind": "message", "body": body}, **payload_extra)}
    if topic is not None:
        env["topic"] = topic
    if requires_ack:
        env["payload_meta"] = {"requires_ack": True}
    return env


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


@defer.inlineCallbacks
def wait_status(daemon, predicate, timeout=15.0):
    """
    Poll the daemon's STATUS until C{predicate(payload)} holds.
    """
    deadline = reactor.seconds() + timeout
    while True:
        status = yield daemon_status(daemon)
        if predicate(status):
            return status
        if reactor.seconds() > deadline:
            raise AssertionError("daemon status never matched: %r" % (status,))
        yield task.deferLater(reactor, 0.05, lambda: None)


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
