# -*- test-case-name: tests.e2e.test_auth -*-
"""
End-to-end identity tests through the real C{twistd -n relay} process: the
C{--auth} tokens over real Unix, TCP and TLS sockets, client certificates,
SO_PEERCRED in STATUS, takeovers across uids, the CLI's token, and abuse
(failed HELLOs, a flood of connections) while authenticated agents are
served.
"""

import os
import socket
import sys
import tempfile

from twisted.internet import defer, endpoints, protocol, reactor, ssl, utils
from twisted.trial import unittest

from relay.client import HandshakeRefused, connect
from tests.support.daemon import (REPO, AgentConnection, DaemonProcess, connect_agent,
                                  daemon_status, hello, rss_kib, send)
from tests.support.poll import poll_until
from tests.support.tls import make_pki

TOKENS = {"alice": "alice-token-8f2e", "bob": "bob-token-c41a"}
AUTH = "memory:" + ":".join("%s:%s" % kv for kv in sorted(TOKENS.items()))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def hello_token(name, token):
    env = hello(name)
    env["payload"]["auth"] = {"token": token}
    return env


@defer.inlineCallbacks
def tls_agent(port, ca, client_pem=None):
    """
    An L{AgentConnection} over TLS to 127.0.0.1:C{port}, verifying the
    server against C{ca}, presenting C{client_pem} if given.
    """
    with open(ca, "rb") as f:
        trust = ssl.Certificate.loadPEM(f.read())
    client_cert = None
    if client_pem is not None:
        with open(client_pem, "rb") as f:
            client_cert = ssl.PrivateCertificate.loadPEM(f.read())
    options = ssl.optionsForClientTLS("localhost", trustRoot=trust,
                                      clientCertificate=client_cert)
    ep = endpoints.wrapClientTLS(options, endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1",
                                                                       port))
    agent = yield ep.connect(protocol.Factory.forProtocol(AgentConnection))
    return agent


def tcp(port):
    return "tcp:host=127.0.0.1:port=%d" % (port,)


class StartupTests(unittest.TestCase):
    """
    Startup refuses an unauthenticated TCP listener unless told to allow it.
    """

    @defer.inlineCallbacks
    def test_tcp_without_auth_refused(self):
        """
        A tcp: listener without --auth stops startup with exit status 1 and
        a one-line reason; with --allow-anonymous-tcp it starts and warns.
        """
        port = free_port()
        daemon = DaemonProcess(self, ["--listen", "tcp:%d:interface=127.0.0.1" % port])
        with self.assertRaises(AssertionError):
            yield daemon.start()
        self.assertEqual(daemon.exit_code, 1)
        # twistd's convention for a usage error: the usage, then one line.
        lines = [line for line in daemon.output().splitlines()
                 if "is reachable from the network" in line]
        self.assertEqual(len(lines), 1, daemon.output())
        self.assertIn("give --auth", lines[0])
        self.assertIn("--allow-anonymous-tcp", lines[0])
        self.assertNotIn("Traceback", daemon.output())
        daemon = DaemonProcess(self, ["--listen", "tcp:%d:interface=127.0.0.1" % port,
                                      "--allow-anonymous-tcp"])
        yield daemon.start()
        agent = yield connect_agent(tcp(port), "anyone")
        agent.transport.loseConnection()
        self.assertIn("anyone who can reach tcp:%d may speak as any agent" % port,
                      daemon.output())
        yield daemon.stop()


