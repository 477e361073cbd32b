"""
Tests for L{relay.ingest.notify}: the waiters of held polls and their
generations on L{task.Clock}, and the LISTEN connection's reconnection
with a stand-in connection (the real one against PostgreSQL is tested in
L{tests.test_ingest_federation} and L{tests.e2e.test_ingest_federation}).
"""

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial import unittest

from relay.ingest.federation_db import CHANNEL
from relay.ingest.notify import NotifyListener, Waiters

W1, W2 = "w1", "w2"


class WaitersTests(unittest.TestCase):
    """
    L{Waiters}: wake-ups by workspace, never lost between a poll's query
    and its wait, and nothing left behind by a poll that ends.
    """

    def setUp(self):
        self.clock = Clock()
        self.gauge = []
        self.waiters = Waiters(self.clock, on_change=self.gauge.append)

    def test_wake_wakes_only_its_workspace(self):
        """
        A wake-up fires the waiters of its workspace (True) and leaves the
        others waiting; the gauge follows.
        """
        a = self.waiters.wait(W1, self.waiters.generation(W1), 30)
        b = self.waiters.wait(W2, self.waiters.generation(W2), 30)
        self.assertEqual(self.waiters.waiting, 2)
        self.waiters.wake(W1)
        self.assertIs(self.successResultOf(a), True)
        self.assertNoResult(b)
        self.assertEqual((self.waiters.waiting, self.gauge[-1]), (1, 1))
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)

    def test_wake_between_query_and_wait_is_not_lost(self):
        """
        A wake-up that comes after the poll took its generation (while its
        query ran) makes the wait answer at once, holding nothing.
        """
        since = self.waiters.generation(W1)
        self.waiters.wake(W1)
        self.assertIs(self.successResultOf(self.waiters.wait(W1, since, 30)), True)
        self.assertEqual(self.waiters.waiting, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        # A wake-up of another workspace is no reason to answer.
        since = self.waiters.generation(W1)
        self.waiters.wake(W2)
        self.assertNoResult(self.waiters.wait(W1, since, 30))

    def test_wake_all_counts_for_every_workspace(self):
        """
        L{Waiters.wake_all} (notifications were lost) wakes every waiter and
        every generation taken before it.
        """
        since = self.waiters.generation(W2)
        a = self.waiters.wait(W1, self.waiters.generation(W1), 30)
        self.waiters.wake_all()
        self.assertIs(self.successResultOf(a), True)
        self.assertIs(self.successResultOf(self.waiters.wait(W2, since, 30)), True)

    def test_timeout(self):
        """
        A wait that runs out fires False and leaves nothing behind.
        """
        d = self.waiters.wait(W1, self.waiters.generation(W1), 20)
        self.clock.advance(19.9)
        self.assertNoResult(d)
        self.clock.advance(0.1)
        self.assertIs(self.successResultOf(d), False)
        self.assertEqual(self.waiters.waiting, 0)
        self.waiters.wake(W1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_cancel_removes_waiter_and_timer(self):
        """
        A cancelled wait (its client went away) leaves the waiters and its
        timer is cancelled; a later wake-up or timeout touches nothing.
        """
        d = self.waiters.wait(W1, self.waiters.generation(W1), 20)
        d.cancel()
        self.failureResultOf(d, defer.CancelledError)
        self.assertEqual((self.waiters.waiting, self.gauge[-1]), (0, 0))
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.waiters.wake(W1)
        self.waiters.wake_all()


class _Notify:
    def __init__(self, payload):
        self.channel = CHANNEL
        self.payload = payload


class _FakeConnection:
    """
    Stands in for a txpostgres connection: C{connect} and C{runOperation}
    answer as the test says.
    """

    def __init__(self, fail_connect=False):
        self.fail_connect = fail_connect
        self.operations = []
        self.observers = []
        self.closed = False
        self.on_lost = None

    def connect(self, dsn):
        if self.fail_connect:
            return defer.fail(ConnectionRefusedError("no server"))
        return defer.succeed(None)

    def runOperation(self, sql):
        self.operations.append(sql)
        return defer.succeed(None)

    def addNotifyObserver(self, observer):
        self.observers.append(observer)

    def close(self):
        self.closed = True

    def lose(self):
        self.on_lost(Failure(ConnectionResetError("server went away")))


class NotifyListenerTests(unittest.TestCase):
    """
    L{NotifyListener} listens, wakes workspaces by notification, and
    listens again after a loss with a growing, capped delay, waking every
    poll once it is back.
    """

    def setUp(self):
        self.clock = Clock()
        self.waiters = Waiters(self.clock)
        self.connections = []
        self.plan = []

        def factory(reactor):
            conn = _FakeConnection(fail_connect=self.plan.pop(0) if self.plan else False)
            self.connections.append(conn)
            return conn

        self.listener = NotifyListener("dsn", self.clock, self.waiters,
                                       connection_factory=factory)

    def test_listens_and_wakes_by_payload(self):
        """
        Once connected it runs LISTEN on the channel; a notification wakes
        the workspace its payload names.
        """
        self.listener.start()
        conn = self.connections[0]
        self.assertEqual(conn.operations, ["LISTEN " + CHANNEL])
        self.assertTrue(self.listener.listening)
        d = self.waiters.wait(W1, self.waiters.generation(W1), 30)
        conn.observers[0](_Notify(W2))
        self.assertNoResult(d)
        conn.observers[0](_Notify(W1))
        self.assertIs(self.successResultOf(d), True)

    def test_reconnects_with_backoff_and_wakes_everyone(self):
        """
        A lost connection is replaced after 0.25 s, then (failing) 0.5 s,
        1 s...; once listening again every held poll is woken, since
        notifications sent meanwhile were lost.
        """
        self.listener.start()
        d = self.waiters.wait(W1, self.waiters.generation(W1), 60)
        self.plan = [True, True, False]
        self.connections[0].lose()
        self.assertFalse(self.listener.listening)
        self.assertTrue(self.connections[0].closed)
        self.assertNoResult(d)
        for delay in (0.25, 0.5):
            self.clock.advance(delay - 0.01)
            count = len(self.connections)
            self.clock.advance(0.01)
            self.assertEqual(len(self.connections), count + 1)
            self.assertNoResult(d)
        self.clock.advance(1.0)
        self.assertEqual(len(self.connections), 4)
        self.assertTrue(self.listener.listening)
        self.assertIs(self.successResultOf(d), True)
        # The delays start again from the shortest after a success.
        self.connections[-1].lose()
        self.clock.advance(0.25)
        self.assertEqual(len(self.connections), 5)

    def test_stop(self):
        """
        Stopping closes the connection and cancels a pending retry; a loss
        reported afterwards starts nothing.
        """
        self.plan = [True]
        self.listener.start()
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.listener.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.listener.start()
        conn = self.connections[-1]
        self.listener.stop()
        self.assertTrue(conn.closed)
        self.assertFalse(self.listener.listening)
        self.assertIsNone(conn.on_lost)
