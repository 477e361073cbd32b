# -*- test-case-name: tests.test_frames -*-
"""
The envelope of the wire protocol: encoding, the frames the daemon sends,
and the checks PROTOCOL.md asks for.
"""

import re
import struct

import orjson

# The ttl_ms rule belongs to the sync wire (the ingest applies the same
# one), so that nothing the daemon accepts is refused at sync.
from relay.ingest.validate import MAX_TTL_MS, ttl_problem  # noqa: F401 (re-exported)

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

# orjson writes at most 254 nested arrays or objects (the envelope counts).
MAX_DEPTH = 254



def frame(envelope):
    """
    One length-prefixed frame holding C{envelope}.
    """
    data = orjson.dumps(envelope)
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
