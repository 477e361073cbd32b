# -*- test-case-name: tests.test_federation -*-
"""
A page of messages fetched from the ingest, stored in this daemon's store
under their own ids and delivered like local ones (a seq per stream, the
outbox, redelivery, TTL, ACK).

What is already stored is not stored again: a page fetched twice (the
daemon stopped between its commit and the confirm) changes nothing the
second time; a delivery this daemon handed over and that comes back (its
agent's home is here again) is reopened.
"""

import orjson
from twisted.logger import Logger

from relay.delivery import Delivery, deliver_base, deliver_to
from relay.frames import frame
from relay.storesql import (STATUS_EXPIRED, STATUS_HANDED, STATUS_PENDING, STATUS_REMOTE)

_log = Logger()


class BadItem(ValueError):
    """
    An inbound item that cannot be stored (not what a daemon hands over).
    """


def _check(message):
    if not isinstance(message, dict):
        raise BadItem("message is not an object")
    for field in ("id", "from", "to"):
        if not isinstance(message.get(field), str) or not message[field]:
            raise BadItem("message.%s is not a non-empty string" % (field,))
    for field in ("ts", "expires_at"):
        v = message.get(field)
        if not isinstance(v, int) or isinstance(v, bool):
            raise BadItem("message.%s is not an integer" % (field,))
    if not isinstance(message.get("payload"), dict):
        raise BadItem("message.payload is not an object")
    for field in ("topic", "thread", "send_id"):
        if message.get(field) is not None and not isinstance(message[field], str):
            raise BadItem("message.%s is not a string" % (field,))
    for field in ("payload_meta", "extra"):
        if message.get(field) is not None and not isinstance(message[field], dict):
            raise BadItem("message.%s is not an object" % (field,))


class Inbound:
    """
    @param router: the L{relay.router.Router} (its sessions, topics, store,
        counters and events).
    @param storage: the L{relay.federation.storage.FederationStorage}.
    """

    def __init__(self, router, storage):
        self.router = router
        self.storage = storage
        self.stored = 0
        self.refused = 0

    async def store_page(self, items):
        """
        Store and deliver C{items} (poll answer items); fires once they are
        committed.
        """
        ids = []
        for item in items:
            message = item.get("message") if isinstance(item, dict) else None
            if isinstance(message, dict) and isinstance(message.get("id"), str):
                ids.append(message["id"])
        known = await self.storage.lookup(set(ids)) if ids else {}
        for item in items:
            try:
                self._one(item, known)
            except BadItem as e:
                # Not what a daemon hands over: nothing can deliver it.
                self.refused += 1
                _log.error("federation: refused inbound item {seq}: {why}",
                           seq=item.get("seq") if isinstance(item, dict) else None, why=str(e))
        await self.storage.flush()

    def _one(self, item, known):
        if not isinstance(item, dict):
            raise BadItem("item is not an object")
        recipient = item.get("recipient")
        message = item.get("message")
        if not isinstance(recipient, str) or not recipient:
            raise BadItem("recipient is not a non-empty string")
        _check(message)
        router = self.router
        store = router.store
        mid = message["id"]
        now_ms = router.now_ms()
        sender = message["from"]
        to = message["to"]
        topic = message.get("topic")
        payload = message["payload"]
        meta = message.get("payload_meta")
        extra = message.get("extra")
        expires = message["expires_at"]
        stream = topic if topic is not None else "default"
        if recipient == "*":
            if topic is None:
                raise BadItem("a broadcast item without a topic")
            targets = [s for s in router.topics.get(topic, ()) if s.name != sender]
        else:
            targets = [router.sessions.get(recipient)]
        names = [s.name for s in targets] if recipient == "*" else [recipient]

        entry = known.get(mid)
        if entry is not None:
            seq, statuses = entry
            if recipient == "*":
                return
            status = statuses.get(recipient)
            if status not in (None, STATUS_REMOTE, STATUS_HANDED):
                return
            key = (recipient, stream, sender)
            sseq = store.next_stream_seq(key)
            if status is None:
                handle = store.add_delivery(recipient, seq, key, sseq, STATUS_PENDING, now_ms)
            else:
                self.storage.reopen(recipient, seq, key, sseq)
                handle = None
            statuses[recipient] = STATUS_PENDING
            self._deliver(targets[0], seq, mid, recipient, sseq, handle, expires,
                          deliver_base(mid, message["ts"], sender, topic, payload, meta, extra),
                          to == "*", old=True)
            self.stored += 1
            return

        seq = store.next_seq()
        store.begin_send()
        try:
            store.add_message([
                seq, mid, message.get("send_id"), message["ts"], sender, to, topic,
                message.get("thread") if message.get("thread") is not None
                else payload.get("thread") if isinstance(payload.get("thread"), str) else None,
                message.get("kind") if isinstance(message.get("kind"), str)
                else payload.get("kind", "message"),
                orjson.dumps(payload).decode(),
                orjson.dumps(meta).decode() if meta is not None else None,
                orjson.dumps(extra).decode() if extra else None,
                expires], 256)
            router.counters["accepted"] += 1
            router.events.post("accepted", mid, seq, sender, to, topic, payload, names, now_ms)
            base = deliver_base(mid, message["ts"], sender, topic, payload, meta, extra)
            statuses = {}
            for name, target in zip(names, targets):
                key = (name, stream, sender)
                sseq = store.next_stream_seq(key)
                status = STATUS_EXPIRED if expires <= now_ms else STATUS_PENDING
                handle = store.add_delivery(name, seq, key, sseq, status, now_ms)
                statuses[name] = status
                if status == STATUS_PENDING:
                    self._deliver(target, seq, mid, name, sseq, handle, expires, base, to == "*")
        except BaseException:
            store.abort_send()
            raise
        store.end_send()
        known[mid] = (seq, statuses)
        self.stored += 1

    def _deliver(self, target, seq, mid, name, sseq, handle, expires, base, broadcast,
                 old=False):
        if target is None or target.closed:
            return
        outbox = target.conn.outbox
        if target.live and not outbox.full():
            delivery = Delivery(seq, mid, name, None, handle, 0, expires)
            delivery.data = frame(deliver_to(base, name, sseq, target.session_id, broadcast))
            if not old:
                target.last_seq = seq
                target.cursor = seq
            outbox.push(delivery.data, delivery)
        else:
            if target.live:
                target.live = False
            if old:
                # Below what its catch-up has read: read it again from there.
                target.cursor = min(target.cursor, seq - 1)
            else:
                target.last_seq = seq
