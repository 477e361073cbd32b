# -*- test-case-name: tests.test_client_blocking -*-
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

Deliveries are ACKed as soon as they are in this process's inbox (a
``queue.Queue`` that ``receive()`` reads), so a message read by ``receive()``
will not come again. Errors are the same as relay.client's (``ConnectFailed``,
``SendRefused``...), raised in the calling thread. Do not call these methods
from the reactor thread itself.
"""

import queue
import threading

from twisted.internet import threads

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
    arguments go into HELLO. Connects in the constructor; raises on failure.
    """

    def __init__(self, agent_name, endpoint=None, timeout=10.0, reconnect=True,
                 **hello_fields):
        self._reactor = _reactor()
        self._inbox = queue.Queue()
        self.endpoint = endpoint or default_endpoint()
        self._client = self._call(self._start, agent_name, self.endpoint, timeout,
                                  reconnect, hello_fields)

    def _start(self, agent_name, endpoint, timeout, reconnect, hello_fields):
        client = Client(self._reactor, endpoint, agent_name, on_message=self._inbox.put,
                        timeout=timeout, reconnect=reconnect, hello_fields=hello_fields)
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
        """The next delivered Message, or None after ``timeout`` seconds."""
        try:
            return self._inbox.get(timeout=timeout)
        except queue.Empty:
            return None

    def close(self):
        """Say BYE and close (idempotent)."""
        return self._call(self._client.close)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
