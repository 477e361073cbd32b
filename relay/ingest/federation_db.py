# -*- test-case-name: tests.test_ingest_federation,tests.e2e.test_ingest_federation -*-
"""
The SQL of federation: the directory, the daemons of a workspace and the
inbound queue (migration C{0003_federation.sql}).

Each function runs one transaction on a L{relay.ingest.db.TxPostgresPool}
(C{runInteraction}) and returns its Deferred.  A transaction that changes
C{fed_inbound} or C{fed_directory} sends C{NOTIFY relay_federation} with the
workspace id as payload (L{CHANNEL}), delivered to every listener once it
commits (L{relay.ingest.notify}).  Workspace and daemon ids are given as
text.
"""

import attr
from twisted.internet.defer import Deferred, gatherResults

#: The NOTIFY channel; the payload is the workspace id.
CHANNEL = "relay_federation"

#: The most directory entries one poll answers with.
DIRECTORY_PAGE = 1000

_SEEN_SQL = (
    "INSERT INTO fed_daemons (workspace_id, daemon_id) VALUES (%s::uuid, %s::uuid)"
    " ON CONFLICT (workspace_id, daemon_id) DO UPDATE SET last_seen = now()"
)

_NOTIFY_SQL = "SELECT pg_notify('" + CHANNEL + "', %s)"

#: The first key of the advisory lock (two-key form) that serializes the
#: directory changes of one workspace; the second is the workspace's hash.
DIRECTORY_LOCK = 0x66656431

# Directory versions come from one sequence, taken before commit: without
# this lock a change could commit after a later version was already read,
# and a daemon reading "what changed after V" would never see it.  Taken
# first, so versions of one workspace commit in their order.
_LOCK_SQL = "SELECT pg_advisory_xact_lock(%s, hashtext(%s))"

_CLAIM_COLUMNS = "name, home_daemon::text, online, version"

# The latest HELLO anywhere wins: the name's home is the daemon that says so.
_ONLINE_SQL = (
    "INSERT INTO fed_directory (workspace_id, name, home_daemon, online, since, version)"
    " VALUES (%s::uuid, %s, %s::uuid, true, now(), nextval('fed_directory_version'))"
    " ON CONFLICT (workspace_id, name) DO UPDATE SET home_daemon = EXCLUDED.home_daemon,"
    " online = true, since = now(), version = EXCLUDED.version"
    " RETURNING " + _CLAIM_COLUMNS
)

# Only the home says a name is offline: a name taken by another daemon
# meanwhile stays as it is.
_OFFLINE_SQL = (
    "UPDATE fed_directory SET online = false, since = now(),"
    " version = nextval('fed_directory_version')"
    " WHERE workspace_id = %s::uuid AND name = %s AND home_daemon = %s::uuid"
    " RETURNING " + _CLAIM_COLUMNS
)

_CLAIM_SQL = (
    "SELECT " + _CLAIM_COLUMNS + " FROM fed_directory WHERE workspace_id = %s::uuid AND name = %s"
)

