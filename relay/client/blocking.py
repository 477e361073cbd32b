# -*- test-case-name: tests.e2e.test_client_blocking -*-
"""
A blocking facade over relay.client for plain scripts that do not use Twisted.

The reactor runs in a background (daemon) thread, started on first use; every
call is handed to it with ``twisted.internet.threads.blockingCallFromThread`` and
waits for the result::

    from relay.client.blocking import BlockingClient

    with BlockingClient("alice") as alice:          # default socket, or endpoint=
        alice.send("bob", "hello")                   # returns once stored (receipt)
        message = alice.receive(timeout=5)           # a Message, or None
        if message is not None:
            print(message.sender, message.body)

A delivery is ACKed when ``receive()`` returns it, not before: one that was
delivered to this process but not received when it exits is delivered again
to the next connection of this agent. The deliveries waiting for
``receive()`` are bounded: the daemon writes at most ``max_inflight`` (256,
said in HELLO) unACKed deliveries, and at ``max_queue`` the client stops
reading the socket, so the daemon holds the rest and slows their senders.
Errors are the same as relay.client's (``ConnectFailed``, ``SendRefused``...),
raised in the calling thread. Do not call these methods from the reactor
thread itself.
"""

import threading

from twisted.internet import defer, threads

from relay.client.client import Client
from relay.client import default_endpoint

_lock = threading.Lock()
_thread = None


def _reactor():
    """The global reactor, running in a daemon thread unless it already runs."""
    global _thread
    from twisted.internet import reactor
    with _lock:
        if not reactor.running and _thread is None:
            started = threading.Event()
            reactor.callWhenRunning(started.set)
            _thread = threading.Thread(
                target=reactor.run, kwargs={"installSignalHandlers": False},
                name="relay-client-reactor", daemon=True)
            _thread.start()
            started.wait(10)
    return reactor


class BlockingClient:
    """
    One agent connection for blocking code. ``endpoint`` defaults to
    ``unix:$RELAY_SOCKET`` or ``unix:/tmp/agent-relay.sock``; extra keyword
    arguments go into HELLO; ``token`` authenticates it to a daemon run with
    ``--auth``. Connects in the constructor; raises on failure.
    """

    def __init__(self, agent_name, endpoint=None, timeout=10.0, reconnect=True,
                 max_queue=256, trust_uid=None, token=None, **hello_fields):
        if max_queue < 1:
            raise ValueError("max_queue must be at least 1, not {!r}".format(max_queue))
        self._reactor = _reactor()
        self.endpoint = endpoint or default_endpoint()
        self._client = self._call(self._start, agent_name, self.endpoint, timeout,
                                  reconnect, max_queue, trust_uid, token, hello_fields)

    def _start(self, agent_name, endpoint, timeout, reconnect, max_queue, trust_uid, token,
               hello_fields):
        # No on_message: deliveries wait in the Client's own queue, unACKed,
        # until next_message() hands them out (and ACKs them).
        client = Client(self._reactor, endpoint, agent_name, timeout=timeout,
                        reconnect=reconnect, queue_high=max_queue, trust_uid=trust_uid,
                        token=token, hello_fields=hello_fields)
        return client.start()

    def _call(self, f, *args, **kwargs):
        return threads.blockingCallFromThread(self._reactor, f, *args, **kwargs)

    @property
    def agent_name(self):
        return self._client.agent_name

    def send(self, to, body, **kwargs):
        """Send and wait for the receipt; returns the SEND id (see Client.send)."""
        return self._call(self._client.send, to, body, **kwargs)

    def broadcast(self, body, topic=None, **kwargs):
        return self._call(self._client.broadcast, body, topic=topic, **kwargs)

    def subscribe(self, topic):
        return self._call(self._client.subscribe, topic)

    def unsubscribe(self, topic):
        return self._call(self._client.unsubscribe, topic)

    def status(self):
        """The daemon's STATUS_REPLY payload."""
        return self._call(self._client.status)

    def receive(self, timeout=None):
        """
        The next delivered Message (ACKed now), or None after ``timeout``
        seconds; raises ``ClientClosed`` once the client is closed and
        nothing is left to receive.
        """
        return self._call(self._receive, timeout)

    def _receive(self, timeout):
        d = self._client.next_message()
        if timeout is None or d.called:
            return d
        # On timeout the wait is cancelled: a later delivery stays queued
        # (unACKed) for the next receive().
        d.addTimeout(timeout, self._reactor)
        d.addErrback(lambda f: f.trap(defer.TimeoutError) and None)
        return d

    def close(self):
        """Say BYE and close (idempotent)."""
        return self._call(self._client.close)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