class TokenTests(unittest.TestCase):
    """
    C{--auth} tokens over TCP and the Unix socket, from the client, the CLI and hostile peers.
    """

    @defer.inlineCallbacks
    def start(self, *extra):
        self.port = free_port()
        self.daemon = DaemonProcess(self, ["--batch-delay-ms", "10", "--auth", AUTH,
                                           "--listen", "tcp:%d:interface=127.0.0.1" % self.port]
                                    + list(extra))
        yield self.daemon.start()
        self.addCleanup(self.daemon.stop)

    @defer.inlineCallbacks
    def test_tokens_tcp_and_unix(self):
        """
        With --auth, relay.client agents with the right token are welcomed
        over TCP and over the Unix socket and exchange a receipted message;
        a wrong token gets ERROR UNAUTHORIZED (HandshakeRefused), a Unix
        peer without a token too; STATUS shows the Unix peer's pid, uid and
        gid (this process) and none for the TCP peer.
        """
        yield self.start()
        got = []
        bob = yield connect(reactor, tcp(self.port), "bob", token=TOKENS["bob"],
                            on_message=got.append, reconnect=False)
        alice = yield connect(reactor, self.daemon.endpoint, "alice", token=TOKENS["alice"],
                              reconnect=False)
        yield alice.send("bob", "over the locked door")
        yield poll_until(lambda: got, interval=0.02, what="bob's message")
        self.assertEqual(got[0].body, "over the locked door")
        status = yield daemon_status(self.daemon)
        peers = {a["name"]: a["peer"] for a in status["agents"]}
        self.assertEqual(peers["alice"], {"pid": os.getpid(), "uid": os.getuid(),
                                          "gid": os.getgid()})
        self.assertIsNone(peers["bob"])
        self.assertEqual(status["auth"]["authenticated"], 2)
        for endpoint, token in ((tcp(self.port), "wrong"), (self.daemon.endpoint, None),
                                (tcp(self.port), TOKENS["bob"])):
            e = yield self.assertFailure(
                connect(reactor, endpoint, "alice", token=token, reconnect=False),
                HandshakeRefused)
            self.assertIn("UNAUTHORIZED", str(e))
        status = yield daemon_status(self.daemon)
        self.assertEqual(sorted(a["name"] for a in status["agents"]), ["alice", "bob"])
        self.assertNotIn("wrong", self.daemon.output())
        self.assertNotIn(TOKENS["alice"], self.daemon.output())
        yield alice.close()
        yield bob.close()

    @defer.inlineCallbacks
    def test_trust_unix_peers(self):
        """
        With --trust-unix-peers a Unix peer needs no token; a TCP peer
        still does.
        """
        yield self.start("--trust-unix-peers")
        agent = yield connect_agent(self.daemon, "carol")
        self.assertEqual(agent.counts.get("WELCOME"), 1)
        remote = yield connect_agent(tcp(self.port))
        remote.send(hello("carol"))
        yield remote.wait_closed()
        self.assertEqual(remote.of_type("ERROR")[0]["payload"]["code"], "UNAUTHORIZED")

    @defer.inlineCallbacks
    def test_cli_token(self):
        """
        ``relay send --token-file`` and ``RELAY_TOKEN`` authenticate the
        CLI; without a token it fails with the daemon's UNAUTHORIZED and
        exit status 1; the token is never an argument.
        """
        yield self.start()
        token_file = os.path.abspath(self.mktemp())
        with open(token_file, "w") as f:
            f.write(TOKENS["alice"] + "\n")
        env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
        env.pop("RELAY_TOKEN", None)
        base = ["-m", "relay.cli", "send", "--socket", self.daemon.socket_path, "--as", "alice",
                "--to", "bob"]
        out, err, code = yield utils.getProcessOutputAndValue(
            sys.executable, base + ["--token-file", token_file, "by file"], env=env, path=REPO)
        self.assertEqual(code, 0, err)
        out, err, code = yield utils.getProcessOutputAndValue(
            sys.executable, base + ["by env"], env=dict(env, RELAY_TOKEN=TOKENS["alice"]),
            path=REPO)
        self.assertEqual(code, 0, err)
        out, err, code = yield utils.getProcessOutputAndValue(
            sys.executable, base + ["no token"], env=env, path=REPO)
        self.assertEqual(code, 1)
        self.assertIn(b"UNAUTHORIZED", err)
        out, err, code = yield utils.getProcessOutputAndValue(
            sys.executable, base + ["--token-file", "/nonexistent", "x"], env=env, path=REPO)
        self.assertEqual(code, 2)
        bob = yield connect_agent(self.daemon, "bob", auth={"token": TOKENS["bob"]})
        yield bob.wait_type("DELIVER", 2)
        self.assertEqual(sorted(f["payload"]["body"] for f in bob.of_type("DELIVER")),
                         ["by env", "by file"])

    @defer.inlineCallbacks
    def test_abuse(self):
        """
        1,000 failed HELLOs pipelined on one TCP connection get one ERROR
        and a close; a flood of 300 connections (idle ones, wrong tokens,
        garbage) meanwhile: the authenticated agents keep exchanging
        receipted messages, messages stored before the flood are all
        delivered, and the daemon's memory grows by less than 32 MiB.
        """
        yield self.start()
        # Stored before the flood, for bob who is offline.
        before = [send("bob", "before-%d" % i, requires_ack=True) for i in range(50)]
        alice = yield connect_agent(self.daemon, "alice", auth={"token": TOKENS["alice"]})
        alice.send_many(before)
        yield alice.wait_type("ACK", 50)
        rss0 = rss_kib(self.daemon.pid)

        one = yield connect_agent(tcp(self.port))
        one.write_raw(b"".join(
            _enc(hello_token("alice", "guess-%d" % i)) for i in range(1000)))
        yield one.wait_closed(timeout=30)
        self.assertEqual(one.counts.get("ERROR"), 1)
        self.assertEqual(one.of_type("ERROR")[0]["payload"]["code"], "UNAUTHORIZED")

        flood = []
        for i in range(300):
            c = yield connect_agent(tcp(self.port))
            if i % 3 == 0:
                c.send(hello_token("bob", "nope-%d" % i))
            elif i % 3 == 1:
                c.write_raw(b"\x00\x00\x00\x05garba")
            flood.append(c)
        bob = yield connect_agent(tcp(self.port), "bob", auth={"token": TOKENS["bob"]})
        during = [send("bob", "during-%d" % i, requires_ack=True) for i in range(50)]
        alice.send_many(during)
        yield alice.wait_type("ACK", 100, timeout=30)
        yield bob.wait_for(lambda a: len({f["payload"]["body"] for f in a.of_type("DELIVER")})
                           >= 100, timeout=30)
        self.assertEqual({f["payload"]["body"] for f in bob.of_type("DELIVER")},
                         {"before-%d" % i for i in range(50)}
                         | {"during-%d" % i for i in range(50)})
        rss1 = rss_kib(self.daemon.pid)
        self.assertLess(rss1 - rss0, 32 * 1024, (rss0, rss1))
        status = yield daemon_status(self.daemon)
        self.assertEqual(sorted(a["name"] for a in status["agents"]), ["alice", "bob"])
        self.assertLessEqual(status["auth"]["tracked_peers"], 2)
        for c in flood:
            c.transport.loseConnection()


