# -*- test-case-name: tests.test_client -*-
"""
``Client``: one agent's connection to the relay daemon, kept up across daemon
restarts.

- ``start()`` connects, says HELLO and fires with the client after WELCOME; the
  first attempt fails fast with a one-line error (``ConnectFailed``,
  ``HandshakeRefused``).
- After that, a lost connection is retried with exponential backoff
  (``twisted.application.internet.backoffPolicy``, on the injected reactor); each
  new connection says HELLO again with the resume token of the last WELCOME and
  re-sends SUBSCRIBE for every topic.
- ``send()`` returns a Deferred that fires with the SEND's own id (the one this
  client generated) when the daemon's receipt arrives (``durable=True``), or as
  soon as the frame is written (``durable=False``); a NACK fails it with
  ``SendRefused``. A SEND made while disconnected, or written but not yet
  receipted when the connection dropped, waits and is written again after the
  next WELCOME, in order: never dropped silently. (A SEND whose receipt was lost
  with the connection may thus be stored twice; receivers de-duplicate by the
  DELIVER id, which differs, so give such messages your own idempotency key in
  ``data`` if it matters.)
- Deliveries go to ``on_message(message)`` if given, else to a queue read with
  ``next_message()`` or ``async for message in client``. The ACK is sent after
  the callback returns (or its Deferred fires), or when ``next_message()`` hands
  the message out. A callback that fails is logged and its message is not ACKed,
  so the daemon delivers it again after its ack timeout. Redeliveries of an id
  already handled are ACKed again and not passed on.
- Why not ``ClientService``: the HELLO/WELCOME handshake would be its
  ``prepareConnection``, and in Twisted 26.10 a connection lost while that is
  pending (the daemon restarting or refusing the HELLO) raises automat's
  ``NoTransition: no transition for _clientDisconnected in ... 'Connecting'``
  and the service never retries. The loop here is small and uses the same
  ``backoffPolicy``.
- A fatal ERROR on an active connection (the daemon's way of saying a newer
  connection took this agent name) closes the client instead of reconnecting:
  two clients with one name would otherwise throw each other out forever.
"""

import random

from twisted.application.internet import backoffPolicy
from twisted.internet import defer
from twisted.internet.endpoints import clientFromString
from twisted.logger import Logger

from relay import wire
from relay.client.connecting import (
    ACTIVE, CLOSED, CLOSING, HANDSHAKING, IDLE, Connecting)
from relay.client.errors import ClientClosed, ConnectFailed, TooManyPending
from relay.client.inbox import Inbox
from relay.client.message import Message
from relay.client.protocol import envelope
from relay.client.sends import PendingSends, build_send, check_agent_name


