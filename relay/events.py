# -*- test-case-name: tests.test_events -*-
"""
What happens in the daemon, for whoever watches (the HTTP dashboard's
Server-Sent Events, the Prometheus histograms).

The router calls L{EventHub.post} with one line where an agent comes online
or goes offline and where a message is accepted, delivered (written),
acked or expired, its fields positional in the order of L{FIELDS} (three
events per message: no keyword dictionary is built for them).  With nobody
subscribed a post is one dictionary look-up: a daemon without C{--http}
pays nothing else.
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

# Each kind's fields, in the order L{EventHub.post} takes them and a
# positional subscriber gets them.
FIELDS = {
    ONLINE: ("agent", "session_id", "at"),
    OFFLINE: ("agent", "session_id", "at"),
    ACCEPTED: ("id", "seq", "sender", "to", "topic", "payload", "recipients", "ts"),
    DELIVERED: ("id", "seq", "to", "attempts", "at"),
    ACKED: ("id", "to", "sent_at", "at"),
    EXPIRED: ("id", "seq", "to", "at"),
}


class EventHub:
    """
    Fan-out of daemon events to subscribers, called synchronously in
    emit order: C{fn(kind, fields)} with a dictionary of the fields, or,
    subscribed with C{positional=True}, C{fn(kind, values)} with the tuple
    of their values in L{FIELDS} order (what the hot subscribers take: no
    dictionary per event).  A subscriber that raises is logged and stays
    subscribed; it never breaks the router.  An event of a kind nobody
    subscribed to costs one dictionary look-up.
    """

    log = Logger()

    def __init__(self):
        # kind -> tuple of (fn, positional) (a subscriber to every kind is in each).
        self._by_kind = {}
        self._subscribers = ()

    @property
    def listening(self):
        return bool(self._subscribers)

    def subscribe(self, fn, kinds=KINDS, positional=False):
        """
        Call C{fn(kind, fields)} (or C{fn(kind, values)} when
        C{positional}) for events of C{kinds} (default: all); returns a
        callable that removes it again.
        """
        entry = (fn, tuple(kinds), bool(positional))
        self._subscribers = self._subscribers + (entry,)
        self._index()

        def unsubscribe():
            self._subscribers = tuple(s for s in self._subscribers if s is not entry)
            self._index()
        return unsubscribe

    def _index(self):
        by_kind = {}
        for fn, kinds, positional in self._subscribers:
            for kind in kinds:
                by_kind[kind] = by_kind.get(kind, ()) + ((fn, positional),)
        self._by_kind = by_kind

    def post(self, kind, *values):
        """
        The event C{kind} with its fields' C{values} in L{FIELDS} order.
        """
        subscribers = self._by_kind.get(kind)
        if subscribers is None:
            return
        fields = None
        for fn, positional in subscribers:
            try:
                if positional:
                    fn(kind, values)
                else:
                    if fields is None:
                        fields = dict(zip(FIELDS[kind], values))
                    fn(kind, fields)
            except Exception:
                self.log.failure("event subscriber {fn!r} failed on {kind}", fn=fn, kind=kind)

    def emit(self, kind, **fields):
        """
        The event C{kind} with named C{fields} (a field not given is None
        for positional subscribers).
        """
        subscribers = self._by_kind.get(kind)
        if subscribers is None:
            return
        values = None
        for fn, positional in subscribers:
            try:
                if positional:
                    if values is None:
                        values = tuple(fields.get(f) for f in FIELDS[kind])
                    fn(kind, values)
                else:
                    fn(kind, fields)
            except Exception:
                self.log.failure("event subscriber {fn!r} failed on {kind}", fn=fn, kind=kind)
