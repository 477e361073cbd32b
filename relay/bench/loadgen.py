# -*- test-case-name: tests.test_loadgen -*-
"""
A load generator for a relay daemon, standard library only.

It does not import the relay package or Twisted on purpose: it drives the daemon
through plain non-blocking Unix sockets and one ``selectors`` loop, so it cannot
share the daemon's bottlenecks, and this file can be copied to any machine with
Python 3.9+ and run as ``python loadgen.py SOCKET``. For the same reason it
keeps its own copy of the few wire rules it needs instead of ``relay.wire``.

One file, by design: it is copied whole to other machines, so it stays one
stdlib-only module and is the one documented exception to the project's
module-size rule (about 400 lines; see "Developer notes" in README.rst).
Its wire constants are written out here rather than imported from
``relay.wire`` for the same reason.

Senders and receivers all run in this one process. The result's
``loadgen_cpu`` is this process's CPU share during the run: measured here at
about 40% of one core while the daemon delivered 20,000-34,000 msg/s on the
other, so the daemon, not this loop, is the limit, and child processes would
only add busy processes to a 2-core machine. SEND and ACK frames are
pre-encoded (a bytes %-template per sender and recipient, no dict, no
encoder call per frame): against the bare Twisted relay of
benchmarks/bare_relay.py this took the generator from 23-27 us to 15 us of
CPU per message (issue 14), so that baseline, about twice relay's speed,
is not limited by it either.

What it measures:

- *latency*: from the moment a SEND frame is handed to the socket to the moment
  its DELIVER is parsed by the receiver. The send time is a ``time.monotonic()``
  value embedded in the payload's ``data``; the clock is system wide, so this stays
  right if a receiver ever runs in another process.
- *loss*: every message carries (sender index, message number); a message that was
  accepted by the daemon (not refused with NACK) and never delivered is lost.
- *duplicates* (the same message delivered twice, e.g. a redelivery after an ack
  timeout) and *out_of_order* (a message from one sender to one receiver read
  after a later one).

Flow:

- Every connection says HELLO and waits for WELCOME before the run starts.
- Sender ``i`` sends message ``n`` to receiver ``(n + i) % receivers``.
- Closed loop (default): at most ``window`` messages per sender are in flight; a
  message is in flight until it is delivered and, when ``durable``, until its
  receipt (``ACK`` with ``ack_id`` = the SEND id) arrived.
- Open loop: no window; senders write as fast as their socket accepts.
- Receivers ACK every delivery. With ``receiver_rate`` a receiver handles at most
  that many deliveries per second and stops reading its socket in between, so the
  daemon sees a slow reader (the flow-control flood test).
- A ``NACK`` with code ``BUSY`` is retried after its ``retry_after_ms`` (the
  message is not lost, it is counted in ``nacked``); other NACK codes are final.
  ``BUSY`` frames are counted; with ``honor_busy`` they also pause that sender
  for their ``retry_after_ms`` (by default not: the daemon's own flow control,
  not reading the sender's socket, is what is measured).
- The run ends when every message is settled, or when nothing arrived for
  ``idle_timeout`` seconds (what is missing then is reported as lost).
"""

import json
import os
import selectors
import socket
import struct
import sys
import time
from array import array

__all__ = ["run", "LoadgenError", "percentile", "FrameBuffer", "endpoint_to_path"]

_HEADER = struct.Struct(">I")
_MAX_FRAME = 1 << 20
_OUT_HIGH = 64 * 1024  # stop generating frames while this much is unsent
_READ_CHUNK = 256 * 1024
_SLOW_READ_CHUNK = 4096

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_loads = json.loads


class LoadgenError(Exception):
    """The run could not start or the daemon broke the protocol."""


