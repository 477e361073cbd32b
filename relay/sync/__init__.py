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
  - L{relay.sync.service}: the pipeline and C{make_sync_service}.
"""
