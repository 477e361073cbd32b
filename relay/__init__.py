# -*- test-case-name: tests.e2e.test_packaging -*-
"""relay: a durable message relay for AI agents, on Twisted."""

__version__ = "0.1.0"