def endpoint_to_path(endpoint):
    """
    Accept a socket path or a Twisted ``unix:`` endpoint string
    (``unix:/tmp/x.sock`` or ``unix:path=/tmp/x.sock:timeout=2``); return the path.
    """
    if not endpoint.startswith("unix:"):
        if ":" in endpoint.split("/", 1)[0]:
            raise LoadgenError(
                "only unix socket endpoints are supported, got {!r}".format(endpoint))
        return endpoint
    rest = endpoint[len("unix:"):]
    parts = rest.split(":")
    for part in parts:
        if part.startswith("path="):
            return part[len("path="):]
    return parts[0]


def percentile(sorted_values, fraction):
    """
    The nearest-rank percentile of an already sorted sequence (``fraction`` in
    0..1); ``None`` when it is empty.
    """
    if not sorted_values:
        return None
    rank = int(fraction * len(sorted_values) + 0.999999999) - 1
    rank = min(max(rank, 0), len(sorted_values) - 1)
    return sorted_values[rank]


def encode_frame(envelope):
    """One length-prefixed JSON frame."""
    data = _dumps(envelope).encode("utf-8")
    return _HEADER.pack(len(data)) + data


def _const(value):
    """A JSON constant for a %-template (its own % signs doubled)."""
    return _dumps(value).replace("%", "%%")


def send_template(id_prefix, sender, to, body, index, durable):
    """
    The SEND frames of one (sender, recipient) pair, pre-encoded: a bytes
    %-template whose holes are the id's suffix (bytes), ``ts`` (int), the
    message number (int) and the send time (float). Filling it costs a
    fraction of encoding the envelope each time (issue 14: the load
    generator must not be the limit); it decodes to exactly the envelope
    ``_Sender`` used to build as a dict (tests.test_loadgen proves it).
    """
    id_json = _const(id_prefix)
    return ('{"v":1,"type":"SEND","id":' + id_json[:-1] + '%s","ts":%d,'
            '"from":' + _const(sender) + ',"to":' + _const(to) + ','
            '"payload":{"kind":"message","body":' + _const(body) + ','
            '"data":{"lg":[' + str(int(index)) + ',%d,%.9f]}}'
            + (',"payload_meta":{"requires_ack":true}' if durable else '')
            + '}').encode("utf-8")


def encode_ack(deliver_id, seq, ts):
    """The ACK frame of one DELIVER, without building a dict."""
    if not isinstance(deliver_id, str):
        return encode_frame({"v": 1, "type": "ACK", "id": "ack-" + str(deliver_id),
                             "ts": ts, "payload": {"ack_id": deliver_id, "seq": seq}})
    id_json = _dumps(deliver_id)
    data = ('{"v":1,"type":"ACK","id":"ack-%s,"ts":%d,"payload":{"ack_id":%s,"seq":%s}}' % (
        id_json[1:], ts, id_json, _dumps(seq))).encode("utf-8")
    return _HEADER.pack(len(data)) + data


class FrameBuffer:
    """
    Collects bytes and yields complete frames (decoded envelopes), however the
    bytes were split across reads.
    """

    def __init__(self, max_frame=_MAX_FRAME):
        self._buf = bytearray()
        self._pos = 0
        self._max = max_frame

    def feed(self, data):
        self._buf += data

    def __len__(self):
        return len(self._buf) - self._pos

    def next_frame(self):
        """The next complete envelope, or ``None`` if it has not all arrived."""
        buf = self._buf
        pos = self._pos
        if len(buf) - pos < 4:
            self._compact()
            return None
        (length,) = _HEADER.unpack_from(buf, pos)
        if length > self._max:
            raise LoadgenError("frame of {} bytes exceeds {}".format(length, self._max))
        end = pos + 4 + length
        if len(buf) < end:
            self._compact()
            return None
        self._pos = end
        envelope = _loads(bytes(buf[pos + 4:end]))
        if not isinstance(envelope, dict):
            raise LoadgenError("frame is not a JSON object")
        return envelope

    def _compact(self):
        if self._pos:
            del self._buf[:self._pos]
            self._pos = 0


