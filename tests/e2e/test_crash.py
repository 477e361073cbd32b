# -*- test-case-name: tests.e2e.test_crash -*-
"""
Receipted messages survive the real daemon being C{kill -9}ed at random
moments while an agent sends (moved here from C{tests/test_durability.py},
whose unit tests check that C{--synchronous} reaches SQLite).
"""

import random
import sqlite3

from twisted.internet import defer, reactor, task
from twisted.trial import unittest

from tests.support.daemon import DaemonProcess, connect_agent


class CrashTests(unittest.TestCase):
    """
    C{kill -9} of the real daemon at random moments while an agent sends
    receipted messages.
    """

    rounds = 20

    @defer.inlineCallbacks
    def test_receipted_messages_survive_kill_9(self):
        """
        The daemon is killed with SIGKILL 20 times at random moments while
        alice streams receipted SENDs to bob (who is offline).  After each
        restart alice re-sends what got no receipt, under the same SEND ids
        (as a client does).  In the end every message alice got a receipt
        for is delivered to bob, each under exactly one message id, and the
        store holds each exactly once.
        """
        seed = random.randrange(1 << 30)
        rng = random.Random(seed)
        daemon = DaemonProcess(self, ["--batch-delay-ms", "20", "--no-rate-limit"])
        receipted = set()
        unreceipted = {}
        counter = [0]

        def new_send():
            counter[0] += 1
            n = counter[0]
            env = {"v": 1, "type": "SEND", "id": "c-%d" % n, "ts": 0, "to": "bob",
                   "payload": {"kind": "message", "body": "m-%d" % n},
                   "payload_meta": {"requires_ack": True}}
            unreceipted[env["id"]] = env
            return env

        def note_receipts(agent):
            for f in agent.of_type("ACK"):
                ack_id = f["payload"]["ack_id"]
                if unreceipted.pop(ack_id, None) is not None:
                    receipted.add(ack_id)

        for round_no in range(self.rounds):
            yield daemon.start()
            alice = yield connect_agent(daemon, "alice")
            # What the last run did not receipt goes again, same ids.
            alice.send_many(list(unreceipted.values()))

            def stream(alice=alice):
                if not alice.closed.called:
                    alice.send_many([new_send() for _ in range(rng.randint(1, 8))])
            loop = task.LoopingCall(stream)
            loop.start(0.005)
            yield task.deferLater(reactor, rng.uniform(0.02, 0.4), lambda: None)
            yield daemon.kill()
            loop.stop()
            yield alice.closed
            note_receipts(alice)
            self.assertEqual(daemon.exit_signal, 9, "round %d (seed %d)" % (round_no, seed))

        # A last clean run: everything left gets its receipt.
        yield daemon.start()
        alice = yield connect_agent(daemon, "alice")
        pending = len(unreceipted)
        alice.send_many(list(unreceipted.values()))
        yield alice.wait_type("ACK", pending, timeout=60)
        note_receipts(alice)
        self.assertEqual(unreceipted, {})
        self.assertGreater(len(receipted), self.rounds)

        bob = yield connect_agent(daemon, "bob")
        want = {"m-" + i[2:] for i in receipted}
        yield bob.wait_for(lambda a: want <= {f["payload"]["body"] for f in a.of_type("DELIVER")},
                           timeout=60)
        # Every DELIVER written before this PONG has arrived.
        bob.send({"v": 1, "type": "PING", "payload": {"nonce": "end"}})
        yield bob.wait_type("PONG")
        ids = {}
        for f in bob.of_type("DELIVER"):
            ids.setdefault(f["payload"]["body"], set()).add(f["id"])
        self.assertEqual(set(ids), want, "seed %d" % (seed,))
        self.assertEqual({b: len(s) for b, s in ids.items() if len(s) != 1}, {},
                         "a message delivered under two ids (seed %d)" % (seed,))
        yield daemon.stop()
        conn = sqlite3.connect(daemon.db_path)
        try:
            rows = conn.execute("SELECT send_id, count(*) FROM messages WHERE sender = 'alice'"
                                " GROUP BY send_id").fetchall()
        finally:
            conn.close()
        counts = dict(rows)
        self.assertEqual({k: v for k, v in counts.items() if v != 1}, {},
                         "stored twice (seed %d)" % (seed,))
        self.assertEqual(set(counts), receipted)
