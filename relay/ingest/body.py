# -*- test-case-name: tests.test_ingest_body -*-
"""
Request bodies held in bounded memory.

L{BoundedBody} stands in for C{request.content}: it counts the body (and
inflates gzip, incrementally, with C{zlib.decompressobj(wbits=31)} and
C{max_length}) as it arrives, and once a limit is passed the rest is
discarded.  Every byte kept is taken from a L{MemoryBudget} shared by all
requests.
"""

import zlib

from relay.ingest.validate import BadRequest


class MemoryBudget:
    """
    The bytes of request bodies (as received, or inflated) that all requests
    together may hold in memory.

    @ivar limit: the most bytes held at once.
    @ivar used: bytes held now.
    """

    def __init__(self, limit):
        """
        @param limit: the most bytes all bodies together may hold.
        """
        self.limit = limit
        self.used = 0

    def take(self, n):
        """
        Hold C{n} more bytes if they fit; return whether they did.
        """
        if self.used + n > self.limit:
            return False
        self.used += n
        return True

    def give(self, n):
        """
        Release C{n} bytes taken before with L{take}.
        """
        self.used -= n


#: Bytes of a body kept unprocessed while its key is checked; past them the
#: connection is paused.  (Not pausing at once lets a connection that goes
#: away be noticed, and its key lookup leave the queue.)
HOLD_BYTES = 256 * 1024


