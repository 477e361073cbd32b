# -*- test-case-name: tests.test_ingest_inserters,tests.e2e.test_ingest_store -*-
"""
The bulk insert strategies, behind one interface, L{IBulkInserter}.

 - L{MultiRowInserter}: txpostgres, multi-row C{INSERT ... VALUES (...), (...)
   ON CONFLICT (workspace_id, original_id) DO NOTHING} in chunks of
   C{chunk_size} rows, all chunks in one transaction.
 - L{UnnestInserter}: txpostgres, one C{INSERT ... SELECT ... FROM unnest(...)}
   over one array per column, in one transaction.
 - L{CopyInserter}: psycopg2 C{copy_expert} on an adbapi thread: the rows are
   streamed in chunks into C{COPY ... FROM STDIN} into a C{TEMP} staging
   table (C{ON COMMIT DROP}), then C{INSERT INTO agent_messages SELECT ...
   FROM staging ON CONFLICT DO NOTHING}, in one transaction.  (txpostgres
   cannot COPY: psycopg2's asynchronous mode refuses it.)
 - L{ThresholdInserter}: picks the first strategy up to C{copy_threshold} rows
   and the COPY strategy above it.

Each strategy inserts a batch's rows sorted by id (a stable sort, so the first
of repeated ids still wins): concurrent transactions then take the unique
index's locks in the same order and cannot deadlock on overlapping batches.

Every value reaches PostgreSQL as a bound parameter or as COPY data; no value
is ever formatted into SQL text.  Each returns a Deferred firing with
C{(synced, duplicates)}: rows newly inserted and rows that were already
present with the same content, repeats inside the batch included.  A row
whose id is stored with other content is a collision: it is stored under a
disambiguated id (L{relay.ingest.collisions}), counted in C{synced} and in
the result's C{collisions} attribute (L{Counts}).
"""

from operator import itemgetter

from twisted.internet.defer import Deferred, succeed
from zope.interface import Attribute, Interface, implementer

from relay.ingest import collisions as _collisions

_TARGET_COLUMNS = (
    "workspace_id, daemon_id, original_id, from_agent, to_agent, body, kind,"
    " topic, thread, channel, is_broadcast, is_urgent, data, payload_meta,"
    " message_ts, expires_at"
)

_CONFLICT = " ON CONFLICT (workspace_id, original_id) DO NOTHING RETURNING original_id"

# One row of the multi-row VALUES list: workspace and daemon, then the 14
# columns of relay.ingest.validate.ROW_COLUMNS.
_VALUES_ROW = (
    "(%s::uuid,%s::uuid,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s::jsonb,%s::jsonb,"
    "'epoch'::timestamptz + %s::bigint * interval '1 millisecond',"
    "'epoch'::timestamptz + %s::bigint * interval '1 millisecond')"
)

_UNNEST_SQL = (
    "INSERT INTO agent_messages (" + _TARGET_COLUMNS + ")"
    " SELECT %s::uuid, %s::uuid, u.original_id, u.from_agent, u.to_agent,"
    " u.body, u.kind, u.topic, u.thread, u.channel, u.is_broadcast,"
    " u.is_urgent, u.data::jsonb, u.payload_meta::jsonb,"
    " 'epoch'::timestamptz + u.message_ts * interval '1 millisecond',"
    " 'epoch'::timestamptz + u.expires_at * interval '1 millisecond'"
    " FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::text[],"
    " %s::text[], %s::text[], %s::text[], %s::boolean[], %s::boolean[],"
    " %s::text[], %s::text[], %s::bigint[], %s::bigint[])"
    " AS u(original_id, from_agent, to_agent, body, kind, topic, thread,"
    " channel, is_broadcast, is_urgent, data, payload_meta, message_ts,"
    " expires_at)" + _CONFLICT
)

_STAGING_SQL = (
    "CREATE TEMP TABLE ingest_staging ("
    " original_id text, from_agent text, to_agent text, body text, kind text,"
    " topic text, thread text, channel text, is_broadcast boolean,"
    " is_urgent boolean, data jsonb, payload_meta jsonb, message_ts bigint,"
    " expires_at bigint) ON COMMIT DROP"
)

_COPY_SQL = "COPY ingest_staging FROM STDIN"

_FROM_STAGING_SQL = (
    "INSERT INTO agent_messages (" + _TARGET_COLUMNS + ")"
    " SELECT %s::uuid, %s::uuid, original_id, from_agent, to_agent, body,"
    " kind, topic, thread, channel, is_broadcast, is_urgent, data,"
    " payload_meta,"
    " 'epoch'::timestamptz + message_ts * interval '1 millisecond',"
    " 'epoch'::timestamptz + expires_at * interval '1 millisecond'"
    " FROM ingest_staging" + _CONFLICT
)


