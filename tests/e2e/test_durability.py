# -*- test-case-name: tests.e2e.test_durability -*-
"""
End-to-end tests of "nothing lost, nothing twice" across crashes, through
the real daemon process (issue 13 points 1, 2, 3 and 17): SIGKILL between
writes, retransmissions after a restart, copied store files.
"""

import os
import shutil
import sqlite3

from twisted.internet import defer, reactor, task
from twisted.trial import unittest

from tests.support.daemon import DaemonProcess, connect_agent, send, wait_status


def stored_ids(db_path):
    conn = sqlite3.connect(db_path)
    try:
        return [r[0] for r in conn.execute("SELECT id FROM messages ORDER BY seq")]
    finally:
        conn.close()


@defer.inlineCallbacks
def receipted(agent, envelopes, timeout=60.0):
    """
    Send C{envelopes} on C{agent} and wait for a receipt for each.
    """
    before = agent.counts.get("ACK", 0)
    agent.send_many(envelopes)
    yield agent.wait_type("ACK", before + len(envelopes), timeout=timeout)


class AtomicSendTests(unittest.TestCase):
    """
    Big SENDs commit as units across a SIGKILL.
    """

    @defer.inlineCallbacks
    def test_big_sends_survive_kill_and_resend(self):
        """
        A 400 KB and a 700 KB SEND to an offline agent cross the batch byte
        limit; the daemon is killed (SIGKILL) once that flush committed.
        Each SEND committed whole, so after a restart their retransmission
        with receipt is recognised and both reach the agent (before the fix
        the 700 KB message was stored without its delivery row: receipted,
        never delivered).
        """
        daemon = DaemonProcess(self, ["--batch-delay-ms", "600000", "--batch-size", "100000"])
        yield daemon.start()
        sender = yield connect_agent(daemon, "big-tx")
        envs = [send("big-rx", "a" * 400000), send("big-rx", "b" * 700000)]
        sender.send_many(envs)
        yield wait_status(daemon, lambda s: s["store"]["batches"] >= 1
                          and s["messages"]["accepted"] == 2)
        yield daemon.kill()
        yield daemon.start()
        sender = yield connect_agent(daemon, "big-tx")
        for env in envs:
            env["payload_meta"] = {"requires_ack": True}
        yield receipted(sender, envs)
        rx = yield connect_agent(daemon, "big-rx")
        yield rx.wait_type("DELIVER", 2, timeout=30)
        bodies = sorted(len(f["payload"]["body"]) for f in rx.of_type("DELIVER"))
        self.assertEqual(bodies, [400000, 700000])


class SameIdTests(unittest.TestCase):
    """
    A SEND re-sent after a crash keeps its message id.
    """

    @defer.inlineCallbacks
    def crash_before_commit(self, requires_ack):
        """
        The recipient gets a SEND live while its commit is surely pending
        (a long batch delay and big batch size; for a receipted SEND, which
        is flushed at once, another connection holds the write lock), the
        daemon is killed, the sender re-sends after the restart: the
        recipient's second copy carries the id of the first.
        """
        daemon = DaemonProcess(self, ["--batch-delay-ms", "600000", "--batch-size", "100000"])
        yield daemon.start()
        rx = yield connect_agent(daemon, "id-rx")
        rx.auto_ack = False
        tx = yield connect_agent(daemon, "id-tx")
        # Both caught up from the store (a catch-up flushes first, and the
        # lock below would hold that flush up).
        yield wait_status(daemon, lambda s: len(s["agents"]) == 2
                          and all(a["live"] for a in s["agents"]))
        lock = sqlite3.connect(daemon.db_path, isolation_level=None)
        self.addCleanup(lock.close)
        lock.execute("BEGIN IMMEDIATE")
        env = send("id-rx", "once", requires_ack=requires_ack)
        tx.send(env)
        yield rx.wait_type("DELIVER")
        first = rx.of_type("DELIVER")[0]
        self.assertEqual(tx.of_type("ACK"), [])
        yield daemon.kill()
        lock.execute("ROLLBACK")
        self.assertEqual(stored_ids(daemon.db_path), [])
        yield daemon.start()
        rx = yield connect_agent(daemon, "id-rx")
        tx = yield connect_agent(daemon, "id-tx")
        env["payload_meta"] = {"requires_ack": True}
        yield receipted(tx, [env])
        yield rx.wait_type("DELIVER", 1)
        [second] = rx.of_type("DELIVER")
        self.assertEqual(second["payload"]["body"], "once")
        self.assertEqual(second["id"], first["id"])
        self.assertEqual(stored_ids(daemon.db_path), [first["id"]])

    def test_receipted_retransmit_after_crash_keeps_the_id(self):
        """
        A receipted SEND delivered live, lost in a crash before its commit
        and sent again (no receipt came), reaches the recipient a second
        time under the same id (before the fix: another id and seq, which
        no client can de-duplicate).
        """
        return self.crash_before_commit(True)

    def test_unreceipted_retransmit_after_crash_keeps_the_id(self):
        """
        The same for a SEND sent first without asking for a receipt and
        re-sent with one after the crash.
        """
        return self.crash_before_commit(False)


