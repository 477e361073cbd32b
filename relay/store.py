# -*- test-case-name: tests.test_store -*-
"""
The durable message store: one SQLite file in WAL mode, written through
L{twisted.enterprise.adbapi} by a single writer thread, in group-commit
batches (L{relay.batcher}).
"""

import functools
import json
import os
import secrets
import sqlite3

import orjson
from twisted.enterprise import adbapi
from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from relay.batcher import STATEMENTS, Batcher
from relay.interfaces import ISyncSource

SCHEMA_DIR = os.path.join(os.path.dirname(__file__), "schema")

SQL = {
    "message": (
        "INSERT INTO messages (seq, id, send_id, ts, sender, recipient, topic, thread,"
        " kind, payload, payload_meta, extra, expires_at)"
        " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)"
    ),
    "delivery": (
        "INSERT INTO deliveries (recipient, message_seq, stream_seq, status, attempts, updated_at)"
        " VALUES (?,?,?,?,?,?)"
    ),
    "status": (
        "UPDATE deliveries SET status = ?, attempts = ?, updated_at = ?"
        " WHERE recipient = ? AND message_seq = ? AND status != 'acked'"
    ),
    "ack_by_id": (
        "UPDATE deliveries SET status = 'acked', updated_at = ?"
        " WHERE recipient = ? AND status != 'acked'"
        " AND message_seq = (SELECT seq FROM messages WHERE id = ?)"
    ),
    "stream": (
        "INSERT INTO streams (recipient, topic, sender, last_seq) VALUES (?,?,?,?)"
        " ON CONFLICT (recipient, topic, sender)"
        " DO UPDATE SET last_seq = max(last_seq, excluded.last_seq)"
    ),
    "expire": (
        "UPDATE deliveries SET status = 'expired', updated_at = ?"
        " WHERE status IN ('pending', 'delivered')"
        " AND message_seq IN (SELECT seq FROM messages WHERE expires_at <= ?)"
    ),
    "meta": "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
    "dead_letter": "INSERT OR REPLACE INTO dead_letters (message_seq, id, reason, ts) VALUES (?,?,?,?)",
}

# Column positions in a delivery row (see SQL["delivery"]).
D_STATUS = 3
D_ATTEMPTS = 4
D_UPDATED = 5


# How hard a commit presses its WAL onto the disk (--synchronous): FULL
# fsyncs the WAL at every commit, so a receipt survives a power loss; NORMAL
# fsyncs only at checkpoints, so a receipt survives a process crash only.
SYNCHRONOUS = ("full", "normal")


def _open_connection(conn, synchronous="full"):
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=%s" % (_synchronous(synchronous),))
    conn.execute("PRAGMA busy_timeout=10000")


def _synchronous(value):
    if value not in SYNCHRONOUS:
        raise ValueError("synchronous must be one of %s, not %r" % (", ".join(SYNCHRONOUS), value))
    return value.upper()


def schema_scripts():
    """
    The packaged schema scripts as a sorted list of (version, path).
    """
    scripts = []
    for name in os.listdir(SCHEMA_DIR):
        if name.endswith(".sql") and name[:3].isdigit():
            scripts.append((int(name[:3]), os.path.join(SCHEMA_DIR, name)))
    return sorted(scripts)


class StoreError(Exception):
    """
    The store file cannot be used.
    """


def schema_version(conn):
    conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return int(row[0]) if row else 0


def upgrade(conn, log, path):
    """
    Bring the schema up to the newest packaged version, each script in one
    transaction with the new version number.
    """
    current = schema_version(conn)
    scripts = schema_scripts()
    newest = scripts[-1][0] if scripts else 0
    if current > newest:
        raise StoreError("schema version %d is newer than this relay understands (%d)"
                         % (current, newest))
    for version, script_path in scripts:
        if version <= current:
            continue
        with open(script_path, encoding="utf-8") as f:
            script = f.read()
        conn.executescript(
            "BEGIN;\n%s\nINSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', '%d');"
            "\nCOMMIT;" % (script, version))
        log.info("store {path}: schema upgraded from {old} to {new}",
                 path=path, old=current, new=version)
        current = version