class IBulkInserter(Interface):
    """
    Inserts a validated batch into C{agent_messages}, in one transaction.
    """

    name = Attribute("A short name for metrics and benchmarks.")

    def insert(workspace_id, daemon_id, rows):
        """
        Insert C{rows} (tuples in L{relay.ingest.validate.ROW_COLUMNS} order)
        for one workspace and daemon, skipping rows whose
        C{(workspace_id, original_id)} already exists.

        @param workspace_id: the workspace (a UUID string).
        @param daemon_id: the daemon that sent the batch (a UUID string).
        @param rows: a L{list} of row tuples.
        @return: a Deferred firing with L{Counts}.
        """


_by_id = itemgetter(0)


class Counts(tuple):
    """
    C{(synced, duplicates)} of one insert, with C{collisions}: how many of
    the C{synced} rows collided with a stored id and were stored under a
    disambiguated one.
    """

    def __new__(cls, synced, duplicates, collisions=0):
        self = tuple.__new__(cls, (synced, duplicates))
        self.collisions = collisions
        return self

    @property
    def synced(self):
        """
        Rows stored now, collisions included.
        """
        return self[0]

    @property
    def duplicates(self):
        """
        Rows that were already stored with the same content.
        """
        return self[1]


_EMPTY = Counts(0, 0)


def _ids(cursor):
    return [r[0] for r in cursor.fetchall()]


@implementer(IBulkInserter)
class MultiRowInserter:
    """
    Multi-row C{INSERT ... VALUES} in chunks, on txpostgres.
    """

    name = "multirow"

    def __init__(self, pool, chunk_size=100):
        """
        @param pool: a L{relay.ingest.db.TxPostgresPool}.
        @param chunk_size: rows per C{INSERT} statement.
        """
        if chunk_size < 1:
            raise ValueError("chunk_size must be at least 1")
        self.pool = pool
        self.chunk_size = chunk_size
        self._sql = {}

    def statement(self, n):
        """
        @return: the C{INSERT} statement for C{n} rows (made once per C{n}).
        """
        sql = self._sql.get(n)
        if sql is None:
            sql = self._sql[n] = (
                "INSERT INTO agent_messages (" + _TARGET_COLUMNS + ") VALUES "
                + ",".join([_VALUES_ROW] * n) + _CONFLICT
            )
        return sql

    def insert(self, workspace_id, daemon_id, rows):
        if not rows:
            return succeed(_EMPTY)
        return self.pool.runInteraction(self._interaction, workspace_id, daemon_id, rows)

    async def _run(self, cursor, workspace_id, daemon_id, rows):
        inserted = []
        rows = sorted(rows, key=_by_id)
        prefix = (workspace_id, daemon_id)
        size = self.chunk_size
        for start in range(0, len(rows), size):
            chunk = rows[start:start + size]
            params = []
            for row in chunk:
                params += prefix
                params += row
            await cursor.execute(self.statement(len(chunk)), params)
            inserted += _ids(cursor)
        result = await _collisions.run_async(
            cursor, _collisions.resolve(workspace_id, daemon_id, rows, inserted))
        return Counts(*result)

    def _interaction(self, cursor, workspace_id, daemon_id, rows):
        return Deferred.fromCoroutine(self._run(cursor, workspace_id, daemon_id, rows))


@implementer(IBulkInserter)
class UnnestInserter:
    """
    One C{INSERT ... SELECT ... FROM unnest(arrays)} statement, on txpostgres.
    """

    name = "unnest"

    def __init__(self, pool):
        """
        @param pool: a L{relay.ingest.db.TxPostgresPool}.
        """
        self.pool = pool

    def insert(self, workspace_id, daemon_id, rows):
        if not rows:
            return succeed(_EMPTY)
        return self.pool.runInteraction(self._interaction, workspace_id, daemon_id, rows)

    def _interaction(self, cursor, workspace_id, daemon_id, rows):
        return Deferred.fromCoroutine(self._run(cursor, workspace_id, daemon_id, rows))

    async def _run(self, cursor, workspace_id, daemon_id, rows):
        rows = sorted(rows, key=_by_id)
        params = [workspace_id, daemon_id]
        params += [list(column) for column in zip(*rows)]
        await cursor.execute(_UNNEST_SQL, params)
        result = await _collisions.run_async(
            cursor, _collisions.resolve(workspace_id, daemon_id, rows, _ids(cursor)))
        return Counts(*result)


def _escape(value):
    """
    Escape a string for COPY's text format.
    """
    return (value.replace("\\", "\\\\").replace("\n", "\\n")
            .replace("\r", "\\r").replace("\t", "\\t"))


