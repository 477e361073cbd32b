"""
Harnesses shared by the test modules: the real daemon and ingest processes,
one frame codec, one C{poll_until}, one output-collecting process protocol.

Test modules import from here, never from one another.
"""
