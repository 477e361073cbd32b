# -*- test-case-name: tests.e2e.test_federation -*-
"""
Federation end to end (issue 10): agents on different daemons of one
workspace reach each other through the ingest service and PostgreSQL.
Real processes throughout: the real PostgreSQL, C{twistd -n relay-ingest}
instances, C{twistd -n relay --federate} daemons, agents on L{relay.client}.
Every test counts at the end: each message once per recipient, by id.
"""

from collections import Counter

from twisted.internet import defer, reactor
from twisted.trial import unittest

from tests.support.federated import (Workspace, federation_status, wait_federated, wait_got,
                                     wait_home, wait_known)
from tests.support.poll import poll_until


def once_each(testcase, agent, bodies):
    """
    C{agent} got exactly C{bodies}, each once, each under one id.
    """
    testcase.assertEqual(Counter(agent.bodies()), Counter(bodies))
    testcase.assertEqual(len(set(agent.ids())), len(agent.got))


class DirectTests(unittest.TestCase):
    """
    Direct messages, replies and a moving agent across three daemons and
    two ingest instances.
    """

    timeout = 180

    @defer.inlineCallbacks
    def setUp(self):
        self.ws = Workspace(self, ingests=2)
        yield self.ws.start_ingests()
        self.a = self.ws.daemon(0)
        self.b = self.ws.daemon(1)
        self.c = self.ws.daemon(0)
        yield defer.gatherResults([d.start() for d in (self.a, self.b, self.c)])
        yield defer.gatherResults([wait_federated(d) for d in (self.a, self.b, self.c)])
        self.ids = {}
        for d in (self.a, self.b, self.c):
            fed = yield federation_status(d)
            self.ids[d] = fed["daemon_id"]

    @defer.inlineCallbacks
    def test_direct_and_reply(self):
        """
        alice on A sends to bob on B; bob replies to the name the DELIVER
        carries; both get everything once.
        """
        bob = yield self.ws.agent(self.b, "bob")
        alice = yield self.ws.agent(self.a, "alice")
        yield wait_known(self.a, "bob", self.ids[self.b])
        yield defer.gatherResults([alice.client.send("bob", "hi %d" % i) for i in range(50)])
        yield wait_got(bob, 50)
        self.assertEqual({m.sender for m in bob.got}, {"alice"})
        yield wait_known(self.b, "alice", self.ids[self.a])
        yield defer.gatherResults([bob.client.send(m.sender, "re " + m.body) for m in bob.got])
        yield wait_got(alice, 50)
        once_each(self, bob, ["hi %d" % i for i in range(50)])
        once_each(self, alice, ["re hi %d" % i for i in range(50)])
        # In order within the stream.
        self.assertEqual(bob.bodies(), ["hi %d" % i for i in range(50)])

    @defer.inlineCallbacks
    def test_relay_agents_and_status(self):
        """
        C{relay agents} lists the workspace directory (home "here" or the
        other daemon's id, online), C{relay status} the federation state.
        """
        import json
        from tests.support.cli import run_cli
        yield self.ws.agent(self.b, "bob")
        yield self.ws.agent(self.a, "alice")
        yield wait_known(self.a, "bob", self.ids[self.b])
        out, err, code = yield run_cli(["agents", "--socket", self.a.socket_path, "--json"])
        self.assertEqual(code, 0, err)
        entries = {e["name"]: e for e in json.loads(out)}
        self.assertEqual(entries["bob"]["home"], self.ids[self.b])
        self.assertEqual(entries["alice"]["home"], self.ids[self.a])
        self.assertTrue(entries["bob"]["online"])
        out, err, code = yield run_cli(["agents", "--socket", self.a.socket_path])
        self.assertEqual(code, 0, err)
        self.assertIn("alice", out)
        self.assertRegex(out, r"alice\s+here\s+online")
        out, err, code = yield run_cli(["status", "--socket", self.a.socket_path])
        self.assertEqual(code, 0, err)
        self.assertIn("federation: connected as daemon %s" % (self.ids[self.a],), out)


    @defer.inlineCallbacks
    def test_agent_that_moves_gets_what_waited(self):
        """
        bob lives on A and leaves; messages for him from C (through the
        ingest) and from A (local) wait on A; bob says HELLO on B: he gets
        all of them there, once.
        """
        bob = yield self.ws.agent(self.a, "bob")
        yield wait_home(self.ws, "bob", self.ids[self.a])
        yield bob.client.close()
        yield wait_known(self.c, "bob", self.ids[self.a])
        carol = yield self.ws.agent(self.c, "carol")
        ann = yield self.ws.agent(self.a, "ann")
        yield defer.gatherResults([carol.client.send("bob", "from c %d" % i) for i in range(20)]
                                  + [ann.client.send("bob", "from a %d" % i) for i in range(10)])
        # Wait until A holds C's messages (fetched from the ingest).
        yield poll_until(lambda: federation_status(self.a).addCallback(
            lambda f: f["received"] >= 20), 30, clock=reactor, what="A fetched C's messages")
        moved = yield self.ws.agent(self.b, "bob")
        yield wait_got(moved, 30)
        once_each(self, moved, ["from c %d" % i for i in range(20)]
                  + ["from a %d" % i for i in range(10)])
        self.assertEqual(bob.got, [])

    @defer.inlineCallbacks
    def test_name_home_nowhere_waits_then_delivered(self):
        """
        A message to a name no daemon has seen waits where it was sent and
        is delivered where the name first says HELLO.
        """
        alice = yield self.ws.agent(self.a, "alice")
        yield defer.gatherResults([alice.client.send("dave", "early %d" % i) for i in range(5)])
        dave = yield self.ws.agent(self.c, "dave")
        yield wait_got(dave, 5)
        once_each(self, dave, ["early %d" % i for i in range(5)])

    @defer.inlineCallbacks
    def test_newer_hello_elsewhere_closes_the_older(self):
        """
        The latest HELLO anywhere makes its daemon the name's home: the
        older connection on another daemon gets the fatal ERROR a newer
        local connection gives, and messages go to the new home.
        """
        from tests.support.daemon import connect_agent
        old = yield connect_agent(self.a, "bob")
        yield wait_home(self.ws, "bob", self.ids[self.a])
        new = yield self.ws.agent(self.b, "bob")
        yield old.wait_closed(timeout=30)
        errors = old.of_type("ERROR")
        self.assertEqual(len(errors), 1)
        self.assertTrue(errors[0]["payload"]["fatal"])
        self.assertIn("replaced by a newer connection", errors[0]["payload"]["message"])
        alice = yield self.ws.agent(self.c, "alice")
        yield wait_known(self.c, "bob", self.ids[self.b])
        yield alice.client.send("bob", "to the new home")
        yield wait_got(new, 1)
        self.assertEqual(new.bodies(), ["to the new home"])
        status = yield federation_status(self.a)
        self.assertEqual(status["evicted"], 1)

    @defer.inlineCallbacks
    def test_topic_broadcast_reaches_every_daemon(self):
        """
        A broadcast with a topic reaches its subscribers on every daemon
        (not the sender); one without a topic stays on the sender's daemon.
        """
        subs = []
        for d, name in ((self.a, "sa"), (self.b, "sb"), (self.c, "sc")):
            subs.append((yield self.ws.agent(d, name, topics=["news"])))
        others = yield self.ws.agent(self.b, "plain")
        sender = yield self.ws.agent(self.a, "anchor", topics=["news"])
        yield poll_until(lambda: len(self.ws.directory()) >= 5, 30, clock=reactor,
                         what="everyone in the directory")
        yield defer.gatherResults([sender.client.broadcast("n%d" % i, topic="news")
                                   for i in range(10)])
        yield sender.client.broadcast("local only")
        for sub in subs:
            yield wait_got(sub, 10 if sub.name != "sa" else 11)
        once_each(self, subs[0], ["n%d" % i for i in range(10)] + ["local only"])
        once_each(self, subs[1], ["n%d" % i for i in range(10)])
        once_each(self, subs[2], ["n%d" % i for i in range(10)])
        self.assertEqual(sender.got, [])
        self.assertEqual(others.got, [])


