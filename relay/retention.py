# -*- test-case-name: tests.test_retention -*-
"""
A store that stays bounded (issue 14): L{Retention} deletes old messages
that are finished with, with their delivery rows, in small steps on the
store's writer, and gives the freed pages back to the file system
(C{PRAGMA incremental_vacuum}, schema 4 sets C{auto_vacuum=INCREMENTAL}).

A message is deleted only when all of these hold:
  - it was accepted longer ago than C{--retention};
  - each of its deliveries is acked or expired, as committed (a status
    change still in the open batch does not count; any other state,
    pending, delivered or one this module does not know, holds it);
  - with sync on, its seq is at or below C{sync_confirmed} in meta (the
    ingest confirmed it; a spilled batch is not confirmed);
  - it is not a dead letter, or its dead letter is older than
    C{--dead-letter-retention} (default: never).
Quarantined rows go after C{--dead-letter-retention} too.

Each step scans at most C{scan} messages in seq order, from where the last
step stopped, deletes the eligible ones in one short transaction, then
frees at most C{pages} pages in another: a group commit waits at most one
step.  A step starts while no batch is being written, or, when the writer
stays busy (sustained load: each group commit starts as the last ends),
after L{BUSY_WAIT}, queued behind the batch in flight.

What it did since the process started (rows deleted by table, pages
freed, the last pass's time and duration) is L{Retention.stats}: STATUS's
C{retention} section and the C{relay_retention_*} metrics.
"""

from twisted.application import service
from twisted.internet import defer, task
from twisted.logger import Logger

from relay.loops import GuardedLoop
from relay.storesql import STATUS_ACKED, STATUS_EXPIRED, STATUS_HANDED

# meta: the highest seq retention ever deleted, so that a store whose
# newest messages were all deleted does not give their seqs out again.
RETIRED_KEY = "retired_seq"

# Seconds between looks at a busy writer (a commit takes milliseconds).
IDLE_POLL = 0.002

# Seconds a step waits for the writer to be idle at most.  Under sustained
# load with receipts the batcher starts each group commit as the last one
# ends, so the writer is (almost) never seen idle and a step that waited for
# it would starve while the file grew: past this, the step is queued behind
# the batch in flight, and the next commit waits for that one step.
BUSY_WAIT = 0.01

# A delivery is finished only in these states; any other (pending,
# delivered, or a state added later, such as federation's "remote") holds
# its message: a status this module does not know is never taken as done.
# A delivery handed over to another daemon (federation) is done here: the
# ingest owns it.
_FINISHED = "('%s', '%s', '%s')" % (STATUS_ACKED, STATUS_EXPIRED, STATUS_HANDED)

# What one step deleted, by table (relay.retention.retire's first result).
DELETED_KEYS = ("messages", "deliveries", "dead_letters", "quarantine")


def _placeholders(n):
    return ",".join("?" * n)


def retire(txn, after_seq, max_seq, cutoff_ms, dead_cutoff_ms, scan):
    """
    One retention step, in the writer's transaction: look at the messages
    with seq in (C{after_seq}, C{max_seq}] (at most C{scan}, oldest first),
    and delete the eligible ones (see the module docstring) with their
    delivery and dead-letter rows.  C{dead_cutoff_ms} None keeps dead
    letters and quarantine for ever.

    @return: (a dict of rows deleted by table, keyed by L{DELETED_KEYS},
        the seq to go on after, whether the scan reached the end of what is
        old enough).
    """
    txn.execute("SELECT seq, ts FROM messages WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?",
                (after_seq, max_seq, scan))
    rows = txn.fetchall()
    scanned = []
    end = len(rows) < scan
    for seq, ts in rows:
        if ts >= cutoff_ms:
            # Seqs follow acceptance time: the rest is younger.
            end = True
            break
        scanned.append(seq)
    deleted = dict.fromkeys(DELETED_KEYS, 0)
    if scanned:
        marks = _placeholders(len(scanned))
        txn.execute(
            "SELECT m.seq FROM messages m WHERE m.seq IN (%s)"
            " AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.message_seq = m.seq"
            " AND d.status NOT IN %s)"
            " AND NOT EXISTS (SELECT 1 FROM dead_letters x WHERE x.message_seq = m.seq"
            " AND (? IS NULL OR x.ts >= ?))" % (marks, _FINISHED),
            scanned + [dead_cutoff_ms, dead_cutoff_ms])
        gone = [r[0] for r in txn.fetchall()]
        if gone:
            marks = _placeholders(len(gone))
            txn.execute("DELETE FROM deliveries WHERE message_seq IN (%s)" % marks, gone)
            deleted["deliveries"] = txn.rowcount
            txn.execute("DELETE FROM dead_letters WHERE message_seq IN (%s)" % marks, gone)
            deleted["dead_letters"] = txn.rowcount
            txn.execute("DELETE FROM messages WHERE seq IN (%s)" % marks, gone)
            deleted["messages"] = txn.rowcount
            txn.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE"
                " SET value = max(CAST(value AS INTEGER), CAST(excluded.value AS INTEGER))",
                (RETIRED_KEY, str(max(gone))))
    if dead_cutoff_ms is not None:
        txn.execute("DELETE FROM quarantine WHERE id IN"
                    " (SELECT id FROM quarantine WHERE ts < ? ORDER BY id LIMIT ?)",
                    (dead_cutoff_ms, scan))
        deleted["quarantine"] = txn.rowcount
    return deleted, (scanned[-1] if scanned else after_seq), end


