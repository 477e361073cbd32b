# -*- test-case-name: tests.test_testing -*-
"""
Test doubles for the daemon's seams, so that the layers above them run on
a L{twisted.internet.task.Clock} alone: no thread, no global reactor.

  - L{ThreadlessConnectionPool}: a real L{adbapi.ConnectionPool} whose
    "thread" is a turn of the clock (synapse's threadless pool): one
    C{clock.advance(0)} runs every transaction queued so far, in order,
    on the real SQLite file.
  - L{settle}: turn the clock until a Deferred has fired.
  - L{MemoryStore}: an L{IMessageStore} in memory, for router tests that
    need no file at all.
  - L{FakeConnection}: an L{IAgentConnection} without a protocol.
"""

import orjson
from twisted.enterprise import adbapi
from twisted.internet import defer, task
from twisted.internet.testing import StringTransport
from twisted.python import failure
from zope.interface import implementer

from relay.interfaces import IAgentConnection, IMessageStore
from relay.outbox import Outbox
from relay.store import STATUS_ACKED, STATUS_DELIVERED, STATUS_EXPIRED, STATUS_PENDING


class _ClockThreadPool:
    """
    The part of L{twisted.python.threadpool.ThreadPool} adbapi uses, run on
    the clock: work queued now runs at the next C{clock.advance}.
    """

    def __init__(self, clock):
        self.clock = clock

    def start(self):
        pass

    def stop(self):
        pass

    def callInThreadWithCallback(self, on_result, fn, *args, **kwargs):
        def run():
            try:
                result = fn(*args, **kwargs)
            except BaseException:
                on_result(False, failure.Failure())
            else:
                on_result(True, result)
        self.clock.callLater(0, run)


class _ClockReactor:
    """
    The reactor surface adbapi uses (startup and shutdown triggers,
    C{callFromThread}), over a clock: the "thread" is the clock's, so a
    result is handed back at once.
    """

    def __init__(self, clock):
        self.clock = clock

    def callWhenRunning(self, fn, *args, **kwargs):
        return None

    def addSystemEventTrigger(self, phase, event, fn, *args, **kwargs):
        return (phase, event, fn)

    def removeSystemEventTrigger(self, trigger):
        pass

    def callFromThread(self, fn, *args, **kwargs):
        fn(*args, **kwargs)


class ThreadlessConnectionPool(adbapi.ConnectionPool):
    """
    An adbapi ConnectionPool whose interactions run in the reactor thread,
    one clock turn after they are asked for.

    Use as C{Store(clock, path, pool_factory=ThreadlessConnectionPool.on(clock))}.
    """

    def __init__(self, clock, *args, **kwargs):
        kwargs["cp_reactor"] = _ClockReactor(clock)
        adbapi.ConnectionPool.__init__(self, *args, **kwargs)
        self.threadpool = _ClockThreadPool(clock)
        self.start()

    @classmethod
    def on(cls, clock):
        """
        A pool factory (callable(**kwargs) -> pool) for C{clock}.
        """
        return lambda *args, **kwargs: cls(clock, *args, **kwargs)


def settle(clock, d, turns=1000):
    """
    Turn C{clock} (without moving time) until C{d} has fired; return C{d}.

    @raise AssertionError: C{d} has not fired after C{turns} turns (it
        waits on time, or on nothing).
    """
    fired = []
    d.addBoth(lambda r: (fired.append(True), r)[1])
    for _ in range(turns):
        if fired:
            return d
        clock.advance(0)
    if not fired:
        raise AssertionError("Deferred %r did not fire in %d clock turns" % (d, turns))
    return d


