# -*- test-case-name: tests.test_sync_wire -*-
"""
What goes over the wire to the ingest service.

Each stored message is encoded to JSON once, when it is read from the store
(L{encode_message}); a batch body is the encoded messages joined into
C{{"daemon_id", "workspace_id", "messages": [...]}} without re-encoding
them (L{batch_body}).  Bodies above the compression threshold are gzipped
(L{maybe_compress}).

The fields that exist only for the ingest (C{is_broadcast}, C{is_urgent})
are derived here, from the row's C{to} and C{payload_meta}: the store knows
nothing about them.
"""

import gzip

import attr
import orjson

WIRE_FIELDS = (
    "id", "ts", "from", "to", "topic", "thread", "kind", "body", "data",
    "payload_meta", "is_broadcast", "is_urgent", "expires_at",
)

#: C{payload_meta.importance} words that make a message urgent.
URGENT_WORDS = frozenset(["urgent", "high", "critical"])
#: A numeric C{payload_meta.importance} at or above this is urgent.
URGENT_LEVEL = 80


def is_urgent(meta):
    """
    Whether a message with C{payload_meta} C{meta} (a dict or None) is
    urgent for the ingest's C{is_urgent} column.
    """
    importance = meta.get("importance") if isinstance(meta, dict) else None
    if isinstance(importance, str):
        return importance.lower() in URGENT_WORDS
    if isinstance(importance, (int, float)) and not isinstance(importance, bool):
        return importance >= URGENT_LEVEL
    return False


def is_broadcast(to):
    """
    Whether a message sent to C{to} is a broadcast.
    """
    return to == "*"


@attr.s(slots=True, frozen=True)
class Item:
    """
    One message ready to send: its store C{seq}, its C{id} (the dedup key)
    and its C{json} encoding (bytes).
    """

    seq = attr.ib()
    id = attr.ib()
    json = attr.ib()
    #: Why the row could not be encoded (then C{json} is None), or None.
    error = attr.ib(default=None)

    @property
    def size(self):
        return len(self.json) + 1 if self.json is not None else 64


def encode_message(row):
    """
    Turn one row from L{relay.interfaces.ISyncSource.read_messages_after}
    into an L{Item}.

    A row that cannot be encoded (say, an integer beyond 64 bits in its
    C{data}) gives an L{Item} whose C{json} is None and whose C{error} says
    why; the pipeline dead-letters it.
    """
    wire = {name: row.get(name) for name in WIRE_FIELDS}
    wire["is_broadcast"] = is_broadcast(row.get("to"))
    wire["is_urgent"] = is_urgent(row.get("payload_meta"))
    try:
        data = orjson.dumps(wire)
    except (TypeError, orjson.JSONEncodeError) as e:
        return Item(seq=row["seq"], id=str(row.get("id")), json=None,
                    error="cannot encode for sync: {}".format(e))
    return Item(seq=row["seq"], id=row["id"], json=data)


def batch_body(daemon_id, workspace_id, items):
    """
    The JSON request body (bytes) for C{items}.
    """
    head = orjson.dumps({"daemon_id": daemon_id, "workspace_id": workspace_id})
    return b"".join([head[:-1], b',"messages":[', b",".join(i.json for i in items), b"]}"])


def maybe_compress(body, threshold):
    """
    @return: C{(bytes, compressed)}: C{body} gzipped (with a fixed mtime, so
        equal bodies give equal bytes) when it is longer than C{threshold}.
    """
    if len(body) > threshold:
        return gzip.compress(body, compresslevel=6, mtime=0), True
    return body, False
