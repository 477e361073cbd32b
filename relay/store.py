# -*- test-case-name: tests.test_store -*-
"""
The durable message store: one SQLite file in WAL mode, written through
L{twisted.enterprise.adbapi} by a single writer thread, in group-commit
batches (L{relay.batcher}).  Its SQL, schema and transaction functions are
in L{relay.storesql}.
"""

import functools
import os
import sqlite3

from twisted.enterprise import adbapi
from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from relay.batcher import Batcher
from relay.streams import StreamSeqs
from relay.interfaces import IMessageStore, ISyncSource
from relay.storereads import (_get_meta, _read_messages_after, _read_open, _scalar,
                               connect_readonly)
from relay.storesql import (
    D_ATTEMPTS, D_STATUS, D_UPDATED, ROW_ERRORS, SCHEMA_DIR, SQL, STATEMENTS, STATUS_ACKED,
    STATUS_DELIVERED, STATUS_EXPIRED, STATUS_PENDING, STATUS_REMOTE, SYNCHRONOUS, StoreError, _expire,
    _load_state, _open_connection, _recent_sends, _synchronous, _write_rows,
    _write_rows_isolated, schema_scripts, schema_version, upgrade)

# The store's names, wherever they are defined (callers import them from here).
__all__ = ["Store", "StoreError", "STREAM_CACHE", "STATUS_PENDING", "STATUS_DELIVERED",
           "STATUS_ACKED", "STATUS_EXPIRED", "STATUS_REMOTE", "STATEMENTS", "SQL", "SCHEMA_DIR", "SYNCHRONOUS",
           "schema_scripts", "schema_version", "upgrade", "connect_readonly", "_expire",
           "_open_connection"]


# The bounds of what the store keeps in memory for routing (point 7 of
# issue 13): stream seqs of this many (recipient, topic, sender) streams;
# the rest are read from the streams table when next used.
STREAM_CACHE = 10000


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
        self.streams = StreamSeqs(path, stream_cache)
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
            self.streams.open()
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
        self.streams.close()

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
        return self.streams.last(key)

    @property
    def stream_cache(self):
        return self.streams.limit

    @stream_cache.setter
    def stream_cache(self, limit):
        self.streams.limit = limit

    def stream_state_size(self):
        """
        How many streams the store holds in memory (STATUS, tests).
        """
        return self.streams.size()

    def add_delivery(self, recipient, message_seq, stream_key, stream_seq, status, now_ms):
        """
        Queue a delivery row (and the stream's new last seq, in the same
        batch) and return C{(batch, row)}, the handle for later status
        changes.
        """
        row = [recipient, message_seq, stream_seq, status, 0, now_ms]
        batch = self.batcher.current
        self.queue("delivery", row, 48, (stream_key, stream_seq))
        return batch, row

    def queue(self, statement, row, nbytes, stream=None):
        """
        Queue C{row} for C{statement} of L{SQL}; C{stream}, a C{(key, seq)}
        the row gives, is that stream's new last seq (in the same batch).
        """
        if stream is not None:
            self.batcher.note(*stream)
            self.streams.given(*stream)
        self.batcher.add(statement, row, nbytes)

    def add_remote(self, recipient, message_seq, now_ms):
        """
        Queue a delivery row for an agent whose home is another daemon
        (federation): status remote, no stream seq (the home daemon gives it).
        """
        self.batcher.add("delivery", [recipient, message_seq, 0, STATUS_REMOTE, 0, now_ms], 48)

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

    def add_batch_listener(self, listener):
        """
        Call C{listener(seconds, rows)} after every committed batch (its
        commit time and row count: the dashboard's histogram and health).
        """
        self.batcher.commit_listeners.append(listener)

    def is_open(self):
        return self.pool is not None

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
        self.streams.committed(batch.highs)
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

    # -- retention (relay.retention) -----------------------------------------

    def retire(self, after_seq, max_seq, cutoff_ms, dead_cutoff_ms, scan):
        """
        One retention step on the writer (L{relay.retention.retire}).
        """
        from relay.retention import retire
        return self.pool.runInteraction(retire, after_seq, max_seq, cutoff_ms, dead_cutoff_ms,
                                        scan)

    def vacuum_step(self, pages):
        """
        Free at most C{pages} pages on the writer; fires with (freed, still free).
        """
        from relay.retention import vacuum_step
        return self.pool.runWithConnection(vacuum_step, pages)

    def writer_busy(self):
        """
        Whether a batch is being written now.
        """
        return self.batcher.busy()

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