class _Conn:
    """One agent connection: a socket, its read buffer and its unsent bytes."""

    def __init__(self, run, name, path, timeout):
        self.run = run
        self.name = name
        self.out = bytearray()
        self.closed = False
        self.reading = True
        # Frames that came in the same read as WELCOME stay in self.frames.
        self.sock, self.frames = _handshake(path, name, timeout, run.wall)
        self.sock.setblocking(False)

    def queue(self, frame):
        self.out += frame

    def flush(self):
        if self.out and not self.closed:
            try:
                sent = self.sock.send(self.out)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError as e:
                self.lost_connection("write failed: {}".format(e))
                return
            if sent:
                del self.out[:sent]
        self.run.update_interest(self)

    def read(self, limit=_READ_CHUNK):
        try:
            data = self.sock.recv(limit)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            self.lost_connection("read failed: {}".format(e))
            return
        if not data:
            self.lost_connection("the daemon closed the connection")
            return
        self.frames.feed(data)

    def lost_connection(self, why):
        if not self.closed:
            self.closed = True
            self.run.connection_lost(self, why)

    def handle_common(self, envelope):
        """PING, ERROR and BYE; True when handled."""
        kind = envelope.get("type")
        if kind == "PING":
            payload = envelope.get("payload") or {}
            self.queue(encode_frame({
                "v": 1, "type": "PONG", "id": "pong-" + str(envelope.get("id")),
                "ts": self.run.wall_ms, "payload": {"nonce": payload.get("nonce")}}))
            return True
        if kind == "ERROR":
            payload = envelope.get("payload") or {}
            self.run.errors.append("{}: ERROR {} {}".format(
                self.name, payload.get("code"), payload.get("message")))
            if payload.get("fatal"):
                self.lost_connection("fatal ERROR from the daemon")
            return True
        if kind == "BYE":
            self.lost_connection("the daemon said BYE")
            return True
        return kind in ("PONG", "WELCOME")


class _Sender(_Conn):
    def __init__(self, run, index, path, timeout):
        _Conn.__init__(self, run, "{}-s{}".format(run.prefix, index), path, timeout)
        self.index = index
        self.quota = run.per_sender[index]
        self.next_n = 0
        self.inflight = 0
        self.state = bytearray(self.quota)   # bit 1 delivered, 2 receipted, 4 final nack
        self.attempt = {}                     # n -> retry count, only for retried ones
        self.retry = []                       # (due, n)
        self.paused_until = 0.0
        self.id_prefix = "{}-s{}-".format(run.prefix, index)
        self.body = "x" * run.size
        self.templates = [
            send_template(self.id_prefix, self.name, to, self.body, index, run.durable)
            for to in run.receiver_names]

    def fill(self, now):
        """Write new SENDs while the window, the socket and any pause allow."""
        run = self.run
        if self.closed or now < self.paused_until:
            return
        if self.retry:
            due = [item for item in self.retry if item[0] <= now]
            if due:
                self.retry = [item for item in self.retry if item[0] > now]
                for _, n in due:
                    self._send(n, now)
        window = run.window
        while (self.next_n < self.quota and len(self.out) < _OUT_HIGH
               and (window is None or self.inflight < window)):
            self._send(self.next_n, now)
            self.next_n += 1
            self.inflight += 1
        self.flush()

    def _send(self, n, now):
        run = self.run
        attempt = self.attempt.get(n, 0)
        suffix = b"%d" % (n,) if not attempt else b"%d.%d" % (n, attempt)
        data = self.templates[(n + self.index) % run.receivers] % (
            suffix, run.wall_ms, n, time.monotonic())
        self.out += _HEADER.pack(len(data))
        self.out += data
        run.frames_sent += 1

    def handle(self, envelope, now):
        if self.handle_common(envelope):
            return
        kind = envelope.get("type")
        payload = envelope.get("payload") or {}
        if kind == "ACK":
            n = self._n_of(payload.get("ack_id"))
            if n is None:
                return
            if not self.state[n] & 2:
                self.state[n] |= 2
                self.run.receipts += 1
                self._maybe_settled(n)
        elif kind == "NACK":
            self.run.nacked += 1
            n = self._n_of(payload.get("ack_id"))
            code = payload.get("code")
            self.run.nack_codes[code] = self.run.nack_codes.get(code, 0) + 1
            if n is None:
                return
            if code == "BUSY":
                self.attempt[n] = self.attempt.get(n, 0) + 1
                delay = (payload.get("retry_after_ms") or 10) / 1000.0
                self.retry.append((now + delay, n))
            elif not self.state[n] & 4:
                self.state[n] |= 4
                self.run.final_nacks += 1
                self.inflight -= 1
                self.run.settled += 1
        elif kind == "BUSY":
            # Advisory: the daemon already stops reading this socket while it is
            # overloaded; pausing on top of that (for 500 ms at a time) would only
            # measure the pause. Counted; honoured only with honor_busy.
            self.run.busy_frames += 1
            if self.run.honor_busy:
                delay = (payload.get("retry_after_ms") or 0) / 1000.0
                self.paused_until = max(self.paused_until, now + delay)

    def _n_of(self, send_id):
        if not isinstance(send_id, str) or not send_id.startswith(self.id_prefix):
            return None
        try:
            n = int(send_id[len(self.id_prefix):].split(".", 1)[0])
        except ValueError:
            return None
        return n if 0 <= n < self.quota else None

    def delivered(self, n):
        """A receiver read message ``n``; False if it had already been read."""
        if self.state[n] & 1:
            return False
        self.state[n] |= 1
        self._maybe_settled(n)
        return True

    def _maybe_settled(self, n):
        state = self.state[n]
        if state & 4:
            return
        if state & 1 and (state & 2 or not self.run.durable):
            self.inflight -= 1
            self.run.settled += 1