class DedupeWindowTests(unittest.TestCase):
    """
    The per-sender dedupe window survives other senders' traffic and a restart.
    """

    @defer.inlineCallbacks
    def test_retransmit_recognised_after_12000_other_sends_and_restart(self):
        """
        Agent A's SEND is still recognised as a retransmission after agent B
        sent 12,000 messages and the daemon restarted: the window is per
        sender and loaded from the store (before the fix it was 10,000
        entries for the whole daemon, and A's message was delivered twice).
        """
        daemon = DaemonProcess(self, ["--no-rate-limit"])
        yield daemon.start()
        a = yield connect_agent(daemon, "dd-a")
        first = send("dd-rx", "from a", requires_ack=True)
        yield receipted(a, [first])
        b = yield connect_agent(daemon, "dd-b")
        for start in range(0, 12000, 2000):
            yield receipted(b, [send("dd-sink", "b%d" % i, requires_ack=True)
                                for i in range(start, start + 2000)], timeout=120)
        yield receipted(a, [first])
        yield daemon.stop()
        yield daemon.start()
        a = yield connect_agent(daemon, "dd-a")
        yield receipted(a, [first])
        status = yield wait_status(daemon, lambda s: s["messages"]["retransmits"] == 1)
        self.assertEqual(status["messages"]["accepted"], 0)
        rx = yield connect_agent(daemon, "dd-rx")
        yield rx.wait_type("DELIVER", 1)
        yield task.deferLater(reactor, 0.5, lambda: None)
        self.assertEqual([f["payload"]["body"] for f in rx.of_type("DELIVER")], ["from a"])
        conn = sqlite3.connect(daemon.db_path)
        self.addCleanup(conn.close)
        self.assertEqual(conn.execute("SELECT count(*) FROM messages WHERE sender = 'dd-a'")
                         .fetchone(), (1,))


class CopiedStoreTests(unittest.TestCase):
    """
    A daemon on a copied store file gives ids the original never gave.
    """

    @defer.inlineCallbacks
    def test_copy_never_gives_an_id_of_the_original(self):
        """
        A daemon started on a copy of a store file (a second machine, a
        restored backup) gives ids the original's daemon never gave, while
        both go on from the same message seq.
        """
        original = DaemonProcess(self)
        yield original.start()
        tx = yield connect_agent(original, "cp-tx")
        yield receipted(tx, [send("cp-rx", "before %d" % i, requires_ack=True)
                             for i in range(3)])
        yield original.stop()
        copy = DaemonProcess(self)
        shutil.copy(original.db_path, copy.db_path)
        for daemon in (original, copy):
            yield daemon.start()
            tx = yield connect_agent(daemon, "cp-tx")
            # SENDs without an id: their ids come from the run's prefix and
            # the message seq, the same seqs on both files.
            envs = [send("cp-rx", "after %d" % i) for i in range(3)]
            for env in envs:
                del env["id"]
            tx.send_many(envs)
            yield wait_status(daemon, lambda s: s["messages"]["accepted"] == 3)
            yield daemon.stop()
        shared = stored_ids(original.db_path)[:3]
        self.assertEqual(stored_ids(copy.db_path)[:3], shared)
        new_original = set(stored_ids(original.db_path)[3:])
        new_copy = set(stored_ids(copy.db_path)[3:])
        self.assertEqual(len(new_original), 3)
        self.assertEqual(len(new_copy), 3)
        self.assertEqual(new_original & new_copy, set())
        self.assertEqual({i.rpartition("-")[2] for i in new_copy},
                         {i.rpartition("-")[2] for i in new_original})
        self.assertTrue(os.path.exists(copy.db_path))