class BoundKeyTests(unittest.TestCase):
    """
    A key bound to one daemon id (relay keys create --daemon) speaks for
    that daemon only.
    """

    timeout = 120

    @defer.inlineCallbacks
    def test_bound_key_of_another_daemon_refused(self):
        import psycopg2
        from relay.ingest import keys
        ws = Workspace(self)
        yield ws.start_ingests()
        good, bad = "aaaaaaaa-0000-4000-8000-00000000000a", "bbbbbbbb-0000-4000-8000-00000000000b"
        conn = psycopg2.connect(ws.dsn)
        try:
            ws.key = keys.create_key(conn, ws.id, daemon_id=good)[1]
        finally:
            conn.close()
        ok = ws.daemon(0, extra=["--daemon-id", good])
        wrong = ws.daemon(0, extra=["--daemon-id", bad])
        yield defer.gatherResults([ok.start(), wrong.start()])
        yield wait_federated(ok)
        yield poll_until(lambda: federation_status(wrong).addCallback(
            lambda f: f["state"] == "refused" and "403" in (f["last_error"] or "")), 30,
            clock=reactor, what="the other daemon refused")


class FailureTests(unittest.TestCase):
    """
    Nothing lost, nothing twice under a new id, when parts fail.
    """

    timeout = 240

    @defer.inlineCallbacks
    def start(self, ingests=1):
        self.ws = Workspace(self, ingests=ingests)
        yield self.ws.start_ingests()
        self.a = self.ws.daemon(0)
        self.b = self.ws.daemon(ingests - 1)
        yield defer.gatherResults([d.start() for d in (self.a, self.b)])
        yield defer.gatherResults([wait_federated(d) for d in (self.a, self.b)])
        self.ids = {}
        for d in (self.a, self.b):
            self.ids[d] = (yield federation_status(d))["daemon_id"]

    @defer.inlineCallbacks
    def pair(self):
        """alice on A and bob on B, each knowing where the other lives."""
        alice = yield self.ws.agent(self.a, "alice")
        bob = yield self.ws.agent(self.b, "bob")
        yield wait_known(self.a, "bob", self.ids[self.b])
        yield wait_known(self.b, "alice", self.ids[self.a])
        return alice, bob

    @defer.inlineCallbacks
    def test_ingest_down_30s_both_ways(self):
        """
        The ingest is down for 30 s while agents on both daemons keep
        sending: everything arrives once it is back.
        """
        yield self.start()
        alice, bob = yield self.pair()
        ingest = self.ws.ingests[0]
        yield ingest.stop()
        started = reactor.seconds()
        sent = 0
        while reactor.seconds() - started < 30:
            yield defer.gatherResults([alice.client.send("bob", "ab %d" % sent),
                                       bob.client.send("alice", "ba %d" % sent)])
            sent += 1
            yield deferLater(0.25)
        yield ingest.start()
        yield wait_got(bob, sent, timeout=60)
        yield wait_got(alice, sent, timeout=60)
        once_each(self, bob, ["ab %d" % i for i in range(sent)])
        once_each(self, alice, ["ba %d" % i for i in range(sent)])
        self.assertEqual(bob.bodies(), ["ab %d" % i for i in range(sent)])

    @defer.inlineCallbacks
    def _home_daemon_away(self, how):
        yield self.start()
        alice, bob = yield self.pair()
        yield bob.client.close()
        yield getattr(self.b, how)()
        yield defer.gatherResults([alice.client.send("bob", "while away %d" % i)
                                   for i in range(40)])
        # They wait in PostgreSQL (handed over by A, not fetched by B).
        yield poll_until(lambda: federation_status(self.a).addCallback(
            lambda f: f["handed_over"] >= 40 and f["waiting_handover"] == 0), 30,
            clock=reactor, what="A handed everything over")
        yield self.b.start()
        back = yield self.ws.agent(self.b, "bob")
        yield wait_got(back, 40)
        once_each(self, back, ["while away %d" % i for i in range(40)])

    def test_home_daemon_stopped(self):
        """
        The home daemon is stopped while messages for its agent arrive:
        they wait in PostgreSQL and are delivered when it is back.
        """
        return self._home_daemon_away("stop")

    def test_home_daemon_killed(self):
        """
        The same with C{kill -9}.
        """
        return self._home_daemon_away("kill")

    @defer.inlineCallbacks
    def test_sender_killed_between_receipt_and_hand_over(self):
        """
        The ingest is away, so the receipted messages are only on A's disk
        (status remote) when A is killed with SIGKILL: after A and the
        ingest are back, each is handed over once and delivered once.
        """
        yield self.start()
        alice, bob = yield self.pair()
        ingest = self.ws.ingests[0]
        yield ingest.stop()
        yield defer.gatherResults([alice.client.send("bob", "kept %d" % i) for i in range(30)])
        from tests.support.daemon import stored
        rows = stored(self.a.db_path, "SELECT count(*) FROM deliveries WHERE status = 'remote'")
        self.assertEqual(rows, [(30,)])
        yield self.a.kill()
        yield ingest.start()
        yield self.a.start()
        yield wait_got(bob, 30, timeout=60)
        once_each(self, bob, ["kept %d" % i for i in range(30)])
        self.assertEqual(bob.bodies(), ["kept %d" % i for i in range(30)])

    @defer.inlineCallbacks
    def test_one_of_two_ingests_killed_while_polling(self):
        """
        Both daemons long-poll ingest 0; it is killed: they continue
        through ingest 1.
        """
        self.ws = Workspace(self, ingests=2)
        yield self.ws.start_ingests()
        self.a = self.ws.daemon(0)
        self.b = self.ws.daemon(0)
        yield defer.gatherResults([d.start() for d in (self.a, self.b)])
        yield defer.gatherResults([wait_federated(d) for d in (self.a, self.b)])
        self.ids = {}
        for d in (self.a, self.b):
            self.ids[d] = (yield federation_status(d))["daemon_id"]
        alice, bob = yield self.pair()
        yield defer.gatherResults([alice.client.send("bob", "before %d" % i) for i in range(10)])
        yield wait_got(bob, 10)
        yield self.ws.ingests[0].kill()
        yield defer.gatherResults([alice.client.send("bob", "after %d" % i) for i in range(10)])
        yield wait_got(bob, 20, timeout=60)
        once_each(self, bob, ["before %d" % i for i in range(10)]
                  + ["after %d" % i for i in range(10)])
        status = yield federation_status(self.b)
        self.assertEqual(status["ingest"], self.ws.ingests[1].url)

    @defer.inlineCallbacks
    def test_same_message_handed_over_twice(self):
        """
        A hand-over whose answer was lost is offered again (here: A's
        deliveries put back to 'remote' while it is stopped): the ingest
        stores it once, bob gets each message once, with its id, in order.
        """
        yield self.start()
        alice, bob = yield self.pair()
        yield defer.gatherResults([alice.client.send("bob", "twice %d" % i) for i in range(20)])
        yield wait_got(bob, 20)
        first_ids = bob.ids()
        yield self.a.stop()
        import sqlite3
        conn = sqlite3.connect(self.a.db_path)
        with conn:
            n = conn.execute("UPDATE deliveries SET status = 'remote'"
                             " WHERE status = 'handed'").rowcount
        conn.close()
        self.assertEqual(n, 20)
        yield self.a.start()
        yield poll_until(lambda: federation_status(self.a).addCallback(
            lambda f: f["handover_duplicates"] >= 20), 30, clock=reactor,
            what="the second hand-over answered as duplicates")
        yield bob.client.send("alice", "barrier")
        yield defer.gatherResults([alice.client.send("bob", "then %d" % i) for i in range(5)])
        yield wait_got(bob, 25)
        once_each(self, bob, ["twice %d" % i for i in range(20)] + ["then %d" % i for i in range(5)])
        self.assertEqual(bob.ids()[:20], first_ids)


def deferLater(seconds):
    from twisted.internet import task
    return task.deferLater(reactor, seconds, lambda: None)
