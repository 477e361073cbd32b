# -*- test-case-name: tests.test_delivery -*-
"""
What a delivery is in memory, and the one place a DELIVER frame is built
(live from a SEND, or replayed from a stored row: L{relay.replay}).
"""

import orjson


class Delivery:
    """
    A delivery the daemon holds in memory: queued in an outbox or written
    and waiting for its ACK.
    """

    __slots__ = ("seq", "id", "recipient", "data", "handle", "attempts", "sent_at", "expires_at")

    def __init__(self, seq, id, recipient, data, handle, attempts, expires_at):
        self.seq = seq
        self.id = id
        self.recipient = recipient
        self.data = data
        self.handle = handle
        self.attempts = attempts
        self.sent_at = 0.0
        self.expires_at = expires_at


def deliver_base(mid, ts, sender, topic, payload, meta, extra):
    """
    The part of a DELIVER every recipient of one message shares.

    @param payload: the SEND's payload (a dict).
    @param meta: its payload_meta (a dict) or None.
    @param extra: its unknown top-level fields (a dict) or None: carried
        along, never over the envelope's own fields.
    """
    base = {"v": 1, "type": "DELIVER", "id": mid, "ts": ts, "from": sender}
    if extra:
        base = dict(extra, **base)
    if topic is not None:
        base["topic"] = topic
    base["payload"] = payload
    if meta is not None:
        base["payload_meta"] = meta
    return base


def deliver_stored(mid, ts, sender, topic, payload, meta, extra):
    """
    L{deliver_base} from a stored row's text columns (payload, meta and
    extra as JSON text; meta and extra may be None).
    """
    return deliver_base(mid, ts, sender, topic, orjson.loads(payload),
                        orjson.loads(meta) if meta is not None else None,
                        orjson.loads(extra) if extra else None)


def deliver_to(base, recipient, stream_seq, session_id, broadcast):
    """
    The DELIVER envelope of C{base} for one recipient.

    @param broadcast: the SEND was to C{"*"} (the recipient is told so in
        C{delivery.originalTo}).
    """
    info = {"seq": stream_seq, "session_id": session_id}
    if broadcast:
        info["originalTo"] = "*"
    d = dict(base)
    d["to"] = recipient
    d["delivery"] = info
    return d
