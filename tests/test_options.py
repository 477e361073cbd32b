# -*- test-case-name: tests.test_options -*-
"""
Tests for L{relay.options}: the option coercers every relay plugin uses,
their one-line errors naming the option, and L{relay.options.convert}.
"""

from twisted.python import usage
from twisted.trial import unittest

from relay import options
from relay.options import parse_size


class CoercerTests(unittest.TestCase):
    """
    Each coercer converts a good string, keeps an already converted value,
    and refuses values of every wrong shape with one line naming the option.
    """

    def assertRefused(self, coerce, value, *words):
        e = self.assertRaises(usage.UsageError, coerce, value)
        for word in ("--opt",) + words:
            self.assertIn(word, str(e))
        self.assertNotIn("\n", str(e))

    def test_positive_int(self):
        """
        Digits (with spaces around) become an int; 0, negatives, floats,
        words and the empty string are refused.
        """
        coerce = options.positive_int("opt")
        self.assertEqual(coerce("12"), 12)
        self.assertEqual(coerce(" 7 "), 7)
        self.assertEqual(coerce(5), 5)
        self.assertRefused(coerce, "0", "must be positive")
        self.assertRefused(coerce, "-3", "must be positive")
        self.assertRefused(coerce, "1.5", "must be an integer")
        self.assertRefused(coerce, "many", "must be an integer", "'many'")
        self.assertRefused(coerce, "", "must be an integer")
        self.assertRefused(coerce, 2.0, "must be an integer")
        self.assertRefused(coerce, True, "must be an integer")

    def test_non_negative_and_minimum(self):
        """
        non_negative_int takes 0; integer() takes any minimum.
        """
        self.assertEqual(options.non_negative_int("opt")("0"), 0)
        self.assertRefused(options.non_negative_int("opt"), "-1", "must not be negative")
        self.assertEqual(options.integer("opt", 5)("5"), 5)
        self.assertRefused(options.integer("opt", 5), "4", "at least 5")
        self.assertEqual(options.integer("opt")("-4"), -4)

    def test_positive_float(self):
        """
        Numbers become floats; zero, negatives, words, inf and nan are
        refused.
        """
        coerce = options.positive_float("opt")
        self.assertEqual(coerce("1.5"), 1.5)
        self.assertEqual(coerce("2"), 2.0)
        self.assertEqual(coerce(86400), 86400.0)
        self.assertRefused(coerce, "0", "must be positive")
        self.assertRefused(coerce, "-0.5", "must be positive")
        self.assertRefused(coerce, "forever", "must be a number")
        self.assertRefused(coerce, "inf", "finite")
        self.assertRefused(coerce, "nan", "finite")

    def test_seconds(self):
        """
        Seconds are a finite float at least the minimum.
        """
        coerce = options.seconds("opt")
        self.assertEqual(coerce("30"), 30.0)
        self.assertEqual(coerce("0.25"), 0.25)
        self.assertRefused(coerce, "-1", "seconds")
        self.assertRefused(coerce, "0", "seconds")
        self.assertRefused(coerce, "soon", "seconds")
        self.assertRefused(coerce, "inf", "finite")

    def test_duration(self):
        """
        Durations take s, m, h, d and w suffixes or plain seconds; 0 is 0
        (keep everything); negative, unknown units, infinity and text are
        refused naming the option.
        """
        coerce = options.duration("opt")
        self.assertEqual(coerce("30d"), 30 * 86400.0)
        self.assertEqual(coerce("12h"), 43200.0)
        self.assertEqual(coerce("90s"), 90.0)
        self.assertEqual(coerce("15m"), 900.0)
        self.assertEqual(coerce("2w"), 14 * 86400.0)
        self.assertEqual(coerce("1.5"), 1.5)
        self.assertEqual(coerce("0"), 0.0)
        self.assertEqual(coerce(60), 60.0)
        self.assertRefused(coerce, "-1d", "negative")
        self.assertRefused(coerce, "3y", "duration")
        self.assertRefused(coerce, "", "duration")
        self.assertRefused(coerce, "forever", "duration")
        self.assertRefused(coerce, "infd", "finite")

    def test_parse_size(self):
        """
        Plain bytes, decimal and binary suffixes.
        """
        self.assertEqual(parse_size("x", "1000"), 1000)
        self.assertEqual(parse_size("x", "4k"), 4000)
        self.assertEqual(parse_size("x", "512KiB"), 524288)
        self.assertEqual(parse_size("x", "2 MiB"), 2 * 1024 * 1024)
        self.assertEqual(parse_size("x", 4096), 4096)
        self.assertRaises(usage.UsageError, parse_size, "x", "KiB")
        self.assertRaises(usage.UsageError, parse_size, "x", "12 parsecs")
        self.assertRaises(usage.UsageError, parse_size, "x", "-5")
        self.assertRaises(usage.UsageError, parse_size, "x", -5)

    def test_size_minimum(self):
        """
        A size below the minimum is refused, naming the minimum.
        """
        coerce = options.size("opt", 1024)
        self.assertEqual(coerce("1KiB"), 1024)
        self.assertRefused(coerce, "1000", "at least 1024 bytes")
        self.assertRefused(coerce, "lots", "not a size")

    def test_choice(self):
        """
        Only the listed strings are accepted, and the error lists them.
        """
        coerce = options.choice("opt", ("full", "normal"))
        self.assertEqual(coerce("normal"), "normal")
        self.assertRefused(coerce, "NORMAL", "full or normal", "'NORMAL'")
        self.assertRefused(options.choice("opt", ("a", "b", "c")), "d", "a, b or c")

    def test_coerce_doc(self):
        """
        Every coercer says what it takes (C{--help} shows it).
        """
        for coerce in (options.positive_int("opt"), options.non_negative_int("opt"),
                       options.integer("opt", 3), options.positive_float("opt"),
                       options.seconds("opt"), options.size("opt"),
                       options.choice("opt", ("a", "b"))):
            self.assertTrue(coerce.coerceDoc.endswith("."), coerce.coerceDoc)