def _enc(env):
    from tests.support.daemon import encode
    return encode(env)


class TLSTests(unittest.TestCase):
    """
    C{ssl:} listeners: tokens over real TLS, and client certificates naming the agent.
    """

    def setUp(self):
        self.pki = make_pki(os.path.abspath(self.mktemp()), client_names=("alice", "bob"))
        self.port = free_port()

    def ssl_listen(self):
        return "ssl:%d:interface=127.0.0.1:privateKey=%s:certKey=%s" % (
            self.port, self.pki.server_key, self.pki.server_cert)

    @defer.inlineCallbacks
    def test_ssl_with_tokens(self):
        """
        An ssl: listener with --auth: over real TLS a HELLO with the right
        token is welcomed and a message is delivered; a wrong token is
        refused.
        """
        daemon = DaemonProcess(self, ["--batch-delay-ms", "10", "--auth", AUTH,
                                      "--listen", self.ssl_listen()])
        yield daemon.start()
        self.addCleanup(daemon.stop)
        alice = yield tls_agent(self.port, self.pki.ca_cert)
        alice.send(hello_token("alice", TOKENS["alice"]))
        yield alice.wait_type("WELCOME")
        bob = yield tls_agent(self.port, self.pki.ca_cert)
        bob.send(hello_token("bob", TOKENS["bob"]))
        yield bob.wait_type("WELCOME")
        alice.send(send("bob", "encrypted", requires_ack=True))
        yield alice.wait_type("ACK")
        yield bob.wait_type("DELIVER")
        self.assertEqual(bob.of_type("DELIVER")[0]["payload"]["body"], "encrypted")
        eve = yield tls_agent(self.port, self.pki.ca_cert)
        eve.send(hello_token("alice", "guess"))
        yield eve.wait_closed()
        self.assertEqual(eve.of_type("ERROR")[0]["payload"]["code"], "UNAUTHORIZED")

    @defer.inlineCallbacks
    def test_client_certificates(self):
        """
        With --tls-client-ca (and no --auth): a client certificate naming
        alice may say HELLO as alice, not as bob (ERROR UNAUTHORIZED); a
        client without a certificate, or with one from another CA, never
        gets to say anything.
        """
        daemon = DaemonProcess(self, ["--batch-delay-ms", "10", "--listen", self.ssl_listen(),
                                      "--tls-client-ca", self.pki.ca_cert])
        yield daemon.start()
        self.addCleanup(daemon.stop)
        alice = yield tls_agent(self.port, self.pki.ca_cert, self.pki.client_pem["alice"])
        alice.send(hello("alice"))
        yield alice.wait_type("WELCOME")
        fake = yield tls_agent(self.port, self.pki.ca_cert, self.pki.client_pem["alice"])
        fake.send(hello("bob"))
        yield fake.wait_closed()
        self.assertEqual(fake.of_type("ERROR")[0]["payload"]["code"], "UNAUTHORIZED")
        for pem in (None, self.pki.other_ca_pem):
            try:
                anon = yield tls_agent(self.port, self.pki.ca_cert, pem)
            except Exception:
                continue
            anon.send(hello("alice"))
            yield anon.wait_closed()
            self.assertNotIn("WELCOME", anon.counts)
        status = yield daemon_status(daemon)
        self.assertEqual([a["name"] for a in status["agents"]], ["alice"])