def vacuum_step(conn, pages):
    """
    Give at most C{pages} free pages back to the file system, in a
    transaction of its own (C{executescript}: the sqlite3 module steps a
    pragma once per C{execute}, which frees one page).

    @return: (the pages freed, the pages still free).
    """
    before = conn.execute("PRAGMA freelist_count").fetchone()[0]
    conn.executescript("PRAGMA incremental_vacuum(%d)" % (int(pages),))
    after = conn.execute("PRAGMA freelist_count").fetchone()[0]
    return max(0, before - after), after


class Retention(service.Service):
    """
    @param store: the L{relay.store.Store} (open before this starts).
    @param retention: seconds a finished message is kept (0: for ever).
    @param dead_retention: seconds dead letters and quarantine are kept
        (None: for ever).
    @param sync: whether sync is on (then C{sync_confirmed} bounds it).
    @param interval: seconds between passes (at most 60).
    @param scan: messages looked at per step (each step is a commit of its
        own, an fsync with synchronous=full: 200 a step kept up with about
        1,100 messages/s under load in bench_scale's soak, 1,000 with all
        of them); C{pages}: pages freed per step.
    @param steps: steps per pass at most (the next pass goes on).
    @ivar metrics: counters since the process started: C{deleted_messages},
        C{deleted_deliveries}, C{deleted_dead_letters},
        C{deleted_quarantine}, C{vacuumed_pages}, C{passes}, C{steps}.
    @ivar free_pages: free pages left in the file after the last vacuum step.
    @ivar last_run_at: when the last finished pass began (C{clock.seconds()}),
        or None; C{last_run_s}: how long it took.
    """

    log = Logger()
    name = "retention"

    def __init__(self, clock, store, retention, dead_retention=None, sync=False, interval=None,
                 scan=1000, pages=256, steps=100):
        self.clock = clock
        self.store = store
        self.retention = retention
        self.dead_retention = dead_retention
        self.sync = sync
        if interval is None:
            interval = min(60.0, max(0.5, retention / 4.0)) if retention else 60.0
        self.interval = interval
        self.scan = scan
        self.pages = pages
        self.steps = steps
        self.after = 0
        self.metrics = dict.fromkeys(
            ["deleted_" + k for k in DELETED_KEYS] + ["vacuumed_pages", "passes", "steps"], 0)
        self.free_pages = 0
        self.last_run_at = None
        self.last_run_s = None
        self.loop = GuardedLoop(clock, self.run_pass, "retention")

    def stats(self):
        """
        What retention is set to and what it did since the process started
        (STATUS's C{retention} section; the C{relay_retention_*} metrics).

        @return: a new dict of plain numbers (None for an unset retention
            and before the first pass), with C{errors} the passes that failed.
        """
        out = dict(self.metrics)
        out.update({
            "retention_s": self.retention or None,
            "dead_letter_retention_s": self.dead_retention,
            "interval_s": self.interval,
            "free_pages": self.free_pages,
            "last_run_at": self.last_run_at,
            "last_run_s": self.last_run_s,
            "errors": self.loop.errors,
        })
        return out

    def startService(self):
        service.Service.startService(self)
        if self.retention or self.dead_retention is not None:
            self.loop.start(self.interval, now=False)

    def stopService(self):
        service.Service.stopService(self)
        self.loop.stop()
        # A pass in flight holds the loop's Deferred; the store waits for
        # its step (the pool is closed after the batcher drains).

    @defer.inlineCallbacks
    def _max_seq(self):
        top = self.store.last_seq()
        if self.sync:
            confirmed = yield self.store.get_meta("sync_confirmed")
            top = min(top, int(confirmed or 0))
        return top

    @defer.inlineCallbacks
    def run_pass(self):
        """
        Steps until the scan reaches messages too young to go, or
        C{steps} steps; then frees pages in steps while any are free.
        A pass cut short by the service stopping is not a finished pass.
        """
        started = self.clock.seconds()
        metrics = self.metrics
        metrics["passes"] += 1
        now_ms = int(started * 1000)
        # retention 0 keeps messages for ever: no ts is below this cutoff.
        cutoff = now_ms - int(self.retention * 1000) if self.retention else -2 ** 63
        dead_cutoff = (None if self.dead_retention is None
                       else now_ms - int(self.dead_retention * 1000))
        top = yield self._max_seq()
        for _ in range(self.steps):
            if not self.running or not self.store.is_open():
                return
            yield self._writer_idle()
            deleted, self.after, end = yield self.store.retire(
                self.after, top, cutoff, dead_cutoff, self.scan)
            metrics["steps"] += 1
            for key in DELETED_KEYS:
                metrics["deleted_" + key] += deleted[key]
            if end:
                self.after = 0
                break
        for _ in range(self.steps):
            if not self.running or not self.store.is_open():
                return
            yield self._writer_idle()
            freed, self.free_pages = yield self.store.vacuum_step(self.pages)
            metrics["vacuumed_pages"] += freed
            if not self.free_pages:
                break
        self.last_run_at = started
        self.last_run_s = self.clock.seconds() - started

    @defer.inlineCallbacks
    def _writer_idle(self):
        # Between flushes: never queue a step ahead of a batch that is
        # being written (one reactor turn at a time until it is done), and
        # behind it when it stays busy longer than BUSY_WAIT.
        give_up = self.clock.seconds() + BUSY_WAIT
        while self.store.writer_busy() and self.clock.seconds() < give_up:
            yield task.deferLater(self.clock, IDLE_POLL, lambda: None)
