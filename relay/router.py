# -*- test-case-name: tests.test_router -*-
"""
Routing: who is connected, who gets a message, in which order, and what
happens when a recipient is slow or gone.

The protocol (L{relay.protocol}) only parses frames and calls the router;
every decision lives here.  A connection is seen through a small surface:
C{outbox} (L{relay.outbox.Outbox}), C{send_frame(envelope)},
C{pause_reading(reason)}, C{resume_reading(reason)}, C{close(error)}.
Pausing a connection holds its SENDs only (bounded, in order): its socket
is still read, so its ACKs keep draining its own queue (see
L{relay.protocol.RelayProtocol}).
"""

import secrets
import uuid
from collections import OrderedDict

import orjson
from twisted.internet import task
from twisted.logger import Logger

from relay.dedupe import DedupeWindow, derived_id, fingerprint
from relay.events import EventHub
from relay.frames import KNOWN_FIELDS, envelope, frame

STATUS_PENDING = "pending"
STATUS_DELIVERED = "delivered"
STATUS_ACKED = "acked"
STATUS_EXPIRED = "expired"

CATCH_UP_PAGE = 500

# What an agent said about itself in its HELLO, shown by STATUS.
HELLO_INFO = ("entityType", "cli", "program", "model", "task", "workingDirectory",
              "displayName")


__all__ = ["Router", "fingerprint"]


class Delivery:
    """
    A delivery the daemon holds in memory: queued in an outbox or written
    and waiting for its ACK.
    """

    __slots__ = ("seq", "id", "recipient", "data", "handle", "attempts", "sent_at", "expires_at")

    def __init__(self, seq, id, recipient, data, handle, attempts, expires_at):
        self.seq = seq
        self.id = id
        self.recipient = recipient
        self.data = data
        self.handle = handle
        self.attempts = attempts
        self.sent_at = 0.0
        self.expires_at = expires_at


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


