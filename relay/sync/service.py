# -*- test-case-name: tests.test_sync_service -*-
"""
The sync pipeline's service: it reads the store, schedules the work (one
live batch or one spill file in flight at a time) and owns the steps both
kinds of work share (one POST, a dead letter, stopping on a refused key).

How a message travels through it is told in L{relay.sync}; the parts it
drives are L{relay.sync.batches}, L{relay.sync.live}, L{relay.sync.replay},
L{relay.sync.cursor} and L{relay.sync.stats}.
"""

import random
import uuid

from twisted.application import service
from twisted.internet import defer, task
from twisted.logger import Logger

from relay.interfaces import ISyncSource
from relay.sync import poster as outcomes
from relay.sync.backoff import Backoff
from relay.sync.batches import BatchQueue
from relay.sync.cursor import SyncMarks
from relay.sync.live import LiveBatches
from relay.sync.replay import SpillReplay
from relay.sync.spill import SpillDir
from relay.sync.stats import (BACKOFF, FAILED, HOLDING, IDLE, SENDING, STARTING, STOPPED,
                              UNAUTHORIZED, SyncCounters, snapshot)
from relay.sync.wire import batch_body

__all__ = ["SyncService", "make_sync_service", "STARTING", "IDLE", "SENDING", "BACKOFF", "HOLDING",
           "UNAUTHORIZED", "STOPPED", "FAILED"]

DAEMON_ID_KEY = "daemon_id"