class Client(Connecting):
    """One agent's connection to the daemon; see the module docstring."""

    log = Logger()

    def __init__(self, reactor, endpoint_string, agent_name, on_message=None,
                 reconnect=True, timeout=10.0, retry_policy=None, max_attempts=None,
                 dedupe_size=10000, queue_high=1000, hello_fields=None, max_pending=10000,
                 trust_uid=None, token=None):
        check_agent_name(agent_name)
        if token is not None and (not isinstance(token, str) or not token):
            raise ValueError("token must be a non-empty string")
        self._token = token
        try:
            self._endpoint = clientFromString(reactor, endpoint_string)
        except (ValueError, TypeError, KeyError) as e:
            raise ConnectFailed("bad endpoint {!r}: {}".format(endpoint_string, e), "endpoint")
        self._reactor = reactor
        self.endpoint_string = endpoint_string
        self.agent_name = agent_name
        self._hello_fields = dict(hello_fields or {})
        self._reconnect = reconnect
        self._timeout = timeout
        self._policy = retry_policy or backoffPolicy(
            initialDelay=0.1, maxDelay=30.0, factor=2.0, jitter=lambda: random.random() * 0.1)
        self._max_attempts = max_attempts
        self._trust_uid = trust_uid

        self.state = IDLE
        self.session_id = None
        self.resume_token = None
        self.server = {}
        self.connections = 0        # WELCOMEs received so far
        self.busy_frames = 0
        self.last_busy = None       # payload of the last BUSY frame

        self._proto = None
        self._attempt = 0
        self._attempt_d = None
        self._timeout_call = None
        self._timed_out = False
        self._retry_call = None
        self._first = None
        self._close_waiters = []
        self._closed_watchers = []
        self._fatal = None
        self.close_reason = None    # the ClientClosed error once CLOSED
        self._pending = PendingSends(max_pending)
        self._inbox = Inbox(self._ack, self._pause_reading, self._resume_reading,
                            on_message=on_message, dedupe_size=dedupe_size,
                            queue_high=queue_high, name=agent_name)
        self._topics = {}                            # ordered set
        self._status_waiters = {}

    @property
    def duplicates(self):
        """Redeliveries not passed on, so far."""
        return self._inbox.duplicates

    @property
    def queued(self):
        """Messages waiting to be read with ``next_message()``."""
        return len(self._inbox)

    # -- connected ---------------------------------------------------------

    def _welcome(self, payload):
        self._cancel_timeout()
        self.state = ACTIVE
        self._attempt = 0
        self.connections += 1
        self.session_id = payload.get("session_id")
        self.resume_token = payload.get("resume_token") or self.resume_token
        self.server = payload.get("server") or {}
        proto = self._proto
        for topic in self._topics:
            proto.send_frame(wire.SUBSCRIBE, {}, topic=topic)
        for pending in self._pending:
            self._write_send(pending)
        if self._inbox.paused:
            proto.pauseProducing()
        if self.connections > 1:
            self.log.info("{agent}: reconnected (session {session}), {n} SENDs re-sent",
                          agent=self.agent_name, session=self.session_id,
                          n=len(self._pending))
        first = self._first
        if not first.called:
            first.callback(self)

    # -- frames -------------------------------------------------------------

    def frame_received(self, proto, env):
        if proto is not self._proto:
            return
        kind = env["type"]
        payload = env.get("payload")
        if not isinstance(payload, dict):
            payload = {}
        if kind == wire.DELIVER:
            self._inbox.deliver(Message(env))
        elif kind == wire.ACK:
            self._pending.acked(payload.get("ack_id"))
        elif kind == wire.NACK:
            if not self._pending.nacked(payload):
                self.log.warn("{agent}: NACK for an unknown SEND {id}: {code} {message}",
                              agent=self.agent_name, id=payload.get("ack_id"),
                              code=payload.get("code"), message=payload.get("message"))
        elif kind == wire.WELCOME:
            if self.state == HANDSHAKING:
                self._welcome(payload)
        elif kind == wire.STATUS_REPLY:
            waiter = self._status_waiters.pop(env.get("id"), None)
            if waiter is not None:
                waiter.callback(payload)
        elif kind == wire.BUSY:
            self.busy_frames += 1
            self.last_busy = payload
            self.log.debug("{agent}: daemon busy, retry after {ms} ms (queue {depth})",
                           agent=self.agent_name, ms=payload.get("retry_after_ms"),
                           depth=payload.get("queue_depth"))
        elif kind == wire.ERROR:
            self._error_frame(proto, payload)
        elif kind in (wire.PONG, wire.BYE):
            pass
        else:
            self.log.debug("{agent}: ignoring a {type} frame", agent=self.agent_name, type=kind)

    def connection_lost(self, proto, reason):
        if proto is not self._proto:
            return
        self._proto = None
        self._cancel_timeout()
        for waiter in self._status_waiters.values():
            waiter.errback(ClientClosed("the connection closed before STATUS_REPLY"))
        self._status_waiters.clear()
        self._pending.unwritten()
        if self.state in (CLOSING, CLOSED):
            self._finish(ClientClosed("the client was closed"))
            return
        if self.state == HANDSHAKING:
            if self._timed_out:
                error = ConnectFailed("timed out after {}s waiting for WELCOME from {}".format(
                    self._timeout, self.endpoint_string), "timeout")
            else:
                error = ConnectFailed("the daemon closed the connection during HELLO ({})"
                                      .format(self.endpoint_string), "closed")
            self._attempt_failed(error)
            return
        if self.state == ACTIVE and self._fatal:
            self.log.error("{agent}: {why}; not reconnecting", agent=self.agent_name,
                           why=self._fatal)
            self._finish(ClientClosed(self._fatal))
            return
        if self.state == ACTIVE:
            self.log.info("{agent}: connection to the daemon lost ({why}); {n} SENDs wait",
                          agent=self.agent_name, why=reason.getErrorMessage(),
                          n=len(self._pending))
            self._attempt_failed(ConnectFailed("connection lost", "closed"))

    # -- sending ------------------------------------------------------------

    def send(self, to, body, *, kind="message", data=None, thread=None, topic=None,
             durable=True, ttl_ms=None, importance=None, reply_to=None, meta=None):
        """
        Send ``body`` to agent ``to`` (``"*"`` broadcasts). Returns a Deferred
        firing with the SEND id once the daemon's receipt arrives (``durable``),
        or once written (not ``durable``); failing with ``SendRefused`` on NACK or
        ``ClientClosed`` if the client is closed first; failing at once with
        ``TooManyPending`` when ``max_pending`` SENDs already wait (memory stays
        bounded while the daemon is away).
        """
        if self.state == CLOSED or self.state == CLOSING:
            return defer.fail(ClientClosed("the client is closed"))
        try:
            self._pending.check_room()
            fields = build_send(to, body, kind=kind, data=data, thread=thread, topic=topic,
                                durable=durable, ttl_ms=ttl_ms, importance=importance,
                                reply_to=reply_to, meta=meta)
        except (TooManyPending, TypeError, ValueError) as e:
            return defer.fail(e)
        payload = fields.pop("payload")
        env = envelope(wire.SEND, self._reactor, payload, **fields)
        pending = self._pending.add(env, durable)
        if self.state == ACTIVE:
            self._write_send(pending)
        return pending.deferred

    def broadcast(self, body, topic=None, **kwargs):
        """Send to every connected agent, or to the subscribers of ``topic``."""
        return self.send("*", body, topic=topic, **kwargs)

    def _write_send(self, pending):
        env = pending.env
        env["ts"] = int(self._reactor.seconds() * 1000)
        self._proto.send_envelope(env)
        self._pending.written(pending)

    @property
    def pending_sends(self):
        """How many SENDs still wait for a receipt (or for a connection)."""
        return len(self._pending)

    def subscribe(self, topic):
        """Join ``topic``; kept across reconnects."""
        if not isinstance(topic, str) or not topic:
            raise ValueError("topic must be a non-empty string")
        self._topics[topic] = True
        if self.state == ACTIVE:
            self._proto.send_frame(wire.SUBSCRIBE, {}, topic=topic)

    def unsubscribe(self, topic):
        """Leave ``topic``."""
        self._topics.pop(topic, None)
        if self.state == ACTIVE:
            self._proto.send_frame(wire.UNSUBSCRIBE, {}, topic=topic)

    @property
    def topics(self):
        return list(self._topics)

    def status(self):
        """Ask the daemon for its STATUS_REPLY payload (a relay extension)."""
        if self.state != ACTIVE:
            return defer.fail(ClientClosed("not connected"))
        d = defer.Deferred()
        env = self._proto.send_frame(wire.STATUS)
        self._status_waiters[env["id"]] = d
        return d

    # -- receiving ----------------------------------------------------------

    def _pause_reading(self):
        if self._proto is not None:
            self._proto.pauseProducing()

    def _resume_reading(self):
        if self._proto is not None:
            self._proto.resumeProducing()

    def _ack(self, message):
        if self.state == ACTIVE and self._proto is not None:
            self._proto.send_frame(wire.ACK, {"ack_id": message.id, "seq": message.seq})

    def next_message(self):
        """
        A Deferred firing with the next ``Message`` (it is ACKed then).
        Cancelling the Deferred gives up the wait: a message arriving later
        stays queued for the next call.
        """
        closed = ClientClosed("the client is closed") if self.state == CLOSED else None
        return self._inbox.next_message(closed)

    def __aiter__(self):
        return self

    async def __anext__(self):
        try:
            return await self.next_message()
        except ClientClosed:
            raise StopAsyncIteration

    # -- closing ------------------------------------------------------------

    def close(self):
        """
        Say BYE and close; fires when the connection is gone. SENDs still
        waiting for a receipt fail with ``ClientClosed``.
        """
        if self.state == CLOSED:
            return defer.succeed(None)
        d = defer.Deferred()
        self._close_waiters.append(d)
        if self.state == CLOSING:
            return d
        previous = self.state
        self.state = CLOSING
        self._cancel_timeout()
        if self._retry_call is not None and self._retry_call.active():
            self._retry_call.cancel()
        self._retry_call = None
        if self._proto is not None:
            if previous == ACTIVE:
                self._proto.send_frame(wire.BYE)
            self._proto.transport.loseConnection()
        elif self._attempt_d is not None:
            self._attempt_d.cancel()
            self._finish(ClientClosed("the client was closed"))
        else:
            self._finish(ClientClosed("the client was closed"))
        return d

    def when_closed(self):
        """
        A Deferred firing with the ``ClientClosed`` error (as its result, not a
        failure) once this client is closed for good: by ``close()``, by a fatal
        ERROR such as a newer connection taking the name, or after giving up
        reconnecting.
        """
        if self.state == CLOSED:
            return defer.succeed(self.close_reason)
        d = defer.Deferred()
        self._closed_watchers.append(d)
        return d

    def _finish(self, error, first_error=None):
        """
        Become CLOSED; fail whatever still waits with ``error`` (the first
        connection's Deferred with ``first_error`` if given).
        """
        self.state = CLOSED
        self.close_reason = error
        self._cancel_timeout()
        self._pending.fail_all(error)
        self._inbox.fail_waiting(error)
        waiters, self._close_waiters = self._close_waiters, []
        for waiter in waiters:
            waiter.callback(None)
        watchers, self._closed_watchers = self._closed_watchers, []
        for watcher in watchers:
            watcher.callback(error)
        first = self._first
        if first is not None and not first.called:
            # The first connection failed, or close() came before WELCOME.
            first.errback(first_error or ClientClosed(str(error)))


