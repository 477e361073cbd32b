# -*- test-case-name: tests.test_interfaces -*-
"""
The interfaces between the daemon's parts.
"""

from zope.interface import Attribute, Interface


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


class IMessageStore(Interface):
    """
    What the router needs from the message store: a handful of verbs.

    Writes are queued (group commit) and return at once; what must wait
    for the disk waits through L{after_commit} or L{flush}.  Delivery
    states are the store's C{STATUS_*} constants (L{relay.store}).
    """

    def next_seq():
        """
        Hand out the next message seq (an int, one above the last given).
        """

    def last_given_seq():
        """
        The highest message seq L{next_seq} has handed out.
        """

    def message_id(seq):
        """
        The daemon's message id for seq C{seq} of this run.
        """

    def take_recent_sends():
        """
        Once, after opening: the SENDs with ids accepted lately, oldest
        first, as (sender, send id, message id, fingerprint, ts ms), for the
        dedupe window.  Later calls return nothing.
        """

    def begin_send():
        """
        The rows queued until L{end_send} are one SEND: committed together
        or not at all.
        """

    def end_send():
        """
        Close the SEND opened by L{begin_send}.
        """

    def abort_send():
        """
        Take back every row queued since L{begin_send}.
        """

    def add_message(row, nbytes, fp=None):
        """
        Queue a message row: seq, id, send id, ts, sender, recipient, topic,
        thread, kind, payload text, payload_meta text, extra text, expires
        at; C{fp} the SEND's fingerprint (or None).
        """

    def next_stream_seq(key):
        """
        The seq the next DELIVER on stream C{key} (recipient, topic,
        sender) carries.
        """

    def add_delivery(recipient, message_seq, stream_key, stream_seq, status, now_ms):
        """
        Queue a delivery row; returns a handle for L{set_status}.
        """

    def add_remote(recipient, message_seq, now_ms):
        """
        Queue a delivery to an agent whose home is another daemon
        (federation): status C{remote} until the hand-over is confirmed.
        """

    def set_status(handle, recipient, message_seq, status, attempts, now_ms):
        """
        Record a delivery's new status; returns the handle to use next.
        """

    def ack_by_id(recipient, message_id, now_ms):
        """
        Mark C{recipient}'s delivery of message C{message_id} acked,
        whichever run gave the id.
        """

    def expire_due(now_ms):
        """
        Mark expired every open delivery whose message's TTL has run out.
        """

    def after_commit(fn, arg):
        """
        Call C{fn(arg)} once everything queued so far has committed.
        """

    def commit_soon():
        """
        Someone waits on L{after_commit}: commit without waiting for the
        batch timer.
        """

    def flush():
        """
        @return: Deferred firing once everything queued so far is committed.
        """

    def read_open_deliveries(recipient, after_seq, limit):
        """
        @return: Deferred firing with up to C{limit} committed, unacked,
            unexpired deliveries to C{recipient} with message seq above
            C{after_seq}, in message order, as tuples (message seq, stream
            seq, attempts, id, ts, sender, recipient, topic, payload text,
            payload_meta text or None, extra text or None, expires at).
        """

    def add_overload_listener(listener):
        """
        Call C{listener(True)} when the writer falls behind by more than
        its bound, C{listener(False)} once it has caught up.
        """

    def stats():
        """
        A dict of the writer's counters and memory use, for STATUS.
        """


class IAgentConnection(Interface):
    """
    One agent connection as the router and its policy see it (the
    transit relay's C{ITransitClient} is the model): L{relay.protocol.RelayProtocol}
    in the daemon, L{relay.testing.FakeConnection} in unit tests.
    """

    session = Attribute("The L{relay.router.Session} once HELLO succeeded, else None.")
    last_rx = Attribute("clock.seconds() when a frame last arrived (redelivery).")
    pause_reasons = Attribute(
        "The set of reasons its SENDs are held now: ('queue', name), 'rate', 'store'.")
    held = Attribute("Its held SENDs, a sequence of (envelope, size), oldest first.")
    outbox = Attribute("Its L{relay.outbox.Outbox}: deliveries queued and written.")
    peer = Attribute("What is known of the peer (SO_PEERCRED of a Unix peer), or None.")

    def send_frame(env):
        """
        Queue the envelope C{env} on the control queue (not a delivery).
        """

    def pause_reading(reason):
        """
        Hold this connection's SENDs for C{reason} (its socket is still read).
        """

    def resume_reading(reason):
        """
        C{reason} no longer holds its SENDs; once none does, they are routed.
        """

    def close(final=None):
        """
        Close the connection, writing the envelope C{final} last.
        """
