# -*- test-case-name: tests.test_auth -*-
"""
Unit tests for L{relay.auth} and L{relay.peercred}: HELLO credentials
through a real L{twisted.cred.portal.Portal} and the real C{--auth} checkers,
connections on L{StringTransport}s, refusal delays on a L{task.Clock}, the
router on a real L{relay.store.Store}.
"""

import io
import os

from twisted.cred import checkers, strcred
from twisted.internet import defer, task
from twisted.internet.address import IPv4Address, UNIXAddress
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher, formatEvent
from twisted.python import failure, usage
from twisted.trial import unittest
from zope.interface import implementer

from relay import auth, tap
from relay.protocol import RelayFactory
from relay.router import Router
from relay.store import Store
from relay.testing import ThreadlessConnectionPool, settle
from tests.support.frames import decode_from, encode

SECRET = "s3cret-token-value"


def hello(name, token=None, auth_field=None):
    payload = {"agent": name, "capabilities": {"ack": True}}
    if token is not None:
        payload["auth"] = {"token": token}
    if auth_field is not None:
        payload["auth"] = auth_field
    return {"v": 1, "type": "HELLO", "id": "h-" + name, "ts": 0, "payload": payload}


class Transport(StringTransport):
    def __init__(self, peer):
        StringTransport.__init__(self, peerAddress=peer)
        self.protocol = None
        self.connected = True

    def loseConnection(self):
        self.disconnecting = True
        if self.connected:
            self.connected = False
            self.protocol.connectionLost(failure.Failure(ConnectionDone("closed")))

    abortConnection = loseConnection


class Conn:
    def __init__(self, factory, peer=None, uid=None):
        self.transport = Transport(peer or IPv4Address("TCP", "192.0.2.1", 5555))
        self.proto = factory.buildProtocol(None)
        self.transport.protocol = self.proto
        self.proto.makeConnection(self.transport)
        if uid is not None:
            self.proto.peer = {"pid": 1, "uid": uid, "gid": uid}
        self._offset = 0
        self.frames = []

    def feed(self, *envs):
        self.proto.dataReceived(b"".join(encode(e) for e in envs))

    def received(self):
        frames, self._offset = decode_from(self.transport.value(), self._offset)
        self.frames.extend(frames)
        return self.frames

    def types(self):
        return [f["type"] for f in self.received() if f["type"] != "PING"]

    def errors(self):
        return [f["payload"] for f in self.received() if f["type"] == "ERROR"]


class _AuthCase(unittest.TestCase):
    auth_args = ("memory:alice:%s:bob:other-token" % (SECRET,),)
    trust_unix = False

    def setUp(self):
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        self.clock = task.Clock()
        self.store = Store(self.clock, os.path.join(directory, "relay.sqlite"), batch_delay=0.01,
                           pool_factory=ThreadlessConnectionPool.on(self.clock))
        self.store.open()
        self.addCleanup(lambda: settle(self.clock, self.store.close()))
        self.router = Router(self.clock, self.store)
        self.factory = RelayFactory(self.router, self.clock)
        options = {"credCheckers": [strcred.makeChecker(a) for a in self.auth_args]}
        self.policy = auth.AuthPolicy(self.clock, portal=auth.make_portal(options),
                                      trust_unix_peers=self.trust_unix)
        self.factory.auth = self.policy
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def tearDown(self):
        for call in self.clock.getDelayedCalls():
            call.cancel()

    def connect(self, **kw):
        return Conn(self.factory, **kw)

    def settle(self):
        # Resumes after an async check run from callLater(0).
        self.clock.advance(0)

    def assertRefused(self, conn, name="alice"):
        self.settle()
        errors = conn.errors()
        self.assertEqual(len(errors), 1, conn.received())
        self.assertEqual(errors[0]["code"], "UNAUTHORIZED")
        self.assertTrue(errors[0]["fatal"])
        self.assertFalse(conn.transport.connected)
        self.assertNotIn(name, self.router.sessions)
        self.assertNotIn("WELCOME", conn.types())
        return errors[0]

    def logged(self):
        return "\n".join(formatEvent(e) or "" for e in self.events)


