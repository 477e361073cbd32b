"""
Tests for the bounded request body, L{relay.ingest.body}.
"""

import gzip
import zlib

from twisted.trial import unittest

from relay.ingest.body import HOLD_BYTES, BoundedBody, MemoryBudget
from relay.ingest.validate import BadRequest


def feed(body, data, size=1000):
    for i in range(0, len(data), size):
        body.write(data[i:i + size])
    return body


class BoundedBodyTests(unittest.TestCase):
    """
    L{BoundedBody} keeps at most the configured bytes and reports the first
    problem as a L{BadRequest}.
    """

    def status(self, body):
        return self.assertRaises(BadRequest, body.body).status

    def test_plain(self):
        """
        A plain body within the limit is kept whole.
        """
        b = feed(BoundedBody(100, 1000, None, 10), b"0123456789")
        self.assertEqual(b.body(), b"0123456789")
        self.assertEqual(b.tell(), 10)

    def test_declared_too_large(self):
        """
        A declared Content-Length over the limit is 413 and nothing is kept.
        """
        b = feed(BoundedBody(100, 1000, None, 101), b"x" * 101)
        self.assertEqual(self.status(b), 413)
        self.assertEqual(b._chunks, [])

    def test_chunked_too_large(self):
        """
        A body of unknown length is cut off as soon as it passes the limit.
        """
        b = BoundedBody(100, 1000, None, None)
        feed(b, b"x" * 100, 30)
        self.assertEqual(b.body(), b"x" * 100)
        b.write(b"y")
        self.assertEqual(self.status(b), 413)
        b.write(b"z" * 10000)
        self.assertEqual(b._chunks, [])
        self.assertEqual(b.tell(), 10101)

    def test_gzip(self):
        """
        A gzip body is inflated as it arrives, in small pieces.
        """
        data = b"".join(b"line %d\n" % i for i in range(5000))
        b = feed(BoundedBody(10 ** 6, 10 ** 6, b"gzip", None), gzip.compress(data), 7)
        self.assertEqual(b.body(), data)

    def test_inflated_limit_exact(self):
        """
        Inflating to exactly the limit is fine; one byte more is 413.
        """
        data = b"a" * 5000
        b = feed(BoundedBody(10 ** 6, 5000, b"gzip", None), gzip.compress(data))
        self.assertEqual(b.body(), data)
        b = feed(BoundedBody(10 ** 6, 4999, b"gzip", None), gzip.compress(data))
        self.assertEqual(self.status(b), 413)

    def test_bomb_keeps_little(self):
        """
        A gzip bomb never makes the body hold more than the inflated limit.
        """
        c = zlib.compressobj(9, zlib.DEFLATED, 31)
        bomb = b"".join(c.compress(b"\0" * 2 ** 20) for _ in range(64)) + c.flush()
        b = BoundedBody(10 ** 7, 2 ** 20, b"gzip", None)
        peak = 0
        for i in range(0, len(bomb), 4096):
            b.write(bomb[i:i + 4096])
            peak = max(peak, sum(map(len, b._chunks)))
        self.assertEqual(self.status(b), 413)
        self.assertLessEqual(peak, 2 ** 20)
        self.assertLess(len(bomb), 2 ** 20)

    def test_bomb_inflates_bounded(self):
        """
        Even given in one piece, a gzip bomb is never inflated past the
        limit: the peak of memory allocated while writing it stays near the
        limit, not near the bomb's 64 MiB.
        """
        import tracemalloc
        c = zlib.compressobj(9, zlib.DEFLATED, 31)
        bomb = b"".join(c.compress(b"\0" * 2 ** 20) for _ in range(64)) + c.flush()
        b = BoundedBody(10 ** 7, 2 ** 20, b"gzip", None)
        tracemalloc.start()
        self.addCleanup(tracemalloc.stop)
        b.write(bomb)
        peak = tracemalloc.get_traced_memory()[1]
        self.assertEqual(self.status(b), 413)
        self.assertLess(peak, 4 * 2 ** 20)

    def test_multi_member(self):
        """
        Concatenated gzip members inflate to the concatenation.
        """
        b = feed(BoundedBody(10 ** 6, 10 ** 6, b"gzip", None),
                 gzip.compress(b"abc") + gzip.compress(b"def"))
        self.assertEqual(b.body(), b"abcdef")

    def test_truncated_gzip(self):
        """
        A gzip body cut short is 400.
        """
        b = feed(BoundedBody(10 ** 6, 10 ** 6, b"gzip", None), gzip.compress(b"x" * 100)[:-5])
        self.assertEqual(self.status(b), 400)

    def test_empty_gzip(self):
        """
        An empty body announced as gzip is 400 (truncated).
        """
        self.assertEqual(self.status(BoundedBody(100, 100, b"gzip", 0)), 400)

    def test_corrupt_gzip(self):
        """
        Data that is not gzip is 400.
        """
        b = feed(BoundedBody(10 ** 6, 10 ** 6, b"gzip", None), b"definitely not gzip")
        self.assertEqual(self.status(b), 400)

    def test_unsupported_encoding(self):
        """
        An encoding other than gzip or identity is 415.
        """
        self.assertEqual(self.status(BoundedBody(100, 100, b"br", 0)), 415)
        b = feed(BoundedBody(100, 100, b"identity", None), b"{}")
        self.assertEqual(b.body(), b"{}")

    def test_discard(self):
        """
        In discard mode (no credentials) the body is counted, not kept.
        """
        b = feed(BoundedBody(100, 100, None, None, discard=True), b"x" * 50)
        self.assertEqual(b._chunks, [])
        self.assertEqual(b.tell(), 50)


