# -*- test-case-name: tests.test_support -*-
"""
The one frame codec of the tests: 4-byte big-endian length, then the JSON
envelope; and the envelopes the tests send most (HELLO, SEND).
"""

import struct

import orjson

_HEADER = struct.Struct(">I")


def encode(env):
    """
    One envelope as a frame.

    @param env: the envelope (a JSON-serialisable dict).
    @return: the frame's bytes.
    """
    data = orjson.dumps(env)
    return _HEADER.pack(len(data)) + data


def frame_bytes(data):
    """
    Raw bytes (perhaps not JSON at all) framed with their length, for tests
    that send what the daemon must refuse.
    """
    return _HEADER.pack(len(data)) + data


def decode_from(data, offset=0):
    """
    Decode the complete frames in C{data} from C{offset} on.

    @return: C{(envelopes, offset)}: the envelopes, and the offset of the
        first byte not consumed (the start of a partial frame, or the end).
    """
    frames = []
    end = len(data)
    while end - offset >= 4:
        (n,) = _HEADER.unpack_from(data, offset)
        if end - offset - 4 < n:
            break
        frames.append(orjson.loads(data[offset + 4:offset + 4 + n]))
        offset += 4 + n
    return frames, offset


class FrameReader:
    """
    Decodes a byte stream fed in pieces of any size.
    """

    def __init__(self):
        self.buffer = b""

    def feed(self, data):
        """
        @return: the envelopes completed by C{data}.
        """
        buf = self.buffer + data if self.buffer else data
        frames, offset = decode_from(buf)
        self.buffer = buf[offset:]
        return frames


def hello(name, **payload):
    """
    A HELLO for agent C{name} with the usual capabilities; C{payload}
    entries are added to (or replace) the payload's.
    """
    p = {"agent": name, "capabilities": {"ack": True, "resume": True, "max_inflight": 256,
                                         "supports_topics": True}}
    p.update(payload)
    return {"v": 1, "type": "HELLO", "id": "h-%s" % (name,), "ts": 0, "payload": p}


_ids = [0]


def send(to, body="hi", topic=None, requires_ack=False, meta=None, payload_extra=None,
         **fields):
    """
    A SEND to C{to} with a fresh id.

    @param requires_ack: ask for a receipt (C{payload_meta.requires_ack}).
    @param meta: other C{payload_meta} entries.
    @param payload_extra: entries added to the payload.
    @param fields: envelope fields added (or replaced) at the top level.
    """
    _ids[0] += 1
    env = {"v": 1, "type": "SEND", "id": "s%d" % (_ids[0],), "ts": 0, "to": to,
           "payload": dict({"kind": "message", "body": body}, **(payload_extra or {}))}
    if topic is not None:
        env["topic"] = topic
    if requires_ack or meta:
        env["payload_meta"] = dict(meta or {}, **({"requires_ack": True} if requires_ack else {}))
    env.update(fields)
    return env
