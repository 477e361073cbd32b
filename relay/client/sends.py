# -*- test-case-name: tests.test_client_sends -*-
"""
The SENDs of one L{relay.client.Client}: L{build_send} checks the
arguments of C{Client.send} and builds the envelope, and L{PendingSends}
keeps every SEND that still waits for the daemon's receipt (or for a
connection), in order.

A SEND is kept until its ACK (C{durable}) or until it is written (not
C{durable}); one written but not receipted when the connection dropped is
written again after the next WELCOME: never dropped silently.
"""

import collections

from twisted.internet import defer

from relay import wire
from relay.client.errors import ClientClosed, SendRefused, TooManyPending


def check_agent_name(name):
    """Raise ValueError with a one-line reason unless ``name`` may register."""
    problem = wire.name_problem(name)
    if problem is not None:
        raise ValueError("invalid agent name {!r}: {}".format(name, problem))


def build_send(to, body, kind="message", data=None, thread=None, topic=None, durable=True,
               ttl_ms=None, importance=None, reply_to=None, meta=None):
    """
    The payload and envelope fields of a SEND (a dict of keyword arguments
    for L{relay.client.protocol.envelope}, C{payload} included).

    @raise TypeError: for a body that is not a string, data not a dict.
    @raise ValueError: for an unknown kind or a bad recipient name.
    """
    if not isinstance(body, str):
        raise TypeError("body must be a string, not {}".format(type(body).__name__))
    if kind not in wire.KINDS:
        raise ValueError("kind must be one of {}, not {!r}".format(", ".join(wire.KINDS), kind))
    if to != wire.BROADCAST:
        try:
            check_agent_name(to)
        except ValueError as e:
            raise ValueError(str(e).replace("agent name", "recipient"))
    if data is not None and not isinstance(data, dict):
        raise TypeError("data must be a dict")
    payload = {"kind": kind, "body": body}
    if data is not None:
        payload["data"] = data
    if thread is not None:
        payload["thread"] = thread
    fields = {"to": to}
    if topic is not None:
        fields["topic"] = topic
    payload_meta = dict(meta or {})
    if durable:
        payload_meta["requires_ack"] = True
    if ttl_ms is not None:
        payload_meta["ttl_ms"] = ttl_ms
    if importance is not None:
        payload_meta["importance"] = importance
    if reply_to is not None:
        payload_meta["replyTo"] = reply_to
    if payload_meta:
        fields["payload_meta"] = payload_meta
    fields["payload"] = payload
    return fields


class PendingSend:
    """
    One SEND waiting: its envelope, the Deferred C{send()} returned,
    whether it waits for a receipt, whether it is written on the current
    connection.
    """

    __slots__ = ("env", "deferred", "durable", "written")

    def __init__(self, env, deferred, durable):
        self.env = env
        self.deferred = deferred
        self.durable = durable
        self.written = False


class PendingSends:
    """
    The SENDs waiting, in send order, at most C{max_pending}.
    """

    def __init__(self, max_pending=10000):
        self.max_pending = max_pending
        self._pending = collections.OrderedDict()    # SEND id -> PendingSend

    def __len__(self):
        return len(self._pending)

    def __iter__(self):
        """The waiting SENDs, oldest first (a copy: writing may settle some)."""
        return iter(list(self._pending.values()))

    def check_room(self):
        """
        @raise TooManyPending: when C{max_pending} SENDs already wait
            (memory stays bounded while the daemon is away).
        """
        if len(self._pending) >= self.max_pending:
            raise TooManyPending(
                "{} messages already wait for the daemon's receipt (max_pending); "
                "try again later".format(len(self._pending)))

    def add(self, env, durable):
        """
        Keep the SEND C{env}; the L{PendingSend} holding the Deferred that
        fires with its id.  Cancelling that Deferred (e.g. C{addTimeout})
        forgets the SEND: it is not re-sent after that.

        @raise TooManyPending: see L{check_room}.
        """
        self.check_room()
        send_id = env["id"]
        pending = PendingSend(env, defer.Deferred(lambda d: self._pending.pop(send_id, None)),
                              durable)
        self._pending[send_id] = pending
        return pending

    def written(self, pending):
        """
        C{pending} was written: a SEND that wants no receipt is done.
        """
        pending.written = True
        if not pending.durable:
            del self._pending[pending.env["id"]]
            pending.deferred.callback(pending.env["id"])

    def unwritten(self):
        """
        The connection dropped: every SEND waits to be written again.
        """
        for pending in self._pending.values():
            pending.written = False

    def acked(self, send_id):
        """
        The daemon's receipt for C{send_id}: its Deferred fires with the id.
        """
        pending = self._pending.pop(send_id, None)
        if pending is not None:
            pending.deferred.callback(pending.env["id"])

    def nacked(self, payload):
        """
        A NACK: the SEND it names fails with L{SendRefused}.  Whether the
        NACK named a SEND that waited.
        """
        pending = self._pending.pop(payload.get("ack_id"), None)
        if pending is None:
            return False
        pending.deferred.errback(SendRefused(
            payload.get("ack_id"), payload.get("code"), payload.get("message"),
            payload.get("retry_after_ms")))
        return True

    def fail_all(self, error):
        """
        The client is closed: every waiting SEND fails with a
        L{ClientClosed} saying C{error} and which message it was.
        """
        pending, self._pending = self._pending, collections.OrderedDict()
        for item in pending.values():
            item.deferred.errback(ClientClosed(
                "{}; message {} was not confirmed".format(error, item.env["id"])))