@implementer(ISyncSource)
class Store:
    """
    @ivar batcher: the L{Batcher} all writes go through.
    """

    log = Logger()

    def __init__(self, reactor, path, batch_size=50, batch_delay=0.1, batch_bytes=1048576,
                 recent_sends=10000, synchronous="full"):
        self.reactor = reactor
        _synchronous(synchronous)
        self.synchronous = synchronous
        self.path = path
        self.pool = None
        self.batcher = Batcher(reactor, self._write_batch, size=batch_size, delay=batch_delay,
                               max_bytes=batch_bytes, on_committed=self._committed)
        self.batcher.metrics["quarantined"] = 0
        self._commit_listeners = []
        self._dirty_streams = {}
        self._seq = 0
        self._committed_seq = 0
        self.id_prefix = None
        self.streams = {}
        self.recent_sends_limit = recent_sends
        self.recent_sends = ()

    # -- lifecycle -----------------------------------------------------------

    def open(self):
        """
        Open the file, create or upgrade the schema and load the counters,
        synchronously (this runs once, at startup, before anything is
        listening), then start the writer thread and the batch timer.

        @raise StoreError: the file cannot be used.
        """
        directory = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(directory):
            raise StoreError("cannot open store %s: directory %s does not exist"
                             % (self.path, directory))
        try:
            conn = sqlite3.connect(self.path, isolation_level=None)
            try:
                _open_connection(conn, self.synchronous)
                upgrade(conn, self.log, self.path)
                self._seq, self.id_prefix, self.streams = _load_state(conn.cursor(), conn,
                                                                      self.synchronous)
                self.recent_sends = _recent_sends(conn, self.recent_sends_limit)
            finally:
                conn.close()
        except sqlite3.Error as e:
            raise StoreError("cannot open store %s: %s" % (self.path, e))
        self._committed_seq = self._seq
        self.pool = adbapi.ConnectionPool(
            "sqlite3", self.path, check_same_thread=False, cp_min=1, cp_max=1,
            cp_openfun=functools.partial(_open_connection, synchronous=self.synchronous),
            cp_reactor=self.reactor, cp_noisy=False)
        self.batcher.start()

    @defer.inlineCallbacks
    def close(self):
        """
        Flush everything pending, then close the file.
        """
        yield self.batcher.stop()
        if self.pool is not None:
            self.pool.close()
            self.pool = None

    # -- writing -------------------------------------------------------------

    def next_seq(self):
        self._seq += 1
        return self._seq

    def message_id(self, seq):
        return "%s-%d" % (self.id_prefix, seq)

    def add_message(self, row, nbytes):
        """
        Queue a message row (see SQL["message"]; row[0] is its seq).
        """
        self.batcher.current.max_message_seq = row[0]
        self.batcher.add("message", row, nbytes)

    def add_delivery(self, recipient, message_seq, stream_key, stream_seq, status, now_ms):
        """
        Queue a delivery row and return C{(batch, row)}, the handle for
        later status changes.
        """
        self._dirty_streams[stream_key] = stream_seq
        row = [recipient, message_seq, stream_seq, status, 0, now_ms]
        batch = self.batcher.current
        self.batcher.add("delivery", row, 48)
        return batch, row

    def set_status(self, handle, recipient, message_seq, status, attempts, now_ms):
        """
        Record a delivery's new status.  While its insert is still waiting
        in the open batch the row is edited in place (no extra write);
        otherwise an UPDATE is queued.

        @return: the handle to use next time.
        """
        if handle is not None:
            batch, row = handle
            if batch.open and batch is self.batcher.current:
                row[D_STATUS] = status
                row[D_ATTEMPTS] = attempts
                row[D_UPDATED] = now_ms
                return handle
        self.batcher.add("status", (status, attempts, now_ms, recipient, message_seq), 40)
        return None

    def ack_by_id(self, recipient, message_id, now_ms):
        """
        Queue the marking of C{recipient}'s delivery of the message with id
        C{message_id} as acked, whichever run of the daemon gave that id (an
        id naming no message of C{recipient}'s changes nothing).
        """
        self.batcher.add("ack_by_id", (now_ms, recipient, message_id), 48 + len(message_id))

    def expire_due(self, now_ms):
        """
        Queue the marking of every open delivery whose message's TTL has
        run out as expired (never deleted).
        """
        self.batcher.add("expire", (now_ms, now_ms), 16)

    def set_meta(self, key, value):
        self.batcher.add("meta", (key, value), len(key) + len(value))
        return self.batcher.flush()

    def add_dead_letter(self, seq, message_id, reason):
        now_ms = int(self.reactor.seconds() * 1000)
        self.batcher.add("dead_letter", (seq, message_id, reason, now_ms), 64 + len(reason))
        return self.batcher.flush()

    def after_commit(self, fn, arg):
        self.batcher.after_commit(fn, arg)

    def _write_batch(self, batch):
        if self._dirty_streams:
            batch.rows["stream"].extend(
                (k[0], k[1], k[2], v) for k, v in self._dirty_streams.items())
            self._dirty_streams = {}
        d = self.pool.runInteraction(_write_rows, batch.rows)
        d.addErrback(self._isolate, batch)
        return d

    def _isolate(self, failure, batch):
        """
        SQLite (or the binding of a value) refused a row of this batch
        outright; retrying would fail forever and stop every write.  Write
        the batch row by row instead and keep each refused row, as JSON with
        its reason, in the quarantine table.  A transient failure (disk
        full, database locked) is passed on: the batcher retries it.
        """
        failure.trap(*ROW_ERRORS)
        self.log.error("store: SQLite refused a row ({error}); writing the batch row by row "
                       "and quarantining what it refuses", error=failure.getErrorMessage())
        d = self.pool.runInteraction(_write_rows_isolated, batch.rows,
                                     int(self.reactor.seconds() * 1000))
        d.addCallback(self._quarantined)
        return d

    def _quarantined(self, refused):
        self.batcher.metrics["quarantined"] += len(refused)
        for statement, row, error in refused:
            self.log.critical("store: quarantined a {statement} row SQLite refuses ({error}): {row}",
                              statement=statement, error=error, row=row)

    def _committed(self, max_seq):
        if max_seq > self._committed_seq:
            self._committed_seq = max_seq
            for listener in self._commit_listeners:
                listener(max_seq)

    # -- reading -------------------------------------------------------------

    def read_open_deliveries(self, recipient, after_seq, limit):
        """
        Committed deliveries to C{recipient} still pending or unacked, with
        message seq above C{after_seq}, in message order.
        """
        return self.pool.runInteraction(_read_open, recipient, after_seq, limit)

    def count(self, sql, *args):
        return self.pool.runInteraction(_scalar, sql, args)

    # -- ISyncSource ---------------------------------------------------------

    def add_commit_listener(self, listener):
        self._commit_listeners.append(listener)

    def last_seq(self):
        return self._committed_seq

    def read_messages_after(self, seq, limit):
        return self.pool.runInteraction(_read_messages_after, seq, limit)

    def get_meta(self, key):
        return self.pool.runInteraction(_get_meta, key)

    def dead_letter_count(self):
        return self.count("SELECT count(*) FROM dead_letters")


