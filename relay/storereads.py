# -*- test-case-name: tests.test_store -*-
"""
The store's reads: functions run on its writer connection between batches
(L{relay.store.Store} calls them through its pool), and the read-only
connection that tools use beside a running daemon.  The writes and the
schema are L{relay.storesql}'s.
"""

import os
import sqlite3

import orjson

from relay.storesql import SQL


def _read_open(txn, recipient, after_seq, limit):
    txn.execute(SQL["read_open"], (recipient, after_seq, limit))
    return txn.fetchall()


def _scalar(txn, sql, args):
    txn.execute(sql, args)
    return txn.fetchone()[0]


def _get_meta(txn, key):
    txn.execute("SELECT value FROM meta WHERE key = ?", (key,))
    row = txn.fetchone()
    return row[0] if row else None


def _read_messages_after(txn, seq, limit):
    txn.execute(
        "SELECT seq, id, ts, sender, recipient, topic, thread, kind, payload, payload_meta,"
        " expires_at FROM messages WHERE seq > ? ORDER BY seq LIMIT ?", (seq, limit))
    out = []
    for (mseq, mid, ts, sender, recipient, topic, thread, kind, payload, meta,
         expires_at) in txn.fetchall():
        payload = orjson.loads(payload)
        meta = orjson.loads(meta) if meta else None
        data = payload.get("data")
        out.append({
            "seq": mseq, "id": mid, "ts": ts, "from": sender, "to": recipient,
            "topic": topic, "thread": thread, "kind": kind,
            "body": payload.get("body", ""),
            "data": data if isinstance(data, dict) else None,
            "payload_meta": meta,
            "expires_at": expires_at,
        })
    return out


def connect_readonly(path):
    """
    A read-only connection to a store file that never disturbs a running
    daemon (WAL readers do not block the writer).
    """
    return sqlite3.connect("file:%s?mode=ro" % (os.path.abspath(path),), uri=True)
