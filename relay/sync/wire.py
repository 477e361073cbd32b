# -*- test-case-name: tests.test_sync_wire -*-
"""
What goes over the wire to the ingest service.

Each stored message is encoded to JSON once, when it is read from the store
(L{encode_message}); a batch body is the encoded messages joined into
C{{"daemon_id", "workspace_id", "messages": [...]}} without re-encoding
them (L{batch_body}).  Bodies above the compression threshold are gzipped
(L{maybe_compress}).
"""

import gzip

import attr
import orjson

WIRE_FIELDS = (
    "id", "ts", "from", "to", "topic", "thread", "kind", "body", "data",
    "payload_meta", "is_broadcast", "is_urgent", "expires_at",
)


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
    wire["is_broadcast"] = bool(wire["is_broadcast"])
    wire["is_urgent"] = bool(wire["is_urgent"])
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