class BoundedBody:
    """
    Stands in for C{request.content}: keeps the (inflated) body in memory
    up to the limits, and records the first problem as a L{BadRequest}.

    While the API key is being checked (L{hold}) the bytes that arrive are
    kept as they are, up to L{HOLD_BYTES}; then C{on_hold_full} is called (the
    request pauses its transport).  L{accept} then processes them, L{refuse}
    drops them and every later byte.  Every byte kept is taken from C{budget} (a
    L{MemoryBudget} shared by all requests) and given back by L{close}; a
    body that does not fit fails with 503.

    @ivar error: L{None}, or the L{BadRequest} to answer with.
    @ivar received: bytes received on the wire for this body.
    @ivar on_hold_full: L{None}, or a callable called (once, with no
        arguments) when the held bytes reach L{HOLD_BYTES}.
    """

    def __init__(self, max_body_bytes, max_inflated_bytes, encoding, declared_length,
                 discard=False, metrics=None, budget=None):
        """
        @param max_body_bytes: the most bytes accepted on the wire (413 past it).
        @param max_inflated_bytes: the most bytes a gzip body may inflate to
            (413 past it).
        @param encoding: the request's C{Content-Encoding} (lower-cased
            L{bytes}), or L{None}: identity or gzip, anything else is 415.
        @param declared_length: the C{Content-Length}, or L{None} when chunked.
        @param discard: count the bytes but keep none (a request without
            credentials).
        @param metrics: an L{relay.ingest.metrics.IngestMetrics} whose
            C{bytes_in} counts the wire bytes, or L{None}.
        @param budget: the L{MemoryBudget} shared by all requests, or L{None}
            for no shared bound.
        """
        self.max_body_bytes = max_body_bytes
        self.max_inflated_bytes = max_inflated_bytes
        self.received = 0
        self.inflated = 0
        self.error = None
        self._chunks = []
        self._metrics = metrics
        self._discard = discard
        self._budget = budget
        self._held = 0
        self._pending = None
        self._pending_bytes = 0
        self.on_hold_full = None
        self._inflater = None
        if encoding in (None, b"identity"):
            pass
        elif encoding in (b"gzip", b"x-gzip"):
            self._inflater = zlib.decompressobj(wbits=31)
        else:
            self._fail(415, "unsupported Content-Encoding %r (use gzip or none)"
                       % (encoding.decode("latin-1"),))
        if declared_length is not None and declared_length > max_body_bytes:
            self._too_large()

    def _fail(self, status, message):
        if self.error is None:
            self.error = BadRequest(status, message)
        self._drop()

    def _drop(self):
        self._chunks = []
        self._pending = None
        self._inflater = None
        if self._budget is not None:
            self._budget.give(self._held)
        self._held = 0

    def _take(self, n):
        if self._budget is None or self._budget.take(n):
            self._held += n
            return True
        self._fail(503, "the ingest holds too many request bodies in memory; retry later")
        return False

    def _too_large(self):
        self._fail(413, "request body is larger than %d bytes" % (self.max_body_bytes,))

    def _inflated_too_large(self):
        self._fail(413, "inflated request body is larger than %d bytes"
                   % (self.max_inflated_bytes,))

    def hold(self):
        """
        Keep what arrives as it is until L{accept} or L{refuse}.
        """
        if self._pending is None and self.error is None and not self._discard:
            self._pending = []

    def accept(self):
        """
        The key is good: process what was held, and what comes next.
        """
        pending, self._pending = self._pending, None
        if not pending:
            return
        # The held bytes were taken from the budget as they are; process
        # them as if they arrived now (they are taken again as kept).
        size = sum(len(c) for c in pending)
        self._held -= size
        if self._budget is not None:
            self._budget.give(size)
        for chunk in pending:
            self._process(chunk)

    def refuse(self):
        """
        The key is not good (or cannot be checked): drop everything.
        """
        self._discard = True
        self._drop()

    @property
    def discarding(self):
        """
        Whether every byte from now on is counted and dropped.
        """
        return self._discard

    def write(self, data):
        """
        Take the next C{data} (L{bytes}) of the body as it arrives.
        """
        self.received += len(data)
        if self._metrics is not None:
            self._metrics.bytes_in.inc(len(data))
        if self.error is not None or self._discard:
            return
        if self.received > self.max_body_bytes:
            self._too_large()
            return
        if self._pending is not None:
            if self._take(len(data)):
                self._pending.append(data)
                self._pending_bytes += len(data)
                if self._pending_bytes >= HOLD_BYTES and self.on_hold_full is not None:
                    full, self.on_hold_full = self.on_hold_full, None
                    full()
            return
        self._process(data)

    def _process(self, data):
        if self.error is not None or self._discard:
            return
        if self._inflater is None:
            if self._take(len(data)):
                self._chunks.append(data)
            return
        try:
            self._inflate(data)
        except zlib.error as e:
            self._fail(400, "the gzip body is corrupt: %s" % (e,))

    def _inflate(self, data):
        while data:
            room = self.max_inflated_bytes - self.inflated
            out = self._inflater.decompress(data, room + 1)
            self.inflated += len(out)
            if self.inflated > self.max_inflated_bytes:
                self._inflated_too_large()
                return
            if out:
                if not self._take(len(out)):
                    return
                self._chunks.append(out)
            if self._inflater.eof:
                # Another gzip member may follow (concatenated gzip files).
                data = self._inflater.unused_data
                if data:
                    self._inflater = zlib.decompressobj(wbits=31)
            else:
                data = self._inflater.unconsumed_tail

    def body(self):
        """
        The complete (inflated) body, or raise the recorded L{BadRequest}.
        """
        if self.error is not None:
            raise self.error
        if self._inflater is not None and not self._inflater.eof:
            raise BadRequest(400, "the gzip body is truncated")
        return b"".join(self._chunks)

    # The parts of the file interface twisted.web.http.Request uses: the
    # body is read with L{body}, never through them.

    def tell(self):
        """
        @return: the bytes received so far (the file position of a body
            written to a file).
        """
        return self.received

    def seek(self, offset, whence=0):
        """
        Ignored: the body is not a file to rewind.
        """

    def read(self, size=-1):
        """
        @return: nothing (C{b""}): the body is had with L{body}.
        """
        return b""

    def close(self):
        """
        Forget the body and give its bytes back to the budget.
        """
        self._drop()
