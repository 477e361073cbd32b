# -*- test-case-name: tests.test_options -*-
"""
The option coercers every C{twistd} plugin of relay uses (C{twistd relay},
its sync options, C{twistd relay-ingest}): one wording for one mistake.

Each maker takes the option's name (without the dashes) and returns a
callable for the last element of a C{usage.Options.optParameters} entry::

    ["batch-size", None, 50, "Rows per store batch.", options.positive_int("batch-size")],

The callable turns the command-line string (or an already converted
value: a default, or a value given to L{convert} twice) into the value, or
raises L{usage.UsageError} with one line naming the option; its
C{coerceDoc} is what C{--help} shows.  C{usage.Options} coerces only what
the command line gives, so an Options class whose defaults are strings
(C{"16MiB"}) calls L{convert} from C{postOptions}: nothing that reaches
C{makeService} is still a string.
"""

import math

from twisted.python import usage

_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "kib": 1024,
    "m": 1000 ** 2, "mb": 1000 ** 2, "mib": 1024 ** 2,
    "g": 1000 ** 3, "gb": 1000 ** 3, "gib": 1024 ** 3,
}

SIZE_HINT = "bytes, or a KiB/MiB/GiB suffix"


def _not(name, kind, value):
    return usage.UsageError("--%s must be %s: %r is not %s" % (name, kind, value, kind))


def _at_least(minimum):
    if minimum == 1:
        return "be positive"
    if minimum == 0:
        return "not be negative"
    return "be at least %s" % (minimum,)


def integer(name, minimum=None):
    """
    A coercer to C{int}, at least C{minimum} if given.
    """
    def coerce(value):
        if value.__class__ is int:
            n = value
        else:
            try:
                n = int(str(value).strip())
            except ValueError:
                raise _not(name, "an integer", value)
        if minimum is not None and n < minimum:
            raise usage.UsageError("--%s must %s, not %d" % (name, _at_least(minimum), n))
        return n
    if minimum is None:
        coerce.coerceDoc = "An integer."
    else:
        coerce.coerceDoc = {1: "A positive integer.", 0: "A non-negative integer."}.get(
            minimum, "An integer, at least %d." % (minimum,))
    return coerce


def positive_int(name):
    """
    A coercer to an C{int} above 0.
    """
    return integer(name, 1)


def non_negative_int(name):
    """
    A coercer to an C{int} of 0 or more.
    """
    return integer(name, 0)


def _finite(name, value, kind):
    if value.__class__ in (int, float):
        n = float(value)
    else:
        try:
            n = float(str(value).strip())
        except ValueError:
            raise _not(name, kind, value)
    if not math.isfinite(n):
        raise usage.UsageError("--%s must be a finite number, not %r" % (name, value))
    return n


def positive_float(name):
    """
    A coercer to a finite C{float} above 0.
    """
    def coerce(value):
        n = _finite(name, value, "a number")
        if n <= 0:
            raise usage.UsageError("--%s must be positive, not %s" % (name, value))
        return n
    coerce.coerceDoc = "A positive number."
    return coerce


def seconds(name, minimum=0.001):
    """
    A coercer to a duration in seconds (a finite C{float}), at least
    C{minimum}.
    """
    def coerce(value):
        n = _finite(name, value, "a number of seconds")
        if n < minimum:
            raise usage.UsageError("--%s must be a positive number of seconds (at least %s), "
                                   "not %r" % (name, minimum, value))
        return n
    coerce.coerceDoc = "Seconds (a positive number)."
    return coerce


_DURATIONS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def duration(name):
    """
    A coercer to a number of seconds (a C{float}, 0 or more) from C{"30d"},
    C{"12h"}, C{"15m"}, C{"90s"}, C{"2w"} or a plain number of seconds;
    C{"0"} is 0.
    """
    def coerce(value):
        if value.__class__ in (int, float):
            raw = value
            n, unit = _finite(name, value, "a duration"), 1
        else:
            raw = str(value).strip().lower()
            unit = _DURATIONS.get(raw[-1:], None) if raw else None
            n = _finite(name, raw[:-1] if unit else raw, "a duration (e.g. 30d, 12h, 90s)")
            unit = unit or 1
        if n < 0:
            raise usage.UsageError("--%s must not be negative, not %r" % (name, raw))
        return n * unit
    coerce.coerceDoc = "A duration: 30d, 12h, 15m, 90s, 2w or seconds; 0 keeps everything."
    return coerce


def parse_size(name, text):
    """
    Parse C{"512KiB"}, C{"16MiB"}, C{"4k"}, C{"1000"}, ... into a number of
    bytes.

    @raise usage.UsageError: when C{text} is not a size.
    """
    if text.__class__ is int and text >= 0:
        return text
    raw = str(text).strip()
    digits = raw
    unit = ""
    for i, ch in enumerate(raw):
        if not ch.isdigit():
            digits, unit = raw[:i], raw[i:].strip().lower()
            break
    if not digits or unit not in _UNITS:
        raise usage.UsageError("--%s must be a size (%s): %r is not a size"
                               % (name, SIZE_HINT, text))
    return int(digits) * _UNITS[unit]


def size(name, minimum=0):
    """
    A coercer from a size (L{parse_size}) to a number of bytes, at least
    C{minimum}.
    """
    def coerce(value):
        n = parse_size(name, value)
        if n < minimum:
            raise usage.UsageError("--%s must be at least %d bytes, not %d" % (name, minimum, n))
        return n
    coerce.coerceDoc = "A size (%s)." % (SIZE_HINT,)
    return coerce


def choice(name, choices):
    """
    A coercer that accepts only one of C{choices} (strings), as given.
    """
    choices = tuple(choices)
    if len(choices) > 1:
        wording = ", ".join(choices[:-1]) + " or " + choices[-1]
    else:
        wording = choices[0]

    def coerce(value):
        if value not in choices:
            raise usage.UsageError("--%s must be %s, not %r" % (name, wording, value))
        return value
    coerce.coerceDoc = "One of: %s." % (", ".join(choices),)
    return coerce


def convert(config, parameters):
    """
    Run the coercer of every entry of C{parameters} (C{optParameters}
    entries) on its value in C{config} (a C{usage.Options} or a plain
    dict; the entry's default when C{config} has none), in place.  Values
    the command line gave were converted already; converting again
    changes nothing.  Entries without a coercer, and values that are
    None, are left alone.

    @return: C{config}.
    @raise usage.UsageError: from the first coercer that refuses its value.
    """
    for entry in parameters:
        if len(entry) < 5 or entry[4] is None:
            continue
        name, default, coerce = entry[0], entry[2], entry[4]
        value = config.get(name, default)
        if value is not None:
            config[name] = coerce(value)
    return config
