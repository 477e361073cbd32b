# -*- test-case-name: tests.test_policy -*-
"""
The send policy: whether a connection's SEND may be routed now, and what
a refused or slowed sender is told.  The protocol holds and replays SENDs
(mechanics); what to decide, which counters to bump and which frame to
answer with are decided here, on the router's side.
"""

from relay.frames import echo, envelope

# What L{SendPolicy.admit_send} says.
SEND_NOW = "send"
REJECTED = "rejected"
THROTTLED = "throttled"


class SendPolicy:
    """
    Mixed into L{relay.router.Router}: uses its C{limiter}, C{rate_policy},
    C{ack_timeout}, C{counters} and C{throttled} (the connections in a
    throttle episode).
    """

    def admit(self, session):
        """
        @return: 0 when C{session} may send now, else seconds to wait.
        """
        if self.limiter is None:
            return 0.0
        return self.limiter.take(session.name)

    def spare(self, session):
        """
        Tokens left in C{session}'s rate-limit bucket.
        """
        if self.limiter is None:
            return float("inf")
        return self.limiter.spare(session.name)

    def admit_send(self, conn, env):
        """
        Decide on one SEND of C{conn} (an L{relay.interfaces.IAgentConnection})
        under the rate limit.

        @return: C{(SEND_NOW, 0)}; C{(REJECTED, 0)} (policy reject: the
            sender has its NACK BUSY); or C{(THROTTLED, wait)}: the caller
            holds the SEND at the head of its queue for C{wait} seconds
            (the first of a throttle episode has told the sender BUSY).
        """
        session = conn.session
        wait = self.admit(session)
        if not wait:
            if conn in self.throttled and self.spare(session) >= 1.0:
                # Back under budget: the throttle episode is over.
                self.throttled.discard(conn)
            return SEND_NOW, 0
        retry_ms = max(1, int(wait * 1000 + 0.999))
        if self.rate_policy == "reject":
            self.refuse_busy(conn, env, retry_ms, "rate limit exceeded")
            return REJECTED, 0
        if conn not in self.throttled:
            # One BUSY per throttle episode (the SEND about to be held counts).
            self.throttled.add(conn)
            self.counters["busy"] += 1
            conn.send_frame(envelope("BUSY", {"retry_after_ms": retry_ms,
                                              "queue_depth": len(conn.held) + 1}))
        return THROTTLED, wait

    def refuse_invalid(self, conn, send_id, reason):
        """
        C{conn} sent a SEND that breaks the wire contract: NACK INVALID.
        """
        self.counters["nacked"] += 1
        self.nacks["INVALID"] += 1
        conn.send_frame(envelope("NACK", {"ack_id": send_id, "code": "INVALID",
                                          "message": reason}))

    def refuse_busy(self, conn, env, retry_ms, message):
        """
        C{env} is not accepted now: NACK BUSY, retry after C{retry_ms}.
        """
        self.counters["nacked"] += 1
        self.nacks["BUSY"] += 1
        conn.send_frame(envelope("NACK", {
            "ack_id": echo(env.get("id")), "code": "BUSY", "retry_after_ms": retry_ms,
            "message": message}))

    def retry_ms(self, conn):
        """
        When a SEND of C{conn} refused now would likely be taken.
        """
        ms = 50
        reasons = conn.pause_reasons
        if "rate" in reasons and self.limiter is not None:
            ms = max(ms, int((len(conn.held) + 1) * 1000.0 / self.limiter.rate + 0.999))
        if "store" in reasons:
            ms = max(ms, 100)
        if any(isinstance(r, tuple) for r in reasons):
            ms = max(ms, int(self.ack_timeout * 100))
        return ms
