# -*- test-case-name: tests.test_replay -*-
"""
Replay from the store: what waits for an agent (after its HELLO, or once
its overflowing queue has drained) is read page by page and queued in its
outbox, then the agent switches to live delivery.
"""

from twisted.logger import Logger

from relay.delivery import Delivery, deliver_stored, deliver_to
from relay.events import EventHub
from relay.frames import frame
from relay.store import STATUS_EXPIRED

CATCH_UP_PAGE = 500


class Replay:
    """
    @param clock: IReactorTime.
    @param store: an L{relay.interfaces.IMessageStore}.
    @param counters: the router's message counters (C{expired},
        C{redelivered} are bumped here).
    @param events: the L{relay.events.EventHub} told of expiries.
    """

    log = Logger()

    def __init__(self, clock, store, counters, events=None, page=CATCH_UP_PAGE):
        self.clock = clock
        self.store = store
        self.counters = counters
        self.events = events if events is not None else EventHub()
        self.page = page

    def catch_up(self, session):
        """
        Send what waits in the store for C{session}, then make it live.
        """
        if session.catching_up or session.closed:
            return
        session.catching_up = True
        store = self.store
        upto = store.last_given_seq()
        d = store.flush()
        d.addCallback(lambda _: store.read_open_deliveries(session.name, session.cursor,
                                                           self.page))
        d.addCallback(self._caught_up, session, upto)
        d.addErrback(self._failed, session)

    def _failed(self, failure, session):
        session.catching_up = False
        self.log.failure("reading the store for {name} failed; retrying", failure,
                         name=session.name)
        self.clock.callLater(1.0, self.catch_up, session)

    def _caught_up(self, rows, session, upto):
        session.catching_up = False
        if session.closed:
            return
        now_ms = int(self.clock.seconds() * 1000)
        outbox = session.conn.outbox
        for (mseq, sseq, attempts, mid, ts, sender, to, topic, payload, meta, extra,
             expires) in rows:
            session.cursor = mseq
            if expires <= now_ms:
                self.counters["expired"] += 1
                self.events.post("expired", mid, mseq, session.name, now_ms / 1000.0)
                self.store.set_status(None, session.name, mseq, STATUS_EXPIRED, attempts, now_ms)
                continue
            if mid in session.inflight:
                continue
            base = deliver_stored(mid, ts, sender, topic, payload, meta, extra)
            d = deliver_to(base, session.name, sseq, session.session_id, to == "*")
            delivery = Delivery(mseq, mid, session.name, frame(d), None, attempts, expires)
            if attempts:
                self.counters["redelivered"] += 1
            outbox.push(delivery.data, delivery)
        if len(rows) < self.page:
            session.cursor = max(session.cursor, upto)
        more = len(rows) >= self.page or session.last_seq > session.cursor
        if not more:
            session.live = True
        elif not outbox.backpressured:
            self.catch_up(session)
        # else: the backpressure release calls catch_up again.