class OtherUserTests(unittest.TestCase):
    """
    A process of another uid cannot take over a name held by this one.
    """

    @defer.inlineCallbacks
    def test_takeover_by_another_uid_refused(self):
        """
        A process of another uid (a real child switched to nobody) saying
        HELLO for a name held by this process's connection gets a non-fatal
        ERROR UNAUTHORIZED; the holder keeps the name and still receives.
        """
        if os.getuid() != 0:
            raise unittest.SkipTest("needs root to run a child as another user")
        directory = tempfile.mkdtemp(prefix="relay-uid-")
        os.chmod(directory, 0o755)
        daemon = DaemonProcess(self, ["--batch-delay-ms", "10"])
        daemon.socket_path = os.path.join(directory, "r.sock")
        daemon.endpoint = "unix:" + daemon.socket_path
        daemon.listen = "unix:%s:mode=666" % (daemon.socket_path,)
        yield daemon.start()
        self.addCleanup(daemon.stop)
        holder = yield connect_agent(daemon, "alice")
        script = (
            "import os, socket, struct, json, sys\n"
            "os.setgid(65534); os.setuid(65534)\n"
            "s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])\n"
            "def put(e):\n"
            "    d = json.dumps(e).encode(); s.sendall(struct.pack('>I', len(d)) + d)\n"
            "def get():\n"
            "    n = struct.unpack('>I', s.recv(4, socket.MSG_WAITALL))[0]\n"
            "    return json.loads(s.recv(n, socket.MSG_WAITALL))\n"
            "put({'v': 1, 'type': 'HELLO', 'id': 'h', 'payload': {'agent': 'alice'}})\n"
            "f = get()\n"
            "while f['type'] == 'PING': f = get()\n"
            "print(json.dumps(f['payload']))\n"
            "put({'v': 1, 'type': 'HELLO', 'id': 'h2', 'payload': {'agent': 'nobody-agent'}})\n"
            "f = get()\n"
            "while f['type'] == 'PING': f = get()\n"
            "print(f['type'])\n")
        out, err, code = yield utils.getProcessOutputAndValue(
            sys.executable, ["-c", script, daemon.socket_path], env=dict(os.environ))
        self.assertEqual(code, 0, err)
        first, second = out.decode().splitlines()
        self.assertIn('"UNAUTHORIZED"', first)
        self.assertIn('"fatal": false', first)
        self.assertEqual(second, "WELCOME")
        status = yield daemon_status(daemon)
        self.assertEqual({a["name"]: a["peer"]["uid"] for a in status["agents"]}.get("alice"), 0)
        self.assertFalse(holder.closed.called)
        other = yield connect_agent(daemon, "carol")
        other.send(send("alice", "still yours", requires_ack=True))
        yield holder.wait_type("DELIVER")