def _load_state(txn, conn, synchronous="full"):
    txn.execute("SELECT max(seq) FROM messages")
    seq = txn.fetchone()[0] or 0
    txn.execute("SELECT value FROM meta WHERE key = 'id_prefix'")
    row = txn.fetchone()
    if row:
        prefix = row[0]
    else:
        prefix = secrets.token_hex(6)
        txn.execute("INSERT INTO meta (key, value) VALUES ('id_prefix', ?)", (prefix,))
        conn.commit()
    txn.execute("SELECT recipient, topic, sender, last_seq FROM streams")
    streams = {(r, t, s): n for r, t, s, n in txn.fetchall()}
    # Each run gets its own id prefix.  Messages are delivered live before
    # their batch commits; a crash loses those, and their seqs are given
    # again after the restart.  Clients drop a DELIVER whose id they have
    # seen, so an id must never name two messages: the run number in it,
    # written durably before anything listens, keeps them apart.
    txn.execute("SELECT value FROM meta WHERE key = 'runs'")
    row = txn.fetchone()
    runs = int(row[0]) + 1 if row else 1
    conn.execute("PRAGMA synchronous=FULL")
    txn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('runs', ?)", (str(runs),))
    conn.execute("PRAGMA synchronous=%s" % (_synchronous(synchronous),))
    return seq, "%s.%d" % (prefix, runs), streams


def _recent_sends(conn, limit):
    """
    The last C{limit} SENDs that carried an id, oldest first, as (sender,
    send id, message id, recipient, topic, payload text).
    """
    if not limit:
        return []
    rows = conn.execute(
        "SELECT sender, send_id, id, recipient, topic, payload FROM messages"
        " WHERE send_id IS NOT NULL ORDER BY seq DESC LIMIT ?", (limit,)).fetchall()
    rows.reverse()
    return rows


# Errors that mean "this row can never be written", as opposed to a full disk
# or a locked database, which a retry may get past.
ROW_ERRORS = (sqlite3.IntegrityError, sqlite3.InterfaceError, sqlite3.ProgrammingError,
              sqlite3.DataError, OverflowError, ValueError, TypeError)


def _write_rows_isolated(txn, rows, now_ms):
    refused = []
    for name in STATEMENTS:
        for row in rows[name]:
            txn.execute("SAVEPOINT relay_row")
            try:
                txn.execute(SQL[name], row)
            except ROW_ERRORS as e:
                txn.execute("ROLLBACK TO relay_row")
                # Plain ASCII JSON: whatever SQLite refused (a huge integer,
                # a lone surrogate, an odd type) can be written down.
                text = json.dumps(list(row), default=repr)
                error = ("%s: %s" % (e.__class__.__name__, e)).encode(
                    "ascii", "backslashreplace").decode("ascii")
                refused.append((name, text, error))
                txn.execute("INSERT INTO quarantine (ts, statement, row, error) VALUES (?,?,?,?)",
                            (now_ms, name, text, refused[-1][2]))
            txn.execute("RELEASE relay_row")
    return refused


def _write_rows(txn, rows):
    for name in STATEMENTS:
        batch = rows[name]
        if batch:
            txn.executemany(SQL[name], batch)


def _read_open(txn, recipient, after_seq, limit):
    txn.execute(
        "SELECT d.message_seq, d.stream_seq, d.attempts, m.id, m.ts, m.sender,"
        " m.recipient, m.topic, m.payload, m.payload_meta, m.extra, m.expires_at"
        " FROM deliveries d JOIN messages m ON m.seq = d.message_seq"
        " WHERE d.recipient = ? AND d.message_seq > ? AND d.status IN ('pending', 'delivered')"
        " ORDER BY d.message_seq LIMIT ?", (recipient, after_seq, limit))
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
