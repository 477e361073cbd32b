# -*- test-case-name: tests.test_store -*-
"""
The interfaces between the daemon's parts.
"""

from zope.interface import Interface


class ISyncSource(Interface):
    """
    What the cloud-sync side needs from the message store.

    Every method that touches the database returns a Deferred; everything
    runs and calls back in the reactor thread.
    """

    def add_commit_listener(listener):
        """
        Call C{listener(max_seq)} in the reactor thread after every committed
        batch that stored new messages; C{max_seq} is the highest
        C{messages.seq} now on disk.
        """

    def last_seq():
        """
        The highest message seq committed so far (an int, 0 when empty).
        """

    def read_messages_after(seq, limit):
        """
        Read up to C{limit} committed messages with C{messages.seq > seq}, in
        seq order.

        @return: Deferred firing with a list of dicts with the keys
            C{seq, id, ts, from, to, topic, thread, kind, body, data,
            payload_meta, expires_at} (C{data} and
            C{payload_meta} decoded to dicts or None; C{ts} and
            C{expires_at} ints in ms since epoch).
        """

    def get_meta(key):
        """
        @return: Deferred firing with the text stored under C{key} in the
            store's meta table, or None.
        """

    def set_meta(key, value):
        """
        Durably store C{value} (text) under C{key}; the Deferred fires once
        it is committed.
        """

    def add_dead_letter(seq, message_id, reason):
        """
        Durably record that message C{seq}/C{message_id} was refused by the
        sync target for C{reason}; fires once committed.
        """

    def dead_letter_count():
        """
        @return: Deferred firing with the number of dead-lettered messages.
        """
