# -*- test-case-name: tests.test_ingest_collisions -*-
"""
Telling a true duplicate from an id collision.

A row whose C{(workspace_id, original_id)} is already stored is a
I{duplicate} when its content is the same (the daemon re-sent it: retry,
spill replay, lost cursor, a copied store re-syncing), whatever daemon sent
it; it is a I{collision} when the content differs (a store restored from a
backup, or copied to a second machine, giving out ids again).  A collision
is never dropped: it is stored under a disambiguated id,
C{"<id>~<16 hex of the content's SHA-256>"} (L{disambiguated}), with
C{collision_of} naming the id it collided with (migration 0002).  The
disambiguated id is a function of the content, so re-sending a collided
message is again a duplicate.

L{resolve} is written without I/O: a generator that yields C{(sql,
params)} and is sent the fetched rows back, so the same logic runs on a
txpostgres cursor and on a blocking psycopg2 one (L{run_sync},
L{run_async}).
"""

import hashlib

import orjson

#: Columns of a validated row (L{relay.ingest.validate.ROW_COLUMNS}) after
#: original_id, as read back for comparison.
_SELECT_SQL = (
    "SELECT original_id, from_agent, to_agent, body, kind, topic, thread, channel,"
    " is_broadcast, is_urgent, data::text, payload_meta::text,"
    " (extract(epoch FROM message_ts) * 1000)::bigint,"
    " (extract(epoch FROM expires_at) * 1000)::bigint"
    " FROM agent_messages WHERE workspace_id = %s::uuid AND original_id = ANY(%s::text[])"
)

_INSERT_SQL = (
    "INSERT INTO agent_messages (workspace_id, daemon_id, original_id, collision_of,"
    " from_agent, to_agent, body, kind, topic, thread, channel, is_broadcast, is_urgent,"
    " data, payload_meta, message_ts, expires_at)"
    " SELECT %s::uuid, %s::uuid, u.original_id, u.collision_of, u.from_agent, u.to_agent,"
    " u.body, u.kind, u.topic, u.thread, u.channel, u.is_broadcast, u.is_urgent,"
    " u.data::jsonb, u.payload_meta::jsonb,"
    " 'epoch'::timestamptz + u.message_ts * interval '1 millisecond',"
    " 'epoch'::timestamptz + u.expires_at * interval '1 millisecond'"
    " FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::text[],"
    " %s::text[], %s::text[], %s::text[], %s::boolean[], %s::boolean[], %s::text[],"
    " %s::text[], %s::bigint[], %s::bigint[])"
    " AS u(original_id, collision_of, from_agent, to_agent, body, kind, topic, thread,"
    " channel, is_broadcast, is_urgent, data, payload_meta, message_ts, expires_at)"
    " ORDER BY u.original_id"
    " ON CONFLICT (workspace_id, original_id) DO NOTHING RETURNING original_id"
)


def _json(text):
    return None if text is None else orjson.loads(text)


def content(row):
    """
    What makes two rows with the same id the same message: every column but
    the id, with the JSON columns decoded (key order and spacing do not
    matter).
    """
    return row[1:10] + (_json(row[10]), _json(row[11])) + tuple(row[12:14])


def disambiguated(row):
    """
    The id a colliding C{row} is stored under.
    """
    digest = hashlib.sha256(orjson.dumps(list(content(row)), option=orjson.OPT_SORT_KEYS))
    return "%s~%s" % (row[0], digest.hexdigest()[:16])


def skipped_rows(rows, inserted_ids):
    """
    The rows of C{rows} (sorted by id, as inserted) that the first INSERT
    skipped: every row whose id was not returned, and every repeat after
    the first of an id that was.
    """
    inserted = set(inserted_ids)
    seen = set()
    skipped = []
    for row in rows:
        mid = row[0]
        if mid in inserted and mid not in seen:
            seen.add(mid)
        else:
            skipped.append(row)
    return skipped


def resolve(workspace_id, daemon_id, rows, inserted_ids):
    """
    Sort out the rows the first INSERT skipped.

    A generator: it yields C{(sql, params)}, is sent the statement's
    fetched rows, and returns C{(synced, duplicates, collisions)} for the
    whole batch (C{synced} counts every row stored now, collisions
    included, so C{synced + duplicates == len(rows)}).

    @param workspace_id: the batch's workspace (a UUID string).
    @param daemon_id: the batch's daemon (a UUID string).
    @param rows: the batch's rows, sorted by id, as they were inserted.
    @param inserted_ids: the ids the first INSERT returned.
    """
    inserted = len(set(inserted_ids))
    skipped = skipped_rows(rows, inserted_ids)
    if not skipped:
        return inserted, 0, 0
    names = {row[0] for row in skipped}
    names.update(disambiguated(row) for row in skipped)
    stored = yield (_SELECT_SQL, (workspace_id, sorted(names)))
    known = {r[0]: content(r) for r in stored}
    duplicates = 0
    pending = {}
    for row in skipped:
        mine = content(row)
        if known.get(row[0]) == mine:
            duplicates += 1
            continue
        other = disambiguated(row)
        if known.get(other) == mine or other in pending:
            duplicates += 1
            continue
        pending[other] = row
    if not pending:
        return inserted, duplicates, 0
    ids = sorted(pending)
    chosen = [pending[i] for i in ids]
    columns = [ids, [r[0] for r in chosen]]
    columns += [list(c) for c in zip(*[r[1:] for r in chosen])]
    returned = yield (_INSERT_SQL, [workspace_id, daemon_id] + columns)
    collisions = len(returned)
    # A disambiguated id already stored with other content cannot happen
    # short of a SHA-256 prefix collision; a concurrent insert of the same
    # collision is a duplicate.
    duplicates += len(chosen) - collisions
    return inserted + collisions, duplicates, collisions


def run_sync(cursor, gen):
    """
    Drive L{resolve} on a blocking DB-API cursor.

    @param cursor: a psycopg2 cursor (on an adbapi thread).
    @param gen: the generator L{resolve} returned.
    @return: what C{gen} returns.
    """
    try:
        sql, params = next(gen)
        while True:
            cursor.execute(sql, params)
            sql, params = gen.send(cursor.fetchall())
    except StopIteration as stop:
        return stop.value


async def run_async(cursor, gen):
    """
    Drive L{resolve} on a txpostgres cursor.

    @param cursor: a txpostgres cursor inside its interaction.
    @param gen: the generator L{resolve} returned.
    @return: (a coroutine of) what C{gen} returns.
    """
    try:
        sql, params = next(gen)
        while True:
            await cursor.execute(sql, params)
            sql, params = gen.send(cursor.fetchall())
    except StopIteration as stop:
        return stop.value
