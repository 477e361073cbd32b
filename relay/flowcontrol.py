# -*- test-case-name: tests.test_flow -*-
"""
Flow control on the router's side: a sender is paused (its SENDs held,
never its socket) while a recipient's queue is over its high water mark or
the store's writer is behind, and resumed when they drain.
"""

from relay.frames import envelope


class FlowControl:
    """
    Mixed into L{relay.router.Router}: uses its C{replay}, C{counters},
    C{ack_timeout}, C{connections} and C{store_paused}.
    """

    def backpressure(self, session, on):
        """
        The outbox of C{session} crossed a water mark.
        """
        if not on:
            self._release(session)
            if not session.live and not session.closed:
                self.replay.catch_up(session)

    def _block(self, sender, target):
        conn = sender.conn
        if conn in target.blocked or sender is target:
            return
        target.blocked.add(conn)
        first = not conn.pause_reasons
        conn.pause_reading(("queue", target.name))
        if first:
            self.counters["busy"] += 1
            conn.send_frame(envelope("BUSY", {
                "retry_after_ms": max(50, int(self.ack_timeout * 100)),
                "queue_depth": target.conn.outbox.depth()}))

    def _release(self, session):
        blocked, session.blocked = session.blocked, set()
        for conn in blocked:
            conn.resume_reading(("queue", session.name))

    def _store_overload(self, over):
        self.store_paused = over
        for conn in list(self.connections):
            if over:
                conn.pause_reading("store")
            else:
                conn.resume_reading("store")
