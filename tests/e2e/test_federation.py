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