class Router:
    """
    @param clock: IReactorTime (seconds, callLater).
    @param store: L{relay.store.Store}.
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
        self.started = clock.seconds()
        self.store_paused = False
        self.sync_stats = None
        self.auth_stats = None
        self.counters = {"accepted": 0, "delivered": 0, "acked": 0, "redelivered": 0,
                         "expired": 0, "nacked": 0, "busy": 0, "retransmits": 0}
        # NACKs by code and ERROR frames by code (bad frames), for /metrics.
        self.nacks = {"INVALID": 0, "BUSY": 0}
        self.errors = {}
        store.batcher.add_overload_listener(self._store_overload)
        self._sweeper = task.LoopingCall(self._sweep)
        self._sweeper.clock = clock
        self._expirer = task.LoopingCall(self._expire_stored)
        self._expirer.clock = clock

    def start(self):
        for sender, send_id, mid, fp, ts_ms in self.store.recent_sends:
            self.dedupe.remember(sender, send_id, mid, fp, ts_ms / 1000.0)
        self.store.recent_sends = ()
        self._sweeper.start(max(0.05, min(self.ack_timeout / 4.0, 1.0)), now=False)
        self._expirer.start(60.0, now=True)

    def stop(self):
        for loop in (self._sweeper, self._expirer):
            if loop.running:
                loop.stop()

    def now_ms(self):
        return int(self.clock.seconds() * 1000)

    # -- connections ---------------------------------------------------------

    def connection_made(self, conn):
        self.connections.add(conn)
        if self.store_paused:
            conn.pause_reading("store")

    def connection_lost(self, conn):
        self.connections.discard(conn)
        session = conn.session
        if session is None:
            return
        session.closed = True
        self.events.emit("offline", agent=session.name, session_id=session.session_id, at=self.clock.seconds())
        self._release(session)
        for topic in session.topics:
            members = self.topics.get(topic)
            if members is not None:
                members.discard(session)
                if not members:
                    del self.topics[topic]
        if self.sessions.get(session.name) is session:
            del self.sessions[session.name]
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
        if old is not None and not old.closed:
            self.log.info("agent {name}: a newer connection replaces the old one", name=name)
            old.conn.close(envelope("ERROR", {
                "code": "BAD_REQUEST", "fatal": True,
                "message": "replaced by a newer connection for agent %s" % (name,)}))
            self.connection_lost(old.conn)
        self.sessions[name] = session
        self.events.emit("online", agent=name, session_id=session.session_id, at=session.connected_at)
        return session

    def welcome(self, session):
        """
        After WELCOME is queued: deliver what waits in the store.
        """
        self._catch_up(session)

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

    # -- rate limiting -------------------------------------------------------

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
            self.events.emit("accepted", id=mid, seq=seq, sender=sender, to=to, topic=topic,
                             payload=payload, recipients=names, ts=now_ms)

            base = {"v": 1, "type": "DELIVER", "id": mid, "ts": now_ms, "from": sender}
            if extra:
                base = dict(extra, **base)
            if topic is not None:
                base["topic"] = topic
            base["payload"] = payload
            if meta is not None:
                base["payload_meta"] = meta
            stream = topic if topic is not None else "default"
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
                    info = {"seq": sseq, "session_id": target.session_id}
                    if to == "*":
                        info["originalTo"] = "*"
                    d = dict(base)
                    d["to"] = name
                    d["delivery"] = info
                    delivery.data = frame(d)
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
        store.end_send()
        if fp is not None:
            self.dedupe.remember(sender, send_id, mid, fp)
        if receipted:
            store.batcher.soon()
        if store.batcher.pending_bytes() > store.batcher.overload_bytes:
            store.batcher.check_overload()
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
            self.store.batcher.soon()
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
        self.events.emit("delivered", id=delivery.id, seq=delivery.seq, to=delivery.recipient, attempts=delivery.attempts, at=delivery.sent_at)
        delivery.handle = self.store.set_status(
            delivery.handle, delivery.recipient, delivery.seq, STATUS_DELIVERED,
            delivery.attempts, self.now_ms())

    def ack(self, session, ack_id):
        delivery = session.inflight.pop(ack_id, None)
        if delivery is not None:
            self.counters["acked"] += 1
            self.events.emit("acked", id=ack_id, to=session.name, sent_at=delivery.sent_at, at=self.clock.seconds())
            self.store.set_status(delivery.handle, delivery.recipient, delivery.seq,
                                  STATUS_ACKED, delivery.attempts, self.now_ms())
            session.conn.outbox.acked()
            return True
        # An ACK for a delivery of an earlier connection (or an earlier run
        # of the daemon): the store finds the message by its id.
        if isinstance(ack_id, str) and 0 < len(ack_id) <= 255:
            self.store.ack_by_id(session.name, ack_id, self.now_ms())
            self.events.emit("acked", id=ack_id, to=session.name, sent_at=None, at=self.clock.seconds())
            return True
        return False

    # -- flow control --------------------------------------------------------

    def backpressure(self, session, on):
        """
        The outbox of C{session} crossed a water mark.
        """
        if not on:
            self._release(session)
            if not session.live and not session.closed:
                self._catch_up(session)

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

    # -- catching up from the store ------------------------------------------

    def _catch_up(self, session):
        """
        Send what waits in the store for C{session} (after a HELLO, or once
        an overflowing queue has drained), then switch it to live delivery.
        """
        if session.catching_up or session.closed:
            return
        session.catching_up = True
        upto = self.store._seq
        d = self.store.batcher.flush()
        d.addCallback(lambda _: self.store.read_open_deliveries(
            session.name, session.cursor, CATCH_UP_PAGE))
        d.addCallback(self._caught_up, session, upto)
        d.addErrback(self._catch_up_failed, session)

    def _catch_up_failed(self, failure, session):
        session.catching_up = False
        self.log.failure("reading the store for {name} failed; retrying", failure,
                         name=session.name)
        self.clock.callLater(1.0, self._catch_up, session)

    def _caught_up(self, rows, session, upto):
        session.catching_up = False
        if session.closed:
            return
        now_ms = self.now_ms()
        outbox = session.conn.outbox
        for (mseq, sseq, attempts, mid, ts, sender, to, topic, payload, meta, extra,
             expires) in rows:
            session.cursor = mseq
            if expires <= now_ms:
                self.counters["expired"] += 1
                self.events.emit("expired", id=mid, seq=mseq, to=session.name, at=now_ms / 1000.0)
                self.store.set_status(None, session.name, mseq, STATUS_EXPIRED, attempts, now_ms)
                continue
            if mid in session.inflight:
                continue
            d = orjson.loads(extra) if extra else {}
            d.update({"v": 1, "type": "DELIVER", "id": mid, "ts": ts, "from": sender,
                      "to": session.name})
            if topic is not None:
                d["topic"] = topic
            d["payload"] = orjson.loads(payload)
            if meta is not None:
                d["payload_meta"] = orjson.loads(meta)
            info = {"seq": sseq, "session_id": session.session_id}
            if to == "*":
                info["originalTo"] = "*"
            d["delivery"] = info
            delivery = Delivery(mseq, mid, session.name, frame(d), None, attempts, expires)
            if attempts:
                self.counters["redelivered"] += 1
            outbox.push(delivery.data, delivery)
        if len(rows) < CATCH_UP_PAGE:
            session.cursor = max(session.cursor, upto)
        more = len(rows) >= CATCH_UP_PAGE or session.last_seq > session.cursor
        if not more:
            session.live = True
        elif not outbox.backpressured:
            self._catch_up(session)
        # else: the backpressure release calls _catch_up again.

    # -- timers --------------------------------------------------------------

    def _sweep(self):
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
                    self.events.emit("expired", id=delivery.id, seq=delivery.seq, to=delivery.recipient, at=now)
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

    def _expire_stored(self):
        self.store.expire_due(self.now_ms())

    # -- status --------------------------------------------------------------

    def status(self):
        batcher = self.store.batcher
        m = dict(batcher.metrics)
        m["pending_rows"] = batcher.pending_rows()
        m["pending_bytes"] = batcher.pending_bytes()
        m["streams_in_memory"] = self.store.stream_state_size()
        m["dedupe_entries"] = len(self.dedupe)
        m["dedupe_senders"] = self.dedupe.senders()
        agents = []
        for s in self.sessions.values():
            outbox = s.conn.outbox
            agents.append({
                "name": s.name, "session_id": s.session_id,
                "connected_at": s.connected_at, "queue_depth": outbox.depth(),
                "inflight": len(s.inflight), "backpressured": outbox.backpressured,
                "paused": sorted(str(r) for r in s.conn.pause_reasons),
                "live": s.live, "topics": sorted(s.topics),
                "info": {k: s.hello[k] for k in HELLO_INFO
                         if isinstance(s.hello.get(k), (str, int, float))},
                "sent": s.sent, "delivered": s.delivered,
                "peer": getattr(s.conn, "peer", None),
            })
        limiter = self.limiter
        return {
            "agents": agents,
            "connections": len(self.connections),
            "store": m,
            "messages": dict(self.counters),
            "rate_limit": {
                "enabled": limiter is not None,
                "rate": limiter.rate if limiter else None,
                "burst": limiter.burst if limiter else None,
                "policy": self.rate_policy,
                "buckets": len(limiter.buckets) if limiter else 0,
                "throttled_agents": sorted(
                    c.session.name for c in self.connections
                    if c.session is not None and "rate" in c.pause_reasons),
            },
            "sync": self.sync_stats() if self.sync_stats else None,
            "auth": self.auth_stats() if self.auth_stats else None,
            "uptime_s": self.clock.seconds() - self.started,
        }