class TokenTests(_AuthCase):

    def test_good_token(self):
        """
        A HELLO whose name and token check is WELCOMEd and registered.
        """
        c = self.connect()
        c.feed(hello("alice", SECRET))
        self.settle()
        self.assertEqual(c.types(), ["WELCOME"])
        self.assertIs(self.router.sessions["alice"].conn, c.proto)
        self.assertEqual(self.policy.counters["authenticated"], 1)

    def test_bad_tokens(self):
        """
        Wrong, missing, empty, oversized and non-string tokens, a token of
        another agent, an unknown agent and a malformed C{auth}: each gets
        one fatal C{ERROR UNAUTHORIZED}, registers nothing, and neither the
        reply nor the log holds the token.
        """
        cases = [
            hello("alice", "wrong-token-123"),
            hello("alice"),
            hello("alice", ""),
            hello("alice", "x" * (auth.MAX_TOKEN + 1)),
            hello("alice", "y" * 10 ** 6),
            hello("alice", auth_field={"token": 12345}),
            hello("alice", auth_field={"token": None}),
            hello("alice", auth_field={"token": ["a"]}),
            hello("alice", auth_field={"token": {"t": SECRET}}),
            hello("alice", auth_field={"token": True}),
            hello("alice", auth_field={}),
            hello("alice", auth_field="%s" % (SECRET + "-str",)),
            hello("alice", auth_field=[SECRET]),
            hello("alice", "other-token"),
            hello("mallory", "wrong-token-123"),
            hello("alice", SECRET + "\x00"),
            hello("alice", SECRET.upper()),
        ]
        for i, env in enumerate(cases):
            c = self.connect(peer=IPv4Address("TCP", "192.0.2.%d" % (i + 10,), 1))
            c.feed(env)
            error = self.assertRefused(c, env["payload"]["agent"])
            for secret in ("wrong-token-123", "other-token", SECRET + "-str", "x" * 50):
                self.assertNotIn(secret, error["message"])
                self.assertNotIn(secret, self.logged())
        self.assertEqual(self.policy.counters["refused"], len(cases))
        self.assertEqual(self.router.sessions, {})

    def test_unknown_name_same_answer(self):
        """
        An unknown agent and a wrong token get the same reason: the reply
        does not tell which names exist.
        """
        a, b = self.connect(), self.connect(peer=IPv4Address("TCP", "192.0.2.99", 1))
        a.feed(hello("alice", "nope"))
        b.feed(hello("nobody", "nope"))
        ea, eb = self.assertRefused(a), self.assertRefused(b, "nobody")
        self.assertEqual(ea["message"].replace("alice", "X"), eb["message"].replace("nobody", "X"))

    def test_file_checker(self):
        """
        C{--auth file:PATH} (Twisted's FilePasswordDB, bytes) works the same
        as memory (text, normalised).
        """
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("carol:%s\n" % (SECRET,))
        self.policy.portal = auth.make_portal(
            {"credCheckers": [strcred.makeChecker("file:" + path)]})
        good, bad = self.connect(), self.connect()
        good.feed(hello("carol", SECRET))
        bad.feed(hello("carol", SECRET + "x"))
        self.settle()
        self.assertEqual(good.types(), ["WELCOME"])
        self.assertRefused(bad, "nobody")

    def test_frames_after_hello_wait_for_the_check(self):
        """
        Frames pipelined after a HELLO whose check has not answered yet are
        not read until it does: a SEND behind it is routed after WELCOME,
        as the same SEND behind a refused HELLO is never routed.
        """
        pending = []

        @implementer(checkers.ICredentialsChecker)
        class Slow:
            credentialInterfaces = auth.TokenCredentials.__implemented__.declared

            def requestAvatarId(self, creds):
                d = defer.Deferred()
                pending.append((d, creds))
                return d

        self.policy.portal = auth.make_portal({"credCheckers": [Slow()]})
        c = self.connect()
        c.feed(hello("alice", SECRET),
               {"v": 1, "type": "SEND", "id": "s1", "to": "bob",
                "payload": {"kind": "message", "body": "after"},
                "payload_meta": {"requires_ack": True}})
        self.assertEqual(c.types(), [])
        self.assertEqual(self.router.counters["accepted"], 0)
        d, creds = pending.pop()
        d.callback(creds.username)
        self.settle()
        # The store commits on the same clock now: the SEND's receipt
        # follows its WELCOME in that turn.
        self.assertEqual(c.types(), ["WELCOME", "ACK"])
        self.assertEqual(self.router.counters["accepted"], 1)

        c2 = self.connect()
        c2.feed(hello("bob", "bad"), {"v": 1, "type": "SEND", "id": "s2", "to": "bob",
                                        "payload": {"kind": "message", "body": "x"}})
        d, creds = pending.pop()
        d.errback(failure.Failure(auth.error.UnauthorizedLogin()))
        self.assertRefused(c2, "bob")
        self.assertEqual(self.router.counters["accepted"], 1)


