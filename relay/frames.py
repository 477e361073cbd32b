# -*- test-case-name: tests.test_frames -*-
"""
The envelope of the wire protocol: encoding, the frames the daemon sends,
and the checks PROTOCOL.md asks for.
"""

import struct

import orjson

# The contract itself lives in relay.wire; these names are re-exported for
# the daemon's modules that import them from here.
from relay.wire import (  # noqa: F401 (re-exported)
    BROADCAST, DEFAULT_KIND, KINDS, KNOWN_FIELDS, MAX_DEPTH, MAX_TTL_MS, NAME_RE, envelope,
    ttl_problem, valid_agent_name)

_PREFIX = struct.Struct(">I")

# How much a DELIVER can outgrow the (re-encoded) SEND it comes from, at
# most, when the SEND left out every optional field: "v":1, (6), DELIVER
# for SEND (3), "id":"<12 hex>-<19 digits>", (41), "ts":<16 digits>, (22),
# "from":"<128>", (138), "to" growing from "*" to 128 characters (127) and
# ,"delivery":{"seq":<19 digits>,"session_id":"<32 hex>","originalTo":"*"}
# (104): 441.
DELIVER_OVERHEAD = 448


def frame(env):
    """
    One length-prefixed frame holding the envelope C{env}.
    """
    data = orjson.dumps(env)
    return _PREFIX.pack(len(data)) + data


def echo(value):
    """
    C{value} (an id or nonce a peer sent, which the answer repeats) if the
    daemon can write it back, else None: a value nested past what orjson
    writes would make the answer itself fail to encode.
    """
    if value is None or value.__class__ in (str, int, float, bool):
        return value
    try:
        # Two levels for the answer's envelope and payload.
        orjson.dumps([[value]])
    except orjson.JSONEncodeError:
        return None
    return value


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
    if to != BROADCAST and not valid_agent_name(to):
        return "invalid recipient name %r" % (to[:140],)
    payload = env.get("payload")
    if not isinstance(payload, dict):
        return "missing 'payload' object"
    if not isinstance(payload.get("body"), str):
        return "payload.body must be a string"
    kind = payload.get("kind", DEFAULT_KIND)
    if not isinstance(kind, str) or kind not in KINDS:
        return "unknown payload.kind %r (message, action, state or thinking)" % (str(kind)[:40],)
    topic = env.get("topic")
    if topic is not None and (not isinstance(topic, str) or not topic):
        return "topic must be a non-empty string"
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
        problem = ttl_problem(meta.get("ttl_ms"))
        if problem is not None:
            return "payload_meta.ttl_ms " + problem
    # Encode once, as the router, the store and every DELIVER will: a value
    # nested deeper than orjson writes (255 levels) is refused here, and the
    # size is that of what the daemon will send, not of what it was sent
    # (1e15 comes back as 1000000000000000.0).  About 0.4 us for a small
    # SEND, 1 ms per MiB.
    try:
        size = len(orjson.dumps(env))
    except orjson.JSONEncodeError as e:
        return ("message cannot be re-encoded (%s): at most %d nested arrays or objects, "
                "the envelope included" % (e, MAX_DEPTH))
    if size + DELIVER_OVERHEAD > max_frame_bytes:
        return "message too large: its DELIVER would exceed max_frame_bytes (%d)" % (max_frame_bytes,)
    return None
