# -*- test-case-name: tests.test_federation -*-
"""
What federation reads from and writes to the SQLite store (L{relay.store}):
the hand-over queue (deliveries with status C{remote}), the marks the
ingest's answers lead to, and what an inbound page finds already stored.

Reads run on the store's writer connection between batches (like
L{relay.store.Store.read_open_deliveries}); writes are queued in the
store's batches (statements C{rehome}, C{handed}, C{reopen} of
L{relay.storesql.SQL}), so they commit in order with everything else.
"""

import orjson

from relay.storesql import STATUS_REMOTE

READ_REMOTE = (
    "SELECT d.recipient, d.message_seq, m.id, m.send_id, m.ts, m.sender, m.recipient, m.topic,"
    " m.thread, m.kind, m.payload, m.payload_meta, m.extra, m.expires_at"
    " FROM deliveries d JOIN messages m ON m.seq = d.message_seq"
    " WHERE d.status = '%s' ORDER BY d.message_seq, d.recipient LIMIT ?" % (STATUS_REMOTE,)
)

# SQLite's default limit of host parameters is 999 (older builds): pages
# of ids are looked up in chunks below it.
_CHUNK = 400


def _read_remote(txn, limit):
    txn.execute(READ_REMOTE, (limit,))
    return txn.fetchall()


def _lookup(txn, ids):
    """
    @return: {message id: (seq, {recipient: status})} for the C{ids}
        already stored.
    """
    found = {}
    ids = list(ids)
    for i in range(0, len(ids), _CHUNK):
        chunk = ids[i:i + _CHUNK]
        txn.execute(
            "SELECT m.id, m.seq, d.recipient, d.status FROM messages m"
            " LEFT JOIN deliveries d ON d.message_seq = m.seq"
            " WHERE m.id IN (%s)" % (",".join("?" * len(chunk)),), chunk)
        for mid, seq, recipient, status in txn.fetchall():
            entry = found.setdefault(mid, (seq, {}))
            if recipient is not None:
                entry[1][recipient] = status
    return found


def encode_item(row):
    """
    One C{remote} delivery row (L{READ_REMOTE}) as the JSON bytes of a
    hand-over item: the message as stored (payload, meta and extra kept as
    the JSON text they are), and who it is for.
    """
    (recipient, _seq, mid, send_id, ts, sender, to, topic, thread, kind, payload, meta, extra,
     expires_at) = row
    head = orjson.dumps({"id": mid, "send_id": send_id, "ts": ts, "from": sender, "to": to,
                         "topic": topic, "thread": thread, "kind": kind,
                         "expires_at": expires_at})
    parts = [b'{"recipient":', orjson.dumps(recipient), b',"message":', head[:-1],
             b',"payload":', payload.encode()]
    if meta is not None:
        parts += [b',"payload_meta":', meta.encode()]
    if extra:
        parts += [b',"extra":', extra.encode()]
    parts.append(b"}}")
    return b"".join(parts)


class FederationStorage:
    """
    @param store: the L{relay.store.Store}.
    @param clock: provides C{seconds}.
    """

    def __init__(self, store, clock):
        self.store = store
        self.clock = clock

    def _now_ms(self):
        return int(self.clock.seconds() * 1000)

    def read_remote(self, limit):
        """
        Committed deliveries waiting for their hand-over, in message order.
        """
        return self.store.pool.runInteraction(_read_remote, limit)

    def lookup(self, ids):
        return self.store.pool.runInteraction(_lookup, ids)

    def rehome(self, name):
        """
        Queue: C{name}'s open deliveries wait for their hand-over (its
        home is another daemon now).
        """
        self.store.queue("rehome", (self._now_ms(), name), 32 + len(name))

    def handed(self, recipient, message_seq):
        """
        Queue: the ingest has this delivery (unless it came back meanwhile).
        """
        self.store.queue("handed", (self._now_ms(), recipient, message_seq), 48)

    def reopen(self, recipient, message_seq, stream_key, stream_seq):
        """
        Queue: a delivery handed over came back (its agent's home is here
        again): pending, with a new stream seq.
        """
        self.store.queue("reopen", (stream_seq, self._now_ms(), recipient, message_seq), 48,
                         (stream_key, stream_seq))

    def flush(self):
        return self.store.flush()
