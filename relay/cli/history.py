# -*- test-case-name: tests.e2e.test_cli_history,tests.e2e.test_cli -*-
"""
``relay history``: read messages from the daemon's SQLite store, read-only.

The store runs in WAL mode, so a read-only connection
(``file:PATH?mode=ro``) sees every committed message and neither blocks nor is
blocked by the running daemon.
"""

import argparse
import datetime
import json
import os
import sqlite3
import sys

from relay.cli import EXIT_FAILED, EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE, fail, printable

EPILOG = """\
examples:
  relay history --db relay.sqlite
  relay history --db relay.sqlite --from alice --to bob --limit 20
  relay history --db relay.sqlite --thread pr-42 --json
  relay history --db relay.sqlite --since 2026-11-26T09:00 --json | jq .body
  relay history --db relay.sqlite --dead-letters

Shows the last --limit messages matching the filters, oldest first, with each
recipient's delivery status (pending, delivered, acked, expired). Times are
UTC; --since accepts ISO 8601 (a time without offset is taken as UTC).
--db defaults to $RELAY_DB.

exit codes: 0 ok, 1 the file is not a relay store, 2 bad usage,
3 the store file cannot be opened.
"""


def register(subparsers):
    parser = subparsers.add_parser(
        "history", help="read stored messages (read-only, daemon may run)",
        description="Read messages from the daemon's SQLite store without disturbing it.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", metavar="PATH", default=os.environ.get("RELAY_DB"),
                        help="the daemon's store (default $RELAY_DB)")
    parser.add_argument("--from", dest="sender", metavar="A", help="only messages from A")
    parser.add_argument("--to", dest="recipient", metavar="B",
                        help="only messages to B (a broadcast counts if B got it)")
    parser.add_argument("--thread", metavar="T", help="only messages of thread T")
    parser.add_argument("--topic", metavar="T", help="only messages with topic T")
    parser.add_argument("--since", metavar="ISO", help="only messages at or after this time")
    parser.add_argument("--limit", type=int, default=50, metavar="N",
                        help="at most N messages, the latest (default 50)")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument("--dead-letters", action="store_true",
                        help="show the messages the sync target refused for good")
    parser.set_defaults(func=main)
    return parser


def _fail(code, message):
    return fail("history", code, message)


def parse_since(text):
    """ISO 8601 to ms since the epoch (naive means UTC); ValueError if bad."""
    value = datetime.datetime.fromisoformat(text.strip())
    if value.tzinfo is None:
        value = value.replace(tzinfo=datetime.timezone.utc)
    return int(value.timestamp() * 1000)


def _iso(ms):
    if not isinstance(ms, (int, float)):
        return "?"
    value = datetime.datetime.fromtimestamp(ms / 1000.0, datetime.timezone.utc)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + "{:03d}Z".format(int(ms) % 1000)


def open_store(path):
    """A read-only connection to the store at ``path``; raises OSError/sqlite3.Error."""
    if not os.path.exists(path):
        raise OSError("no store at {}".format(path))
    uri = "file:{}?mode=ro".format(path.replace("?", "%3f").replace("#", "%23"))
    db = sqlite3.connect(uri, uri=True, timeout=5.0)
    db.row_factory = sqlite3.Row
    return db


def query_messages(db, sender=None, recipient=None, thread=None, topic=None,
                   since_ms=None, limit=50):
    """The matching messages (dicts), oldest first, at most ``limit`` latest."""
    sql, params = messages_sql(sender, recipient, thread, topic, since_ms, limit)
    rows = db.execute(sql, params).fetchall()
    out = []
    for row in reversed(rows):
        item = dict(row)
        # Decoded here, not with json_extract, which cuts text at a NUL.
        payload = json.loads(item.pop("payload"))
        item["body"] = payload.get("body")
        item["data"] = payload.get("data")
        for key in ("payload_meta", "deliveries"):
            if item[key] is not None:
                item[key] = json.loads(item[key])
        item["time"] = _iso(item["ts"])
        out.append(item)
    return out