class ConvertTests(unittest.TestCase):
    """
    L{options.convert} converts string defaults (which C{usage.Options}
    leaves alone) and values already converted, in place.
    """

    PARAMETERS = [
        ["size", None, "16MiB", "A size.", options.size("size")],
        ["count", None, "3", "A count.", options.positive_int("count")],
        ["name", None, "x", "No coercer."],
        ["none", None, None, "Default None.", options.positive_int("none")],
    ]

    def test_defaults_and_given(self):
        """
        A missing value gets its converted default; a given one is
        converted; entries without a coercer and None values are kept.
        """
        config = {"count": 7}
        self.assertIs(options.convert(config, self.PARAMETERS), config)
        self.assertEqual(config, {"size": 16 * 1024 * 1024, "count": 7})

    def test_twice_changes_nothing(self):
        """
        Converting a converted config again gives the same values.
        """
        config = options.convert({"size": "1KiB", "count": "2"}, self.PARAMETERS)
        again = options.convert(dict(config), self.PARAMETERS)
        self.assertEqual(again, config)

    def test_refusal(self):
        """
        A bad value is refused by its coercer.
        """
        self.assertRaises(usage.UsageError, options.convert, {"count": "0"}, self.PARAMETERS)

    def test_in_usage_options(self):
        """
        In a real C{usage.Options}, the command line is coerced at parse time
        and the string defaults by L{options.convert} from C{postOptions}.
        """
        parameters = self.PARAMETERS

        class Opts(usage.Options):
            optParameters = parameters

            def postOptions(self):
                options.convert(self, parameters)

        o = Opts()
        o.parseOptions(["--count", "9"])
        self.assertEqual((o["size"], o["count"]), (16 * 1024 * 1024, 9))
        e = self.assertRaises(usage.UsageError, Opts().parseOptions, ["--count", "x"])
        self.assertIn("--count must be an integer", str(e))