# One row per item addressed to a name (routed by the directory when
# fetched), one per other daemon of the workspace for a broadcast; stored
# in the order of the items, once: a row already there is a duplicate,
# unless the daemon handing it over is the one that confirmed it (it took
# the message for an agent that has moved on since: it hands it back, and
# the row is routed again, to the name's home now).
_HANDOVER_SQL = """
WITH seen AS (
    INSERT INTO fed_daemons (workspace_id, daemon_id) VALUES (%(workspace)s::uuid, %(daemon)s::uuid)
    ON CONFLICT (workspace_id, daemon_id) DO UPDATE SET last_seen = now()
), items AS (
    SELECT * FROM unnest(%(ids)s::text[], %(recipients)s::text[], %(messages)s::text[])
        WITH ORDINALITY AS t(message_id, recipient, message, n)
), targets AS (
    SELECT n, message_id, recipient, NULL::uuid AS target_daemon, message
        FROM items WHERE recipient <> '*'
    UNION ALL
    SELECT i.n, i.message_id, i.recipient, d.daemon_id, i.message
        FROM items i JOIN fed_daemons d
            ON d.workspace_id = %(workspace)s::uuid AND d.daemon_id <> %(daemon)s::uuid
        WHERE i.recipient = '*'
), stored AS (
    INSERT INTO fed_inbound (workspace_id, message_id, recipient, target_daemon,
                             origin_daemon, message)
    SELECT %(workspace)s::uuid, message_id, recipient, target_daemon, %(daemon)s::uuid, message
        FROM targets ORDER BY n, target_daemon
    ON CONFLICT (workspace_id, message_id, recipient,
                 coalesce(target_daemon, '00000000-0000-0000-0000-000000000000'::uuid))
    DO UPDATE SET confirmed_at = NULL, confirmed_by = NULL
        WHERE fed_inbound.confirmed_by = %(daemon)s::uuid
    RETURNING 1
), counts AS (
    SELECT (SELECT count(*) FROM targets) AS offered, (SELECT count(*) FROM stored) AS stored
)
SELECT offered, stored,
       (SELECT count(*) FROM (SELECT pg_notify('""" + CHANNEL + """', %(workspace)s::text)
                              FROM counts WHERE stored > 0) AS notified)
    FROM counts
"""

# A daemon confirms what it fetched: rows aimed at it, or routed by the
# directory (whose home may have moved since it fetched them).
_CONFIRM_SQL = (
    "UPDATE fed_inbound SET confirmed_at = now(), confirmed_by = %(daemon)s::uuid"
    " WHERE workspace_id = %(workspace)s::uuid AND seq = ANY(%(seqs)s::bigint[])"
    " AND confirmed_at IS NULL"
    " AND (target_daemon IS NULL OR target_daemon = %(daemon)s::uuid)"
)

_ITEMS_SQL = """
(SELECT seq, recipient, message FROM fed_inbound
    WHERE workspace_id = %(workspace)s::uuid AND target_daemon = %(daemon)s::uuid
        AND confirmed_at IS NULL
    ORDER BY seq LIMIT %(limit)s)
UNION ALL
(SELECT i.seq, i.recipient, i.message FROM fed_inbound i
    JOIN fed_directory f ON f.workspace_id = i.workspace_id AND f.name = i.recipient
    WHERE i.workspace_id = %(workspace)s::uuid AND i.target_daemon IS NULL
        AND i.confirmed_at IS NULL AND f.home_daemon = %(daemon)s::uuid
    ORDER BY i.seq LIMIT %(limit)s)
ORDER BY seq LIMIT %(limit)s
"""

_DIRECTORY_SQL = (
    "SELECT name, home_daemon::text, online,"
    " (extract(epoch FROM since) * 1000)::bigint, version"
    " FROM fed_directory WHERE workspace_id = %(workspace)s::uuid AND version > %(after)s"
    " ORDER BY version LIMIT " + str(DIRECTORY_PAGE)
)


@attr.s(frozen=True)
class Page:
    """
    What one poll query found.

    @ivar items: C{(seq, recipient, message_json)} rows, by seq.
    @ivar directory: C{(name, home, online, since_ms, version)} rows, by
        version.
    @ivar full: whether either list filled its page (poll again at once).
    @ivar confirmed: how many rows this poll confirmed.
    """

    items = attr.ib()
    directory = attr.ib()
    full = attr.ib()
    confirmed = attr.ib(default=0)

    @property
    def empty(self):
        """
        Whether there is nothing to answer with.
        """
        return not self.items and not self.directory


def _interaction(coroutine_function):
    """
    Make C{coroutine_function(cursor, ...)} an interaction for
    C{runInteraction} (which wants a Deferred back).
    """
    def interaction(cursor, *args):
        return Deferred.fromCoroutine(coroutine_function(cursor, *args))
    interaction.__name__ = coroutine_function.__name__
    return interaction


