# -*- test-case-name: tests.test_interfaces -*-
"""
Tests for L{relay.interfaces}: both message stores provide
L{IMessageStore} and keep its contract (one behavioural test case run
against the SQLite store, on a threadless pool over a real file, and
against L{relay.testing.MemoryStore}); both connections provide
L{IAgentConnection}.
"""

import os

from twisted.internet import task
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from relay.interfaces import IAgentConnection, IMessageStore, ISyncSource
from relay.protocol import RelayFactory
from relay.router import Router
from relay.store import STATUS_ACKED, STATUS_DELIVERED, STATUS_EXPIRED, STATUS_PENDING, Store
from relay.testing import FakeConnection, MemoryStore, ThreadlessConnectionPool, settle


class _StoreContract:
    """
    The IMessageStore contract; subclasses say how to make the store.
    """

    def setUp(self):
        self.clock = task.Clock()
        self.clock.advance(1000)
        self.store = self.make_store()

    def wait(self, d):
        return self.successResultOf(settle(self.clock, d))

    def open_rows(self, recipient, after=0):
        """
        Commit what is queued, then read C{recipient}'s open deliveries
        (reads see committed rows only).
        """
        self.wait(self.store.flush())
        return self.wait(self.store.read_open_deliveries(recipient, after, 100))

    def message(self, to="bob", expires=10 ** 12, send_id=None, mid=None):
        """
        Queue one SEND's rows (a message, one delivery to C{to}) as the
        router does; return its seq.
        """
        store = self.store
        seq = store.next_seq()
        key = (to, "default", "alice")
        store.begin_send()
        store.add_message([seq, mid or store.message_id(seq), send_id, 1000, "alice", to, None,
                           None, "message", '{"body":"x"}', None, None, expires], 10)
        store.add_delivery(to, seq, key, store.next_stream_seq(key), STATUS_PENDING, 1000)
        store.end_send()
        return seq

    def test_provides(self):
        """
        The store provides IMessageStore (every verb, with its signature).
        """
        self.assertTrue(verifyObject(IMessageStore, self.store))

    def test_seq_and_ids(self):
        """
        next_seq hands out increasing seqs, last_given_seq is the last one
        handed out, committed or not; message ids of two seqs differ.
        """
        a = self.store.next_seq()
        b = self.store.next_seq()
        self.assertEqual(b, a + 1)
        self.assertEqual(self.store.last_given_seq(), b)
        self.assertNotEqual(self.store.message_id(a), self.store.message_id(b))

    def test_committed_delivery_is_read_back(self):
        """
        A SEND's delivery is read back (after its commit) with the stored
        message's fields, stream seq 1 then 2 on one stream.
        """
        s1 = self.message()
        s2 = self.message()
        rows = self.open_rows("bob")
        self.assertEqual([(r[0], r[1], r[5], r[8]) for r in rows],
                         [(s1, 1, "alice", '{"body":"x"}'), (s2, 2, "alice", '{"body":"x"}')])
        self.assertEqual(self.open_rows("bob", after=s1)[0][0], s2)
        self.assertEqual(self.open_rows("carol"), [])

    def test_after_commit_runs_after_the_rows_commit(self):
        """
        after_commit runs once what was queued before it is committed, not
        before; flush fires then too.
        """
        seen = []
        self.message()
        self.store.after_commit(seen.append, "done")
        self.assertEqual(seen, [])
        self.wait(self.store.flush())
        self.assertEqual(seen, ["done"])

    def test_abort_send_writes_nothing(self):
        """
        A SEND aborted half way leaves no row; its stream seq stays used.
        """
        store = self.store
        seq = store.next_seq()
        key = ("bob", "default", "alice")
        store.begin_send()
        store.add_message([seq, store.message_id(seq), None, 1000, "alice", "bob", None, None,
                           "message", "{}", None, None, 10 ** 12], 10)
        store.add_delivery("bob", seq, key, store.next_stream_seq(key), STATUS_PENDING, 1000)
        store.abort_send()
        self.wait(store.flush())
        self.assertEqual(self.open_rows("bob"), [])
        self.assertEqual(store.next_stream_seq(key), 2)

    def test_status_rules(self):
        """
        An acked delivery is not read back and stays acked (a later
        DELIVERED does not reopen it); an expired one is not read back.
        """
        store = self.store
        s1 = self.message()
        s2 = self.message()
        self.wait(store.flush())
        store.set_status(None, "bob", s1, STATUS_ACKED, 1, 2000)
        store.set_status(None, "bob", s1, STATUS_DELIVERED, 2, 2001)
        store.set_status(None, "bob", s2, STATUS_EXPIRED, 1, 2000)
        store.set_status(None, "bob", s2, STATUS_DELIVERED, 2, 2001)
        self.assertEqual(self.open_rows("bob"), [])

    def test_ack_by_id_and_expiry(self):
        """
        ack_by_id closes the recipient's delivery of that message id only;
        expire_due closes deliveries whose message expired, not others.
        """
        store = self.store
        s1 = self.message()
        s2 = self.message(expires=5000)
        s3 = self.message()
        self.wait(store.flush())
        store.ack_by_id("bob", store.message_id(s1), 2000)
        store.ack_by_id("carol", store.message_id(s3), 2000)
        store.expire_due(6000)
        self.assertEqual([r[0] for r in self.open_rows("bob")], [s3])
        self.assertNotEqual(s2, s3)

    def test_recent_sends_taken_once(self):
        """
        take_recent_sends gives what it holds once; the second call gives
        nothing.
        """
        self.store.take_recent_sends()
        self.assertEqual(list(self.store.take_recent_sends()), [])

    def test_stats(self):
        """
        stats() is a dict with the writer's pending rows and stream memory.
        """
        stats = self.store.stats()
        for key in ("pending_rows", "pending_bytes", "streams_in_memory", "quarantined"):
            self.assertIn(key, stats)


class SQLiteStoreContractTests(_StoreContract, unittest.TestCase):
    """
    The contract on L{relay.store.Store}: a real file, a threadless pool.
    """

    def make_store(self):
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        store = Store(self.clock, os.path.join(directory, "r.sqlite"),
                      pool_factory=ThreadlessConnectionPool.on(self.clock))
        store.open()
        self.addCleanup(lambda: settle(self.clock, store.close()))
        return store

    def test_provides_sync_source(self):
        """
        The SQLite store is also the sync service's source.
        """
        self.assertTrue(verifyObject(ISyncSource, self.store))


class MemoryStoreContractTests(_StoreContract, unittest.TestCase):
    """
    The contract on L{relay.testing.MemoryStore}.
    """

    def make_store(self):
        return MemoryStore(self.clock)


class AgentConnectionTests(unittest.TestCase):

    def test_both_connections_provide_it(self):
        """
        RelayProtocol (after connectionMade) and FakeConnection provide
        IAgentConnection.
        """
        from twisted.internet.testing import StringTransport
        clock = task.Clock()
        router = Router(clock, MemoryStore(clock))
        proto = RelayFactory(router, clock).buildProtocol(None)
        proto.makeConnection(StringTransport())
        self.assertTrue(verifyObject(IAgentConnection, proto))
        self.assertTrue(verifyObject(IAgentConnection, FakeConnection(router, clock)))
        proto.connectionLost(None)