class _Receiver(_Conn):
    def __init__(self, run, index, path, timeout):
        _Conn.__init__(self, run, run.receiver_names[index], path, timeout)
        self.index = index
        self.last_n = {}       # sender index -> highest message number read
        self.rate = run.receiver_rate
        self.tokens = 1.0
        self.refill_at = None

    def process(self, now):
        """Handle buffered frames, within the rate limit if there is one."""
        rate = self.rate
        if rate:
            if self.refill_at is None:
                self.refill_at = now
            self.tokens = min(max(1.0, rate / 20.0), self.tokens + (now - self.refill_at) * rate)
            self.refill_at = now
        while True:
            if rate and self.tokens < 1.0:
                break
            envelope = self.frames.next_frame()
            if envelope is None:
                break
            if self.handle(envelope, now) and rate:
                self.tokens -= 1.0
        if rate:
            # Read more only when the buffer is drained and a token is there.
            self.reading = self.tokens >= 1.0 and len(self.frames) < _SLOW_READ_CHUNK
        self.flush()

    def wake_time(self):
        if not self.rate or self.tokens >= 1.0:
            return None
        return self.refill_at + (1.0 - self.tokens) / self.rate

    def handle(self, envelope, now):
        """Handle one frame; True when it was a DELIVER."""
        if self.handle_common(envelope):
            return False
        if envelope.get("type") != "DELIVER":
            return False
        run = self.run
        payload = envelope.get("payload") or {}
        # agent-relay puts ``delivery`` at the top of the envelope; accept both.
        delivery = envelope.get("delivery") or payload.get("delivery") or {}
        self.queue(encode_ack(envelope.get("id"), delivery.get("seq"), run.wall_ms))
        marker = (payload.get("data") or {}).get("lg")
        if not marker or len(marker) != 3:
            run.foreign += 1
            return True
        s, n, sent_at = marker
        if not (0 <= s < len(run.senders)) or not (0 <= n < run.senders[s].quota):
            run.foreign += 1
            return True
        if not run.senders[s].delivered(n):
            run.duplicates += 1
            return True
        run.delivered += 1
        run.latencies.append(now - sent_at)
        last = self.last_n.get(s, -1)
        if n < last:
            run.out_of_order += 1
        else:
            self.last_n[s] = n
        return True


