# -*- test-case-name: tests.test_batcher -*-
"""
Group commit for the store: rows accumulate in an open L{Batch}; a flush
takes the whole open batch and writes it in one transaction.

Flushes happen every C{delay} seconds (a L{LoopingCall} on the injected
clock), at once when the open batch reaches C{size} rows or C{max_bytes}
bytes, and on demand (L{Batcher.flush}).  Only one flush is in flight at a
time; whatever arrives meanwhile waits in the next batch, so batches grow
under load instead of queueing many small transactions.  A failed flush
puts its rows back in front of the open batch and is retried; the loop
never stops on an error.
"""

from twisted.internet import defer, task
from twisted.logger import Logger


class Batch:
    """
    Rows waiting for one transaction, grouped by statement.

    @ivar statements: the statement names, in the order the writer runs
        them (the batcher's owner decides; the batcher only keeps order).
    @ivar rows: dict statement name -> list of parameter rows.
    @ivar callbacks: list of (callable, argument) run after the commit.
    @ivar open: True while rows may still be added or edited in place.
    @ivar mark: the highest value given to L{Batcher.mark} for this batch
        (taken back with its group; C{on_committed} gets it).
    @ivar highs: key -> the highest value given to L{Batcher.note} for it
        (kept on abort: a value noted stays used).
    """

    def __init__(self, statements):
        self.statements = statements
        self.rows = {name: [] for name in statements}
        self.count = 0
        self.nbytes = 0
        self.callbacks = []
        self.open = True
        self.demanded = False
        self.urgent = False
        self.mark = 0
        # The row ranges of each unit added as one (a SEND): a list of dicts
        # statement -> (start, end), so that a writer's row-by-row fallback
        # keeps a unit's rows together (all written or all refused).
        self.groups = []
        self.highs = {}

    def absorb(self, later):
        """
        Append the rows of C{later} (a newer batch) after ours.
        """
        for group in later.groups:
            self.groups.append({name: (start + len(self.rows[name]), end + len(self.rows[name]))
                                for name, (start, end) in group.items()})
        for name in self.statements:
            self.rows[name].extend(later.rows[name])
        for key, value in later.highs.items():
            if value > self.highs.get(key, 0):
                self.highs[key] = value
        self.count += later.count
        self.nbytes += later.nbytes
        self.callbacks.extend(later.callbacks)
        self.demanded = self.demanded or later.demanded
        self.urgent = self.urgent or later.urgent
        self.mark = max(self.mark, later.mark)