class SyncService(service.Service):
    """
    Ships every message of an L{ISyncSource} to the ingest service.

    The parts it drives: a L{BatchQueue} (what waits in memory, when a
    batch leaves), a L{CursorWriter} (what is done with), a L{SpillReplay}
    (spill files written and sent again) and L{SyncCounters} (what
    L{stats} reports).  This class reads the store, schedules the work (one
    batch or spill file in flight at a time) and sends live batches.

    @param source: the store (an L{ISyncSource}).
    @param poster: a L{relay.sync.poster.Poster}.
    @param spill: a L{SpillDir}.
    @param clock: provides C{seconds} and C{callLater}.
    @param backoff: a L{Backoff}.
    @param batch_delay: seconds.
    @param spill_retry_interval: seconds between spill replay passes.
    @param workspace_id: the workspace (UUID text) the API key belongs to.
    @param daemon_id: this daemon's UUID text; when None, one is generated
        once and kept in the store's meta under C{daemon_id}.
    """

    log = Logger()
    name = "sync"

    def __init__(self, source, poster, spill, clock, backoff, workspace_id, daemon_id=None,
                 max_bytes=16 * 1024 * 1024, batch_size=100, batch_delay=0.2,
                 batch_bytes=512 * 1024, retries=3, spill_retry_interval=30.0):
        self.source = ISyncSource(source)
        self.poster = poster
        self.spill = spill
        self.clock = clock
        self.backoff = backoff
        self.daemon_id = daemon_id
        self.workspace_id = workspace_id
        self.max_bytes = max_bytes
        self.batch_size = batch_size
        self.batch_delay = batch_delay
        self.batch_bytes = batch_bytes
        self.retries = retries
        self.spill_retry_interval = spill_retry_interval

        self.state = STARTING
        self.counters = SyncCounters()
        self.queue = BatchQueue(clock)
        self.replay = SpillReplay(self, spill)
        self.live = LiveBatches(self)
        self.marks = SyncMarks(self.source, self._cursor_failed, self.spill)
        self._known_max = 0
        self._reading = False
        self._active = None
        self._waiting = None
        self._delay_call = None
        self._retry_read_call = None
        self._last_was_spill = False
        self._spill_loop = None
        self._ready = False
        self._started = None
        self._id_waiters = []

    def known_daemon_id(self):
        """
        A Deferred firing with this daemon's id once it is known (loaded or
        generated at start; federation speaks under the same id).
        """
        if self.daemon_id is not None:
            return defer.succeed(self.daemon_id)
        d = defer.Deferred()
        self._id_waiters.append(d)
        return d

    @property
    def cursor(self):
        """
        The highest seq confirmed, spilled or dead-lettered.
        """
        return self.marks.cursor.value

    def _cursor_failed(self, reason):
        self.counters.last_error = reason

    # -- lifecycle -----------------------------------------------------

    def startService(self):
        service.Service.startService(self)
        self.source.add_commit_listener(self._committed)
        self._started = defer.ensureDeferred(self._start())
        self._started.addErrback(self._start_failed)

    async def _start(self):
        if self.daemon_id is None:
            self.daemon_id = await self._stable_id(DAEMON_ID_KEY)
        waiting, self._id_waiters = self._id_waiters, []
        for d in waiting:
            d.callback(self.daemon_id)
        self.queue.read_pos = await self.marks.load()
        # last_seq() is a plain int in the interface; accept a Deferred too.
        self._known_max = max(self._known_max, await defer.maybeDeferred(self.source.last_seq))
        self.counters.dead_letters = await self.source.dead_letter_count()
        if not self.running:
            return
        self._ready = True
        self.state = IDLE
        self.log.info(
            "Sync to {url} as daemon {daemon_id} (workspace {workspace_id}) from seq {cursor}; "
            "{files} spill files waiting",
            url=self.poster.url, daemon_id=self.daemon_id, workspace_id=self.workspace_id,
            cursor=self.cursor, files=self.spill.files)
        self._spill_loop = task.LoopingCall(self._spill_tick)
        self._spill_loop.clock = self.clock
        self._spill_loop.start(self.spill_retry_interval, now=False)
        self._pump()

    def _start_failed(self, failure):
        self.state = FAILED
        self.counters.last_error = "start: {}".format(failure.getErrorMessage())
        self.log.failure("Sync could not start; nothing is sent, messages stay in the store", failure)

    async def _stable_id(self, key):
        value = await self.source.get_meta(key)
        if not value:
            value = str(uuid.uuid4())
            await self.source.set_meta(key, value)
            self.log.info("Generated {key} {value}", key=key, value=value)
        return value

    def stopService(self):
        """
        Stop sending.  Whatever is not confirmed stays behind the cursor; the
        Deferred fires once the cursor is written and connections are closed.
        """
        service.Service.stopService(self)
        self.state = STOPPED
        self._ready = False
        self.marks.stop()
        for call in (self._delay_call, self._retry_read_call):
            if call is not None and call.active():
                call.cancel()
        if self._spill_loop is not None and self._spill_loop.running:
            self._spill_loop.stop()
        if self._waiting is not None:
            self._waiting.cancel()
        return defer.ensureDeferred(self._stop())

    async def _stop(self):
        if self._started is not None:
            await self._started
        if self._active is not None:
            await self._active
        await self.marks.flush()
        await self.poster.close()
        self.log.info("Sync stopped at seq {cursor}", cursor=self.cursor)

    # -- reading ---------------------------------------------------------

    def _committed(self, max_seq):
        if max_seq > self._known_max:
            self._known_max = max_seq
        self._pump()

    def _maybe_read(self):
        if (self._reading or not self._ready or self.state == UNAUTHORIZED
                or self.queue.read_pos >= self._known_max or self.queue.mem_bytes >= self.max_bytes):
            return
        self._reading = True
        # maybeDeferred: a source that raises at once must not leave
        # _reading set, which would stop reading for good.
        d = defer.maybeDeferred(self.source.read_messages_after, self.queue.read_pos,
                                self.queue.page_limit(self.max_bytes))
        d.addCallbacks(self._got_rows, self._read_failed, callbackArgs=(self._known_max,))

    def _read_failed(self, failure):
        self._reading = False
        self.counters.last_error = "store read: {}".format(failure.getErrorMessage())
        self.log.failure("Sync could not read the store; trying again in 1s", failure)
        if self.running:
            self._retry_read_call = self.clock.callLater(1.0, self._pump)

    def _got_rows(self, rows, known_at_start):
        self._reading = False
        if not self.running:
            return
        if not rows and self._known_max == known_at_start:
            # Nothing after read_pos (a gap in seqs): wait for the next
            # commit.  A commit announced during the read keeps its claim.
            self._known_max = self.queue.read_pos
        self.queue.add_rows(rows)
        self._pump()

    # -- scheduling ------------------------------------------------------

    def _spill_tick(self):
        # The loop must survive anything the pump raises, or replay stops.
        self.replay.due = True
        try:
            self._pump()
        except Exception:
            self.log.failure("Sync pump failed on the spill timer")

    def _pump(self):
        """
        Start whatever can start now: a store read, a spill replay, a batch.
        """
        if not self.running or not self._ready or self.state == UNAUTHORIZED:
            return
        self._maybe_read()
        if self._active is not None:
            return
        queue = self.queue
        live_ready = bool(queue.splits) or self._batch_ready()
        if self.replay.due and self.spill.files and not (live_ready and self._last_was_spill):
            self._last_was_spill = True
            self._run(self.replay.replay_one())
            return
        self._last_was_spill = False
        if queue.splits:
            self._run(self.live.send(queue.splits.popleft()))
            return
        if not queue.items:
            return
        if live_ready:
            self._run(self.live.send(self._take_batch()))
        elif self._delay_call is None or not self._delay_call.active():
            self._delay_call = self.clock.callLater(queue.wait(self.batch_delay), self._pump)

    def _batch_ready(self):
        return self.queue.ready(self.batch_size, self.batch_bytes, self.batch_delay)

    def _take_batch(self):
        items = self.queue.take(self.batch_size, self.batch_bytes)
        if self._delay_call is not None and self._delay_call.active():
            self._delay_call.cancel()
        return items

    def _run(self, coroutine):
        self._active = defer.ensureDeferred(coroutine)
        self._active.addErrback(self._run_failed)
        self._active.addBoth(self._run_done)

    def _run_failed(self, failure):
        if failure.check(defer.CancelledError) and not self.running:
            return None
        self.state = FAILED if self.running else STOPPED
        self.counters.last_error = failure.getErrorMessage()
        self.log.failure("Sync pipeline error; retrying in {delay}s", failure,
                         delay=self.spill_retry_interval)
        if self.running:
            # Unconfirmed messages are behind the cursor: re-read from it.
            self.queue.reset(self.cursor)
            self._known_max = max(self._known_max, self.cursor + 1)
            self._retry_read_call = self.clock.callLater(self.spill_retry_interval, self._recover)
        return None

    def _recover(self):
        if self.state == FAILED:
            self.state = IDLE
        self._pump()

    def _run_done(self, _):
        self._active = None
        self.counters.in_flight = 0
        if self.running and self.state in (SENDING, BACKOFF, HOLDING):
            self.state = IDLE
        self.clock.callLater(0, self._pump)

    # -- posting (live batches and spill replay alike) ---------------------

    async def post(self, items, daemon_id=None, workspace_id=None):
        """
        POST C{items} once.

        @return: (a coroutine of) its L{relay.sync.poster.Outcome}.
        @raise defer.CancelledError: when the service stopped before or
            during the POST (the batch stays behind the cursor).
        """
        if not self.running:
            raise defer.CancelledError()
        body = batch_body(daemon_id or self.daemon_id, workspace_id or self.workspace_id, items)
        self.counters.in_flight = len(items)
        self.state = SENDING
        self._waiting = self.poster.post(body, len(items))
        try:
            outcome = await self._waiting
        finally:
            self._waiting = None
            self.counters.in_flight = 0
        if not self.running:
            # Stopped while the POST was out: whatever it came to, the batch
            # stays behind the cursor and is sent again after a restart.
            raise defer.CancelledError()
        self.counters.posted(len(body), outcome)
        if outcome.kind != outcomes.OK:
            self.counters.failed(outcome.reason)
        return outcome

    async def sleep(self, seconds):
        """
        Wait C{seconds} on the clock; a stop cancels the wait.
        """
        if not self.running:
            raise defer.CancelledError()
        self._waiting = task.deferLater(self.clock, seconds, lambda: None)
        try:
            await self._waiting
        finally:
            self._waiting = None

    async def dead_letter(self, item, outcome):
        """
        Record C{item} as refused for good, for the reason in C{outcome}
        (an L{outcomes.Outcome} or a string).
        """
        if isinstance(outcome, str):
            reason = outcome
        else:
            reason = outcome.reason
            field = outcome.data.get("field")
            if field:
                reason = "{} [field {}]".format(reason, field)
        self.log.error("Ingest refused message {id} (seq {seq}): {reason}; moved to dead letters",
                       id=item.id, seq=item.seq, reason=reason)
        await self.source.add_dead_letter(item.seq, item.id, reason)
        self.counters.dead_letters += 1

    def unauthorized(self, outcome):
        """
        Stop syncing: the ingest refused our credentials (C{outcome}).
        """
        self.state = UNAUTHORIZED
        self.counters.last_error = outcome.reason
        self.log.critical(
            "SYNC STOPPED: the ingest service refused our API key or workspace ({reason}). "
            "Nothing is lost: messages after seq {cursor} wait in the store; fix the key "
            "(or --workspace-id) and restart the daemon.",
            reason=outcome.reason, cursor=self.cursor)

    def advance(self, seq):
        """
        Move the cursor to C{seq} (and the confirmed mark with it when
        nothing is spilled: L{SyncMarks.advance}).
        """
        self.marks.advance(seq)

    @property
    def confirmed(self):
        """
        The highest seq at or below which the ingest confirmed everything.
        """
        return self.marks.confirmed.value

    # -- status ----------------------------------------------------------

    def stats(self):
        """
        A JSON-able snapshot for the daemon's STATUS reply
        (L{relay.sync.stats.snapshot}).
        """
        return snapshot(self.counters, self.state, self.poster.url, self.daemon_id,
                        self.workspace_id, self.cursor, self._known_max, len(self.queue), self.spill)


