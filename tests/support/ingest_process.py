# -*- test-case-name: tests.e2e.test_ingest_http,tests.e2e.test_ingest_federation -*-
"""
Runs the real C{twistd -n relay-ingest} as a subprocess for the end-to-end
tests, and a loopback TCP proxy to put between it and PostgreSQL.
"""

import os
import signal
import socket

import treq
from twisted.web.client import HTTPConnectionPool
from twisted.internet import defer
from twisted.protocols import portforward

from tests.support.daemon import REPO as REPO_ROOT, TWISTD
from tests.support.poll import poll_until
from tests.support.process import ProcessOutput


def freePort():
    """
    A TCP port on 127.0.0.1 that was free a moment ago.
    """
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
    finally:
        s.close()


class IngestProcess:
    """
    One C{twistd -n relay-ingest} process on a free port.
    """

    startTimeout = 30.0

    def __init__(self, reactor, dsn, extraArgs=(), tls=None, agent=None):
        """
        @param tls: L{None}, or C{(keyPath, certPath)} to listen with
            C{ssl:} instead of C{tcp:}.
        @param agent: the L{twisted.web.iweb.IAgent} for readiness polling
            (needed with C{tls}, to trust the certificate).
        """
        self.reactor = reactor
        self.dsn = dsn
        # port and url may be changed before start() (to restart on the
        # same port).
        self.port = freePort()
        self.tls = tls
        if tls is None:
            self.url = "http://127.0.0.1:%d" % (self.port,)
        else:
            self.url = "https://localhost:%d" % (self.port,)
        self.agent = agent
        self.extraArgs = list(extraArgs)
        self.collector = None
        self.transport = None
        # Non-persistent, so no connection outlives a test.
        self.httpPool = HTTPConnectionPool(reactor, persistent=False)

    def output(self):
        return self.collector.text()

    def start(self):
        """
        Spawn the process and wait until C{/healthz} answers 200 (see
        L{waitHealthy}).
        """
        self.spawn()
        return self.waitHealthy()

    def spawn(self):
        """
        Spawn C{twistd -n relay-ingest} with the plugin from this tree.
        """
        env = dict(os.environ)
        env["PYTHONPATH"] = REPO_ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env.pop("RELAY_POSTGRES_DSN", None)
        args = [
            TWISTD, "-n", "--pidfile=", "relay-ingest",
            "--listen", self.listenDescription(),
            "--postgres", self.dsn,
        ] + self.extraArgs
        self.collector = ProcessOutput()
        self.transport = self.reactor.spawnProcess(
            self.collector, TWISTD, args, env=env, path=REPO_ROOT)

    def getHealth(self):
        """
        GET /healthz; fires with the response (body read), or fails.
        """
        if self.agent is not None:
            d = treq.get(self.url + "/healthz", timeout=2, agent=self.agent)
        else:
            d = treq.get(self.url + "/healthz", timeout=2, pool=self.httpPool)

        def read(response):
            return response.content().addCallback(lambda _: response)
        return d.addCallback(read)

    def waitHealth(self, code):
        """
        Poll C{/healthz} until it answers C{code}, with a bound of
        L{startTimeout} seconds; fire with that response.
        """
        def answered():
            if self.collector.ended.called:
                raise RuntimeError("relay-ingest exited:\n" + self.output())
            d = self.getHealth()
            d.addCallbacks(lambda response: response if response.code == code else None,
                           lambda _: None)
            return d
        d = poll_until(answered, self.startTimeout, interval=0.1, clock=self.reactor,
                       what=lambda: "relay-ingest /healthz %d:\n%s" % (code, self.output()))
        return d

    def waitHealthy(self):
        return self.waitHealth(200)

    def listenDescription(self):
        if self.tls is None:
            return "tcp:%d:interface=127.0.0.1" % (self.port,)
        return "ssl:%d:interface=127.0.0.1:privateKey=%s:certKey=%s" % (
            self.port, self.tls[0], self.tls[1])

    def memoryBytes(self):
        """
        The process's resident set size now (VmRSS).
        """
        with open("/proc/%d/status" % (self.transport.pid,)) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def peakMemoryBytes(self):
        """
        The process's peak resident set size (VmHWM).
        """
        with open("/proc/%d/status" % (self.transport.pid,)) as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no VmHWM")

    @defer.inlineCallbacks
    def stop(self):
        """
        SIGTERM the process and wait (bounded) for it to end; SIGKILL if it
        does not.
        """
        if self.collector is None or self.collector.ended.called:
            return
        self.transport.signalProcess(signal.SIGTERM)
        timeout = self.reactor.callLater(10, self._kill)
        yield self.collector.ended
        if timeout.active():
            timeout.cancel()

    @defer.inlineCallbacks
    def kill(self):
        """
        SIGKILL the process (no chance to close anything cleanly) and wait
        for it to end.
        """
        if self.collector is None or self.collector.ended.called:
            return
        self.transport.signalProcess(signal.SIGKILL)
        yield self.collector.ended

    def _kill(self):
        try:
            self.transport.signalProcess(signal.SIGKILL)
        except Exception:
            pass


class _TrackedProxyServer(portforward.ProxyServer):
    def connectionMade(self):
        self.factory.servers.add(self)
        portforward.ProxyServer.connectionMade(self)

    def connectionLost(self, reason):
        self.factory.servers.discard(self)
        portforward.ProxyServer.connectionLost(self, reason)


class _TrackedProxyFactory(portforward.ProxyFactory):
    protocol = _TrackedProxyServer

    def __init__(self, host, port):
        portforward.ProxyFactory.__init__(self, host, port)
        self.servers = set()


class CuttableProxy:
    """
    A loopback TCP proxy (L{twisted.protocols.portforward}) in front of
    PostgreSQL.  L{cut} stops listening and aborts every proxied connection,
    which a client sees exactly as the server going away; L{restore} listens
    again on the same port.
    """

    def __init__(self, reactor, host, port):
        self.reactor = reactor
        self.factory = _TrackedProxyFactory(host, port)
        self.factory.noisy = False
        self.port = freePort()
        self.listening = None

    def start(self):
        self.listening = self.reactor.listenTCP(self.port, self.factory, interface="127.0.0.1")

    @defer.inlineCallbacks
    def cut(self):
        if self.listening is not None:
            yield self.listening.stopListening()
            self.listening = None
        for server in list(self.factory.servers):
            server.transport.abortConnection()
            if server.peer is not None:
                server.peer.transport.abortConnection()

    def restore(self):
        self.start()

    def freeze(self):
        """
        Stop forwarding in both directions on every open connection without
        closing any: PostgreSQL seems hung.
        """
        for server in list(self.factory.servers):
            server.transport.pauseProducing()
            if server.peer is not None:
                server.peer.transport.pauseProducing()

    def thaw(self):
        for server in list(self.factory.servers):
            server.transport.resumeProducing()
            if server.peer is not None:
                server.peer.transport.resumeProducing()

    def stop(self):
        return self.cut()