class Batcher:
    """
    @param clock: an IReactorTime.
    @param write: callable(batch) -> Deferred firing when the batch's
        transaction has committed.
    @param statements: the statement names a batch carries, in the order
        C{write} runs them (the owner's; the batcher knows no names).
    @param on_committed: callable(mark) after a committed batch whose
        L{Batch.mark} is set.
    @ivar metrics: counters of flushes, rows, bytes and failures (for STATUS).
    """

    log = Logger()

    def __init__(self, clock, write, statements, size=50, delay=0.1, max_bytes=1048576,
                 on_committed=None):
        self.clock = clock
        self._write = write
        self.statements = tuple(statements)
        self.size = size
        self.delay = delay
        self.max_bytes = max_bytes
        self.on_committed = on_committed
        self.current = Batch(self.statements)
        self._inflight = None
        self._loop = task.LoopingCall(self._tick)
        self._loop.clock = clock
        self._retry = None
        self._soon = None
        self._running = False
        self._overload_listeners = []
        self._group = None
        self._deferred_cause = None
        # fn(seconds, rows) after each commit (the store commit time histogram).
        self.commit_listeners = []
        self.overload_bytes = 4 * max_bytes
        self.overloaded = False
        self.metrics = {
            "batches": 0,
            "rows": 0,
            "bytes": 0,
            "flushes_by_cause": {"size": 0, "time": 0, "bytes": 0, "receipt": 0, "demand": 0,
                                 "shutdown": 0},
            "failures": 0,
            "last_flush_ms": 0.0,
            "pending_rows": 0,
        }

    # -- adding work -----------------------------------------------------

    def add(self, statement, row, nbytes=64):
        """
        Queue one row for C{statement}; returns the row (a list, which the
        caller may edit in place while C{self.current.open}).
        """
        batch = self.current
        batch.rows[statement].append(row)
        batch.count += 1
        batch.nbytes += nbytes
        if self._group is None:
            self._check_size()
        return row

    def mark(self, value):
        """
        Raise the open batch's L{Batch.mark} to C{value} (the store's
        highest message seq in it): C{on_committed} gets it after the commit.
        """
        batch = self.current
        if value > batch.mark:
            batch.mark = value

    def note(self, key, value):
        """
        Raise the open batch's C{highs[key]} to C{value} (the store's stream
        seqs, which its writer writes with the batch).
        """
        highs = self.current.highs
        if value > highs.get(key, 0):
            highs[key] = value

    def abort_group(self):
        """
        Take back every row added since L{begin_group} (the unit failed
        half way: nothing of it is written).  Callbacks stay: they may be
        anyone's (a flush asked for meanwhile); a unit adds its own after
        its rows are complete.
        """
        batch, starts, (count, nbytes, mark) = self._group
        self._group = None
        for name, start in zip(self.statements, starts):
            del batch.rows[name][start:]
        batch.count, batch.nbytes, batch.mark = count, nbytes, mark
        deferred, self._deferred_cause = self._deferred_cause, None
        if deferred is not None:
            self._kick(deferred)

    def _check_size(self):
        batch = self.current
        if batch.count >= self.size:
            self._kick("size")
        elif batch.nbytes >= self.max_bytes:
            self._kick("bytes")

    def begin_group(self):
        """
        The rows added until L{end_group} belong to one unit (a SEND: its
        message row, delivery rows and stream seqs): no flush starts in
        between, so they commit in one transaction, and the row-by-row
        fallback writes or quarantines them together.
        """
        if self._group is not None:
            raise RuntimeError("begin_group inside a group")
        batch = self.current
        rows = batch.rows
        self._group = (batch, [len(rows[name]) for name in self.statements],
                       (batch.count, batch.nbytes, batch.mark))

    def end_group(self):
        """
        Close the unit L{begin_group} opened; a size or byte trigger it
        crossed starts the flush now, after the whole unit.
        """
        batch, starts, _ = self._group
        self._group = None
        rows = batch.rows
        group = {}
        for name, start in zip(self.statements, starts):
            end = len(rows[name])
            if end > start:
                group[name] = (start, end)
        if group:
            batch.groups.append(group)
        deferred, self._deferred_cause = self._deferred_cause, None
        self._check_size()
        if deferred is not None:
            self._kick(deferred)

    def after_commit(self, fn, arg):
        """
        Run C{fn(arg)} once everything queued so far has committed.
        """
        self.current.callbacks.append((fn, arg))

    def soon(self):
        """
        Someone waits for a receipt: if the writer is idle, flush at the end
        of this reactor turn instead of waiting for the timer (group commit:
        what arrives while that flush is in flight goes in the next one).
        """
        self.current.urgent = True
        if self._inflight is None and self._soon is None and self._retry is None:
            self._soon = self.clock.callLater(0, self._flush_soon)

    def _flush_soon(self):
        self._soon = None
        self._kick("receipt")

    def busy(self):
        """
        Whether a batch is being written (its transaction is in flight).
        """
        return self._inflight is not None

    def pending_rows(self):
        n = self.current.count
        if self._inflight is not None:
            n += self._inflight.count
        return n

    def pending_bytes(self):
        n = self.current.nbytes
        if self._inflight is not None:
            n += self._inflight.nbytes
        return n

    # -- overload signalling -----------------------------------------------

    def add_overload_listener(self, listener):
        """
        Call C{listener(True)} when pending bytes pass C{overload_bytes},
        C{listener(False)} once a flush brings them back under.
        """
        self._overload_listeners.append(listener)

    def check_overload(self):
        over = self.pending_bytes() > self.overload_bytes
        if over != self.overloaded:
            self.overloaded = over
            if over:
                self.log.warn("store is behind: {pending} bytes pending, pausing readers",
                              pending=self.pending_bytes())
            for listener in self._overload_listeners:
                listener(over)
        return over

    # -- flushing ------------------------------------------------------------

    def start(self):
        self._running = True
        self._loop.start(self.delay, now=False)

    def stop(self):
        """
        Stop the timer and flush everything; fires when all is on disk.
        """
        self._running = False
        if self._loop.running:
            self._loop.stop()
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
            self._retry = None
        if self._soon is not None and self._soon.active():
            self._soon.cancel()
        self._soon = None
        return self._drain("shutdown")

    @defer.inlineCallbacks
    def _drain(self, cause):
        while self._inflight is not None or self.current.count or self.current.callbacks:
            yield self.flush(cause)

    def flush(self, cause="demand"):
        """
        Write everything queued so far.

        @return: Deferred firing once it is committed.
        """
        d = defer.Deferred()
        if not (self.current.count or self.current.callbacks) and self._inflight is None:
            d.callback(None)
            return d
        self.current.callbacks.append((d.callback, None))
        self.current.demanded = True
        self._kick(cause)
        return d

    def _tick(self):
        if self.current.count or self.current.callbacks:
            self._kick("time")

    def _kick(self, cause):
        if self._inflight is not None:
            return
        if self._group is not None:
            # Never between the rows of one unit: start once it is complete.
            self._deferred_cause = self._deferred_cause or cause
            return
        if self._retry is not None:
            if cause == "shutdown" or cause == "demand":
                if self._retry.active():
                    self._retry.cancel()
                self._retry = None
            else:
                return
        batch = self.current
        if not (batch.count or batch.callbacks):
            return
        self.current = Batch(self.statements)
        batch.open = False
        self._inflight = batch
        self.metrics["flushes_by_cause"][cause] = self.metrics["flushes_by_cause"].get(cause, 0) + 1
        started = self.clock.seconds()
        d = defer.maybeDeferred(self._write, batch)
        d.addCallbacks(self._committed, self._failed,
                       callbackArgs=(batch, started), errbackArgs=(batch,))
        d.addErrback(lambda f: self.log.failure("batch bookkeeping failed", f))

    def _committed(self, _, batch, started):
        self._inflight = None
        m = self.metrics
        m["batches"] += 1
        m["rows"] += batch.count
        m["bytes"] += batch.nbytes
        m["last_flush_ms"] = (self.clock.seconds() - started) * 1000.0
        for listener in self.commit_listeners:
            listener(self.clock.seconds() - started, batch.count)
        m["pending_rows"] = self.current.count
        self.check_overload()
        if self.on_committed is not None and batch.mark:
            self.on_committed(batch.mark)
        for fn, arg in batch.callbacks:
            try:
                fn(arg)
            except Exception:
                self.log.failure("after-commit callback failed")
        self._again()

    def _failed(self, failure, batch):
        self._inflight = None
        self.metrics["failures"] += 1
        self.log.failure("batch of {rows} rows failed; keeping it and retrying",
                         failure, rows=batch.count)
        # Keep the rows, ahead of anything queued since.
        batch.absorb(self.current)
        self.current = batch
        self.metrics["pending_rows"] = batch.count
        # Retry also while stopping: _drain waits on a flush Deferred that
        # is among these rows' callbacks and fires only when they commit.
        self._retry = self.clock.callLater(max(self.delay, 0.05), self._retry_now)

    def _retry_now(self):
        self._retry = None
        self._kick("time")

    def _again(self):
        batch = self.current
        if batch.count >= self.size:
            self._kick("size")
        elif batch.nbytes >= self.max_bytes:
            self._kick("bytes")
        elif batch.demanded:
            # Someone asked for a flush while one was in flight.
            self._kick("demand")
        elif batch.urgent:
            # Receipts are waiting: the next group commit starts now.
            self._kick("receipt")
