# -*- test-case-name: tests.test_client_inbox -*-
"""
L{Inbox}: the deliveries of one L{relay.client.Client} on their way to the
application.

- A DELIVER id seen before is a redelivery: it is not passed on again, and
  is ACKed again if it was handled (the daemon resends until it hears an
  ACK).
- With an C{on_message} callback, each message goes to it and is ACKed when
  the callback returns (or its Deferred fires); a callback that fails is
  logged and its message is not ACKed, so the daemon delivers it again
  after its ack timeout.
- Without one, messages wait in a queue read by L{Inbox.next_message}; the
  ACK goes out when a message is handed out.  At C{queue_high} waiting
  messages the connection stops reading (the daemon sees backpressure), and
  reads again below half of it.
"""

import collections

from twisted.internet import defer
from twisted.logger import Logger

from relay.client.errors import ClientClosed

RUNNING, DONE = "running", "done"


class Inbox:
    """
    De-duplication, the callback or queue, and the queue's flow control.

    @param ack: called with a L{relay.client.message.Message} to ACK.
    @param pause: called (no arguments) when the queue reaches its high mark.
    @param resume: called when it drains below half of it again.
    @ivar paused: whether the connection should not be read now (a new
        connection is paused at once while this holds).
    @ivar duplicates: redeliveries not passed on, so far.
    """

    log = Logger()

    def __init__(self, ack, pause, resume, on_message=None, dedupe_size=10000,
                 queue_high=1000, name=None):
        self._ack = ack
        self._pause = pause
        self._resume = resume
        self._on_message = on_message
        self._dedupe_size = dedupe_size
        self._queue_high = queue_high
        self._name = name
        self._seen = collections.OrderedDict()       # DELIVER id -> RUNNING | DONE
        self._queue = collections.deque()
        self._getters = collections.deque()
        self.paused = False
        self.duplicates = 0

    def __len__(self):
        """How many messages wait in the queue."""
        return len(self._queue)

    def deliver(self, message):
        """
        Take one delivered L{relay.client.message.Message}.
        """
        if not isinstance(message.id, str):
            self.log.warn("{agent}: DELIVER without an id ignored", agent=self._name)
            return
        seen = self._seen.get(message.id)
        if seen is not None:
            self.duplicates += 1
            if seen == DONE:
                self._acked(message)
            return
        self._seen[message.id] = RUNNING
        while len(self._seen) > self._dedupe_size:
            self._seen.popitem(last=False)
        if self._on_message is not None:
            d = defer.maybeDeferred(self._on_message, message)
            d.addCallbacks(lambda _: self._acked(message),
                           lambda f: self._handler_failed(message, f))
            return
        if self._getters:
            self._getters.popleft().callback(message)
            self._acked(message)
            return
        self._queue.append(message)
        if len(self._queue) >= self._queue_high and not self.paused:
            self.paused = True
            self._pause()

    def _handler_failed(self, message, failure):
        self.log.failure("{agent}: on_message failed for {id}; not ACKed, it will come back",
                         failure, agent=self._name, id=message.id)
        self._seen.pop(message.id, None)

    def _acked(self, message):
        if message.id in self._seen:
            self._seen[message.id] = DONE
        self._ack(message)

    def next_message(self, closed_error=None):
        """
        A Deferred firing with the next message (it is ACKed then).
        Cancelling the Deferred gives up the wait: a message arriving later
        stays queued for the next call.  With the queue empty and
        C{closed_error} given (the client is closed), fails with it.
        """
        if self._queue:
            message = self._queue.popleft()
            self._acked(message)
            if self.paused and len(self._queue) <= self._queue_high // 2:
                self.paused = False
                self._resume()
            return defer.succeed(message)
        if closed_error is not None:
            return defer.fail(closed_error)
        d = defer.Deferred(self._getters.remove)
        self._getters.append(d)
        return d

    def fail_waiting(self, error):
        """
        Fail every L{next_message} still waiting with a L{ClientClosed}
        saying C{error}: the client is closed.
        """
        getters, self._getters = self._getters, collections.deque()
        for getter in getters:
            getter.errback(ClientClosed(str(error)))
