# -*- test-case-name: tests.test_holding -*-
"""
How a connection holds its SENDs (the mechanics; what to decide is the
router's, L{relay.policy}): paused for a reason, held in bounded memory in
arrival order and routed again when every reason has cleared; and when to
stop reading the socket itself.  Mixed into L{relay.protocol.RelayProtocol}.
"""

from relay.policy import SEND_NOW, THROTTLED

# The protocol's state once closed (L{relay.protocol}).
CLOSED = "closed"


class SendHolding:
    """
    Uses the protocol's C{router}, C{session}, C{clock}, C{factory},
    C{state}, C{held}, C{held_bytes}, C{pause_reasons}, C{stop_reasons},
    C{outbox} and its producer methods (C{pauseProducing},
    C{resumeProducing}, C{paused}).
    """

    # -- reading and flow control -------------------------------------------

    def pause_reading(self, reason):
        """
        Hold this connection's SENDs for C{reason} (the socket is still
        read: see L{relay.protocol.RelayProtocol}).
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

    def _route(self, env, size):
        """
        Route one SEND now, unless the router's policy says wait: then it
        is refused (policy reject) or held at the head of the queue until a
        token is due (throttle).
        """
        verdict, wait = self.router.admit_send(self, env)
        if verdict == SEND_NOW:
            self.router.send(self.session, env, size)
        elif verdict == THROTTLED:
            self.held.appendleft((env, size))
            self.held_bytes += size
            self.pause_reading("rate")
            if self._throttle_call is None:
                self._throttle_call = self.clock.callLater(wait, self._unthrottle)

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
        self.router.refuse_busy(self, env, self.router.retry_ms(self),
                                "daemon busy: %d SENDs of this connection already wait"
                                % (len(self.held),))

    def _unthrottle(self):
        self._throttle_call = None
        self.resume_reading("rate")
