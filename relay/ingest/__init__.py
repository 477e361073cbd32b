# -*- test-case-name: tests.test_ingest_tap -*-
"""
The ingest service: receives sync batches from relay daemons over HTTP and
bulk-inserts them into PostgreSQL (``twistd relay-ingest``).
"""
