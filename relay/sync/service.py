# -*- test-case-name: tests.test_sync_service -*-
"""
The sync pipeline: store -> memory queue -> batches -> ingest service, with
retries, spill files and a persistent cursor.

How a message travels:

  1. The store commits a batch and calls the commit listener with its
     highest seq.  The reader pages rows after the last one read
     (C{read_messages_after}) while the memory in use stays under
     C{max_bytes}; above it the rows simply wait in the store.
  2. Rows are encoded to JSON once (L{relay.sync.wire}) and queued.  A batch
     leaves when it reaches C{batch_size} messages or C{batch_bytes}, or when
     its oldest message has waited C{batch_delay} seconds.  One batch is in
     flight at a time; while it is, the queue keeps filling, so batches grow
     under load.
  3. The outcome of the POST (L{relay.sync.poster}) decides: 2xx confirms the
     batch; 5xx/429/refused/timeout retry with jittered backoff and
     Retry-After, then spill the batch to disk; 413 splits it; a 400 naming a
     message dead-letters that one and re-sends the rest; 401/403 stop
     syncing; a 400 naming no message spills the batch; a redirect (never
     followed) or a 2xx whose counts do not add up is retried like a 5xx.
     A spill file refused as a whole is moved into C{rejected/}.  The whole
     table is L{relay.sync.decide}.
  4. The cursor (meta C{sync_cursor}) moves to the batch's last seq once the
     batch is confirmed, spilled or dead-lettered; batches finish in seq
     order, so every seq at or below the cursor is safe.  It is written
     behind the pipeline (at most one write in flight); a crash before it is
     written only means those messages are sent again, and the ingest
     de-duplicates them.

Nothing is dropped: a batch that can be neither sent nor spilled (spill
directory full, or the disk refuses) stays at the head of the pipeline and is
retried; the reader stops at the memory bound, and the rows wait in the
store.
"""

import collections
import random
import uuid

from twisted.application import service
from twisted.internet import defer, task
from twisted.logger import Logger

from relay.interfaces import ISyncSource
from relay.sync import poster as outcomes
from relay.sync.backoff import Backoff
from relay.sync.decide import (CONFIRM, DEAD_LETTER, DROP_NAMED, LIVE, REJECT_FILE, RETRY, SPILL,
                               SPLIT, STOP, decide)
from relay.sync.spill import SpillDir, UnreadableSpill
from relay.sync.wire import batch_body, encode_message

CURSOR_KEY = "sync_cursor"
DAEMON_ID_KEY = "daemon_id"

#: Pipeline states, as reported by L{SyncService.stats}.
STARTING = "starting"
IDLE = "idle"
SENDING = "sending"
BACKOFF = "backoff"
HOLDING = "holding"
UNAUTHORIZED = "unauthorized"
STOPPED = "stopped"
FAILED = "failed"

#: The most rows read from the store at once.
MAX_PAGE = 2000


