# -*- test-case-name: tests.test_fdlimit,tests.e2e.test_fdlimit -*-
"""
Raise the daemon's file-descriptor limit at startup, the way long-running
Twisted daemons do (Synapse's C{change_resource_limit}, for one): the soft
limit of C{RLIMIT_NOFILE} goes up to the hard limit, so that thousands of
idle agents (one socket each) do not hit the default soft limit of 1,024.
It is logged either way; when it cannot be raised, one log line says so
and startup goes on with the limit it has.
"""

try:
    import resource
except ImportError:  # pragma: no cover  (not on Windows)
    resource = None

from twisted.logger import Logger

log = Logger()

# Linux refuses RLIM_INFINITY for RLIMIT_NOFILE; this is the kernel's
# default fs.nr_open, used when the hard limit says "unlimited".
_UNLIMITED_TARGET = 1 << 20


def raise_fd_limit(resource_module=resource, logger=log):
    """
    Set the soft C{RLIMIT_NOFILE} to the hard limit.

    @param resource_module: the C{resource} module (or anything with its
        C{getrlimit}, C{setrlimit}, C{RLIMIT_NOFILE} and C{RLIM_INFINITY}).
    @param logger: where the one line goes.
    @return: C{(before, after)} soft limits, or C{None} when the platform has
        no such limit.
    """
    if resource_module is None:
        logger.info("relay file descriptor limit: not available on this platform")
        return None
    soft, hard = resource_module.getrlimit(resource_module.RLIMIT_NOFILE)
    target = hard
    if hard == resource_module.RLIM_INFINITY:
        target = max(soft, _UNLIMITED_TARGET) if soft != resource_module.RLIM_INFINITY \
            else soft
    if soft == target or soft == resource_module.RLIM_INFINITY:
        logger.info("relay file descriptor limit {soft} (already the hard limit)",
                    soft=soft)
        return soft, soft
    try:
        resource_module.setrlimit(resource_module.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as e:
        logger.warn("relay file descriptor limit stays at {soft}: cannot raise it to "
                    "{target}: {error}", soft=soft, target=target, error=str(e))
        return soft, soft
    logger.info("relay file descriptor limit raised from {soft} to {target}",
                soft=soft, target=target)
    return soft, target
