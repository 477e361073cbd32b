# -*- test-case-name: tests.test_redelivery -*-
"""
The router's timers: resending deliveries not ACKed in time, expiring
those whose TTL ran out (in memory and, incrementally, in the store), and
pruning the dedupe window.  Each runs in a L{relay.loops.GuardedLoop}: an
iteration that raises is logged and the loop goes on.
"""

from relay.events import EventHub
from relay.loops import GuardedLoop
from relay.store import STATUS_DELIVERED, STATUS_EXPIRED


class Redelivery:
    """
    @param sessions: the router's registry, name -> L{relay.router.Session}
        (read, never changed).
    @param dedupe: the router's L{relay.dedupe.DedupeWindow}, pruned here.
    @param events: the L{relay.events.EventHub} told of expiries.
    """

    def __init__(self, clock, store, sessions, dedupe, counters, ack_timeout, events=None):
        self.clock = clock
        self.store = store
        self.sessions = sessions
        self.dedupe = dedupe
        self.counters = counters
        self.ack_timeout = ack_timeout
        self.events = events if events is not None else EventHub()
        self.sweeper = GuardedLoop(clock, self.sweep, "redelivery")
        self.expirer = GuardedLoop(clock, self.expire_stored, "expiry")

    def start(self):
        self.sweeper.start(max(0.05, min(self.ack_timeout / 4.0, 1.0)), now=False)
        self.expirer.start(60.0, now=True)

    def stop(self):
        self.sweeper.stop()
        self.expirer.stop()

    def sweep(self):
        """
        Resend deliveries not ACKed within the ack timeout, expire those
        whose TTL ran out.

        A delivery is resent only to a connection that has shown signs of
        life since it was written and whose queue is not stalled: a peer
        that is not reading its socket gains nothing from a second copy
        queued behind the first, and would see it as a duplicate.
        """
        now = self.clock.seconds()
        now_ms = int(now * 1000)
        deadline = now - self.ack_timeout
        self.dedupe.prune()
        for session in list(self.sessions.values()):
            inflight = session.inflight
            if not inflight:
                continue
            outbox = session.conn.outbox
            if outbox.paused:
                continue
            last_rx = session.conn.last_rx
            due = []
            for delivery in inflight.values():
                if delivery.sent_at > deadline:
                    break
                due.append(delivery)
            for delivery in due:
                if delivery.expires_at <= now_ms:
                    del inflight[delivery.id]
                    self.counters["expired"] += 1
                    self.events.post("expired", delivery.id, delivery.seq,
                                     delivery.recipient, now)
                    self.store.set_status(delivery.handle, delivery.recipient, delivery.seq,
                                          STATUS_EXPIRED, delivery.attempts, now_ms)
                    outbox.acked()
                    continue
                if last_rx <= delivery.sent_at:
                    continue
                delivery.attempts += 1
                delivery.sent_at = now
                inflight.move_to_end(delivery.id)
                self.counters["redelivered"] += 1
                delivery.handle = self.store.set_status(
                    delivery.handle, delivery.recipient, delivery.seq, STATUS_DELIVERED,
                    delivery.attempts, now_ms)
                outbox.push_control(delivery.data)

    def expire_stored(self):
        self.store.expire_due(int(self.clock.seconds() * 1000))
