"""
End-to-end tests: each module here starts real processes (C{twistd -n relay},
C{twistd -n relay-ingest}, the CLI, a Node client, pip) and talks to them over
real sockets, or drives PostgreSQL through the real HTTP service.

The unit tests are the modules directly in C{tests/}:
C{python -m twisted.trial -N tests} runs them alone (C{-N}: do not recurse
into this package); C{python -m twisted.trial tests.e2e} runs these alone.
"""
