# -*- test-case-name: tests.test_router -*-
"""
Routing: who is connected, who gets a message, in which order, and what
happens when a recipient is slow or gone.

The protocol (L{relay.protocol}) only parses frames and calls the router;
every decision lives here.  A connection is seen through
L{relay.interfaces.IAgentConnection} only.
Pausing a connection holds its SENDs only (bounded, in order): its socket
is still read, so its ACKs keep draining its own queue (see
L{relay.protocol.RelayProtocol}).
"""

import secrets
import uuid
from collections import OrderedDict

import orjson
from twisted.logger import Logger

from relay.dedupe import DedupeWindow, derived_id, fingerprint
from relay.events import EventHub
from relay.delivery import Delivery, deliver_base, deliver_to
from relay.frames import KNOWN_FIELDS, envelope, frame
from relay.flowcontrol import FlowControl
from relay.policy import SendPolicy
from relay.redelivery import Redelivery
from relay.replay import Replay
from relay.status import StatusReporter
from relay.store import STATUS_ACKED, STATUS_DELIVERED, STATUS_PENDING

__all__ = ["Router", "Session", "fingerprint"]


class Session:
    """
    One connected, registered agent.
    """

    def __init__(self, conn, name, window, now, hello):
        self.conn = conn
        self.name = name
        self.session_id = uuid.uuid4().hex
        self.resume_token = secrets.token_urlsafe(18)
        self.window = window
        self.hello = hello
        self.connected_at = now
        self.inflight = OrderedDict()
        self.topics = set()
        self.live = False
        self.catching_up = False
        self.cursor = 0
        self.closed = False
        self.blocked = set()
        self.sent = 0
        self.delivered = 0
        # The highest message seq stored for this agent while connected
        # (a catch-up that read up to below it reads on).
        self.last_seq = 0


