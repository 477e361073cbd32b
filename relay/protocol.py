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

NEW, ACTIVE, CLOSED = "new", "active", "closed"

# Frames a connection may send before its HELLO.
BEFORE_HELLO = frozenset(("HELLO", "PING", "PONG", "BYE", "STATUS"))


class RelayProtocol(Int32StringReceiver):
    """
    One agent connection.

    @ivar pause_reasons: why the daemon is not reading this socket now
        (flow control, rate limiting, a store that is behind); reading
        resumes when the set is empty.
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
        self.last_rx = 0.0
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
                             on_write=self._written, on_backpressure=self._backpressure)
        self.router.connection_made(self)
        if f.auth is not None:
            f.auth.connection_made(self)
        self._heartbeat = task.LoopingCall(self._beat)
        self._heartbeat.clock = self.clock
        self._heartbeat.start(f.heartbeat, now=False)

    def connectionLost(self, reason):
        self.state = CLOSED
        if self._heartbeat is not None and self._heartbeat.running:
            self._heartbeat.stop()
        for call in (self._resume_call, self._throttle_call):
            if call is not None and call.active():
                call.cancel()
        self.held.clear()
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
        if self.state == CLOSED:
            return
        if not self.pause_reasons:
            self.paused = True
            self.transport.pauseProducing()
        self.pause_reasons.add(reason)

    def resume_reading(self, reason):
        self.pause_reasons.discard(reason)
        if not self.pause_reasons and self.paused and self._resume_call is None:
            # Resume from the reactor, not from inside another connection's
            # frame handler.
            self._resume_call = self.clock.callLater(0, self._resume)

    def _resume(self):
        self._resume_call = None
        if self.pause_reasons or self.state == CLOSED:
            return
        self.paused = False
        while self.held and not self.paused:
            self._dispatch(*self.held.popleft())
        if self.paused:
            return
        self.transport.resumeProducing()
        self.dataReceived(b"")

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
        wait = self.router.admit(self.session)
        if not wait and self._throttled and self.router.spare(self.session) >= 1.0:
            # Back under budget: the throttle episode is over.
            self._throttled = False
        if wait:
            retry_ms = max(1, int(wait * 1000 + 0.999))
            if self.factory.rate_policy == "reject":
                self.router.counters["nacked"] += 1
                self.router.nacks["BUSY"] += 1
                self.send_frame(envelope("NACK", {
                    "ack_id": send_id, "code": "BUSY", "retry_after_ms": retry_ms,
                    "message": "rate limit exceeded"}))
                return
            # Throttle: hold this frame (and everything after it, in order)
            # and stop reading until a token is due.
            self.held.appendleft(("SEND", env, size))
            if not self._throttled:
                # One BUSY per throttle episode.
                self._throttled = True
                self.router.counters["busy"] += 1
                self.send_frame(envelope("BUSY", {"retry_after_ms": retry_ms,
                                                  "queue_depth": len(self.held)}))
            self.pause_reading("rate")
            self._throttle_call = self.clock.callLater(wait, self._unthrottle)
            return
        self.router.send(self.session, env, size)

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
        payload = env.get("payload")
        data = payload.get("data") if isinstance(payload, dict) else None
        self.log.debug("agent {name} output: {data}", name=self.session.name,
                       data=str(data)[:2000])

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
        self.send_frame(envelope("STATUS_REPLY", self.router.status(), id=echo(env.get("id")),
                                 ts=self.router.now_ms()))

    # -- heartbeat ---------------------------------------------------------------

    def _beat(self):
        now = self.clock.seconds()
        if self.pause_reasons:
            # We stopped reading this socket ourselves: its PONGs cannot
            # arrive, so silence proves nothing.
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
                 rate_policy="throttle"):
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

    def buildProtocol(self, addr):
        return self.protocol(self)