@implementer(IMessageStore)
class MemoryStore:
    """
    An in-memory L{IMessageStore}: what the router needs of a store, with
    the SQLite store's rules (a SEND commits whole or not at all; an acked
    delivery stays acked; an expired one reopens only to acked), on a clock.

    Writes are queued and commit together one clock turn after the first
    of them (group commit, as the real store does on its batch timer and
    on demand); reads answer one turn later from what is committed.

    @ivar messages: seq -> dict of the message row (committed).
    @ivar deliveries: (recipient, seq) -> dict with C{stream_seq},
        C{status}, C{attempts}, C{updated_at} (committed).
    @ivar commits: how many group commits ran.
    """

    def __init__(self, clock, recent_sends=(), id_prefix="mem.1"):
        self.clock = clock
        self.id_prefix = id_prefix
        self.messages = {}
        self.deliveries = {}
        self.commits = 0
        self._by_id = {}
        self._streams = {}
        self._seq = 0
        self._pending = []
        self._callbacks = []
        self._group = None
        self._commit_call = None
        self._recent = list(recent_sends)
        self._overload_listeners = []

    # -- sequence numbers and ids ------------------------------------------

    def next_seq(self):
        self._seq += 1
        return self._seq

    def last_given_seq(self):
        return self._seq

    def message_id(self, seq):
        return "%s-%d" % (self.id_prefix, seq)

    def take_recent_sends(self):
        recent, self._recent = self._recent, []
        return recent

    def next_stream_seq(self, key):
        return self._streams.get(key, 0) + 1

    # -- queued writes -------------------------------------------------------

    def _queue(self, op):
        self._pending.append(op)
        if self._group is None:
            self._schedule()

    def _schedule(self):
        if self._commit_call is None:
            self._commit_call = self.clock.callLater(0, self._commit)

    def begin_send(self):
        if self._group is not None:
            raise RuntimeError("begin_send inside a SEND")
        self._group = (len(self._pending), dict(self._streams))

    def end_send(self):
        self._group = None
        self._schedule()

    def abort_send(self):
        start, _ = self._group
        self._group = None
        del self._pending[start:]
        self._schedule()

    def add_message(self, row, nbytes, fp=None):
        self._queue(("message", list(row) + [fp]))

    def add_delivery(self, recipient, message_seq, stream_key, stream_seq, status, now_ms):
        # Stream seqs stay used, committed or not (a gap, never a repeat).
        self._streams[stream_key] = max(stream_seq, self._streams.get(stream_key, 0))
        row = {"recipient": recipient, "seq": message_seq, "stream_seq": stream_seq,
               "status": status, "attempts": 0, "updated_at": now_ms}
        self._queue(("delivery", row))
        return row

    def add_remote(self, recipient, message_seq, now_ms):
        self._queue(("delivery", {"recipient": recipient, "seq": message_seq, "stream_seq": 0,
                                  "status": "remote", "attempts": 0, "updated_at": now_ms}))

    def set_status(self, handle, recipient, message_seq, status, attempts, now_ms):
        self._queue(("status", (recipient, message_seq, status, attempts, now_ms)))
        return handle

    def ack_by_id(self, recipient, message_id, now_ms):
        self._queue(("ack_by_id", (recipient, message_id, now_ms)))

    def expire_due(self, now_ms):
        self._queue(("expire", now_ms))

    def after_commit(self, fn, arg):
        self._callbacks.append((fn, arg))

    def commit_soon(self):
        self._schedule()

    def flush(self):
        d = defer.Deferred()
        self._callbacks.append((d.callback, None))
        self._schedule()
        return d

    def _commit(self):
        self._commit_call = None
        if self._group is not None:
            # Never between the rows of one SEND.
            return
        pending, self._pending = self._pending, []
        callbacks, self._callbacks = self._callbacks, []
        for kind, value in pending:
            getattr(self, "_apply_" + kind)(value)
        self.commits += 1
        for fn, arg in callbacks:
            fn(arg)

    def _apply_message(self, row):
        keys = ("seq", "id", "send_id", "ts", "sender", "recipient", "topic", "thread", "kind",
                "payload", "payload_meta", "extra", "expires_at", "send_fp")
        message = dict(zip(keys, row))
        if message["id"] in self._by_id:
            # The same SEND again (a derived id already stored): kept once
            # (its delivery rows find no message of their seq: dropped too).
            return
        self.messages[message["seq"]] = message
        self._by_id[message["id"]] = message["seq"]

    def _apply_delivery(self, row):
        if row["seq"] not in self.messages:
            return
        self.deliveries[(row["recipient"], row["seq"])] = dict(row)

    def _apply_status(self, value):
        recipient, seq, status, attempts, now_ms = value
        row = self.deliveries.get((recipient, seq))
        if row is None or row["status"] == STATUS_ACKED:
            return
        if row["status"] == STATUS_EXPIRED and status != STATUS_ACKED:
            return
        row.update(status=status, attempts=attempts, updated_at=now_ms)

    def _apply_ack_by_id(self, value):
        recipient, message_id, now_ms = value
        seq = self._by_id.get(message_id)
        row = self.deliveries.get((recipient, seq))
        if row is not None and row["status"] != STATUS_ACKED:
            row.update(status=STATUS_ACKED, updated_at=now_ms)

    def _apply_expire(self, now_ms):
        for (recipient, seq), row in self.deliveries.items():
            if (row["status"] in (STATUS_PENDING, STATUS_DELIVERED)
                    and self.messages[seq]["expires_at"] <= now_ms):
                row.update(status=STATUS_EXPIRED, updated_at=now_ms)

    # -- reading -------------------------------------------------------------

    def read_open_deliveries(self, recipient, after_seq, limit):
        rows = []
        for (name, seq), row in sorted(self.deliveries.items(), key=lambda kv: kv[0][1]):
            if (name != recipient or seq <= after_seq
                    or row["status"] not in (STATUS_PENDING, STATUS_DELIVERED)):
                continue
            m = self.messages[seq]
            rows.append((seq, row["stream_seq"], row["attempts"], m["id"], m["ts"], m["sender"],
                         m["recipient"], m["topic"], m["payload"], m["payload_meta"],
                         m["extra"], m["expires_at"]))
            if len(rows) >= limit:
                break
        return task.deferLater(self.clock, 0, lambda: rows)

    def add_overload_listener(self, listener):
        self._overload_listeners.append(listener)

    def stats(self):
        return {"batches": self.commits, "pending_rows": len(self._pending), "pending_bytes": 0,
                "streams_in_memory": len(self._streams), "quarantined": 0, "known_sends": 0}


