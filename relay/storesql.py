# -*- test-case-name: tests.test_storesql -*-
"""
The store's SQL side (L{relay.store} is its reactor side): the delivery
states, the statements a batch runs in order, the schema and its upgrades,
and the functions that run inside the writer's transactions (or, at
startup, on a plain connection).  Nothing here touches the reactor.
"""

import json
import os
import secrets
import sqlite3


from relay.dedupe import fingerprint

SCHEMA_DIR = os.path.join(os.path.dirname(__file__), "schema")

# A delivery's states (deliveries.status).  They belong to the store: the
# router names them through these constants, and the SQL below uses them.
STATUS_PENDING = "pending"
STATUS_DELIVERED = "delivered"
STATUS_ACKED = "acked"
STATUS_EXPIRED = "expired"
# Federation: waiting for the ingest to take it over, and taken over (the
# ingest owns it; for this daemon it is done, like acked).
STATUS_REMOTE = "remote"
STATUS_HANDED = "handed"

# The statements a batch carries, in the order a flush runs them: a message
# row is on disk before its delivery rows, an insert before its updates.
STATEMENTS = ("message", "delivery", "status", "ack_by_id", "stream", "expire", "meta",
              "dead_letter", "rehome", "handed", "reopen")

_STATES = {"pending": STATUS_PENDING, "delivered": STATUS_DELIVERED, "acked": STATUS_ACKED,
           "expired": STATUS_EXPIRED, "remote": STATUS_REMOTE, "handed": STATUS_HANDED}

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
    # Federation (relay.federation.storage): an agent's open deliveries go
    # to its new home daemon; a hand-over the ingest confirmed; a delivery
    # handed over that came back (its agent's home is here again).
    "rehome": (
        "UPDATE deliveries SET status = '%(remote)s', stream_seq = 0, updated_at = ?"
        " WHERE recipient = ? AND status IN ('%(pending)s', '%(delivered)s')" % _STATES
    ),
    "handed": (
        "UPDATE deliveries SET status = '%(handed)s', updated_at = ?"
        " WHERE recipient = ? AND message_seq = ? AND status = '%(remote)s'" % _STATES
    ),
    "reopen": (
        "UPDATE deliveries SET status = '%(pending)s', stream_seq = ?, attempts = 0,"
        " updated_at = ? WHERE recipient = ? AND message_seq = ?"
        " AND status IN ('%(remote)s', '%(handed)s')" % _STATES
    ),
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

# PRAGMA auto_vacuum's value for INCREMENTAL.
AUTO_VACUUM_INCREMENTAL = 2


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
    _incremental_vacuum_on(conn, log, path)


def _incremental_vacuum_on(conn, log, path):
    """
    Make freed pages go back to the file system in steps (retention runs
    C{PRAGMA incremental_vacuum}).  A file made before schema 4 has
    auto_vacuum off, and switching it needs one VACUUM, which rewrites the
    whole file (it needs as much free disk again, and takes about a second
    per 100 MB): it runs here, once, at startup, before anything listens.
    """
    if conn.execute("PRAGMA auto_vacuum").fetchone()[0] == AUTO_VACUUM_INCREMENTAL:
        return
    if conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'messages'").fetchone()[0]:
        log.info("store {path}: switching to auto_vacuum=INCREMENTAL (one VACUUM, once)",
                 path=path)
    conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
    conn.execute("VACUUM")


def _load_state(txn, conn):
    txn.execute("SELECT max(seq) FROM messages")
    seq = txn.fetchone()[0] or 0
    # Retention may have deleted the newest messages: never give their
    # seqs again (the sync cursor is past them).
    txn.execute("SELECT value FROM meta WHERE key = 'retired_seq'")
    row = txn.fetchone()
    seq = max(seq, int(row[0]) if row else 0)
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
