"""
Unit tests of L{relay.ingest.inserters} that need no database: the choice
by batch size and the COPY text encoding.  The strategies themselves are
tested against the real PostgreSQL in L{tests.e2e.test_ingest_store}.
"""

from twisted.trial import unittest

from relay.ingest.inserters import ThresholdInserter, encode_copy_rows


class ThresholdInserterTests(unittest.TestCase):
    """
    L{ThresholdInserter} chooses by batch size.
    """

    def test_choose(self):
        """
        Up to the threshold the small strategy is used, above it the large.
        """
        t = ThresholdInserter("small", "large", copy_threshold=1000)
        self.assertEqual(t.choose([None] * 1000), "small")
        self.assertEqual(t.choose([None] * 1001), "large")
        self.assertEqual(t.choose([]), "small")


class EncodeCopyRowsTests(unittest.TestCase):
    """
    L{encode_copy_rows} writes COPY text format.
    """

    def test_escapes(self):
        """
        Backslash, tab, newline and carriage return are escaped; None is
        \\N; booleans are t/f.
        """
        row = ("a\tb", "c\nd", "e\\f", "g\rh", "message", None, None, None,
               True, False, None, '{"x": "\\\\"}', 5, None)
        self.assertEqual(
            encode_copy_rows([row]),
            b"a\\tb\tc\\nd\te\\\\f\tg\\rh\tmessage\t\\N\t\\N\t\\N\tt\tf\t\\N\t"
            b'{"x": "\\\\\\\\"}\t5\t\\N\n',
        )
