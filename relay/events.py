# -*- test-case-name: tests.test_events -*-
"""
What happens in the daemon, for whoever watches (the HTTP dashboard's
Server-Sent Events, the Prometheus histograms).

The router calls L{EventHub.emit} with one line where an agent comes online
or goes offline and where a message is accepted, delivered (written),
acked or expired.  With nobody subscribed an emit is one attribute test:
a daemon without C{--http} pays nothing else.
"""

from twisted.logger import Logger

# Event kinds the router emits, with their fields.
ONLINE = "online"          # agent, session_id, at (seconds)
OFFLINE = "offline"        # agent, session_id, at
ACCEPTED = "accepted"      # id, seq, sender, to, topic, payload, recipients, ts (ms)
DELIVERED = "delivered"    # id, seq, to, attempts, at (seconds)
ACKED = "acked"            # id, to, sent_at (seconds, None when not known), at
EXPIRED = "expired"        # id, seq, to, at
KINDS = (ONLINE, OFFLINE, ACCEPTED, DELIVERED, ACKED, EXPIRED)


class EventHub:
    """
    Fan-out of daemon events to subscribers, C{fn(kind, fields)}, called
    synchronously in emit order.  A subscriber that raises is logged and
    stays subscribed; it never breaks the router.  An event of a kind
    nobody subscribed to costs one dictionary look-up.
    """

    log = Logger()

    def __init__(self):
        # kind -> tuple of subscribers (a subscriber to every kind is in each).
        self._by_kind = {}
        self._subscribers = ()

    @property
    def listening(self):
        return bool(self._subscribers)

    def subscribe(self, fn, kinds=KINDS):
        """
        Call C{fn(kind, fields)} for events of C{kinds} (default: all);
        returns a callable that removes it again.
        """
        entry = (fn, tuple(kinds))
        self._subscribers = self._subscribers + (entry,)
        self._index()

        def unsubscribe():
            self._subscribers = tuple(s for s in self._subscribers if s is not entry)
            self._index()
        return unsubscribe

    def _index(self):
        by_kind = {}
        for fn, kinds in self._subscribers:
            for kind in kinds:
                by_kind[kind] = by_kind.get(kind, ()) + (fn,)
        self._by_kind = by_kind

    def emit(self, kind, **fields):
        subscribers = self._by_kind.get(kind)
        if not subscribers:
            return
        for fn in subscribers:
            try:
                fn(kind, fields)
            except Exception:
                self.log.failure("event subscriber {fn!r} failed on {kind}", fn=fn, kind=kind)