class SyncService(service.Service):
    """
    Ships every message of an L{ISyncSource} to the ingest service.

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
        self.cursor = 0
        self._saved_cursor = 0
        self._saving = None
        self._read_pos = 0
        self._known_max = 0
        self._reading = False
        self._queue = collections.deque()
        self._queued_bytes = 0
        self._oldest_at = None
        self._splits = collections.deque()
        self._mem_bytes = 0
        self._avg_size = 512.0
        self._active = None
        self._waiting = None
        self._delay_call = None
        self._retry_read_call = None
        self._spill_due = True
        self._last_was_spill = False
        self._spill_loop = None
        self._ready = False
        self._started = None

        self.in_flight = 0
        self.synced = 0
        self.duplicates = 0
        self.batches = 0
        self.failed_attempts = 0
        self.spills_written = 0
        self.bytes_raw = 0
        self.bytes_wire = 0
        self.dead_letters = 0
        self.collisions = 0
        self.last_error = None
        self.last_rejected = None

    # -- lifecycle -----------------------------------------------------

    def startService(self):
        service.Service.startService(self)
        self.source.add_commit_listener(self._committed)
        self._started = defer.ensureDeferred(self._start())
        self._started.addErrback(self._start_failed)

    async def _start(self):
        if self.daemon_id is None:
            self.daemon_id = await self._stable_id(DAEMON_ID_KEY)
        cursor = await self.source.get_meta(CURSOR_KEY)
        self.cursor = self._saved_cursor = self._read_pos = int(cursor or 0)
        # last_seq() is a plain int in the interface; accept a Deferred too.
        self._known_max = max(self._known_max, await defer.maybeDeferred(self.source.last_seq))
        self.dead_letters = await self.source.dead_letter_count()
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
        self.last_error = "start: {}".format(failure.getErrorMessage())
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
        while self._saving is not None:
            await self._saving
        if self._saved_cursor != self.cursor:
            self._save_cursor()
            if self._saving is not None:
                await self._saving
        await self.poster.close()
        self.log.info("Sync stopped at seq {cursor}", cursor=self.cursor)

    # -- reading ---------------------------------------------------------

    def _committed(self, max_seq):
        if max_seq > self._known_max:
            self._known_max = max_seq
        self._pump()

    def _maybe_read(self):
        if (self._reading or not self._ready or self.state == UNAUTHORIZED
                or self._read_pos >= self._known_max or self._mem_bytes >= self.max_bytes):
            return
        room = self.max_bytes - self._mem_bytes
        limit = int(max(1, min(MAX_PAGE, room // self._avg_size)))
        self._reading = True
        d = self.source.read_messages_after(self._read_pos, limit)
        d.addCallbacks(self._got_rows, self._read_failed, callbackArgs=(self._known_max,))

    def _read_failed(self, failure):
        self._reading = False
        self.last_error = "store read: {}".format(failure.getErrorMessage())
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
            self._known_max = self._read_pos
        added = 0
        for row in rows:
            item = encode_message(row)
            self._read_pos = max(self._read_pos, item.seq)
            self._queue.append(item)
            self._queued_bytes += item.size
            self._mem_bytes += item.size
            added += item.size
        if rows:
            self._avg_size = max(64.0, (self._avg_size + added / len(rows)) / 2)
        if self._queue and self._oldest_at is None:
            self._oldest_at = self.clock.seconds()
        self._pump()

    # -- the pump --------------------------------------------------------

    def _pump(self):
        """
        Start whatever can start now: a store read, a spill replay, a batch.
        """
        if not self.running or not self._ready or self.state == UNAUTHORIZED:
            return
        self._maybe_read()
        if self._active is not None:
            return
        live_ready = bool(self._splits) or self._batch_ready()
        if self._spill_due and self.spill.files and not (live_ready and self._last_was_spill):
            self._last_was_spill = True
            self._run(self._replay_one())
            return
        self._last_was_spill = False
        if self._splits:
            self._run(self._send_live(self._splits.popleft()))
            return
        if not self._queue:
            return
        if live_ready:
            self._run(self._send_live(self._take_batch()))
        elif self._delay_call is None or not self._delay_call.active():
            wait = self._oldest_at + self.batch_delay - self.clock.seconds()
            self._delay_call = self.clock.callLater(max(0.0, wait), self._pump)

    def _batch_ready(self):
        return bool(self._queue) and (
            len(self._queue) >= self.batch_size
            or self._queued_bytes >= self.batch_bytes
            # (a microsecond of slack for float rounding of the clock)
            or self.clock.seconds() - self._oldest_at >= self.batch_delay - 1e-6)

    def _take_batch(self):
        items = []
        size = 0
        while self._queue and len(items) < self.batch_size:
            item = self._queue[0]
            if items and (size + item.size > self.batch_bytes or item.json is None):
                break
            self._queue.popleft()
            items.append(item)
            size += item.size
            if item.json is None:
                # An unencodable row travels alone (to the dead letters).
                break
        self._queued_bytes -= size
        if not self._queue:
            self._oldest_at = None
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
        self.last_error = failure.getErrorMessage()
        self.log.failure("Sync pipeline error; retrying in {delay}s", failure,
                         delay=self.spill_retry_interval)
        if self.running:
            # Unconfirmed messages are behind the cursor: re-read from it.
            self._reset_to_cursor()
            self._retry_read_call = self.clock.callLater(self.spill_retry_interval, self._recover)
        return None

    def _recover(self):
        if self.state == FAILED:
            self.state = IDLE
        self._pump()

    def _reset_to_cursor(self):
        self._queue.clear()
        self._splits.clear()
        self._queued_bytes = 0
        self._mem_bytes = 0
        self._oldest_at = None
        self._read_pos = self.cursor
        self._known_max = max(self._known_max, self.cursor + 1)

    def _run_done(self, _):
        self._active = None
        self.in_flight = 0
        if self.running and self.state in (SENDING, BACKOFF, HOLDING):
            self.state = IDLE
        self.clock.callLater(0, self._pump)

    # -- posting ---------------------------------------------------------

    async def _post(self, items, daemon_id=None, workspace_id=None):
        if not self.running:
            raise defer.CancelledError()
        body = batch_body(daemon_id or self.daemon_id, workspace_id or self.workspace_id, items)
        self.in_flight = len(items)
        self.state = SENDING
        self._waiting = self.poster.post(body, len(items))
        try:
            outcome = await self._waiting
        finally:
            self._waiting = None
            self.in_flight = 0
        if not self.running:
            # Stopped while the POST was out: whatever it came to, the batch
            # stays behind the cursor and is sent again after a restart.
            raise defer.CancelledError()
        self.bytes_raw += len(body)
        self.bytes_wire += outcome.wire_bytes
        if outcome.kind != outcomes.OK:
            self.failed_attempts += 1
            self.last_error = outcome.reason
        return outcome

    async def _sleep(self, seconds):
        if not self.running:
            raise defer.CancelledError()
        self._waiting = task.deferLater(self.clock, seconds, lambda: None)
        try:
            await self._waiting
        finally:
            self._waiting = None

    def _confirmed(self, items, outcome):
        self.batches += 1
        self.synced += len(items)
        duplicates = outcome.data.get("duplicates")
        if isinstance(duplicates, int) and not isinstance(duplicates, bool):
            self.duplicates += duplicates
        collisions = outcome.data.get("collisions")
        if isinstance(collisions, int) and not isinstance(collisions, bool):
            self.collisions += collisions

    async def _send_live(self, items):
        """
        Send one batch of live messages until it is confirmed, spilled or
        dead-lettered, then move the cursor past it.  What each outcome
        leads to is L{relay.sync.decide.decide}.
        """
        top = items[-1].seq
        held = sum(i.size for i in items)
        attempt = 0
        if items[0].json is None:
            await self._dead_letter(items[0], items[0].error)
            items = []
        while items:
            outcome = await self._post(items)
            bad = self._named(items, outcome)
            action = decide(outcome.kind, LIVE, single=len(items) == 1, named=bad is not None,
                            stale=False, retries_left=attempt < self.retries)
            if action == CONFIRM:
                self._confirmed(items, outcome)
                break
            if action == DROP_NAMED:
                await self._dead_letter(items[bad], outcome)
                items = items[:bad] + items[bad + 1:]
                continue
            if action == DEAD_LETTER:
                await self._dead_letter(items[0], outcome)
                break
            if action == SPLIT:
                half = len(items) // 2
                self.log.info("Ingest refused {n} messages as too large (413); splitting",
                              n=len(items))
                self._splits.appendleft(items[half:])
                self._splits.appendleft(items[:half])
                self._mem_bytes -= held - sum(i.size for i in items)
                return
            if action == STOP:
                self._unauthorized(outcome)
                return
            if action == RETRY:
                delay = self.backoff.delay(attempt, outcome.retry_after)
                attempt += 1
                self.state = BACKOFF
                self.log.warn("Sync POST failed ({reason}); retry {attempt}/{retries} in {delay:.2f}s",
                              reason=outcome.reason, attempt=attempt, retries=self.retries, delay=delay)
                await self._sleep(delay)
                continue
            # SPILL_BATCH
            if outcome.kind in (outcomes.BAD_MESSAGE, outcomes.BAD_BATCH):
                self.log.critical(
                    "Ingest refused a whole batch of {n} messages ({reason}): a bug in the sync "
                    "encoder; the batch is kept in a spill file", n=len(items), reason=outcome.reason)
            if self._spill_batch(items):
                break
            # Neither sent nor spilled: keep it and try again later.
            self.state = HOLDING
            delay = min(self.spill_retry_interval, self.backoff.delay(attempt, outcome.retry_after))
            attempt += 1
            self.log.warn("Sync batch of {n} messages held in memory (spill not possible); "
                          "retry in {delay:.2f}s", n=len(items), delay=delay)
            await self._sleep(delay)
        self._mem_bytes -= held
        self._advance(top)

    def _named(self, items, outcome):
        """
        The index in C{items} of the message a 400 names, or None.
        """
        if outcome.kind != outcomes.BAD_MESSAGE:
            return None
        index = outcome.data.get("index")
        mid = outcome.data.get("id")
        if isinstance(index, int) and not isinstance(index, bool) and 0 <= index < len(items):
            if mid is None or items[index].id == mid:
                return index
        if isinstance(mid, str):
            for i, item in enumerate(items):
                if item.id == mid:
                    return i
        return None

    async def _dead_letter(self, item, outcome):
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
        self.dead_letters += 1

    def _unauthorized(self, outcome):
        self.state = UNAUTHORIZED
        self.last_error = outcome.reason
        self.log.critical(
            "SYNC STOPPED: the ingest service refused our API key or workspace ({reason}). "
            "Nothing is lost: messages after seq {cursor} wait in the store; fix the key "
            "(or --workspace-id) and restart the daemon.",
            reason=outcome.reason, cursor=self.cursor)

    def _spill_batch(self, items):
        if not self.spill.has_room():
            self.log.warn("Spill directory {path} is full ({bytes} bytes); rows wait in the store",
                          path=self.spill.path, bytes=self.spill.bytes)
            return False
        try:
            name = self.spill.write(self.daemon_id, self.workspace_id, items)
        except OSError as e:
            self.last_error = "spill: {}".format(e)
            self.log.error("Could not write a spill file: {error}", error=str(e))
            return False
        self.spills_written += 1
        # The ingest just failed us: replay at the next pass, not now.
        self._spill_due = False
        self.log.warn("Spilled {n} messages (seq {first}..{last}) to {name}",
                      n=len(items), first=items[0].seq, last=items[-1].seq, name=name)
        return True

    # -- the cursor ------------------------------------------------------

    def _advance(self, seq):
        if seq > self.cursor:
            self.cursor = seq
            self._save_cursor()

    def _save_cursor(self):
        if self._saving is not None:
            return
        value = self.cursor
        self._saving = self.source.set_meta(CURSOR_KEY, str(value))

        def saved(_):
            self._saved_cursor = value

        def failed(failure):
            self.last_error = "cursor write: {}".format(failure.getErrorMessage())
            self.log.failure("Could not write the sync cursor (messages may be sent twice)", failure)

        def done(_):
            self._saving = None
            if self.running and self._saved_cursor != self.cursor:
                self._save_cursor()

        self._saving.addCallbacks(saved, failed)
        self._saving.addBoth(done)

    # -- spill replay ----------------------------------------------------

    def _spill_tick(self):
        # The loop must survive anything the pump raises, or replay stops.
        self._spill_due = True
        try:
            self._pump()
        except Exception:
            self.log.failure("Sync pump failed on the spill timer")

    async def _replay_one(self):
        """
        Send the oldest spill file once.  A 2xx deletes it; a file refused
        as a whole is moved aside (and the next one goes on); any other
        failure ends this pass until the next tick.  What each outcome
        leads to is L{relay.sync.decide.decide}.
        """
        name = self.spill.names()[0]
        try:
            daemon_id, workspace_id, items = self.spill.read(name)
        except UnreadableSpill as e:
            self._rejected_file(name, "unreadable: {}".format(e))
            return
        stale = bool(workspace_id) and str(workspace_id).lower() != str(self.workspace_id).lower()
        while items:
            outcome = await self._post(items, daemon_id, workspace_id)
            bad = self._named(items, outcome)
            action = decide(outcome.kind, SPILL, single=len(items) == 1, named=bad is not None,
                            stale=stale, retries_left=False)
            if action == CONFIRM:
                self._confirmed(items, outcome)
                break
            if action == DROP_NAMED:
                await self._dead_letter(items[bad], outcome)
                items = items[:bad] + items[bad + 1:]
                if not items:
                    break
                self._rewrite(name, daemon_id, workspace_id, [items])
                return
            if action == SPLIT:
                half = len(items) // 2
                self._rewrite(name, daemon_id, workspace_id, [items[:half], items[half:]])
                return
            if action == DEAD_LETTER:
                await self._dead_letter(items[0], outcome)
                break
            if action == STOP:
                self._unauthorized(outcome)
                return
            if action == REJECT_FILE:
                self.spill.reject(name)
                self._rejected_file(name, outcome.reason)
                return
            # PAUSE
            self._spill_due = False
            self.log.warn("Spill replay paused until the next pass: {reason}", reason=outcome.reason)
            return
        self.spill.remove(name)
        self.log.info("Re-sent spill file {name} ({n} messages)", name=name, n=len(items))

    def _rejected_file(self, name, reason):
        """
        Report spill file C{name}, refused as a whole and already moved
        into C{rejected/}; the replay goes on with the next file.
        """
        self.last_rejected = "{}: {}".format(name, reason)
        self.last_error = "spill file rejected: {}".format(self.last_rejected)
        self.log.critical(
            "Spill file {name} refused as a whole ({reason}); kept in {path}, its messages are "
            "NOT synced; the next file goes on", name=name, reason=reason,
            path=self.spill.rejected_path)

    def _rewrite(self, name, daemon_id, workspace_id, parts):
        """
        Replace spill file C{name} by one file per list in C{parts}; the
        original goes only once all the new ones are on disk.
        """
        try:
            for part, items in enumerate(parts):
                self.spill.write(daemon_id, workspace_id, items, replacing=name, part=part)
        except OSError as e:
            self._spill_due = False
            self.last_error = "spill: {}".format(e)
            self.log.error("Could not rewrite spill file {name}: {error}", name=name, error=str(e))
            return
        self.spill.remove(name)

    # -- status ----------------------------------------------------------

    def stats(self):
        """
        A JSON-able snapshot for the daemon's STATUS reply.
        """
        return {
            "state": self.state,
            "url": self.poster.url,
            "daemon_id": self.daemon_id,
            "workspace_id": self.workspace_id,
            "cursor": self.cursor,
            "backlog": max(0, self._known_max - self.cursor),
            "queued": len(self._queue) + sum(len(s) for s in self._splits),
            "in_flight": self.in_flight,
            "synced": self.synced,
            "batches": self.batches,
            "duplicates": self.duplicates,
            "failed_attempts": self.failed_attempts,
            "spilled_files": self.spill.files,
            "spilled_bytes": self.spill.bytes,
            "spills_written": self.spills_written,
            "rejected_files": self.spill.rejected,
            "last_rejected": self.last_rejected,
            "collisions": self.collisions,
            "bytes_raw": self.bytes_raw,
            "bytes_wire": self.bytes_wire,
            "dead_letters": self.dead_letters,
            "last_error": self.last_error,
        }


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
