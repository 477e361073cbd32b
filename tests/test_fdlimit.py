# -*- test-case-name: tests.test_fdlimit -*-
"""
Tests for L{relay.fdlimit}: the soft file-descriptor limit is raised to the
hard limit at startup and logged, and a limit that cannot be raised is said
in one log line without stopping startup.
"""

import resource

from twisted.logger import Logger
from twisted.trial import unittest

from relay import fdlimit


class _Refusing:
    """C{resource}'s verbs, with a C{setrlimit} that refuses (as on a jail)."""

    RLIMIT_NOFILE = resource.RLIMIT_NOFILE
    RLIM_INFINITY = resource.RLIM_INFINITY

    def __init__(self, soft, hard):
        self.limits = (soft, hard)

    def getrlimit(self, which):
        return self.limits

    def setrlimit(self, which, limits):
        raise ValueError("not allowed to raise maximum limit")


class RaiseFdLimitTests(unittest.TestCase):
    """
    L{fdlimit.raise_fd_limit} on this process's real limit.
    """

    def setUp(self):
        self.events = []
        self.logger = Logger(observer=self.events.append)
        self.original = resource.getrlimit(resource.RLIMIT_NOFILE)
        self.addCleanup(resource.setrlimit, resource.RLIMIT_NOFILE, self.original)

    def text(self):
        from twisted.logger import formatEvent
        return [formatEvent(e) for e in self.events]

    def test_raises_soft_to_hard(self):
        """
        A soft limit below the hard limit is raised to it, and one log line
        gives both numbers.
        """
        soft, hard = self.original
        if hard != resource.RLIM_INFINITY and hard <= 64:
            raise unittest.SkipTest("hard limit {} leaves no room to lower".format(hard))
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
        before, after = fdlimit.raise_fd_limit(logger=self.logger)
        now = resource.getrlimit(resource.RLIMIT_NOFILE)
        self.assertEqual(before, 64)
        self.assertEqual(now[0], after)
        self.assertEqual(now[1], hard)
        self.assertGreater(after, 64)
        self.assertEqual(self.text(), [
            "relay file descriptor limit raised from 64 to {}".format(after)])

    def test_already_at_hard_limit(self):
        """
        A soft limit already at the hard limit stays there, and the log says
        so (an operator reading the log sees the limit either way).
        """
        soft, hard = self.original
        if hard == resource.RLIM_INFINITY:
            raise unittest.SkipTest("unlimited hard limit")
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        self.assertEqual(fdlimit.raise_fd_limit(logger=self.logger), (hard, hard))
        self.assertEqual(resource.getrlimit(resource.RLIMIT_NOFILE), (hard, hard))
        self.assertEqual(self.text(), [
            "relay file descriptor limit {} (already the hard limit)".format(hard)])

    def test_cannot_raise_is_one_warning(self):
        """
        When setrlimit refuses, the limit stays, nothing raises, and one
        warning line names the limit kept, the target and the reason.
        """
        result = fdlimit.raise_fd_limit(_Refusing(256, 4096), logger=self.logger)
        self.assertEqual(result, (256, 256))
        self.assertEqual(self.text(), [
            "relay file descriptor limit stays at 256: cannot raise it to 4096: "
            "not allowed to raise maximum limit"])
        self.assertEqual(self.events[0]["log_level"].name, "warn")

    def test_unlimited_hard_limit_gets_a_finite_target(self):
        """
        An unlimited hard limit (which Linux refuses for RLIMIT_NOFILE) is
        aimed at the kernel's default fs.nr_open, not at RLIM_INFINITY.
        """
        module = _Refusing(1024, resource.RLIM_INFINITY)
        fdlimit.raise_fd_limit(module, logger=self.logger)
        self.assertIn("cannot raise it to 1048576", self.text()[0])

    def test_no_resource_module(self):
        """
        On a platform without C{resource} the call says so and returns None.
        """
        self.assertIsNone(fdlimit.raise_fd_limit(None, logger=self.logger))
        self.assertEqual(len(self.events), 1)
