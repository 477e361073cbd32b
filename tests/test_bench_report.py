# -*- test-case-name: tests.test_bench_report -*-
"""
Tests for L{relay.bench.report}: the progress and table output that
``relay bench`` and benchmarks/ share.
"""

import io

from twisted.trial import unittest

from relay.bench.report import check_load_options, format_table, progress_printer


class _Terminal(io.StringIO):
    def isatty(self):
        return True


class ProgressTests(unittest.TestCase):
    """relay bench's progress output."""

    def test_terminal_bar(self):
        """On a terminal: one redrawn bar, ending with a newline at 100%."""
        stream = _Terminal()
        show = progress_printer(stream)
        show(0, 200)
        show(100, 200)
        show(200, 200)
        text = stream.getvalue()
        self.assertEqual(text.count("\r"), 3)
        self.assertIn(" 50.0% 100/200", text)
        self.assertTrue(text.endswith("100.0% 200/200\n"))

    def test_plain_lines(self):
        """Not a terminal: a plain line per 10% step, no carriage returns."""
        stream = io.StringIO()
        show = progress_printer(stream)
        for done in range(0, 1001, 50):
            show(done, 1000)
        lines = stream.getvalue().splitlines()
        self.assertEqual(len(lines), 11)
        self.assertEqual(lines[-1], "1000/1000 settled")
        self.assertNotIn("\r", stream.getvalue())


class TableTests(unittest.TestCase):
    """The aligned two-column table."""

    def test_aligned(self):
        """Names are padded to the longest one, values follow after two spaces."""
        self.assertEqual(format_table([("a", "1"), ("longer", "2")]),
                         ["a       1", "longer  2"])


class LoadOptionTests(unittest.TestCase):
    """One-line complaints about the load generator's knobs."""

    def _args(self, **kw):
        import argparse
        values = dict(senders=1, receivers=1, messages=10, size=0, window=None,
                      receiver_rate=None)
        values.update(kw)
        return argparse.Namespace(**values)

    def test_good(self):
        """Sane values raise no complaint."""
        self.assertIsNone(check_load_options(self._args()))

    def test_each_bad_value(self):
        """Each out-of-range knob is named in its complaint."""
        for kw, word in [({"senders": 0}, "--senders"), ({"messages": 0}, "--messages"),
                         ({"size": -1}, "--size"), ({"window": 0}, "--window"),
                         ({"receiver_rate": 0}, "--receiver-rate")]:
            self.assertIn(word, check_load_options(self._args(**kw)))
