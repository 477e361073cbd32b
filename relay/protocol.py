# -*- test-case-name: tests.test_protocol -*-
"""
The wire protocol: length-prefixed JSON frames over a stream.  This module
parses and answers; every routing decision is the router's.
"""

from collections import deque

import orjson
from twisted.internet import protocol, task
from twisted.logger import Logger
from twisted.protocols.basic import Int32StringReceiver

from relay.frames import check_send, echo, envelope, frame, valid_agent_name
from relay.outbox import Outbox
from relay.ratelimit import TokenBucket

NEW, ACTIVE, CLOSED = "new", "active", "closed"

# Frames a connection may send before its HELLO.
BEFORE_HELLO = frozenset(("HELLO", "PING", "PONG", "BYE", "STATUS"))

# The longest LOG line that reaches the daemon's log, in characters.
LOG_LINE_MAX = 2000


class RelayProtocol(Int32StringReceiver):
    """
    One agent connection.

    Two different things slow a connection down, and only the second stops
    reading its socket:

      - C{pause_reasons} (a recipient's queue above its high mark, the rate
        limit, a store that is behind): this connection's SENDs wait in
        C{held}, in arrival order, bounded by the factory's C{hold_max}
        frames and C{hold_bytes}.  Everything else it sends (its ACKs,
        which drain its own queue, PONG, PING, BYE, ...) is still read and
        acted on at once, so two agents blocked on each other's queues
        cannot deadlock.  Beyond the bound, see L{_hold}.
      - its own control queue above C{control_max} bytes: this peer does
        not read what we write.  Then we stop reading it (C{self.paused})
        until the queue is half drained.

    @ivar pause_reasons: why this connection's SENDs are held now; they
        are routed again, in order, when the set is empty.
    @ivar held: the held SENDs, C{(envelope, size)}; C{held_bytes} their
        size on the wire.
    """

    log = Logger()

    def __init__(self, factory):
        self.factory = factory
        self.router = factory.router
        self.clock = factory.clock
        self.MAX_LENGTH = factory.max_frame_bytes
        self.state = NEW
        self.session = None
        self.outbox = None
        # SO_PEERCRED of a Unix peer (relay.peercred), set by relay.auth.
        self.peer = None
        self.pause_reasons = set()
        self.held = deque()
        self.held_bytes = 0
        self.last_rx = 0.0
        now = self.clock.seconds()
        self._status_bucket = TokenBucket(factory.status_rate, factory.status_burst, now)
        self._log_bucket = TokenBucket(factory.log_rate, factory.log_burst, now)
        self._logs_dropped = 0
        self._read_call = None
        self.stop_reasons = set()
        self._heartbeat = None
        self._nonce = 0
        self._resume_call = None
        self._throttle_call = None
        self._throttled = False

    # -- connection ------------------------------------------------------------

    def connectionMade(self):
        f = self.factory
        self.last_rx = self.clock.seconds()
        self.outbox = Outbox(self.transport, high=f.queue_high, low=f.queue_low,
                             maximum=f.queue_max, window=f.window,
                             on_write=self._written, on_backpressure=self._backpressure,
                             control_max=f.control_max, on_control_full=self._control_full)
        self.router.connection_made(self)
        if f.auth is not None:
            f.auth.connection_made(self)
        self._heartbeat = task.LoopingCall(self._beat)
        self._heartbeat.clock = self.clock
        self._heartbeat.start(f.heartbeat, now=False)

    def connectionLost(self, reason):
        # SENDs still held were read from the socket: route them (the
        # sender gets no receipt for them now, but nothing it sent is lost).
        self._route_held()
        self.state = CLOSED
        if self._heartbeat is not None and self._heartbeat.running:
            self._heartbeat.stop()
        for call in (self._resume_call, self._throttle_call, self._read_call):
            if call is not None and call.active():
                call.cancel()
        self.router.connection_lost(self)

    def _written(self, delivery):
        self.router.written(self.session, delivery)

    def _backpressure(self, outbox, on):
        if self.session is not None:
            self.router.backpressure(self.session, on)

    # -- output ----------------------------------------------------------------

    def send_frame(self, env):
        if self.state != CLOSED:
            self.outbox.push_control(frame(env))

    def error(self, code, message, fatal=False, **extra):
        payload = {"code": code, "message": message, "fatal": fatal}
        payload.update(extra)
        self.router.errors[code] = self.router.errors.get(code, 0) + 1
        if fatal:
            self.close(envelope("ERROR", payload))
        else:
            self.send_frame(envelope("ERROR", payload))

    def close(self, final=None):
        """
        Close the connection, writing C{final} (an envelope) last.
        """
        if self.state == CLOSED:
            return
        # Route what is held before the close (BYE, replacement, fatal
        # error): it was read, so it is not dropped.
        self._route_held()
        self.state = CLOSED
        self.outbox.close()
        if final is not None:
            self.transport.write(frame(final))
        self.transport.loseConnection()

    def lengthLimitExceeded(self, length):
        self.log.info("frame of {length} bytes over the limit of {limit}; closing",
                      length=length, limit=self.MAX_LENGTH)
        self.error("BAD_REQUEST", "frame length %d exceeds max_frame_bytes %d"
                   % (length, self.MAX_LENGTH), fatal=True)

    # -- reading and flow control -------------------------------------------

    def pause_reading(self, reason):
        """
        Hold this connection's SENDs for C{reason} (the socket is still
        read: see the class docstring).
        """
        if self.state == CLOSED:
            return
        self.pause_reasons.add(reason)

    def resume_reading(self, reason):
        self.pause_reasons.discard(reason)
        if reason == "store":
            self.read_on("store")
        if not self.pause_reasons and self.held and self._resume_call is None:
            # Route from the reactor, not from inside another connection's
            # frame handler.
            self._resume_call = self.clock.callLater(0, self._resume)

    def _resume(self):
        self._resume_call = None
        while self.held and not self.pause_reasons and self.state != CLOSED:
            env, size = self.held.popleft()
            self.held_bytes -= size
            self._route(env, size)

    def _route_held(self):
        """
        Route every held SEND now, whatever holds them (BYE, close).
        """
        if self.session is None or self.session.closed:
            self.held.clear()
            self.held_bytes = 0
            return
        while self.held:
            env, size = self.held.popleft()
            self.held_bytes -= size
            self.router.send(self.session, env, size)

    def _control_full(self, full):
        """
        The outbox's control queue passed C{control_max} bytes (C{full}) or
        fell back to half of it: this peer is not reading its socket, so we
        stop reading it too, until it does.
        """
        if full:
            self.log.info("agent {name}: {n} bytes of replies unread; not reading it",
                          name=self.session.name if self.session else None,
                          n=self.outbox.control_bytes)
            self.stop_reading("output")
        else:
            self.read_on("output")

    def stop_reading(self, reason):
        """
        Stop reading the socket itself, for reasons that clear whatever any
        other agent does: C{"output"} (this peer does not read ours),
        C{"store"} (the store writer is behind and this connection's hold is
        full; the writer catches up on its own) or C{"auth"} (its HELLO is
        being checked, or its refusal is being slowed down: L{relay.auth}).
        """
        if self.state == CLOSED:
            return
        if not self.stop_reasons and not self.paused:
            self.pauseProducing()
        self.stop_reasons.add(reason)

    def read_on(self, reason):
        if reason not in self.stop_reasons:
            return
        self.stop_reasons.discard(reason)
        if not self.stop_reasons and self._read_call is None:
            # From the reactor, not from inside the outbox's write loop.
            self._read_call = self.clock.callLater(0, self._read_again)

    def _read_again(self):
        self._read_call = None
        if self.paused and not self.stop_reasons and self.state != CLOSED:
            self.resumeProducing()

    def stringReceived(self, data):
        self.last_rx = self.clock.seconds()
        if self.state == CLOSED:
            return
        try:
            env = orjson.loads(data)
        except orjson.JSONDecodeError as e:
            self.error("BAD_REQUEST", "frame is not valid UTF-8 JSON: %s" % (e,))
            return
        if not isinstance(env, dict):
            self.error("BAD_REQUEST", "frame must hold a JSON object")
            return
        kind = env.get("type")
        if not isinstance(kind, str):
            self.error("BAD_REQUEST", "envelope has no string 'type'")
            return
        self._dispatch(kind, env, len(data))

    def _dispatch(self, kind, env, size):
        if self.state == NEW and kind not in BEFORE_HELLO:
            self.error("BAD_REQUEST", "%s before HELLO: say HELLO first" % (kind[:32],))
            return
        handler = getattr(self, "frame_" + kind, None)
        if handler is None:
            self.error("BAD_REQUEST", "unknown frame type %r" % (kind[:32],))
            return
        handler(env, size)

    # -- frames ------------------------------------------------------------------

    def frame_HELLO(self, env, size):
        if self.state == ACTIVE:
            self.error("BAD_REQUEST", "HELLO after a successful HELLO")
            return
        payload = env.get("payload")
        name = payload.get("agent") if isinstance(payload, dict) else None
        if not valid_agent_name(name):
            self.error("BAD_REQUEST", "HELLO needs payload.agent: 1-128 letters, digits or ._-@: "
                       "not starting with _ (got %r)" % (str(name)[:140] if name is not None else None,))
            return
        auth = self.factory.auth
        if auth is not None:
            # Identity (issue 9, relay.auth): calls hello_accepted or refuses.
            auth.hello(self, env, name)
            return
        self.hello_accepted(env)

    def hello_accepted(self, env):
        """
        Register this connection under the HELLO's agent name and WELCOME it.
        """
        if self.state != NEW:
            return
        self.session = self.router.hello(self, env)
        self.state = ACTIVE
        s = self.session
        f = self.factory
        self.send_frame(envelope("WELCOME", {
            "session_id": s.session_id,
            "resume_token": s.resume_token,
            "server": {
                "max_frame_bytes": f.max_frame_bytes,
                "heartbeat_ms": int(f.heartbeat * 1000),
                "ack_timeout_ms": int(f.ack_timeout * 1000),
                "message_ttl_ms": self.router.message_ttl_ms,
                "max_inflight": s.window,
            },
        }, id=echo(env.get("id")), ts=self.router.now_ms()))
        self.router.welcome(s)

    def frame_SEND(self, env, size):
        send_id = echo(env.get("id"))
        reason = check_send(env, self.MAX_LENGTH, size)
        if reason is not None:
            self.router.counters["nacked"] += 1
            self.router.nacks["INVALID"] += 1
            self.send_frame(envelope("NACK", {"ack_id": send_id, "code": "INVALID",
                                              "message": reason}))
            return
        if self.held or self.pause_reasons:
            self._hold(env, size)
        else:
            self._route(env, size)

    def _route(self, env, size):
        """
        Route one SEND now, unless the rate limit says wait: then refuse it
        (policy reject) or hold it at the head of the queue until a token
        is due (throttle).
        """
        wait = self.router.admit(self.session)
        if not wait and self._throttled and self.router.spare(self.session) >= 1.0:
            # Back under budget: the throttle episode is over.
            self._throttled = False
        if wait:
            retry_ms = max(1, int(wait * 1000 + 0.999))
            if self.factory.rate_policy == "reject":
                self._busy_nack(env, retry_ms, "rate limit exceeded")
                return
            self.held.appendleft((env, size))
            self.held_bytes += size
            if not self._throttled:
                # One BUSY per throttle episode.
                self._throttled = True
                self.router.counters["busy"] += 1
                self.send_frame(envelope("BUSY", {"retry_after_ms": retry_ms,
                                                  "queue_depth": len(self.held)}))
            self.pause_reading("rate")
            if self._throttle_call is None:
                self._throttle_call = self.clock.callLater(wait, self._unthrottle)
            return
        self.router.send(self.session, env, size)

    def _hold(self, env, size):
        """
        Keep C{env} behind the SENDs already held, within the bound.

        Beyond it: if only slow recipients hold this sender, the oldest
        held SEND is routed now (in order; the router puts what a full
        queue cannot take into the store, so memory stays bounded and
        nothing waits on anyone's ACK).  If the store writer is behind,
        the SEND is kept and the socket is not read until the writer has
        caught up (that wait depends on no agent: it cannot deadlock).  If
        the rate limit holds it, the SEND gets C{NACK BUSY} with
        C{retry_after_ms}: it is not accepted, and the sender knows.
        """
        f = self.factory
        if len(self.held) < f.hold_max and self.held_bytes + size <= f.hold_bytes:
            self.held.append((env, size))
            self.held_bytes += size
            return
        if "store" in self.pause_reasons:
            self.held.append((env, size))
            self.held_bytes += size
            self.stop_reading("store")
            return
        if self.held and all(isinstance(r, tuple) for r in self.pause_reasons):
            first, first_size = self.held.popleft()
            self.held_bytes -= first_size
            self._route(first, first_size)
            if "rate" not in self.pause_reasons:
                self.held.append((env, size))
                self.held_bytes += size
                return
        self._busy_nack(env, self._retry_ms(), "daemon busy: %d SENDs of this connection "
                        "already wait" % (len(self.held),))

    def _retry_ms(self):
        """
        When a SEND refused now would likely be taken.
        """
        ms = 50
        limiter = self.router.limiter
        if "rate" in self.pause_reasons and limiter is not None:
            ms = max(ms, int((len(self.held) + 1) * 1000.0 / limiter.rate + 0.999))
        if "store" in self.pause_reasons:
            ms = max(ms, 100)
        if any(isinstance(r, tuple) for r in self.pause_reasons):
            ms = max(ms, int(self.factory.ack_timeout * 100))
        return ms

    def _busy_nack(self, env, retry_ms, message):
        self.router.counters["nacked"] += 1
        self.router.nacks["BUSY"] += 1
        self.send_frame(envelope("NACK", {
            "ack_id": echo(env.get("id")), "code": "BUSY", "retry_after_ms": retry_ms,
            "message": message}))

    def _unthrottle(self):
        self._throttle_call = None
        self.resume_reading("rate")

    def frame_ACK(self, env, size):
        payload = env.get("payload")
        ack_id = payload.get("ack_id") if isinstance(payload, dict) else None
        if not isinstance(ack_id, str):
            self.error("BAD_REQUEST", "ACK needs payload.ack_id")
            return
        self.router.ack(self.session, ack_id)

    def frame_NACK(self, env, size):
        # An agent refusing a delivery: it stays unacked and is resent.
        pass

    def frame_PING(self, env, size):
        payload = env.get("payload")
        nonce = payload.get("nonce") if isinstance(payload, dict) else None
        self.send_frame(envelope("PONG", {"nonce": echo(nonce)}, ts=self.router.now_ms()))

    def frame_PONG(self, env, size):
        pass

    def frame_LOG(self, env, size):
        # agent-relay's wrapper streams an agent's terminal output as LOG
        # frames for its dashboard.  They are not messages: accept them (no
        # ERROR for every line) and keep them in the daemon's debug log.
        # Rate-limited per connection and cut to LOG_LINE_MAX characters:
        # what an agent prints must not flood the daemon's log.
        if self._log_bucket.take(self.clock.seconds()):
            self._logs_dropped += 1
            return
        if self._logs_dropped:
            self.log.info("agent {name}: {n} LOG lines over the rate limit were not logged",
                          name=self.session.name, n=self._logs_dropped)
            self._logs_dropped = 0
        payload = env.get("payload")
        data = payload.get("data") if isinstance(payload, dict) else None
        if not isinstance(data, str):
            try:
                data = orjson.dumps(data, default=str)[:LOG_LINE_MAX * 4].decode(
                    "utf-8", "replace")
            except TypeError:
                # Nested past orjson's limit: the shape is all we can say.
                data = "(LOG data too deeply nested to show)"
        self.log.debug("agent {name} output: {data}", name=self.session.name,
                       data=data[:LOG_LINE_MAX])

    def _topic(self, env):
        topic = env.get("topic")
        if not isinstance(topic, str) or not topic:
            self.error("BAD_REQUEST", "%s needs a string 'topic'" % (env["type"],))
            return None
        return topic

    def frame_SUBSCRIBE(self, env, size):
        topic = self._topic(env)
        if topic is not None:
            self.router.subscribe(self.session, topic)

    def frame_UNSUBSCRIBE(self, env, size):
        topic = self._topic(env)
        if topic is not None:
            self.router.unsubscribe(self.session, topic)

    def frame_BYE(self, env, size):
        self.close(envelope("BYE", {}))

    def frame_STATUS(self, env, size):
        # A reply costs far more than the request (every agent is listed):
        # a token bucket per connection.
        wait = self._status_bucket.take(self.clock.seconds())
        if wait:
            # Small, non-fatal, and with the request's id so that a client
            # can fail that request.
            self.send_frame(envelope("ERROR", {
                "code": "BAD_REQUEST", "fatal": False,
                "message": "STATUS rate limit: ask again later",
                "retry_after_ms": max(1, int(wait * 1000 + 0.999))}, id=echo(env.get("id"))))
            return
        self.send_frame(envelope("STATUS_REPLY", self.router.status(), id=echo(env.get("id")),
                                 ts=self.router.now_ms()))

    # -- heartbeat ---------------------------------------------------------------

    def _beat(self):
        now = self.clock.seconds()
        if self.paused:
            # We stopped reading this socket ourselves (it does not read
            # ours): its PONGs cannot arrive, so silence proves nothing.
            # Held SENDs do not count: a connection we hold SENDs of is
            # still read, and must still answer.
            self.last_rx = now
        elif now - self.last_rx > self.factory.heartbeat * 6:
            self.log.info("agent {name}: no answer for {secs:.1f}s, closing",
                          name=self.session.name if self.session else None,
                          secs=now - self.last_rx)
            self.state = CLOSED
            self.outbox.close()
            self.transport.abortConnection()
            return
        self._nonce += 1
        self.send_frame(envelope("PING", {"nonce": str(self._nonce)}, ts=int(now * 1000)))


