# -*- test-case-name: tests.test_sync_service -*-
"""
Cloud sync: ship every stored message to the ingest service.

The SQLite store is the source of truth; a persistent cursor in it records
what the ingest has confirmed (or what went to a spill file or the dead-letter
table).  Delivery is at least once; the ingest de-duplicates on message id.

  - L{relay.sync.options}: the C{twistd relay} options and their checks.
  - L{relay.sync.wire}: one message row to wire JSON; batch bodies; gzip.
  - L{relay.sync.backoff}: the jittered exponential retry schedule.
  - L{relay.sync.poster}: one POST with treq, classified into an outcome.
  - L{relay.sync.spill}: the spill directory (gzip files named by UUID).
  - L{relay.sync.decide}: the one table of what a POST's outcome leads to.
  - L{relay.sync.service}: the pipeline's service (reading, scheduling, the
    steps live batches and spill files share) and C{make_sync_service}.
  - L{relay.sync.batches}: the memory queue and when a batch leaves.
  - L{relay.sync.live}: one live batch sent until it is done with.
  - L{relay.sync.replay}: batches written to spill files and sent again.
  - L{relay.sync.cursor}: the persistent cursor, written behind.
  - L{relay.sync.stats}: the counters and the STATUS snapshot.

The sync pipeline: store -> memory queue -> batches -> ingest service, with
retries, spill files and a persistent cursor.

How a message travels:

  1. The store commits a batch and calls the commit listener with its
     highest seq.  The reader pages rows after the last one read
     (C{read_messages_after}) while the memory in use stays under
     C{max_bytes}; above it the rows simply wait in the store.
  2. Rows are encoded to JSON once (L{relay.sync.wire}) and queued.  A batch
     leaves when it reaches C{batch_size} messages or C{batch_bytes}, or when
     its oldest message has waited C{batch_delay} seconds.  One batch is in
     flight at a time; while it is, the queue keeps filling, so batches grow
     under load.
  3. The outcome of the POST (L{relay.sync.poster}) decides: 2xx confirms the
     batch; 5xx/429/refused/timeout retry with jittered backoff and
     Retry-After, then spill the batch to disk; 413 splits it; a 400 naming a
     message dead-letters that one and re-sends the rest; 401/403 stop
     syncing; a 400 naming no message spills the batch; a redirect (never
     followed) or a 2xx whose counts do not add up is retried like a 5xx.
     A spill file refused as a whole is moved into C{rejected/}.  The whole
     table is L{relay.sync.decide}.
  4. The cursor (meta C{sync_cursor}) moves to the batch's last seq once the
     batch is confirmed, spilled or dead-lettered; batches finish in seq
     order, so every seq at or below the cursor is safe.  It is written
     behind the pipeline (at most one write in flight); a crash before it is
     written only means those messages are sent again, and the ingest
     de-duplicates them.

Nothing is dropped: a batch that can be neither sent nor spilled (spill
directory full, or the disk refuses) stays at the head of the pipeline and is
retried; the reader stops at the memory bound, and the rows wait in the
store.
"""
