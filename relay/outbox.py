# -*- test-case-name: tests.test_outbox -*-
"""
The per-connection write queue: a streaming producer registered on the
connection's transport.

Twisted calls L{Outbox.pauseProducing} when the transport's buffer is full
and L{Outbox.resumeProducing} when it has drained; nothing is written while
paused.  Control frames (receipts, PING, errors) go before deliveries.
Deliveries are also held back while C{window} of them are written and not
yet acknowledged, so a slow reader keeps at most a window's worth in its
socket buffers and the rest here, where the water marks see it.
"""

from collections import deque

from zope.interface import implementer
from twisted.internet.interfaces import IPushProducer


@implementer(IPushProducer)
class Outbox:
    """
    @ivar backpressured: True from the moment the queue reaches C{high}
        frames until it falls back to C{low}.
    """

    def __init__(self, transport, high=1500, low=500, maximum=2000, window=1000,
                 on_write=None, on_backpressure=None, control_max=4 * 1024 * 1024,
                 on_control_full=None):
        self.transport = transport
        self.high = high
        self.low = low
        self.maximum = maximum
        self.window = window
        self.on_write = on_write
        self.on_backpressure = on_backpressure
        self.control = deque()
        # Control frames (receipts, NACKs, PONGs, PINGs, ERRORs, STATUS
        # replies, redeliveries) have no count limit of their own: their
        # bytes do.  Above control_max, on_control_full(True) (the
        # connection stops reading a peer that does not read us); at half
        # of it again, on_control_full(False).
        self.control_bytes = 0
        self.control_max = control_max
        self.control_full = False
        self.on_control_full = on_control_full
        self.frames = deque()
        self.unacked = 0
        self.paused = False
        self.closed = False
        self.backpressured = False
        self.written = 0
        # Backpressure wiring: this queue is the producer for the
        # connection's transport, so Twisted tells it when the peer's socket
        # is full, and it stops writing until told to resume.
        transport.registerProducer(self, True)

    def depth(self):
        return len(self.frames) + len(self.control)

    def full(self):
        """
        True when the queue holds C{maximum} deliveries: further ones must
        wait in the store.
        """
        return len(self.frames) >= self.maximum

    def idle(self):
        return not self.paused and not self.frames and not self.control

    def push_control(self, data):
        if self.closed:
            return
        if not self.paused and not self.control:
            self.transport.write(data)
            self.written += 1
        else:
            self.control.append(data)
            self.control_bytes += len(data)
            if not self.control_full and self.control_bytes > self.control_max:
                self.control_full = True
                if self.on_control_full is not None:
                    self.on_control_full(True)
            self._marks()

    def push(self, data, delivery):
        """
        Queue a DELIVER frame; C{on_write(delivery)} runs when it is handed
        to the transport.
        """
        if self.closed:
            return
        if not self.paused and not self.frames and not self.control and self.unacked < self.window:
            self.unacked += 1
            self.written += 1
            self.transport.write(data)
            self.on_write(delivery)
        else:
            self.frames.append((data, delivery))
            self._marks()

    def acked(self, n=1):
        """
        C{n} written deliveries are settled: room in the window.
        """
        self.unacked = max(0, self.unacked - n)
        if self.frames and not self.paused:
            self._pump()

    def _pump(self):
        control = self.control
        frames = self.frames
        write = self.transport.write
        while not self.paused and not self.closed:
            if control:
                data = control.popleft()
                self.control_bytes -= len(data)
                write(data)
            elif frames and self.unacked < self.window:
                data, delivery = frames.popleft()
                self.unacked += 1
                write(data)
                self.on_write(delivery)
            else:
                break
            self.written += 1
        if self.control_full and self.control_bytes <= self.control_max // 2:
            self.control_full = False
            if self.on_control_full is not None:
                self.on_control_full(False)
        self._marks()

    def _marks(self):
        depth = len(self.frames) + len(self.control)
        if not self.backpressured:
            if depth >= self.high:
                self.backpressured = True
                if self.on_backpressure is not None:
                    self.on_backpressure(self, True)
        elif depth <= self.low:
            self.backpressured = False
            if self.on_backpressure is not None:
                self.on_backpressure(self, False)

    # -- IPushProducer -----------------------------------------------------

    def pauseProducing(self):
        self.paused = True

    def resumeProducing(self):
        self.paused = False
        self._pump()

    def stopProducing(self):
        """
        The connection is gone.  Queued deliveries need no saving: each is
        already in the store as pending and goes out again on reconnect.
        """
        self.paused = True
        self.closed = True
        self.control.clear()
        self.control_bytes = 0
        self.frames.clear()

    def close(self):
        """
        Stop producing and unregister from the transport (before a close).
        """
        if not self.closed:
            self.stopProducing()
            try:
                self.transport.unregisterProducer()
            except Exception:
                pass
