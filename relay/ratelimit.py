# -*- test-case-name: tests.test_ratelimit -*-
"""
Per-agent token buckets on the injected clock.
"""


class TokenBucket:
    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, rate, burst, now):
        self.rate = float(rate)
        self.burst = float(burst)
        self.tokens = float(burst)
        self.stamp = now

    def take(self, now):
        """
        Take one token.

        @return: 0.0 when taken, else the seconds until one is due.
        """
        if now > self.stamp:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


class RateLimiter:
    """
    One bucket per agent name; buckets idle for C{idle} seconds are dropped
    (they would be full again anyway), so memory stays bounded.
    """

    def __init__(self, clock, rate=500.0, burst=1000.0, idle=3600.0):
        self.clock = clock
        self.rate = rate
        self.burst = burst
        self.idle = idle
        self.buckets = {}
        self._last_prune = clock.seconds()

    def take(self, name):
        now = self.clock.seconds()
        bucket = self.buckets.get(name)
        if bucket is None:
            bucket = self.buckets[name] = TokenBucket(self.rate, self.burst, now)
        wait = bucket.take(now)
        if now - self._last_prune > 60.0:
            self.prune(now)
        return wait

    def spare(self, name):
        """
        Whole tokens left in C{name}'s bucket (as of its last take).
        """
        bucket = self.buckets.get(name)
        return bucket.tokens if bucket is not None else self.burst

    def prune(self, now=None):
        if now is None:
            now = self.clock.seconds()
        self._last_prune = now
        cutoff = now - self.idle
        for name in [n for n, b in self.buckets.items() if b.stamp < cutoff]:
            del self.buckets[name]