def encode_copy_rows(rows):
    """
    Encode rows as COPY text-format lines.

    @param rows: row tuples in L{relay.ingest.validate.ROW_COLUMNS} order.
    @return: one L{bytes} for all of C{rows}, each line ended by a newline.
    """
    esc = _escape
    lines = []
    append = lines.append
    for (mid, sender, to, body, kind, topic, thread, channel,
         broadcast, urgent, data, meta, ts, expires) in rows:
        append("\t".join((
            esc(mid), esc(sender), esc(to), esc(body), kind,
            "\\N" if topic is None else esc(topic),
            "\\N" if thread is None else esc(thread),
            "\\N" if channel is None else esc(channel),
            "t" if broadcast else "f",
            "t" if urgent else "f",
            "\\N" if data is None else esc(data),
            "\\N" if meta is None else esc(meta),
            str(ts),
            "\\N" if expires is None else str(expires),
        )))
    append("")
    return "\n".join(lines).encode("utf-8")


class CopyStream:
    """
    A file-like object for C{copy_expert}: encodes C{rows} lazily,
    C{chunk_rows} rows at a time, so the whole batch is never one string.
    """

    def __init__(self, rows, chunk_rows=2000):
        """
        @param rows: the row tuples to stream.
        @param chunk_rows: how many rows to encode at a time.
        """
        self._rows = rows
        self._chunk_rows = chunk_rows
        self._next = 0
        self._buffer = b""

    def read(self, size=-1):
        """
        @return: up to C{size} bytes of COPY text (all that is left for a
            negative C{size}); C{b""} at the end.
        """
        while (size < 0 or len(self._buffer) < size) and self._next < len(self._rows):
            chunk = self._rows[self._next:self._next + self._chunk_rows]
            self._next += len(chunk)
            self._buffer += encode_copy_rows(chunk)
        if size < 0 or len(self._buffer) <= size:
            data, self._buffer = self._buffer, b""
        else:
            data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    def readline(self, size=-1):
        """
        Like L{read} (psycopg2 may ask for lines; any cut is fine for COPY).
        """
        return self.read(size)


@implementer(IBulkInserter)
class CopyInserter:
    """
    C{COPY} into a temporary staging table, then one C{INSERT ... SELECT ...
    ON CONFLICT DO NOTHING}, on an adbapi thread with psycopg2.
    """

    name = "copy"

    # Bytes handed to psycopg2 per read; rows are encoded a chunk at a time.
    read_size = 1 << 20

    def __init__(self, thread_pool, chunk_rows=2000, admission=None):
        """
        @param thread_pool: an L{adbapi.ConnectionPool} of psycopg2
            connections (L{relay.ingest.db.thread_pool}).
        @param chunk_rows: rows encoded at a time (L{CopyStream}).
        @param admission: L{None}, or the L{relay.ingest.admission.Admission} that
            bounds the operations waiting for a thread.
        """
        self.thread_pool = thread_pool
        self.chunk_rows = chunk_rows
        self.admission = admission

    def insert(self, workspace_id, daemon_id, rows):
        if not rows:
            return succeed(_EMPTY)
        if self.admission is not None:
            # Bounded and cancellable while waiting (the thread pool's own
            # queue is neither).
            return self.admission.run(self.thread_pool.runInteraction, self._interaction,
                                      workspace_id, daemon_id, rows)
        return self.thread_pool.runInteraction(self._interaction, workspace_id, daemon_id, rows)

    def _interaction(self, txn, workspace_id, daemon_id, rows):
        rows = sorted(rows, key=_by_id)
        txn.execute(_STAGING_SQL)
        txn.copy_expert(_COPY_SQL, CopyStream(rows, self.chunk_rows), self.read_size)
        txn.execute(_FROM_STAGING_SQL, (workspace_id, daemon_id))
        result = _collisions.run_sync(
            txn, _collisions.resolve(workspace_id, daemon_id, rows, _ids(txn)))
        return Counts(*result)


@implementer(IBulkInserter)
class ThresholdInserter:
    """
    C{small} for batches up to C{copy_threshold} rows, C{large} above.
    """

    def __init__(self, small, large, copy_threshold=1000):
        """
        @param small: the L{IBulkInserter} for batches up to C{copy_threshold} rows.
        @param large: the L{IBulkInserter} for larger ones.
        @param copy_threshold: the most rows C{small} takes.
        """
        self.small = small
        self.large = large
        self.copy_threshold = copy_threshold
        self.name = "threshold"

    def choose(self, rows):
        """
        @return: the L{IBulkInserter} that inserts C{rows}.
        """
        return self.small if len(rows) <= self.copy_threshold else self.large

    def insert(self, workspace_id, daemon_id, rows):
        return self.choose(rows).insert(workspace_id, daemon_id, rows)
