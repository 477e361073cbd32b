# -*- test-case-name: tests.test_federation_service -*-
"""
Federation: daemons of one workspace deliver each other's messages through
the ingest service and PostgreSQL (issue 10).  No daemon-to-daemon socket:
every daemon only calls out, so one behind NAT takes part.

  - L{relay.federation.directory}: this daemon's copy of the workspace
    directory (each name's home daemon), kept current by the long-poll.
  - L{relay.federation.client}: JSON POSTs to the ingest (treq), failing
    over between ingest instances.
  - L{relay.federation.storage}: what federation reads and writes in the
    SQLite store (the hand-over queue, stored inbound messages).
  - L{relay.federation.inbound}: a fetched page stored and delivered like
    local messages.
  - L{relay.federation.service}: the service: presence reports, the
    hand-over, the long-poll, STATUS.

A delivery has one owner at a time: this daemon (status C{remote} in its
store) until the ingest has answered the hand-over (then C{handed}), then
PostgreSQL (C{fed_inbound}), then the home daemon once the page holding it
is committed in its store (the next poll confirms it).
"""
