# -*- test-case-name: tests.test_protocol -*-
"""
The envelope of the wire protocol: encoding, the frames the daemon sends,
and the checks PROTOCOL.md asks for.
"""

import re
import struct

import orjson

_PREFIX = struct.Struct(">I")

NAME_RE = re.compile(r"[A-Za-z0-9._\-@:]{1,128}\Z")
KINDS = frozenset(("message", "action", "state", "thinking"))

# Envelope fields the daemon understands; anything else is preserved.
KNOWN_FIELDS = frozenset(("v", "type", "id", "ts", "from", "to", "topic", "payload", "payload_meta"))

# How much a DELIVER can outgrow the (re-encoded) SEND it comes from, at
# most, when the SEND left out every optional field: "v":1, (6), DELIVER
# for SEND (3), "id":"<12 hex>-<19 digits>", (41), "ts":<16 digits>, (22),
# "from":"<128>", (138), "to" growing from "*" to 128 characters (127) and
# ,"delivery":{"seq":<19 digits>,"session_id":"<32 hex>","originalTo":"*"}
# (104): 441.
DELIVER_OVERHEAD = 448

# Re-encoding can grow JSON (orjson writes 1e15 back as 1000000000000000.0:
# at most 4x, for numbers in a list); below this fraction of the limit no
# SEND can reach it, so only larger ones are re-encoded to be measured.
REENCODE_GROWTH = 4


def frame(envelope):
    """
    One length-prefixed frame holding C{envelope}.
    """
    data = orjson.dumps(envelope)
    return _PREFIX.pack(len(data)) + data


def valid_agent_name(name):
    """
    A name an agent may register: 1-128 of letters, digits, C{._-@:}, not
    C{*}, not starting with C{_} (reserved for the daemon).
    """
    return (isinstance(name, str) and NAME_RE.match(name) is not None
            and not name.startswith("_"))


def envelope(type_, payload=None, **fields):
    env = {"v": 1, "type": type_}
    env.update(fields)
    if payload is not None:
        env["payload"] = payload
    return env


# The largest ttl_ms: the largest integer JSON peers (JavaScript) agree on;
# far larger values would also overflow the store's INTEGER columns.
MAX_TTL_MS = 2 ** 53 - 1


def check_send(env, max_frame_bytes, size):
    """
    The reason a SEND must be refused with C{NACK INVALID}, or None.

    Everything that reaches the store must be storable: a value SQLite
    cannot bind would fail its whole write batch again on every retry.
    """
    send_id = env.get("id")
    if send_id is not None and not isinstance(send_id, str):
        return "id must be a string"
    to = env.get("to")
    if not isinstance(to, str) or not to:
        return "missing 'to': an agent name or '*'"
    if to != "*" and not valid_agent_name(to):
        return "invalid recipient name %r" % (to[:140],)
    payload = env.get("payload")
    if not isinstance(payload, dict):
        return "missing 'payload' object"
    if not isinstance(payload.get("body"), str):
        return "payload.body must be a string"
    kind = payload.get("kind", "message")
    if kind not in KINDS:
        return "unknown payload.kind %r (message, action, state or thinking)" % (str(kind)[:40],)
    topic = env.get("topic")
    if topic is not None and not isinstance(topic, str):
        return "topic must be a string"
    data = payload.get("data")
    if data is not None and not isinstance(data, dict):
        return "payload.data must be an object"
    thread = payload.get("thread")
    if thread is not None and not isinstance(thread, str):
        return "payload.thread must be a string"
    meta = env.get("payload_meta")
    if meta is not None and not isinstance(meta, dict):
        return "payload_meta must be an object"
    if meta:
        ttl = meta.get("ttl_ms")
        if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int) or ttl <= 0
                                or ttl > MAX_TTL_MS):
            return "payload_meta.ttl_ms must be a positive integer up to %d" % (MAX_TTL_MS,)
    if size * REENCODE_GROWTH + DELIVER_OVERHEAD > max_frame_bytes:
        # Measure what the daemon will send, not what it was sent.
        size = len(orjson.dumps(env))
    if size + DELIVER_OVERHEAD > max_frame_bytes:
        return "message too large: its DELIVER would exceed max_frame_bytes (%d)" % (max_frame_bytes,)
    return None