def make_sync_service(config, store, reactor):
    """
    Build the sync service from checked options (L{relay.sync.options.check}).

    @return: an C{IService}, or None when C{--sync-url} was not given.
    @raise SystemExit: with a one-line reason when the spill directory
        cannot be created or read.
    """
    if not config.get("sync-url"):
        return None
    from relay.sync.poster import Poster, make_treq_client

    client, pool = make_treq_client(reactor, config.get("sync-ca-file"))
    poster = Poster(reactor, config["sync-endpoint"], config["sync-key"], config["sync-timeout"],
                    config["sync-compress-threshold"], client, pool)
    try:
        spill = SpillDir(config["spill-dir"], config["spill-max-bytes"], reactor)
    except OSError as e:
        raise SystemExit("relay: cannot use --spill-dir {}: {}".format(
            config["spill-dir"], e.strerror or e))
    backoff = Backoff(config["sync-retry-delay-ms"] / 1000.0, rng=random.Random())
    return SyncService(
        store, poster, spill, reactor, backoff,
        daemon_id=config.get("daemon-id"), workspace_id=config.get("workspace-id"),
        max_bytes=config["sync-max-bytes"], batch_size=config["sync-batch-size"],
        batch_delay=config["sync-batch-delay-ms"] / 1000.0, batch_bytes=config["sync-batch-bytes"],
        retries=config["sync-retries"], spill_retry_interval=config["spill-retry-interval"])
