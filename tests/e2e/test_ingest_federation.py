"""
End-to-end tests of federation on the ingest: two real
C{twistd -n relay-ingest} processes on one PostgreSQL database.  A poll
held on one instance is woken by a handover posted to the other (the
NOTIFY crosses instances), and when an instance is killed while it holds a
poll, its client's request fails and the other instance serves on.
"""

from twisted.internet import defer, reactor
from twisted.trial import unittest

from tests.support.federation import DAEMON_A, DAEMON_B, FederationClient, create_key, item
from tests.support.ingest import testDatabaseDSN, truncate
from tests.support.ingest_process import IngestProcess
from tests.support.poll import poll_until

#: A directory version no test reaches: the poll waits for items alone.
NO_DIRECTORY = 10 ** 12


class TwoInstancesTests(unittest.TestCase):
    """
    Two ingest instances share the work of one workspace.
    """

    @defer.inlineCallbacks
    def setUp(self):
        self.dsn = testDatabaseDSN(self)
        truncate(self.dsn)
        key = create_key(self.dsn)
        self.one = IngestProcess(reactor, self.dsn)
        self.two = IngestProcess(reactor, self.dsn)
        for instance in (self.one, self.two):
            self.addCleanup(instance.stop)
        yield defer.gatherResults([self.one.start(), self.two.start()])
        self.client_one = FederationClient(self.one.url, key)
        self.client_two = FederationClient(self.two.url, key)
        code, _, _ = yield self.client_one.presence(DAEMON_B, [{"name": "bob", "online": True}])
        self.assertEqual(code, 200)

    @defer.inlineCallbacks
    def held(self, client):
        """
        Start a poll of daemon B on C{client}'s instance and wait until the
        instance holds it; return its Deferred, in a list (a Deferred
        returned bare from inlineCallbacks would be waited for, and older
        Twisted refuses it).
        """
        d = client.poll(DAEMON_B, wait=30, directory_after=NO_DIRECTORY)

        @defer.inlineCallbacks
        def waiting():
            values = yield client.metrics()
            return values.get("relay_ingest_federation_waiting") == 1

        yield poll_until(waiting, 20, interval=0.05, clock=reactor, what="a held poll")
        self.assertNoResult(d)
        return [d]

    @defer.inlineCallbacks
    def test_notify_crosses_instances(self):
        """
        A handover committed through instance 2 wakes the poll held on
        instance 1, which answers with it.
        """
        [d] = yield self.held(self.client_one)
        code, body, _ = yield self.client_two.handover(DAEMON_A, [item(1)])
        self.assertEqual((code, body), (200, {"stored": 1, "duplicates": 0}))
        code, page, _ = yield d
        self.assertEqual(code, 200)
        self.assertEqual([i["message"]["id"] for i in page["items"]], ["f-1"])
        values = yield self.client_one.metrics()
        self.assertEqual(values['relay_ingest_federation_polls_total{outcome="woken"}'], 1)

    @defer.inlineCallbacks
    def test_killed_instance_fails_its_poll_and_the_other_serves(self):
        """
        Killing instance 1 while it holds a poll fails that request; a
        poll held on instance 2 is then woken by a handover as before.
        """
        [d] = yield self.held(self.client_one)
        yield self.one.kill()
        yield self.assertFailure(d, Exception)
        [d] = yield self.held(self.client_two)
        code, _, _ = yield self.client_two.handover(DAEMON_A, [item(2)])
        self.assertEqual(code, 200)
        code, page, _ = yield d
        self.assertEqual(code, 200)
        self.assertEqual([i["message"]["id"] for i in page["items"]], ["f-2"])