def messages_sql(sender=None, recipient=None, thread=None, topic=None, since_ms=None, limit=50):
    """
    The query of L{query_messages} and its parameters; every filter is
    served by an index (schema 4).
    """
    where, params = [], []
    if sender is not None:
        where.append("m.sender = ?")
        params.append(sender)
    if recipient is not None:
        # A UNION of two index lookups (messages_recipient, the deliveries
        # key), not an OR with EXISTS, which scans every message; alone, each
        # side needs only its newest `limit` seqs.
        only = sender is None and thread is None and topic is None and since_ms is None
        if only:
            where.append("m.seq IN (SELECT seq FROM (SELECT seq FROM messages WHERE recipient = ?"
                         " ORDER BY seq DESC LIMIT ?) UNION SELECT message_seq FROM"
                         " (SELECT message_seq FROM deliveries WHERE recipient = ?"
                         " ORDER BY message_seq DESC LIMIT ?))")
            params.extend([recipient, limit, recipient, limit])
        else:
            where.append("m.seq IN (SELECT seq FROM messages WHERE recipient = ? "
                         "UNION SELECT message_seq FROM deliveries WHERE recipient = ?)")
            params.extend([recipient, recipient])
    if thread is not None:
        where.append("m.thread = ?")
        params.append(thread)
    if topic is not None:
        where.append("m.topic = ?")
        params.append(topic)
    if since_ms is not None:
        where.append("m.ts >= ?")
        params.append(since_ms)
    sql = ("SELECT m.seq, m.id, m.send_id, m.ts, m.sender, m.recipient, m.topic, m.thread, "
           "m.kind, m.payload, m.payload_meta, m.expires_at, "
           "(SELECT json_group_object(d.recipient, d.status) FROM deliveries d "
           " WHERE d.message_seq = m.seq) AS deliveries "
           "FROM messages m{} ORDER BY m.seq DESC LIMIT ?").format(
               " WHERE " + " AND ".join(where) if where else "")
    params.append(limit)
    return sql, params


def query_dead_letters(db, limit=50):
    rows = db.execute(
        "SELECT dl.message_seq AS seq, dl.id, dl.reason, dl.ts AS dead_ts, m.ts, m.sender, "
        "m.recipient, m.topic, m.thread, m.kind, json_extract(m.payload, '$.body') AS body "
        "FROM dead_letters dl LEFT JOIN messages m ON m.seq = dl.message_seq "
        "ORDER BY dl.message_seq DESC LIMIT ?", (limit,)).fetchall()
    out = []
    for row in reversed(rows):
        item = dict(row)
        item["time"] = _iso(item["ts"])
        item["dead_time"] = _iso(item["dead_ts"])
        out.append(item)
    return out


def format_message(item):
    """
    The human form of a stored message; characters that could rewrite the
    terminal are shown escaped (L{relay.cli.printable}).
    """
    where = "{} -> {}".format(item["sender"], item["recipient"])
    if item.get("topic"):
        where += " #{}".format(item["topic"])
    if item.get("thread"):
        where += " [{}]".format(item["thread"])
    kind = "" if item.get("kind") == "message" else "({}) ".format(item.get("kind"))
    body = item.get("body")
    body = body if isinstance(body, str) else json.dumps(body)
    line = "{} {}: {}{}".format(item["time"], where, kind, body)
    deliveries = item.get("deliveries")
    if deliveries:
        line += "  [" + ", ".join("{} {}".format(k, v) for k, v in sorted(
            deliveries.items())) + "]"
    line = printable(line).replace("\n", "\n    ")
    if item.get("data"):
        line += "\n    data: " + json.dumps(item["data"], sort_keys=True)
    return line


def format_dead_letter(item):
    return printable("{} {} -> {}: {}  [dead since {}: {}]".format(
        item["time"], item.get("sender"), item.get("recipient"), item.get("body"),
        item["dead_time"], item["reason"]))


def main(args):
    if not args.db:
        return _fail(EXIT_USAGE, "give --db PATH (or set RELAY_DB)")
    if args.limit < 1:
        return _fail(EXIT_USAGE, "--limit must be at least 1")
    since_ms = None
    if args.since is not None:
        try:
            since_ms = parse_since(args.since)
        except ValueError:
            return _fail(EXIT_USAGE, "--since {!r} is not an ISO 8601 time "
                         "(e.g. 2026-11-26T09:00 or 2026-11-26T09:00:00+01:00)".format(args.since))
    try:
        db = open_store(args.db)
    except (OSError, sqlite3.Error) as e:
        return _fail(EXIT_UNREACHABLE, "cannot open {}: {}".format(args.db, e))
    try:
        try:
            if args.dead_letters:
                items = query_dead_letters(db, args.limit)
                formatter = format_dead_letter
            else:
                items = query_messages(db, args.sender, args.recipient, args.thread,
                                       args.topic, since_ms, args.limit)
                formatter = format_message
        except sqlite3.DatabaseError as e:
            return _fail(EXIT_FAILED, "{} is not a relay store ({})".format(args.db, e))
    finally:
        db.close()
    try:
        for item in items:
            if args.json:
                sys.stdout.write(json.dumps(item, ensure_ascii=False) + "\n")
            else:
                sys.stdout.write(formatter(item) + "\n")
        sys.stdout.flush()
    except BrokenPipeError:
        return EXIT_OK
    if not items and not args.json:
        sys.stderr.write("relay history: no messages match\n")
    return EXIT_OK