@_interaction
async def _presence(cursor, workspace, daemon, events):
    await cursor.execute(_LOCK_SQL, (DIRECTORY_LOCK, workspace))
    await cursor.execute(_SEEN_SQL, (workspace, daemon))
    claims = []
    changed = False
    for name, online in events:
        await cursor.execute(_ONLINE_SQL if online else _OFFLINE_SQL, (workspace, name, daemon))
        row = cursor.fetchone()
        if row is None:
            await cursor.execute(_CLAIM_SQL, (workspace, name))
            row = cursor.fetchone() or (name, None, False, 0)
        else:
            changed = True
        claims.append(row)
    if changed:
        await cursor.execute(_NOTIFY_SQL, (workspace,))
    return claims


def presence(pool, workspace, daemon, events):
    """
    Apply presence C{events} of C{daemon} in order, in one transaction, and
    record the daemon as one of the workspace's.  The presence transactions
    of one workspace run one at a time (L{DIRECTORY_LOCK}), so its
    directory versions become visible in their order.

    @param events: C{(name, online)} pairs.
    @return: a Deferred firing with one C{(name, home, online, version)}
        row per event, as the directory holds it after that event
        (C{(name, None, False, 0)} for a name it never held).
    """
    return pool.runInteraction(_presence, workspace, daemon, events)


def _handover_counts(result):
    rows, stored, _notified = result[0]
    return stored, rows - stored


def handover(pool, workspace, daemon, items):
    """
    Store handed-over messages once each, in one transaction.

    @param items: C{(message_id, recipient, message_json)} triples.
    @return: a Deferred firing with C{(stored, duplicates)}, counted in
        rows (a broadcast makes one row per other daemon of the workspace).
    """
    # One statement, so one round trip (a single statement is its own
    # transaction): the daemon's record, the rows and the NOTIFY commit
    # together.  A BEGIN, three statements and a COMMIT made the hand-over
    # the slowest step between two daemons.
    return pool.runQuery(_HANDOVER_SQL, {
        "workspace": workspace, "daemon": daemon,
        "ids": [i[0] for i in items], "recipients": [i[1] for i in items],
        "messages": [i[2] for i in items],
    }).addCallback(_handover_counts)


# The daemon's record and its confirms in one statement (one round trip).
_SEEN_CONFIRM_SQL = """
WITH seen AS (
    INSERT INTO fed_daemons (workspace_id, daemon_id) VALUES (%(workspace)s::uuid, %(daemon)s::uuid)
    ON CONFLICT (workspace_id, daemon_id) DO UPDATE SET last_seen = now()
), confirmed AS (
""" + _CONFIRM_SQL + """
    RETURNING 1
)
SELECT count(*) FROM confirmed
"""


async def _fetch(pool, workspace, daemon, after, limit):
    # The two reads run side by side on two connections of the pool (each
    # is one statement: no transaction, one round trip each).
    params = {"workspace": workspace, "daemon": daemon, "after": after, "limit": limit}
    items, directory = await gatherResults([pool.runQuery(_ITEMS_SQL, params),
                                            pool.runQuery(_DIRECTORY_SQL, params)])
    return items, directory, len(items) >= limit or len(directory) >= DIRECTORY_PAGE


async def _poll(pool, workspace, daemon, confirm, after, limit):
    [(confirmed,)] = await pool.runQuery(_SEEN_CONFIRM_SQL, {
        "workspace": workspace, "daemon": daemon, "seqs": confirm or []})
    return Page(*await _fetch(pool, workspace, daemon, after, limit), confirmed=confirmed)


def poll(pool, workspace, daemon, confirm, after, limit):
    """
    Confirm C{confirm} (rows of the workspace aimed at C{daemon} or routed
    by the directory) and record the daemon as one of the workspace's (one
    statement), then fetch its first page.

    @return: a Deferred firing with a L{Page}.
    """
    return Deferred.fromCoroutine(_poll(pool, workspace, daemon, confirm, after, limit))


async def _fetch_page(pool, workspace, daemon, after, limit):
    return Page(*await _fetch(pool, workspace, daemon, after, limit))


def fetch(pool, workspace, daemon, after, limit):
    """
    Fetch C{daemon}'s page again (after a wait), confirming nothing.

    @return: a Deferred firing with a L{Page}.
    """
    return Deferred.fromCoroutine(_fetch_page(pool, workspace, daemon, after, limit))