def _handshake(path, name, timeout, wall):
    """
    Connect, say HELLO and wait for WELCOME, with a blocking socket; return the
    socket and the frame buffer (which may already hold frames after WELCOME).
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
    except FileNotFoundError:
        sock.close()
        raise LoadgenError("no daemon socket at {} (is the daemon running?)".format(path))
    except PermissionError:
        sock.close()
        raise LoadgenError("permission denied on the daemon socket {}".format(path))
    except ConnectionRefusedError:
        sock.close()
        raise LoadgenError("connection refused on {} (is the daemon running?)".format(path))
    except OSError as e:
        sock.close()
        raise LoadgenError("cannot connect to {}: {}".format(path, e))
    hello = {
        "v": 1, "type": "HELLO", "id": "hello-" + name, "ts": int(wall() * 1000),
        "payload": {"agent": name, "capabilities": {
            "ack": True, "resume": False, "max_inflight": 256, "supports_topics": True}},
    }
    frames = FrameBuffer()
    try:
        sock.sendall(encode_frame(hello))
        while True:
            envelope = frames.next_frame()
            if envelope is None:
                data = sock.recv(65536)
                if not data:
                    raise LoadgenError("the daemon closed the connection during HELLO")
                frames.feed(data)
                continue
            kind = envelope.get("type")
            if kind == "WELCOME":
                break
            if kind == "ERROR":
                payload = envelope.get("payload") or {}
                raise LoadgenError("HELLO refused: {} {}".format(
                    payload.get("code"), payload.get("message")))
            if kind == "PING":
                sock.sendall(encode_frame({
                    "v": 1, "type": "PONG", "id": "pong", "ts": int(wall() * 1000),
                    "payload": {"nonce": (envelope.get("payload") or {}).get("nonce")}}))
    except socket.timeout:
        sock.close()
        raise LoadgenError("no WELCOME from {} within {}s".format(path, timeout))
    except (OSError, LoadgenError):
        sock.close()
        raise
    return sock, frames


class _Run:
    def __init__(self, path, senders, receivers, messages, size, window, open_loop,
                 receiver_rate, durable, progress, idle_timeout, connect_timeout,
                 honor_busy=False, wall=time.time, receiver_path=None):
        if senders < 1 or receivers < 1:
            raise LoadgenError("senders and receivers must be at least 1")
        if messages < 0 or size < 0:
            raise LoadgenError("messages and size must not be negative")
        if window is not None and window < 1:
            raise LoadgenError("window must be at least 1")
        self.path = endpoint_to_path(path)
        # Receivers on another daemon (federation: benchmarks/bench_federation.py).
        self.receiver_path = endpoint_to_path(receiver_path) if receiver_path else self.path
        self.prefix = "lg{}x{}".format(os.getpid(), os.urandom(3).hex())
        self.messages = messages
        self.size = size
        self.window = None if open_loop else (window or 1000)
        self.receivers = receivers
        self.receiver_rate = receiver_rate
        self.durable = durable
        self.honor_busy = honor_busy
        self.progress = progress
        self.idle_timeout = idle_timeout
        self.connect_timeout = connect_timeout
        base, extra = divmod(messages, senders)
        self.per_sender = [base + (1 if i < extra else 0) for i in range(senders)]
        self.receiver_names = ["{}-r{}".format(self.prefix, j) for j in range(receivers)]
        # The wall clock, only for the envelopes' "ts" field (latency uses
        # time.monotonic()); injectable like any clock.
        self.wall = wall
        self.wall_ms = int(wall() * 1000)
        self.frames_sent = 0
        self.receipts = 0
        self.nacked = 0
        self.nack_codes = {}
        self.final_nacks = 0
        self.busy_frames = 0
        self.delivered = 0
        self.duplicates = 0
        self.out_of_order = 0
        self.foreign = 0
        self.settled = 0
        self.latencies = array("d")
        self.errors = []
        self.cpu_s = 0.0
        self.selector = selectors.DefaultSelector()
        self.senders = []
        self.receivers_ = []
        self._interest = {}

    def update_interest(self, conn):
        if conn.closed:
            return
        mask = (selectors.EVENT_READ if conn.reading else 0) | (
            selectors.EVENT_WRITE if conn.out else 0)
        old = self._interest.get(conn)
        if mask == old:
            return
        if old:
            if mask:
                self.selector.modify(conn.sock, mask, conn)
            else:
                self.selector.unregister(conn.sock)
        elif mask:
            self.selector.register(conn.sock, mask, conn)
        self._interest[conn] = mask

    def connection_lost(self, conn, why):
        self.errors.append("{}: {}".format(conn.name, why))
        if self._interest.get(conn):
            self.selector.unregister(conn.sock)
        self._interest[conn] = 0
        conn.sock.close()

    def connect(self):
        # Receivers first, so nothing waits in the store for them.
        try:
            for j in range(self.receivers):
                self.receivers_.append(_Receiver(self, j, self.receiver_path,
                                                 self.connect_timeout))
            for i in range(len(self.per_sender)):
                self.senders.append(_Sender(self, i, self.path, self.connect_timeout))
        except LoadgenError:
            self.close()
            raise
        for conn in self.receivers_ + self.senders:
            self.update_interest(conn)

    def loop(self):
        started = time.monotonic()
        cpu_started = time.process_time()
        last_activity = started
        next_progress = started
        total = self.messages
        receivers = self.receivers_
        senders = self.senders
        while self.settled < total:
            now = time.monotonic()
            self.wall_ms = int(self.wall() * 1000)
            for sender in senders:
                sender.fill(now)
            timeout = 0.05
            for receiver in receivers:
                wake = receiver.wake_time()
                if wake is not None:
                    timeout = max(0.0, min(timeout, wake - now))
            events = self.selector.select(timeout)
            now = time.monotonic()
            for key, mask in events:
                conn = key.data
                if mask & selectors.EVENT_WRITE:
                    conn.flush()
                if mask & selectors.EVENT_READ and not conn.closed:
                    conn.read(_SLOW_READ_CHUNK if self.receiver_rate and isinstance(
                        conn, _Receiver) else _READ_CHUNK)
                    last_activity = now
            for sender in senders:
                if sender.frames and not sender.closed:
                    while True:
                        envelope = sender.frames.next_frame()
                        if envelope is None:
                            break
                        sender.handle(envelope, now)
                    sender.flush()
            for receiver in receivers:
                if not receiver.closed:
                    receiver.process(now)
            if self.progress is not None and now >= next_progress:
                next_progress = now + 0.1
                self.progress(self.settled, total)
            if now - last_activity > self.idle_timeout:
                self.errors.append("nothing arrived for {}s; stopping".format(
                    self.idle_timeout))
                break
            if all(c.closed for c in senders) or all(c.closed for c in receivers):
                break
        elapsed = time.monotonic() - started
        # How busy this process was: near 1.0 means the load generator, not the
        # daemon, may be the limit.
        self.cpu_s = time.process_time() - cpu_started
        if self.progress is not None:
            self.progress(self.settled, total)
        return elapsed

    def close(self):
        bye = encode_frame({"v": 1, "type": "BYE", "id": "bye", "ts": self.wall_ms,
                            "payload": {}})
        for conn in self.senders + self.receivers_:
            if not conn.closed:
                conn.closed = True
                try:
                    conn.sock.setblocking(True)
                    conn.sock.settimeout(1.0)
                    conn.sock.sendall(bytes(conn.out) + bye)
                except OSError:
                    pass
                conn.sock.close()
        self.selector.close()

    def result(self, elapsed):
        latencies = sorted(self.latencies)
        sent = sum(s.next_n for s in self.senders)
        p50, p90, p99 = (percentile(latencies, f) for f in (0.50, 0.90, 0.99))

        def ms(value):
            return None if value is None else value * 1000.0
        return {
            "sent": sent,
            "delivered": self.delivered,
            "lost": max(0, sent - self.final_nacks - self.delivered),
            "duplicates": self.duplicates,
            "out_of_order": self.out_of_order,
            "nacked": self.nacked,
            "nack_codes": dict(self.nack_codes),
            "rejected": self.final_nacks,
            "busy_frames": self.busy_frames,
            "receipts": self.receipts,
            "send_frames": self.frames_sent,
            "foreign": self.foreign,
            "elapsed_s": elapsed,
            "loadgen_cpu": (self.cpu_s / elapsed) if elapsed > 0 else 0.0,
            "msgs_per_s": (self.delivered / elapsed) if elapsed > 0 else 0.0,
            "p50_ms": ms(p50),
            "p90_ms": ms(p90),
            "p99_ms": ms(p99),
            "max_ms": ms(latencies[-1] if latencies else None),
            "complete": self.settled >= self.messages,
            "errors": list(self.errors),
            "agent_prefix": self.prefix,
            "senders": len(self.senders),
            "receivers": self.receivers,
            "messages": self.messages,
            "size": self.size,
            "window": self.window,
            "durable": self.durable,
        }


def run(endpoint_path, senders=1, receivers=1, messages=20000, size=200, window=None,
        open_loop=False, receiver_rate=None, durable=True, progress=None,
        idle_timeout=10.0, connect_timeout=5.0, honor_busy=False, wall=time.time,
        receiver_path=None):
    """
    Run one load test against the daemon listening on ``endpoint_path`` (a Unix
    socket path or ``unix:PATH`` endpoint string) and return a dict of results:

    ``sent`` messages written (retries after a BUSY NACK not counted twice),
    ``delivered`` distinct messages read by receivers, ``lost`` accepted but never
    delivered, ``duplicates``, ``out_of_order``, ``nacked`` NACK frames (by code in
    ``nack_codes``; ``rejected`` those that were final), ``busy_frames``,
    ``receipts``, ``elapsed_s``, ``msgs_per_s`` (delivered per second),
    ``p50_ms``/``p90_ms``/``p99_ms``/``max_ms`` latency, ``complete``, ``errors``
    and ``agent_prefix`` (every agent name of this run starts with it).

    ``wall`` is the wall clock for the envelopes' ``ts`` field (latency uses
    ``time.monotonic()``).
    ``receiver_path`` puts the receivers on another daemon (default: the same).
    ``window`` is the in-flight limit per sender in closed loop (default 1000);
    ``open_loop`` ignores it. ``size`` is the body length in bytes.
    ``progress(settled, total)`` is called about ten times a second.
    Raises ``LoadgenError`` when a connection cannot be made.
    """
    state = _Run(endpoint_path, senders, receivers, messages, size, window, open_loop,
                 receiver_rate, durable, progress, idle_timeout, connect_timeout,
                 honor_busy, wall, receiver_path)
    state.connect()
    try:
        elapsed = state.loop()
    finally:
        state.close()
    return state.result(elapsed)


def _main(argv):
    import argparse
    parser = argparse.ArgumentParser(description="Load a relay daemon (stdlib only).")
    parser.add_argument("socket", help="the daemon's Unix socket path")
    parser.add_argument("--senders", type=int, default=1)
    parser.add_argument("--receivers", type=int, default=1)
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--size", type=int, default=200)
    parser.add_argument("--window", type=int, default=None)
    parser.add_argument("--open-loop", action="store_true")
    parser.add_argument("--receiver-rate", type=float, default=None)
    parser.add_argument("--no-durable", dest="durable", action="store_false")
    args = parser.parse_args(argv)
    try:
        result = run(args.socket, args.senders, args.receivers, args.messages, args.size,
                     args.window, args.open_loop, args.receiver_rate, args.durable)
    except LoadgenError as e:
        sys.stderr.write("loadgen: {}\n".format(e))
        return 3
    sys.stdout.write(json.dumps(result, indent=2) + "\n")
    return 0 if result["lost"] == 0 and result["complete"] else 1


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