class SlowDownTests(_AuthCase):

    def refuse_one(self, host="192.0.2.7"):
        c = self.connect(peer=IPv4Address("TCP", host, 4000))
        c.feed(hello("alice", "wrong"))
        return c

    def test_repeated_failures_slowed(self):
        """
        The first failure from a peer is answered at once; each further
        one waits twice as long on the clock (0.25 s, 0.5 s, ...) up to
        5 s, and the connection is not read meanwhile.  Another peer's
        first failure is still answered at once.
        """
        expected = [0, 0.25, 0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
        for delay in expected:
            c = self.refuse_one()
            if delay:
                self.clock.advance(delay - 0.01)
                self.assertEqual(c.errors(), [])
                self.assertIn("auth", c.proto.stop_reasons)
                self.clock.advance(0.01)
            self.assertRefused(c)
        other = self.refuse_one(host="198.51.100.1")
        self.assertRefused(other)

    def test_failures_forgotten(self):
        """
        After C{forget_after} seconds without a failure a peer starts
        again at no delay.
        """
        for _ in range(3):
            self.refuse_one()
            self.clock.advance(5)
        self.assertEqual(self.policy.failures[("host", "192.0.2.7")][0], 3)
        self.clock.advance(self.policy.forget_after + 1)
        self.assertRefused(self.refuse_one())

    def test_1000_failed_hellos_one_connection(self):
        """
        1,000 HELLOs with wrong tokens in one write on one connection: one
        ERROR UNAUTHORIZED, the connection closed, nothing registered, the
        other 999 never looked at.
        """
        c = self.connect()
        c.feed(*[hello("alice", "wrong-%d" % i) for i in range(1000)])
        self.assertRefused(c)
        self.assertEqual(self.policy.counters["refused"], 1)

    def test_1000_failures_from_one_peer(self):
        """
        1,000 failed HELLOs one after the other from one peer: every answer
        after the seventh waits the 5 s cap, one entry is remembered, and a
        good HELLO from elsewhere is welcomed at once meanwhile.
        """
        waits = []
        for i in range(1000):
            c = self.refuse_one()
            start = self.clock.seconds()
            while not c.errors():
                self.clock.advance(0.25)
            waits.append(self.clock.seconds() - start)
        self.assertEqual(waits[7:], [5.0] * 993)
        self.assertEqual(len(self.policy.failures), 1)
        good = self.connect(peer=IPv4Address("TCP", "203.0.113.5", 1))
        good.feed(hello("alice", SECRET))
        self.settle()
        self.assertEqual(good.types(), ["WELCOME"])

    def test_memory_bounded(self):
        """
        Failures from more peers than C{max_peers} forget the oldest, and
        beyond C{max_delayed} waiting refusals are answered at once: a
        flood cannot grow the policy's state or pin connections.
        """
        self.policy.max_peers = 50
        self.policy.max_delayed = 10
        for i in range(500):
            c = self.refuse_one(host="10.0.%d.%d" % (i // 250, i % 250))
            self.assertRefused(c)
        self.assertEqual(len(self.policy.failures), 50)
        held = [self.refuse_one(host="10.9.9.9") for _ in range(30)]
        self.assertEqual(self.policy.delayed, 10)
        self.assertEqual(sum(1 for c in held if c.errors()), 20)
        self.clock.advance(10)
        self.assertEqual(self.policy.delayed, 0)
        for c in held:
            self.assertRefused(c)


class HelloDeadlineTests(_AuthCase):

    def test_no_hello_closed(self):
        """
        A connection not WELCOMEd within C{hello_timeout} (silent, or
        answering PINGs, or asking STATUS) gets a fatal ERROR and is closed;
        a WELCOMEd one is left alone.
        """
        idle, chatty, good = self.connect(), self.connect(), self.connect()
        good.feed(hello("alice", SECRET))
        for _ in range(5):
            self.clock.advance(self.policy.hello_timeout / 6)
            chatty.feed({"v": 1, "type": "PING", "payload": {"nonce": "n"}})
        self.assertTrue(idle.transport.connected)
        self.clock.advance(self.policy.hello_timeout / 6)
        for c in (idle, chatty):
            self.assertEqual([e["code"] for e in c.errors()], ["BAD_REQUEST"])
            self.assertFalse(c.transport.connected)
        self.assertTrue(good.transport.connected)
        self.assertEqual(self.policy.counters["hello_timeouts"], 2)


class UnixPeerTests(_AuthCase):

    def unix(self, uid=1000):
        return self.connect(peer=UNIXAddress(b"/tmp/r.sock"), uid=uid)

    def test_unix_needs_token_with_auth(self):
        """
        With C{--auth}, a Unix peer without a token is refused too.
        """
        c = self.unix()
        c.feed(hello("alice"))
        self.assertRefused(c)

    def test_takeover_across_uids_refused(self):
        """
        A HELLO for a name held by a connection of another uid gets a
        non-fatal ERROR UNAUTHORIZED; the holder keeps its name and its
        connection, and the newcomer may say HELLO under another name.
        With the same uid the takeover works as before.
        """
        self.policy.trust_unix_peers = True
        holder = self.unix(uid=1000)
        holder.feed(hello("alice"))
        self.settle()
        other = self.unix(uid=1001)
        other.feed(hello("alice"))
        self.settle()
        [error] = other.errors()
        self.assertEqual((error["code"], error["fatal"]), ("UNAUTHORIZED", False))
        self.assertTrue(other.transport.connected)
        self.assertIs(self.router.sessions["alice"].conn, holder.proto)
        self.assertTrue(holder.transport.connected)
        other.feed(hello("alice-2"))
        self.settle()
        self.assertIn("WELCOME", other.types())
        same = self.unix(uid=1000)
        same.feed(hello("alice"))
        self.settle()
        self.assertIs(self.router.sessions["alice"].conn, same.proto)
        self.assertFalse(holder.transport.connected)
        self.assertEqual(self.policy.counters["takeovers_refused"], 1)

    def test_takeover_with_token(self):
        """
        A newcomer of another uid that proves the name with its token may
        take it over (the token is the identity).
        """
        holder = self.unix(uid=1000)
        holder.feed(hello("alice", SECRET))
        other = self.unix(uid=1001)
        other.feed(hello("alice", SECRET))
        self.settle()
        self.assertIs(self.router.sessions["alice"].conn, other.proto)


class TrustUnixTests(_AuthCase):
    trust_unix = True

    def test_trusted_unix_peer(self):
        """
        With C{--trust-unix-peers} a Unix peer needs no token, but a TCP
        peer still does, and a wrong token from a Unix peer is refused.
        """
        u = self.connect(peer=UNIXAddress(b"/tmp/r.sock"), uid=os.getuid())
        u.feed(hello("alice"))
        self.settle()
        self.assertEqual(u.types(), ["WELCOME"])
        t = self.connect()
        t.feed(hello("bob"))
        self.assertRefused(t, "bob")
        w = self.connect(peer=UNIXAddress(b"/tmp/r.sock"), uid=os.getuid())
        w.feed(hello("carol", "wrong"))
        self.assertRefused(w, "carol")


class NoAuthTests(_AuthCase):
    auth_args = ()

    def test_without_auth_anyone(self):
        """
        Without C{--auth} a HELLO needs no token, and a token (of any
        shape) is ignored as before.
        """
        a, b = self.connect(), self.connect()
        a.feed(hello("alice"))
        b.feed(hello("bob", auth_field={"token": 5}))
        self.settle()
        self.assertEqual((a.types(), b.types()), (["WELCOME"], ["WELCOME"]))


class OptionsTests(unittest.TestCase):

    def parse(self, *args):
        o = tap.Options()
        o.parseOptions(list(args))
        return o

    def test_local_listeners(self):
        """
        Unix sockets, named or inherited from systemd, are local; TCP, TLS
        and a systemd INET socket are reachable from the network.
        """
        for endpoint in ("unix:/tmp/x.sock", "unix:/tmp/x.sock:mode=600",
                         "systemd:domain=UNIX:name=relay", "systemd:domain=unix:index=0"):
            self.assertTrue(auth.is_local_listener(endpoint), endpoint)
        for endpoint in ("tcp:7777", "ssl:7777:privateKey=k.pem",
                         "systemd:domain=INET:index=0", "systemd:index=0"):
            self.assertFalse(auth.is_local_listener(endpoint), endpoint)

    def test_network_listener_needs_auth(self):
        """
        A listener that is not a Unix socket without C{--auth} is a usage
        error naming the way out; with C{--auth} or
        C{--allow-anonymous-tcp} it is accepted.
        """
        e = self.assertRaises(usage.UsageError, self.parse, "--listen", "tcp:7777")
        self.assertIn("--listen tcp:7777", str(e))
        self.assertIn("--auth", str(e))
        self.assertIn("--allow-anonymous-tcp", str(e))
        from tests.support.tls import make_pki
        pki = make_pki(self.mktemp())
        self.assertRaises(usage.UsageError, self.parse, "--listen", "ssl:7777:privateKey=%s:"
                          "certKey=%s" % (pki.server_key, pki.server_cert))
        self.parse("--listen", "tcp:7777", "--allow-anonymous-tcp")
        o = self.parse("--listen", "tcp:7777", "--auth", "memory:alice:pw")
        self.assertEqual(len(o["credCheckers"]), 1)
        self.assertEqual(o["credCheckers"][0].users, {b"alice": b"pw"})
        self.parse()

    def test_tls_client_ca(self):
        """
        C{--tls-client-ca} must be a readable PEM file and needs an ssl:
        listener; with it an ssl: listener needs no C{--auth}.
        """
        from tests.support.tls import make_pki
        pki = make_pki(self.mktemp())
        o = self.parse("--listen", "ssl:0:privateKey=%s:certKey=%s" % (pki.server_key,
                                                                        pki.server_cert),
                       "--tls-client-ca", pki.ca_cert)
        self.assertEqual(len(o["tls-client-ca-certs"]), 1)
        self.assertRaises(usage.UsageError, self.parse, "--tls-client-ca", pki.ca_cert)
        self.assertRaises(usage.UsageError, self.parse, "--listen", "ssl:0:privateKey=%s:"
                          "certKey=%s" % (pki.server_key, pki.server_cert),
                          "--tls-client-ca", "/nonexistent.pem")
        self.assertRaises(usage.UsageError, self.parse, "--listen", "ssl:0:privateKey=/nonexistent",
                          "--tls-client-ca", pki.ca_cert)

    def test_help_auth(self):
        """
        C{--help-auth} lists Twisted's checker types and exits 0.
        """
        o = tap.Options()
        o.authOutput = io.StringIO()
        e = self.assertRaises(SystemExit, o.parseOptions, ["--help-auth"])
        self.assertEqual(e.code, 0)
        self.assertIn("memory", o.authOutput.getvalue())
        self.assertIn("file", o.authOutput.getvalue())

    def test_bad_auth(self):
        """
        An unknown checker type is a usage error.
        """
        self.assertRaises(usage.UsageError, self.parse, "--auth", "nonsense:x")
