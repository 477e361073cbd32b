# -*- test-case-name: tests.test_dedupe -*-
"""
Unit tests for L{relay.dedupe.DedupeWindow} on a L{task.Clock}.
"""

from twisted.internet import task
from twisted.trial import unittest

from relay.dedupe import DedupeWindow, fingerprint


def window(**kw):
    clock = task.Clock()
    clock.advance(1000)
    return clock, DedupeWindow(clock, **kw)


class DedupeWindowTests(unittest.TestCase):

    def test_per_sender(self):
        """
        Another sender's 12,000 SENDs do not push a sender's SEND out of
        the window; a sender's own SENDs beyond its bound do.
        """
        clock, w = window(per_sender=1000, max_total=100000)
        w.remember("a", "first", "m-1", 7)
        for i in range(12000):
            w.remember("b", "s%d" % i, "m-b%d" % i, i)
        self.assertEqual(w.lookup("a", "first", 7), "m-1")
        self.assertEqual(w.lookup("b", "s11999", 11999), "m-b11999")
        self.assertIsNone(w.lookup("b", "s10999", 10999))
        self.assertEqual(w.lookup("b", "s11000", 11000), "m-b11000")
        self.assertEqual(len(w), 1001)

    def test_fingerprint_must_match(self):
        """
        The same id with another fingerprint (other content) is not a
        retransmission; nor is the same id from another sender.
        """
        clock, w = window()
        fp = fingerprint("bob", None, b'{"body":"x"}')
        w.remember("a", "id", "m-1", fp)
        self.assertEqual(w.lookup("a", "id", fp), "m-1")
        self.assertIsNone(w.lookup("a", "id", fingerprint("bob", None, b'{"body":"y"}')))
        self.assertIsNone(w.lookup("a", "id", fingerprint("bob", "t", b'{"body":"x"}')))
        self.assertIsNone(w.lookup("c", "id", fp))

    def test_age(self):
        """
        An entry older than the window is not matched, and prune drops the
        senders whose newest entry is that old, and only those.
        """
        clock, w = window(max_age=3600.0)
        w.remember("old", "id", "m-1", 1)
        clock.advance(1800)
        w.remember("new", "id", "m-2", 2)
        clock.advance(1801)
        self.assertIsNone(w.lookup("old", "id", 1))
        self.assertEqual(w.lookup("new", "id", 2), "m-2")
        self.assertEqual(w.prune(), 1)
        self.assertEqual((len(w), w.senders()), (1, 1))
        clock.advance(1800)
        self.assertEqual(w.prune(), 1)
        self.assertEqual((len(w), w.senders()), (0, 0))

    def test_remember_with_time(self):
        """
        Entries loaded at startup keep the time they were sent: one sent
        longer ago than the window is never matched.
        """
        clock, w = window(max_age=60.0)
        w.remember("a", "old", "m-1", 1, when=clock.seconds() - 61)
        w.remember("a", "new", "m-2", 2, when=clock.seconds() - 59)
        self.assertIsNone(w.lookup("a", "old", 1))
        self.assertEqual(w.lookup("a", "new", 2), "m-2")

    def test_total_bound_with_100000_senders(self):
        """
        100,000 distinct senders keep at most max_total entries: the least
        recently active senders go first, the newest stay.
        """
        clock, w = window(per_sender=10, max_total=5000)
        for i in range(100000):
            w.remember("agent-%d" % i, "id", "m-%d" % i, i)
        self.assertEqual(len(w), 5000)
        self.assertEqual(w.senders(), 5000)
        self.assertIsNone(w.lookup("agent-0", "id", 0))
        self.assertEqual(w.lookup("agent-99999", "id", 99999), "m-99999")

    def test_same_id_again_replaces(self):
        """
        A sender reusing an id for new content replaces the old entry
        (counted once).
        """
        clock, w = window()
        w.remember("a", "id", "m-1", 1)
        w.remember("a", "id", "m-2", 2)
        self.assertEqual(len(w), 1)
        self.assertEqual(w.lookup("a", "id", 2), "m-2")
        self.assertIsNone(w.lookup("a", "id", 1))

    def test_off(self):
        """
        A window of 0 remembers nothing.
        """
        clock, w = window(max_total=0)
        w.remember("a", "id", "m-1", 1)
        self.assertIsNone(w.lookup("a", "id", 1))
        self.assertEqual(len(w), 0)