class RelayFactory(protocol.Factory):
    """
    Builds L{RelayProtocol}s sharing one router and configuration.
    """

    protocol = RelayProtocol
    # A relay.auth.AuthPolicy deciding on HELLOs, or None (anyone may say HELLO).
    auth = None

    def __init__(self, router, clock, max_frame_bytes=1048576, heartbeat=5.0, ack_timeout=5.0,
                 queue_high=1500, queue_low=500, queue_max=2000, window=1000,
                 rate_policy="throttle", hold_max=1000, hold_bytes=1048576,
                 control_max=4 * 1048576, status_rate=5.0, status_burst=20.0,
                 log_rate=100.0, log_burst=500.0):
        self.router = router
        self.clock = clock
        self.max_frame_bytes = max_frame_bytes
        self.heartbeat = heartbeat
        self.ack_timeout = ack_timeout
        self.queue_high = queue_high
        self.queue_low = queue_low
        self.queue_max = queue_max
        self.window = window
        self.rate_policy = rate_policy
        # SENDs one connection may have held (frames, bytes on the wire).
        self.hold_max = hold_max
        self.hold_bytes = hold_bytes
        # Unwritten control bytes per connection before we stop reading it.
        self.control_max = control_max
        # Per connection: STATUS requests and LOG lines per second, burst.
        self.status_rate = status_rate
        self.status_burst = status_burst
        self.log_rate = log_rate
        self.log_burst = log_burst

    def buildProtocol(self, addr):
        return self.protocol(self)
