# -*- test-case-name: tests.test_sync_backoff -*-
"""
When to try a failed sync POST again.

L{Backoff} is a jittered exponential schedule: retry C{n} (0-based) waits
C{initial * 2**n} seconds times a factor drawn from C{[1 - jitter, 1 + jitter]},
capped at C{maximum}.  The random source is injected, so tests see an exact
schedule.  A server's C{Retry-After} (seconds or an HTTP date) overrides the
schedule (L{parse_retry_after}), within the same cap.
"""

import random
from email.utils import parsedate_to_datetime


class Backoff:
    """
    @ivar initial: the first delay, in seconds.
    @ivar maximum: no delay is longer than this.
    @ivar jitter: the spread of the random factor (0 gives an exact doubling).
    """

    def __init__(self, initial, maximum=300.0, jitter=0.2, rng=None):
        self.initial = initial
        self.maximum = maximum
        self.jitter = jitter
        self.rng = rng if rng is not None else random.Random()

    def delay(self, attempt, retry_after=None):
        """
        Seconds to wait before retry number C{attempt} (0 for the first).

        @param retry_after: seconds the server asked for, or None.
        """
        if retry_after is not None:
            return min(self.maximum, max(0.0, retry_after))
        base = self.initial * (2 ** min(attempt, 32))
        factor = 1.0 + self.jitter * (2.0 * self.rng.random() - 1.0)
        return min(self.maximum, base * factor)


def parse_retry_after(value, now):
    """
    Parse a C{Retry-After} header value.

    @param value: the header value (str or bytes), or None.
    @param now: the current time in seconds since the epoch (for HTTP dates).
    @return: seconds to wait, or None when absent or unreadable.
    """
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - now)