class BudgetTests(unittest.TestCase):
    """
    L{BoundedBody} with a L{MemoryBudget} shared by every request, and the
    hold/accept/refuse steps of the header-time key check.
    """

    def test_shared_budget(self):
        """
        Two bodies share one budget: the one that does not fit fails with
        503 (kept nothing), and closing a body gives its bytes back.
        """
        budget = MemoryBudget(150)
        a = feed(BoundedBody(1000, 1000, None, None, budget=budget), b"a" * 100)
        b = feed(BoundedBody(1000, 1000, None, None, budget=budget), b"b" * 100)
        self.assertEqual(a.body(), b"a" * 100)
        self.assertEqual(self.status(b), 503)
        self.assertEqual(budget.used, 100)
        a.close()
        self.assertEqual(budget.used, 0)
        c = feed(BoundedBody(1000, 1000, None, None, budget=budget), b"c" * 150)
        self.assertEqual(c.body(), b"c" * 150)

    def test_inflated_bytes_count(self):
        """
        For gzip bodies the inflated bytes are what counts against the budget.
        """
        budget = MemoryBudget(5000)
        data = gzip.compress(b"x" * 6000)
        b = feed(BoundedBody(10 ** 6, 10 ** 6, b"gzip", None, budget=budget), data)
        self.assertEqual(self.status(b), 503)
        self.assertEqual(budget.used, 0)

    def test_hold_then_accept(self):
        """
        Bytes that arrive while the key is checked are kept as they are
        (and counted); accepting processes them (inflating gzip) in order.
        """
        budget = MemoryBudget(10 ** 6)
        raw = b'{"messages": []}' * 10
        data = gzip.compress(raw)
        b = BoundedBody(10 ** 6, 10 ** 6, b"gzip", None, budget=budget)
        b.hold()
        feed(b, data[:20], 7)
        self.assertEqual(budget.used, 20)
        b.accept()
        feed(b, data[20:], 7)
        self.assertEqual(b.body(), raw)
        self.assertEqual(budget.used, len(raw))

    def test_hold_full_asks_for_a_pause(self):
        """
        Past HOLD_BYTES held, on_hold_full is called once (the request pauses
        its transport); nothing is called below it.
        """
        calls = []
        b = BoundedBody(10 ** 7, 10 ** 7, None, None)
        b.on_hold_full = lambda: calls.append(b.tell())
        b.hold()
        feed(b, b"x" * (HOLD_BYTES - 1), 4096)
        self.assertEqual(calls, [])
        feed(b, b"x" * 10)
        self.assertEqual(calls, [HOLD_BYTES - 1 + 10])
        feed(b, b"x" * HOLD_BYTES, 4096)
        self.assertEqual(len(calls), 1)

    def test_hold_then_refuse(self):
        """
        A refused key drops what was held and everything after it, and gives
        the budget back; the bytes are still counted.
        """
        budget = MemoryBudget(10 ** 6)
        b = BoundedBody(10 ** 6, 10 ** 6, None, None, budget=budget)
        b.hold()
        feed(b, b"x" * 500)
        b.refuse()
        feed(b, b"y" * 500)
        self.assertEqual(budget.used, 0)
        self.assertEqual(b._chunks, [])
        self.assertEqual(b.tell(), 1000)

    def status(self, body):
        return self.assertRaises(BadRequest, body.body).status
