# -*- test-case-name: tests.test_dedupe -*-
"""
The dedupe window: which SENDs each sender made recently, so that a client
re-sending what it got no receipt for (it reconnected after a crash or a
broken connection) is receipted again instead of stored and delivered twice.

The window is kept per sender, so that a chatty agent cannot push a quiet
one's SENDs out of it, and bounded three ways: entries per sender, age
(hours: agents reconnect slowly) and entries in all.  It keeps, per SEND,
the message id and a fingerprint of what the SEND said, never the payload.
At startup it is filled again from the store, within the same bounds.
"""

import hashlib
import zlib
from collections import OrderedDict


def fingerprint(to, topic, payload_bytes):
    """
    A checksum of what a SEND says (recipient, topic, payload), so that a
    client reusing an id for a different message is not taken for a
    retransmission.
    """
    head = ("%s\0%s\0" % (to, "" if topic is None else topic)).encode()
    return zlib.crc32(payload_bytes, zlib.crc32(head))


def derived_id(sender, send_id, to, topic, payload_bytes):
    """
    The message id of a SEND that carries an id: the same for the same
    sender, SEND id, recipient, topic and payload, in any run of any daemon,
    so that a retransmission after a crash is delivered under the id the
    recipient already saw.  (The store adds a suffix when the id is already
    taken by a committed message: the same SEND again once the dedupe window
    forgot it.)
    """
    # Length-prefixed fields, so that no two SENDs make the same input.
    head = ("%d:%s%d:%s%d:%s%s" % (
        len(sender), sender, len(send_id), send_id, len(to), to,
        "-" if topic is None else "%d:%s" % (len(topic), topic))).encode("utf-8", "surrogatepass")
    return "m" + hashlib.blake2b(head + payload_bytes, digest_size=12,
                                 person=b"relay-msg-id").hexdigest()


class DedupeWindow:
    """
    @param per_sender: entries kept for one sender (its newest SENDs).
    @param max_age: seconds an entry is kept.
    @param max_total: entries kept in all; above it the oldest entry of the
        sender that sent least recently goes first.
    @param clock: IReactorTime, for the age of entries.

    C{max_total} or C{per_sender} of 0 turns the window off.
    """

    def __init__(self, clock, per_sender=1000, max_age=6 * 3600.0, max_total=100000):
        self.clock = clock
        self.per_sender = per_sender
        self.max_age = max_age
        self.max_total = max_total
        # sender -> OrderedDict(send id -> (message id, fingerprint, time)),
        # senders in the order they last sent, entries oldest first.
        self._senders = OrderedDict()
        self.total = 0

    @property
    def enabled(self):
        return bool(self.per_sender and self.max_total and self.max_age > 0)

    def __len__(self):
        return self.total

    def senders(self):
        return len(self._senders)

    def lookup(self, sender, send_id, fp):
        """
        @return: the message id of a SEND by C{sender} with id C{send_id}
            and fingerprint C{fp} still in the window, or None.
        """
        entries = self._senders.get(sender)
        if entries is None:
            return None
        seen = entries.get(send_id)
        if seen is None or seen[1] != fp:
            return None
        if seen[2] < self.clock.seconds() - self.max_age:
            return None
        return seen[0]

    def remember(self, sender, send_id, mid, fp, when=None):
        """
        Record a SEND; C{when} (seconds) defaults to now.
        """
        if not self.enabled:
            return
        senders = self._senders
        entries = senders.get(sender)
        if entries is None:
            entries = senders[sender] = OrderedDict()
        else:
            senders.move_to_end(sender)
            if send_id in entries:
                del entries[send_id]
                self.total -= 1
        entries[send_id] = (mid, fp, self.clock.seconds() if when is None else when)
        self.total += 1
        if len(entries) > self.per_sender:
            entries.popitem(last=False)
            self.total -= 1
        while self.total > self.max_total:
            oldest_sender, oldest = next(iter(senders.items()))
            oldest.popitem(last=False)
            self.total -= 1
            if not oldest:
                del senders[oldest_sender]

    def prune(self, limit=1000):
        """
        Forget senders whose newest entry is older than the window, the
        least recently active first, looking at no more than C{limit} of
        them so that one call stays short; return how many entries went.
        (An active sender's older entries are bounded by C{per_sender} and
        are never matched once too old.)
        """
        cutoff = self.clock.seconds() - self.max_age
        dropped = 0
        senders = self._senders
        for _ in range(limit):
            if not senders:
                break
            sender, entries = next(iter(senders.items()))
            if next(reversed(entries.values()))[2] >= cutoff:
                # Senders are in the order of their last SEND: the ones
                # after this one sent later still.
                break
            dropped += len(entries)
            del senders[sender]
        self.total -= dropped
        return dropped