def connect(reactor, endpoint_string, agent_name, *, on_message=None, reconnect=True,
            timeout=10.0, retry_policy=None, max_attempts=None, max_pending=10000,
            trust_uid=None, token=None, **hello_fields):
    """
    Connect to the daemon at ``endpoint_string`` (any Twisted client endpoint,
    e.g. ``unix:/tmp/agent-relay.sock``) as ``agent_name``. Extra keyword
    arguments go into the HELLO payload (``cli``, ``program``, ``model``,
    ``task``, ``displayName``...). Returns a Deferred firing with a connected
    ``Client`` after WELCOME, or failing with ``ConnectFailed`` (refused, missing
    socket, permission denied, timeout, bad endpoint, or ``reason`` ``untrusted``:
    on a Unix socket the daemon runs as another uid than ``trust_uid``, by
    default our own), ``HandshakeRefused`` (ERROR frame, e.g. ``UNAUTHORIZED``
    for a wrong ``token``) or ``ValueError`` (bad agent name). ``token`` is sent
    as the HELLO's ``payload.auth.token`` for a daemon run with ``--auth``.
    """
    try:
        client = Client(reactor, endpoint_string, agent_name, on_message=on_message,
                        reconnect=reconnect, timeout=timeout, retry_policy=retry_policy,
                        max_attempts=max_attempts, hello_fields=hello_fields,
                        max_pending=max_pending, trust_uid=trust_uid, token=token)
    except (ValueError, ConnectFailed) as e:
        return defer.fail(e)
    return client.start()
