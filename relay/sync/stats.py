# -*- test-case-name: tests.test_sync_stats -*-
"""
What the sync pipeline counts, and the snapshot it reports.

L{SyncCounters} holds the running totals the pipeline adds to as it goes;
L{snapshot} turns them, with the pipeline's state of the moment, into the
JSON-able dict of the daemon's STATUS reply (its keys are listed in
README.rst, "Cloud sync").
"""

#: Pipeline states, as reported under C{"state"}.
STARTING = "starting"
IDLE = "idle"
SENDING = "sending"
BACKOFF = "backoff"
HOLDING = "holding"
UNAUTHORIZED = "unauthorized"
STOPPED = "stopped"
FAILED = "failed"


def _count(value):
    """
    C{value} if it is an int (not a bool), else 0.
    """
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


class SyncCounters:
    """
    Running totals of one sync pipeline.

    @ivar in_flight: messages in the POST that is out now.
    @ivar synced: messages the ingest confirmed.
    @ivar duplicates: of those, how many the ingest already had.
    @ivar collisions: ids the ingest reported as taken by other content.
    @ivar batches: confirmed POSTs.
    @ivar failed_attempts: POSTs that were not confirmed.
    @ivar spills_written: batches written to spill files.
    @ivar bytes_raw: JSON bytes posted, before compression.
    @ivar bytes_wire: bytes posted, after compression.
    @ivar dead_letters: messages in the dead-letter table.
    @ivar last_error: the latest failure, in words, or None.
    @ivar last_rejected: the latest spill file refused as a whole, or None.
    """

    def __init__(self):
        self.in_flight = 0
        self.synced = 0
        self.duplicates = 0
        self.batches = 0
        self.failed_attempts = 0
        self.spills_written = 0
        self.bytes_raw = 0
        self.bytes_wire = 0
        self.dead_letters = 0
        self.collisions = 0
        self.last_error = None
        self.last_rejected = None

    def posted(self, body_bytes, outcome):
        """
        Count the bytes of one POST of C{body_bytes} answered with
        C{outcome} (a L{relay.sync.poster.Outcome}).
        """
        self.bytes_raw += body_bytes
        self.bytes_wire += outcome.wire_bytes

    def failed(self, reason):
        """
        Count one POST that was not confirmed, for C{reason}.
        """
        self.failed_attempts += 1
        self.last_error = reason

    def confirmed(self, count, outcome):
        """
        Count a batch of C{count} messages the ingest confirmed, with the
        C{duplicates} and C{collisions} its answer reports.
        """
        self.batches += 1
        self.synced += count
        self.duplicates += _count(outcome.data.get("duplicates"))
        self.collisions += _count(outcome.data.get("collisions"))


def snapshot(counters, state, url, daemon_id, workspace_id, cursor, known_max, queued, spill):
    """
    The STATUS dict of a pipeline.

    @param counters: its L{SyncCounters}.
    @param state: one of the states above.
    @param cursor: the highest seq confirmed, spilled or dead-lettered.
    @param known_max: the highest seq known to be stored.
    @param queued: messages held in memory, waiting to be sent.
    @param spill: its L{relay.sync.spill.SpillDir}.
    """
    return {
        "state": state,
        "url": url,
        "daemon_id": daemon_id,
        "workspace_id": workspace_id,
        "cursor": cursor,
        "backlog": max(0, known_max - cursor),
        "queued": queued,
        "in_flight": counters.in_flight,
        "synced": counters.synced,
        "batches": counters.batches,
        "duplicates": counters.duplicates,
        "failed_attempts": counters.failed_attempts,
        "spilled_files": spill.files,
        "spilled_bytes": spill.bytes,
        "spills_written": counters.spills_written,
        "rejected_files": spill.rejected,
        "last_rejected": counters.last_rejected,
        "collisions": counters.collisions,
        "bytes_raw": counters.bytes_raw,
        "bytes_wire": counters.bytes_wire,
        "dead_letters": counters.dead_letters,
        "last_error": counters.last_error,
    }