class Router(SendPolicy, FlowControl):
    """
    The registry (who is connected, under which name, on which topics) and
    routing (who gets a SEND).  Replay from the store is L{Replay}'s, the
    timers are L{Redelivery}'s, the admission decisions L{SendPolicy}'s,
    pausing senders for a slow recipient or the store L{FlowControl}'s.

    @param clock: IReactorTime (seconds, callLater).
    @param store: an L{relay.interfaces.IMessageStore}.
    @param limiter: a L{relay.ratelimit.RateLimiter} or None.
    @param events: a L{relay.events.EventHub} told what happens (default:
        one nobody listens to).

    Framing limits, the heartbeat and the queue water marks belong to the
    connections (L{relay.protocol.RelayFactory}, L{relay.outbox.Outbox}).
    """

    log = Logger()

    def __init__(self, clock, store, ack_timeout=5.0, message_ttl=86400.0, limiter=None,
                 rate_policy="throttle", window=1000, dedupe_window=100000,
                 dedupe_per_sender=1000, dedupe_age=6 * 3600.0, events=None):
        self.clock = clock
        self.events = events if events is not None else EventHub()
        self.store = store
        self.ack_timeout = ack_timeout
        self.message_ttl_ms = int(message_ttl * 1000)
        self.limiter = limiter
        self.rate_policy = rate_policy
        self.default_window = window
        # Recent SENDs per sender, to recognise a client re-sending what it
        # got no receipt for.
        self.dedupe = DedupeWindow(clock, per_sender=dedupe_per_sender, max_age=dedupe_age,
                                   max_total=dedupe_window)
        self.sessions = {}
        self.connections = set()
        self.topics = {}
        self.store_paused = False
        self.counters = {"accepted": 0, "delivered": 0, "acked": 0, "redelivered": 0,
                         "expired": 0, "nacked": 0, "busy": 0, "retransmits": 0}
        # NACKs by code and ERROR frames by code (bad frames), for /metrics.
        self.nacks = {"INVALID": 0, "BUSY": 0}
        self.errors = {}
        self.throttled = set()
        # Federation (relay.federation.service): where names live on the
        # other daemons of the workspace, or None (this daemon alone).
        self.federation = None
        store.add_overload_listener(self._store_overload)
        self.replay = Replay(clock, store, self.counters, self.events)
        self.timers = Redelivery(clock, store, self.sessions, self.dedupe, self.counters,
                                 ack_timeout, self.events)

    def start(self):
        for sender, send_id, mid, fp, ts_ms in self.store.take_recent_sends():
            self.dedupe.remember(sender, send_id, mid, fp, ts_ms / 1000.0)
        self.timers.start()

    def stop(self):
        self.timers.stop()

    def now_ms(self):
        return int(self.clock.seconds() * 1000)

    # -- connections ---------------------------------------------------------

    def connection_made(self, conn):
        self.connections.add(conn)
        if self.store_paused:
            conn.pause_reading("store")

    def connection_lost(self, conn):
        self.connections.discard(conn)
        self.throttled.discard(conn)
        session = conn.session
        if session is None:
            return
        session.closed = True
        self.events.post("offline", session.name, session.session_id, self.clock.seconds())
        self._release(session)
        for topic in session.topics:
            members = self.topics.get(topic)
            if members is not None:
                members.discard(session)
                if not members:
                    del self.topics[topic]
        if self.sessions.get(session.name) is session:
            del self.sessions[session.name]
            if self.federation is not None:
                self.federation.offline(session)
        # Nothing to save: every delivery in the outbox or in flight is in
        # the store as pending/delivered and goes out again on reconnect.
        session.inflight.clear()

    def hello(self, conn, env):
        """
        Register C{conn} under the name in C{env}; returns the L{Session}.
        The name has been validated by the protocol.
        """
        payload = env["payload"]
        name = payload["agent"]
        caps = payload.get("capabilities")
        window = self.default_window
        if isinstance(caps, dict):
            mi = caps.get("max_inflight")
            if isinstance(mi, int) and not isinstance(mi, bool) and mi > 0:
                window = min(mi, self.default_window)
        session = Session(conn, name, window, self.clock.seconds(), payload)
        old = self.sessions.get(name)
        if old is not None:
            self.evict(old)
        self.sessions[name] = session
        self.events.post("online", name, session.session_id, session.connected_at)
        if self.federation is not None:
            self.federation.online(session)
        return session

    def evict(self, session, reason=None):
        """
        Close C{session} with the fatal ERROR of a newer connection of its
        name: here, or (with C{reason}) on another daemon (federation).
        """
        if session.closed:
            return
        why = " (%s)" % (reason,) if reason else ""
        self.log.info("agent {name}: a newer connection replaces the old one{why}",
                      name=session.name, why=why)
        session.conn.close(envelope("ERROR", {
            "code": "BAD_REQUEST", "fatal": True,
            "message": "replaced by a newer connection for agent %s%s" % (session.name, why)}))
        self.connection_lost(session.conn)

    def welcome(self, session):
        """
        After WELCOME is queued: deliver what waits in the store.
        """
        self.replay.catch_up(session)

    def subscribe(self, session, topic):
        session.topics.add(topic)
        self.topics.setdefault(topic, set()).add(session)

    def unsubscribe(self, session, topic):
        session.topics.discard(topic)
        members = self.topics.get(topic)
        if members is not None:
            members.discard(session)
            if not members:
                del self.topics[topic]

    # -- sending -------------------------------------------------------------

    def send(self, session, env, size):
        """
        Accept a validated SEND from C{session}: store it, deliver it.
        """
        store = self.store
        payload = env["payload"]
        meta = env.get("payload_meta")
        to = env["to"]
        topic = env.get("topic")
        sender = session.name
        now_ms = self.now_ms()
        ttl = meta.get("ttl_ms") if meta else None
        expires = now_ms + (ttl if ttl else self.message_ttl_ms)

        payload_bytes = orjson.dumps(payload)
        send_id = env.get("id")
        if isinstance(send_id, str) and send_id:
            fp = fingerprint(to, topic, payload_bytes)
            seen = self.dedupe.lookup(sender, send_id, fp)
            if seen is not None:
                return self._retransmitted(session, send_id, meta, seen)
        else:
            fp = None

        if to == "*":
            if topic is None:
                targets = [s for s in self.sessions.values() if s is not session]
            else:
                targets = [s for s in self.topics.get(topic, ()) if s is not session]
            names = [s.name for s in targets]
        else:
            target = self.sessions.get(to)
            names = [to]
            targets = [target]
        # Federation: a recipient at home on another daemon is handed over
        # (its delivery waits here as 'remote' until the ingest has it); a
        # topic broadcast also goes to the other daemons' subscribers.
        fed = self.federation
        remote = None
        if fed is not None:
            if to != "*":
                if target is None and fed.home_elsewhere(to):
                    remote = to
            elif topic is not None:
                remote = "*"

        seq = store.next_seq()
        if fp is not None:
            # Live DELIVERs go out before their batch commits.  If the daemon
            # dies first, the sender (no receipt) sends again, and the
            # recipient must see that copy under the id it already has: an
            # id derived from what the SEND is, not from this run's seq.
            # The same SEND again after the dedupe window forgot it has the
            # id of a stored message: the store leaves it out at write time
            # (it is that message), and the recipient, which has that id,
            # takes the live copy for what it is, a duplicate.
            mid = derived_id(sender, send_id, to, topic, payload_bytes)
        else:
            mid = store.message_id(seq)
        extra = None
        if len(env) > 9 or any(k not in KNOWN_FIELDS for k in env):
            extra = {k: v for k, v in env.items() if k not in KNOWN_FIELDS} or None
        payload_text = payload_bytes.decode()
        receipted = bool(meta and meta.get("requires_ack"))
        # The message row, its delivery rows and its stream seqs commit in
        # one transaction (a crash between two would leave a message that
        # reaches some or none of its recipients, and a retransmission
        # receipted from the dedupe window).
        store.begin_send()
        try:
            store.add_message([
                seq, mid, env.get("id"), now_ms, sender, to, topic, payload.get("thread"),
                payload.get("kind", "message"), payload_text,
                orjson.dumps(meta).decode() if meta is not None else None,
                orjson.dumps(extra).decode() if extra else None,
                expires], size, fp)
            self.counters["accepted"] += 1
            session.sent += 1
            self.events.post("accepted", mid, seq, sender, to, topic, payload, names, now_ms)

            base = deliver_base(mid, now_ms, sender, topic, payload, meta, extra)
            stream = topic if topic is not None else "default"
            if remote is not None:
                store.add_remote(remote, seq, now_ms)
                if to != "*":
                    names = targets = ()
            for name, target in zip(names, targets):
                key = (name, stream, sender)
                sseq = store.next_stream_seq(key)
                handle = store.add_delivery(name, seq, key, sseq, STATUS_PENDING, now_ms)
                if target is None:
                    continue
                target.last_seq = seq
                outbox = target.conn.outbox
                if target.live and not outbox.full():
                    delivery = Delivery(seq, mid, name, None, handle, 0, expires)
                    delivery.data = frame(deliver_to(base, name, sseq, target.session_id,
                                                     to == "*"))
                    target.cursor = seq
                    outbox.push(delivery.data, delivery)
                elif target.live:
                    # Its queue is at --queue-max: this delivery and the ones
                    # after it wait in the store until the queue drains.
                    target.live = False
                if outbox.backpressured and to != "*":
                    # A direct message to a recipient that is not keeping up:
                    # stop reading the sender until the recipient drains.  A
                    # broadcast does not stop for one slow member; that member's
                    # share waits in the store instead (see above).
                    self._block(session, target)
        except BaseException:
            # Nothing of a SEND that failed half way is stored, nor
            # remembered: the sender gets no receipt and sends it again.
            store.abort_send()
            raise
        # In the SEND's own batch: it runs once its rows are on disk.
        if receipted:
            store.after_commit(self._receipt, (session, env.get("id")))
        if remote is not None:
            store.after_commit(fed.handover_ready, None)
        store.end_send()
        if fp is not None:
            self.dedupe.remember(sender, send_id, mid, fp)
        if receipted:
            store.commit_soon()
        return mid

    def _retransmitted(self, session, send_id, meta, mid):
        """
        C{session} sent again a SEND it sent before (same id, recipient and
        payload), most likely because the connection broke before its
        receipt arrived: receipt it again once the original is on disk, but
        neither store nor deliver it twice.
        """
        self.counters["retransmits"] += 1
        if meta and meta.get("requires_ack"):
            self.store.after_commit(self._receipt, (session, send_id))
            self.store.commit_soon()
        return mid

    def _receipt(self, arg):
        session, send_id = arg
        if not session.closed:
            session.conn.send_frame(envelope("ACK", {"ack_id": send_id, "seq": 0}))

    def written(self, session, delivery):
        """
        The outbox handed C{delivery} to the transport.
        """
        delivery.attempts += 1
        delivery.sent_at = self.clock.seconds()
        session.inflight[delivery.id] = delivery
        session.delivered += 1
        self.counters["delivered"] += 1
        self.events.post("delivered", delivery.id, delivery.seq, delivery.recipient,
                         delivery.attempts, delivery.sent_at)
        delivery.handle = self.store.set_status(
            delivery.handle, delivery.recipient, delivery.seq, STATUS_DELIVERED,
            delivery.attempts, self.now_ms())

    def ack(self, session, ack_id):
        delivery = session.inflight.pop(ack_id, None)
        if delivery is not None:
            self.counters["acked"] += 1
            self.events.post("acked", ack_id, session.name, delivery.sent_at, self.clock.seconds())
            self.store.set_status(delivery.handle, delivery.recipient, delivery.seq,
                                  STATUS_ACKED, delivery.attempts, self.now_ms())
            session.conn.outbox.acked()
            return True
        # An ACK for a delivery of an earlier connection (or an earlier run
        # of the daemon): the store finds the message by its id.
        if isinstance(ack_id, str) and 0 < len(ack_id) <= 255:
            self.store.ack_by_id(session.name, ack_id, self.now_ms())
            self.events.post("acked", ack_id, session.name, None, self.clock.seconds())
            return True
        return False

    # -- status --------------------------------------------------------------

    def status(self):
        """
        The STATUS of routing alone (no sync, no auth: see
        L{relay.status.StatusReporter}).
        """
        return StatusReporter(self.clock, self, self.store, self.limiter,
                              self.rate_policy).report()