class OptionsTests(unittest.TestCase):

    def test_defaults_shown_and_checked(self):
        """
        --dedupe-window (all entries), --dedupe-per-sender and
        --dedupe-hours have defaults, shown in the daemon's --help, and
        refuse values of the wrong shape with a one-line reason.
        """
        from twisted.python import usage

        from relay import tap
        o = tap.Options()
        o.parseOptions([])
        self.assertEqual((o["dedupe-window"], o["dedupe-per-sender"], o["dedupe-hours"]),
                         (100000, 1000, 6.0))
        flat = " ".join(o.getUsage().split())
        for option, default in (("--dedupe-window", "100000"),
                                ("--dedupe-per-sender", "1000"), ("--dedupe-hours", "6.0")):
            start = flat.index(option + "=")
            self.assertIn("[default: %s]" % (default,), flat[start:start + 300], option)
        for args in (["--dedupe-per-sender", "0"], ["--dedupe-hours", "-1"],
                     ["--dedupe-hours", "long"], ["--dedupe-window", "-5"]):
            e = self.assertRaises(usage.UsageError, tap.Options().parseOptions, args)
            self.assertNotIn("\n", str(e))
        o = tap.Options()
        o.parseOptions(["--dedupe-per-sender", "5", "--dedupe-hours", "0.5"])
        self.assertEqual((o["dedupe-per-sender"], o["dedupe-hours"]), (5, 0.5))

    def test_service_wires_the_window(self):
        """
        makeService hands the options to the router's window and to what
        the store loads at startup.
        """
        from relay import tap
        o = tap.Options()
        o.parseOptions(["--db", self.mktemp() + ".sqlite", "--dedupe-per-sender", "7",
                        "--dedupe-hours", "2", "--dedupe-window", "99"])
        relay_service = tap.makeService(o, reactor=task.Clock())
        w = relay_service.router.dedupe
        self.assertEqual((w.per_sender, w.max_age, w.max_total), (7, 7200.0, 99))
        store = relay_service.store
        self.assertEqual((store.recent_per_sender, store.recent_age, store.recent_sends_limit),
                         (7, 7200.0, 99))


class DerivedIdTests(unittest.TestCase):

    def test_same_send_same_id(self):
        """
        The derived id depends on sender, SEND id, recipient, topic and
        payload, on each of them, and on nothing else (no run, no seq); the
        fields cannot run into each other.
        """
        from relay.dedupe import derived_id
        base = derived_id("a", "s1", "bob", None, b'{"body":"x"}')
        self.assertEqual(base, derived_id("a", "s1", "bob", None, b'{"body":"x"}'))
        self.assertTrue(base.startswith("m"))
        others = [derived_id("b", "s1", "bob", None, b'{"body":"x"}'),
                  derived_id("a", "s2", "bob", None, b'{"body":"x"}'),
                  derived_id("a", "s1", "carol", None, b'{"body":"x"}'),
                  derived_id("a", "s1", "bob", "", b'{"body":"x"}'),
                  derived_id("a", "s1", "bob", "t", b'{"body":"x"}'),
                  derived_id("a", "s1", "bob", None, b'{"body":"y"}'),
                  derived_id("as", "1", "bob", None, b'{"body":"x"}'),
                  derived_id("a", "s1b", "ob", None, b'{"body":"x"}')]
        self.assertNotIn(base, others)
        self.assertEqual(len(set(others)), len(others))
        # Names the protocol lets through, whatever their code points.
        self.assertTrue(derived_id("\ud800", "\udfff", "x", None, b"{}"))
