# -*- test-case-name: tests.test_client_message,tests.test_client -*-
"""
A message as an agent receives it (one DELIVER frame).
"""


class Message:
    """
    One delivery. ``id`` is the daemon's message id (the same on a redelivery and
    for every recipient of a broadcast); ``sender`` the agent that sent it; ``to``
    this agent; ``original_to`` is ``"*"`` for a broadcast; ``envelope`` is the
    whole DELIVER frame, unknown fields included.
    """

    __slots__ = ("id", "sender", "to", "topic", "kind", "body", "data", "thread",
                 "seq", "session_id", "original_to", "meta", "ts", "envelope")

    def __init__(self, envelope):
        payload = envelope.get("payload") or {}
        # agent-relay puts ``delivery`` at the top of the envelope; tolerate it
        # inside the payload too.
        delivery = envelope.get("delivery") or payload.get("delivery") or {}
        self.envelope = envelope
        self.id = envelope.get("id")
        self.sender = envelope.get("from")
        self.to = envelope.get("to")
        self.topic = envelope.get("topic")
        self.ts = envelope.get("ts")
        self.kind = payload.get("kind", "message")
        self.body = payload.get("body")
        self.data = payload.get("data")
        self.thread = payload.get("thread")
        self.meta = envelope.get("payload_meta")
        self.seq = delivery.get("seq")
        self.session_id = delivery.get("session_id")
        self.original_to = delivery.get("originalTo")

    @property
    def is_broadcast(self):
        return self.original_to == "*"

    def as_dict(self):
        """The fields as a JSON-ready dict (what ``relay listen --json`` prints)."""
        return {
            "id": self.id, "from": self.sender, "to": self.to, "topic": self.topic,
            "kind": self.kind, "body": self.body, "data": self.data, "thread": self.thread,
            "seq": self.seq, "original_to": self.original_to, "meta": self.meta,
            "ts": self.ts,
        }

    def __repr__(self):
        return "<Message {} from {!r} to {!r} kind={} body={!r}>".format(
            self.id, self.sender, self.to, self.kind,
            self.body if not isinstance(self.body, str) or len(self.body) < 40
            else self.body[:37] + "...")
