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
from collections import OrderedDict

import orjson
from twisted.enterprise import adbapi
from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from relay.batcher import Batcher
from relay.dedupe import fingerprint
from relay.interfaces import IMessageStore, ISyncSource

SCHEMA_DIR = os.path.join(os.path.dirname(__file__), "schema")

# A delivery's states (deliveries.status).  They belong to the store: the
# router names them through these constants, and the SQL below uses them.
STATUS_PENDING = "pending"
STATUS_DELIVERED = "delivered"
STATUS_ACKED = "acked"
STATUS_EXPIRED = "expired"

# The statements a batch carries, in the order a flush runs them: a message
# row is on disk before its delivery rows, an insert before its updates.
STATEMENTS = ("message", "delivery", "status", "ack_by_id", "stream", "expire", "meta",
              "dead_letter")

_STATES = {"pending": STATUS_PENDING, "delivered": STATUS_DELIVERED, "acked": STATUS_ACKED,
           "expired": STATUS_EXPIRED}

SQL = {
    "message": (
        "INSERT INTO messages (seq, id, send_id, ts, sender, recipient, topic, thread,"
        " kind, payload, payload_meta, extra, expires_at, send_fp)"
        " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
    ),
    "delivery": (
        "INSERT INTO deliveries (recipient, message_seq, stream_seq, status, attempts, updated_at)"
        " VALUES (?,?,?,?,?,?)"
    ),
    # An expired delivery stays expired unless it is acked (the incremental
    # expiry never looks at a message twice, so nothing may reopen one).
    "status": (
        "UPDATE deliveries SET status = ?, attempts = ?, updated_at = ?"
        " WHERE recipient = ? AND message_seq = ? AND status != '%(acked)s'"
        " AND (status != '%(expired)s' OR ? = '%(acked)s')" % _STATES
    ),
    "ack_by_id": (
        "UPDATE deliveries SET status = '%(acked)s', updated_at = ?"
        " WHERE recipient = ? AND status != '%(acked)s'"
        " AND message_seq = (SELECT seq FROM messages WHERE id = ?)" % _STATES
    ),
    "stream": (
        "INSERT INTO streams (recipient, topic, sender, last_seq) VALUES (?,?,?,?)"
        " ON CONFLICT (recipient, topic, sender)"
        " DO UPDATE SET last_seq = max(last_seq, excluded.last_seq)"
    ),
    # Incremental (see _expire): only messages whose expiry passed since the
    # last run, or stored since the last run, are looked at; both ranges are
    # index lookups, whatever the number of messages that ever expired.
    "expire": (
        "UPDATE deliveries SET status = '%(expired)s', updated_at = :now"
        " WHERE status IN ('%(pending)s', '%(delivered)s') AND message_seq IN ("
        " SELECT seq FROM messages WHERE expires_at > :after_ms AND expires_at <= :now"
        " UNION SELECT seq FROM messages WHERE seq > :after_seq AND +expires_at <= :now)"
        % _STATES
    ),
    # (The unary + keeps SQLite from scanning the expiry index for the second
    # range: the messages stored since the last run are a rowid range.)
    "meta": "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
    "dead_letter": "INSERT OR REPLACE INTO dead_letters (message_seq, id, reason, ts) VALUES (?,?,?,?)",
    "read_open": (
        "SELECT d.message_seq, d.stream_seq, d.attempts, m.id, m.ts, m.sender,"
        " m.recipient, m.topic, m.payload, m.payload_meta, m.extra, m.expires_at"
        " FROM deliveries d JOIN messages m ON m.seq = d.message_seq"
        " WHERE d.recipient = ? AND d.message_seq > ?"
        " AND d.status IN ('%(pending)s', '%(delivered)s')"
        " ORDER BY d.message_seq LIMIT ?" % _STATES
    ),
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


# The bounds of what the store keeps in memory for routing (point 7 of
# issue 13): stream seqs of this many (recipient, topic, sender) streams;
# the rest are read from the streams table when next used.
STREAM_CACHE = 10000


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


@implementer(IMessageStore, ISyncSource)
class Store:
    """
    @param reactor: IReactorTime (and, for the default pool, the reactor
        adbapi's thread reports to).
    @param pool_factory: callable(**kwargs) -> an adbapi ConnectionPool
        over this file (tests: L{relay.testing.ThreadlessConnectionPool}).
    @ivar batcher: the L{Batcher} all writes go through (the store's own:
        nobody else drives it).
    """

    log = Logger()

    def __init__(self, reactor, path, batch_size=50, batch_delay=0.1, batch_bytes=1048576,
                 recent_sends=100000, recent_per_sender=1000, recent_age=6 * 3600.0,
                 stream_cache=STREAM_CACHE, synchronous="full", pool_factory=None):
        self.reactor = reactor
        _synchronous(synchronous)
        self.synchronous = synchronous
        self.path = path
        self.pool = None
        self._pool_factory = pool_factory
        self.batcher = Batcher(reactor, self._write_batch, STATEMENTS, size=batch_size,
                               delay=batch_delay, max_bytes=batch_bytes,
                               on_committed=self._committed)
        self.metrics = {"quarantined": 0, "known_sends": 0}
        self._commit_listeners = []
        self._seq = 0
        self._committed_seq = 0
        self.id_prefix = None
        # Stream seqs: the newest ones used (an LRU of at most stream_cache),
        # and every one handed to a batch that has not committed yet (those
        # must never be read back from the file, which does not have them).
        self.stream_cache = stream_cache
        self._streams = OrderedDict()
        self._uncommitted_streams = {}
        self._reader = None
        self.stream_reads = 0
        self.recent_sends_limit = recent_sends
        self.recent_per_sender = recent_per_sender
        self.recent_age = recent_age
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
                self._seq, self.id_prefix = _load_state(conn.cursor(), conn)
                since_ms = int((self.reactor.seconds() - self.recent_age) * 1000)
                self.recent_sends = _recent_sends(conn, self.recent_sends_limit,
                                                  self.recent_per_sender, since_ms)
            finally:
                conn.close()
            # Reads stream seqs the LRU no longer holds, in the reactor
            # thread: a primary-key lookup; WAL readers never block the
            # writer thread nor wait for it.
            self._reader = sqlite3.connect(self.path, isolation_level=None,
                                           check_same_thread=False)
            self._reader.execute("PRAGMA busy_timeout=10000")
        except sqlite3.Error as e:
            raise StoreError("cannot open store %s: %s" % (self.path, e))
        self._committed_seq = self._seq
        factory = self._pool_factory or functools.partial(adbapi.ConnectionPool,
                                                          cp_reactor=self.reactor)
        self.pool = factory(
            dbapiName="sqlite3", database=self.path, check_same_thread=False, cp_min=1,
            cp_max=1, cp_openfun=functools.partial(_open_connection, synchronous=self.synchronous),
            cp_noisy=False)
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
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    # -- writing -------------------------------------------------------------

    def next_seq(self):
        self._seq += 1
        return self._seq

    def last_given_seq(self):
        """
        The highest message seq handed out by L{next_seq} (committed or not).
        """
        return self._seq

    def take_recent_sends(self):
        """
        The SENDs with ids read at L{open} for the dedupe window (see
        L{_recent_sends}), once: the store keeps no copy.
        """
        recent, self.recent_sends = self.recent_sends, ()
        return recent

    def message_id(self, seq):
        return "%s-%d" % (self.id_prefix, seq)

    def begin_send(self):
        """
        The message row, delivery rows and stream seqs queued until
        L{end_send} are one SEND: they commit in one transaction, always
        (no size or byte trigger flushes in between), and if SQLite refuses
        one of them the whole SEND is quarantined, not part of it.
        """
        self.batcher.begin_group()

    def end_send(self):
        """
        The SEND begun by L{begin_send} is complete; if the writer is now
        behind by more than the overload bound, the overload listeners hear.
        """
        batcher = self.batcher
        batcher.end_group()
        if batcher.pending_bytes() > batcher.overload_bytes:
            batcher.check_overload()

    def abort_send(self):
        """
        The SEND failed half way: none of its rows are written (its stream
        seqs stay used: a gap, never a repeat).
        """
        self.batcher.abort_group()

    def add_message(self, row, nbytes, fp=None):
        """
        Queue a message row (see SQL["message"] without its last column,
        C{send_fp}, which is C{fp}; row[0] is its seq).
        """
        self.batcher.mark(row[0])
        self.batcher.add("message", list(row) + [fp], nbytes)

    def next_stream_seq(self, key):
        """
        The seq the next DELIVER on stream C{key} (recipient, topic,
        sender) carries: one above the last one given, whether that is in
        memory, in a batch not yet committed, or only in the file.
        """
        return self.last_stream_seq(key) + 1

    def last_stream_seq(self, key):
        seq = self._uncommitted_streams.get(key)
        if seq is not None:
            return seq
        cache = self._streams
        seq = cache.get(key)
        if seq is not None:
            cache.move_to_end(key)
            return seq
        self.stream_reads += 1
        rows = self._reader.execute(
            "SELECT last_seq FROM streams WHERE recipient = ? AND topic = ? AND sender = ?",
            key).fetchall()
        seq = rows[0][0] if rows else 0
        self._cache_stream(key, seq)
        return seq

    def _cache_stream(self, key, seq):
        cache = self._streams
        cache[key] = seq
        cache.move_to_end(key)
        while len(cache) > self.stream_cache:
            cache.popitem(last=False)

    def stream_state_size(self):
        """
        How many streams the store holds in memory (STATUS, tests).
        """
        return len(self._streams) + len(self._uncommitted_streams)

    def add_delivery(self, recipient, message_seq, stream_key, stream_seq, status, now_ms):
        """
        Queue a delivery row (and the stream's new last seq, in the same
        batch) and return C{(batch, row)}, the handle for later status
        changes.
        """
        row = [recipient, message_seq, stream_seq, status, 0, now_ms]
        batch = self.batcher.current
        self.batcher.note(stream_key, stream_seq)
        if stream_seq > self._uncommitted_streams.get(stream_key, 0):
            self._uncommitted_streams[stream_key] = stream_seq
        self._cache_stream(stream_key, max(stream_seq, self._streams.get(stream_key, 0)))
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
        self.batcher.add("status", (status, attempts, now_ms, recipient, message_seq, status), 40)
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
        self.batcher.add("expire", (now_ms,), 16)

    def set_meta(self, key, value):
        self.batcher.add("meta", (key, value), len(key) + len(value))
        return self.batcher.flush()

    def add_dead_letter(self, seq, message_id, reason):
        now_ms = int(self.reactor.seconds() * 1000)
        self.batcher.add("dead_letter", (seq, message_id, reason, now_ms), 64 + len(reason))
        return self.batcher.flush()

    def after_commit(self, fn, arg):
        self.batcher.after_commit(fn, arg)

    def commit_soon(self):
        """
        Someone waits for a commit (a receipt): start it at the end of this
        reactor turn if the writer is idle.
        """
        self.batcher.soon()

    def flush(self):
        """
        @return: Deferred firing once everything queued so far is committed.
        """
        return self.batcher.flush()

    def add_overload_listener(self, listener):
        self.batcher.add_overload_listener(listener)

    def stats(self):
        """
        The writer's counters and the store's memory use, for STATUS.
        """
        batcher = self.batcher
        m = dict(batcher.metrics)
        m.update(self.metrics)
        m["pending_rows"] = batcher.pending_rows()
        m["pending_bytes"] = batcher.pending_bytes()
        m["streams_in_memory"] = self.stream_state_size()
        return m

    def _write_batch(self, batch):
        # The stream seqs of this batch's deliveries, in the same
        # transaction (built afresh on a retry: the dict is the truth).
        rows = dict(batch.rows)
        rows["stream"] = batch.rows["stream"] + [
            (k[0], k[1], k[2], v) for k, v in batch.highs.items()]
        d = self.pool.runInteraction(_write_rows, rows)
        d.addErrback(self._isolate, batch, rows)
        d.addCallback(self._batch_committed, batch)
        return d

    def _batch_committed(self, result, batch):
        uncommitted = self._uncommitted_streams
        for key, seq in batch.highs.items():
            if uncommitted.get(key) == seq:
                del uncommitted[key]
                if key in self._streams:
                    self._streams[key] = max(self._streams[key], seq)
        return result

    def _isolate(self, failure, batch, rows):
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
        d = self.pool.runInteraction(_write_rows_isolated, rows, batch.groups,
                                     int(self.reactor.seconds() * 1000))
        d.addCallback(self._quarantined)
        return d

    def _quarantined(self, result):
        refused, known = result
        self.metrics["quarantined"] += len(refused)
        self.metrics["known_sends"] += len(known)
        for mid in known:
            self.log.info("store: message {id} is already stored (the same SEND again, after "
                          "the dedupe window forgot it): not stored twice", id=mid)
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


def _load_state(txn, conn):
    txn.execute("SELECT max(seq) FROM messages")
    seq = txn.fetchone()[0] or 0
    # Each run draws a fresh random id prefix; the run number only makes ids
    # easier to read.  Messages are delivered live before their batch
    # commits, and a crash loses those, so seqs are given again after a
    # restart: the prefix keeps their ids apart.  A prefix kept in the file
    # (as this store did before) would come back with the file: a store
    # restored from a backup, or copied to another machine, would give out
    # again ids it (or its original) already gave, and the sync target takes
    # those for duplicates.  Detecting a copy from the file's identity
    # (inode, device) misses a backup copied back over the same inode; a
    # random prefix per run needs no detection and no durable write before
    # listening: two runs share a prefix with probability 2**-48.
    txn.execute("SELECT value FROM meta WHERE key = 'runs'")
    row = txn.fetchone()
    runs = int(row[0]) + 1 if row else 1
    prefix = "%s.%d" % (secrets.token_hex(6), runs)
    txn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('runs', ?)", (str(runs),))
    txn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('id_prefix', ?)", (prefix,))
    conn.commit()
    return seq, prefix


def _recent_sends(conn, limit, per_sender, since_ms):
    """
    The SENDs that carried an id for the dedupe window: for each sender its
    last C{per_sender} ones accepted since C{since_ms}, at most C{limit} in
    all (the newest), oldest first, as (sender, send id, message id,
    fingerprint, ts ms).  No payload is kept: rows written before schema 3
    have no stored fingerprint and get it computed in the query.
    """
    if not (limit and per_sender):
        return []
    conn.create_function(
        "relay_fp", 3, lambda to, topic, payload: fingerprint(to, topic, payload.encode()),
        deterministic=True)
    rows = conn.execute(
        "SELECT sender, send_id, id, fp, ts"
        " FROM (SELECT seq, sender, send_id, id, ts,"
        " coalesce(send_fp, relay_fp(recipient, topic, payload)) AS fp,"
        " row_number() OVER (PARTITION BY sender ORDER BY seq DESC) AS n"
        " FROM messages WHERE send_id IS NOT NULL AND ts >= ?)"
        " WHERE n <= ? ORDER BY seq DESC LIMIT ?", (since_ms, per_sender, limit)).fetchall()
    rows.reverse()
    return rows


# Errors that mean "this row can never be written", as opposed to a full disk
# or a locked database, which a retry may get past.
ROW_ERRORS = (sqlite3.IntegrityError, sqlite3.InterfaceError, sqlite3.ProgrammingError,
              sqlite3.DataError, OverflowError, ValueError, TypeError)


def _quarantine(txn, refused, now_ms, name, row, e):
    # Plain ASCII JSON: whatever SQLite refused (a huge integer, a lone
    # surrogate, an odd type) can be written down.
    text = json.dumps(list(row), default=repr)
    error = ("%s: %s" % (e.__class__.__name__, e)).encode(
        "ascii", "backslashreplace").decode("ascii")
    refused.append((name, text, error))
    txn.execute("INSERT INTO quarantine (ts, statement, row, error) VALUES (?,?,?,?)",
                (now_ms, name, text, error))


def _is_known_send(group, rows, error):
    """
    Whether C{error} refused a SEND because its message id is already
    stored: an id derived from the SEND (relay.dedupe.derived_id, "m...")
    names the same sender, SEND id, recipient, topic and payload, so that
    message is on disk already.
    """
    if "message" not in group or not isinstance(error, sqlite3.IntegrityError):
        return False
    start, end = group["message"]
    mid = rows["message"][start][1]
    return (isinstance(mid, str) and mid.startswith("m")
            and "messages.id" in str(error))


def _write_rows_isolated(txn, rows, groups, now_ms):
    """
    Write a batch SQLite refused as a whole unit by unit: each SEND (a
    group: its message, delivery and stream rows) under one savepoint, so it
    is written whole or quarantined whole, then every other row on its own.
    A SEND whose derived message id is already stored is the same SEND
    again: its rows are left out, not quarantined.

    @return: (refused rows, ids of SENDs found already stored)
    """
    refused = []
    known = []
    grouped = {name: set() for name in STATEMENTS}
    for group in groups:
        for name, (start, end) in group.items():
            grouped[name].update(range(start, end))
    for group in groups:
        txn.execute("SAVEPOINT relay_send")
        try:
            for name in STATEMENTS:
                if name in group:
                    start, end = group[name]
                    for row in rows[name][start:end]:
                        _execute(txn, name, row)
        except ROW_ERRORS as e:
            txn.execute("ROLLBACK TO relay_send")
            if _is_known_send(group, rows, e):
                known.append(rows["message"][group["message"][0]][1])
                txn.execute("RELEASE relay_send")
                continue
            for name in STATEMENTS:
                if name in group:
                    start, end = group[name]
                    for row in rows[name][start:end]:
                        _quarantine(txn, refused, now_ms, name, row, e)
        txn.execute("RELEASE relay_send")
    for name in STATEMENTS:
        skip = grouped[name]
        for i, row in enumerate(rows[name]):
            if i in skip:
                continue
            txn.execute("SAVEPOINT relay_row")
            try:
                _execute(txn, name, row)
            except ROW_ERRORS as e:
                txn.execute("ROLLBACK TO relay_row")
                _quarantine(txn, refused, now_ms, name, row, e)
            txn.execute("RELEASE relay_row")
    return refused, known


def _execute(txn, name, row):
    if name == "expire":
        _expire(txn, row[0])
    else:
        txn.execute(SQL[name], row)


def _write_rows(txn, rows):
    for name in STATEMENTS:
        batch = rows[name]
        if not batch:
            continue
        if name == "expire":
            for row in batch:
                _expire(txn, row[0])
        else:
            txn.executemany(SQL[name], batch)


def _expire(txn, now_ms):
    """
    Mark expired the open deliveries of every message whose expiry passed
    since the last run (expires_at in (watermark, now]) or that was stored
    since the last run (seq above the seq watermark: it may have come with
    an expiry already behind the watermark), then move both watermarks on.
    They live in meta, in the same transaction, so a restart goes on from
    there; the first run on a file looks at every message once.
    """
    txn.execute("SELECT key, value FROM meta WHERE key IN ('expire_after_ms', 'expire_after_seq')")
    marks = dict(txn.fetchall())
    after_ms = int(marks.get("expire_after_ms", -1))
    after_seq = int(marks.get("expire_after_seq", 0))
    txn.execute(SQL["expire"], {"now": now_ms, "after_ms": after_ms, "after_seq": after_seq})
    txn.execute("SELECT max(seq) FROM messages")
    top = txn.fetchone()[0] or 0
    txn.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                    [("expire_after_ms", str(max(after_ms, now_ms))),
                     ("expire_after_seq", str(max(after_seq, top)))])


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