@implementer(IAgentConnection)
class FakeConnection:
    """
    An L{IAgentConnection} without a protocol: a real L{relay.outbox.Outbox}
    on a L{StringTransport}, wired to C{router} as the protocol wires it,
    recording the control frames it is given and its pause reasons.

    @ivar frames: the envelopes given to L{send_frame}, in order.
    @ivar closed_with: the final envelope of L{close} (or True), else None.
    """

    def __init__(self, router, clock, window=1000, **outbox_kw):
        self.router = router
        self.clock = clock
        self.transport = StringTransport()
        self.session = None
        self.last_rx = clock.seconds()
        self.pause_reasons = set()
        self.held = []
        self.peer = None
        self.frames = []
        self.resumed = []
        self.closed_with = None
        self.outbox = Outbox(self.transport, window=window, on_write=self._written,
                             on_backpressure=self._backpressure, **outbox_kw)
        router.connection_made(self)

    def hello(self, name, **payload):
        """
        Register under C{name} and start its catch-up, as a HELLO does.
        """
        payload["agent"] = name
        self.session = self.router.hello(self, {"payload": payload})
        self.router.welcome(self.session)
        return self.session

    def delivered(self):
        """
        The DELIVER envelopes written to the transport so far.
        """
        out = []
        data = self.transport.value()
        while len(data) >= 4:
            n = int.from_bytes(data[:4], "big")
            env = orjson.loads(data[4:4 + n])
            if env.get("type") == "DELIVER":
                out.append(env)
            data = data[4 + n:]
        return out

    def _written(self, delivery):
        self.router.written(self.session, delivery)

    def _backpressure(self, outbox, on):
        if self.session is not None:
            self.router.backpressure(self.session, on)

    def send_frame(self, env):
        self.frames.append(env)

    def pause_reading(self, reason):
        self.pause_reasons.add(reason)

    def resume_reading(self, reason):
        self.pause_reasons.discard(reason)
        self.resumed.append(reason)

    def close(self, final=None):
        self.closed_with = final if final is not None else True
        self.outbox.close()
        self.router.connection_lost(self)
