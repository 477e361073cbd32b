# -*- test-case-name: tests.e2e.test_lock -*-
"""
Stale Unix socket locks.

A Unix listener with C{lockfile=1} takes a L{twisted.python.lockfile.
FilesystemLock} on C{<socket>.lock}: a symlink naming the holder's pid.
FilesystemLock treats the lock as stale only when C{kill(pid, 0)} fails.  A
holder that was C{kill -9}ed but not yet reaped by its parent (a zombie: a
supervisor restarting the daemon at once, a container whose init reaps
late) still "exists" for C{kill}, so the restart fails with "Cannot acquire
lock".  A zombie holds no socket and no file any more: its lock is stale.

L{break_stale_lock} runs before the listener binds.  It waits briefly for a
live holder that may be on its way out, removes the lock of a zombie, and
never touches the lock of a live process (the listener then fails with
Twisted's own message, and the daemon does not start twice).
"""

import errno
import os
import stat
import time

from twisted.logger import Logger

log = Logger()

ALIVE, ZOMBIE, GONE = "alive", "zombie", "gone"

# How long a restart waits for a live holder of the lock to go away.
WAIT = 3.0
POLL = 0.05


def lock_path(endpoint):
    """
    The lock file of a C{unix:} strports description with C{lockfile=1},
    else None.
    """
    if not endpoint.startswith("unix:"):
        return None
    parts = endpoint[len("unix:"):].split(":")
    path = None
    locked = False
    for part in parts:
        if part.startswith("lockfile="):
            locked = part[len("lockfile="):] not in ("0", "")
        elif part.startswith("address="):
            path = part[len("address="):]
        elif "=" not in part and path is None:
            path = part
    if not locked or not path:
        return None
    return path + ".lock"


def process_state(pid, proc="/proc"):
    """
    L{ALIVE}, L{ZOMBIE} (exited, not reaped) or L{GONE}.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return GONE
    except PermissionError:
        # Another user's live process.
        pass
    try:
        with open(os.path.join(proc, str(pid), "stat"), "rb") as f:
            stat = f.read()
    except FileNotFoundError:
        return GONE
    except OSError:
        return ALIVE
    # "pid (comm) S ...": comm may hold spaces and parentheses.
    state = stat[stat.rfind(b")") + 2:stat.rfind(b")") + 3]
    if state in (b"Z", b"X", b"x"):
        return ZOMBIE
    return ALIVE


def _holder(path):
    try:
        target = os.readlink(path)
    except OSError as e:
        if e.errno == errno.ENOENT:
            return None
        raise
    try:
        return int(target)
    except ValueError:
        return -1


def _remove_socket(path):
    """
    The zombie's socket file: with the lock gone, FilesystemLock reports a
    clean lock and Twisted would not remove it before binding.  Only a
    socket is removed (never a file a typo named).
    """
    if not path.endswith(".lock"):
        return
    sock = path[:-len(".lock")]
    try:
        if stat.S_ISSOCK(os.lstat(sock).st_mode):
            os.remove(sock)
    except FileNotFoundError:
        pass


def break_stale_lock(path, wait=WAIT, sleep=time.sleep, monotonic=time.monotonic,
                     state=process_state):
    """
    Make the lock at C{path} takeable if its holder is a zombie; wait up to
    C{wait} seconds for a live holder to go away.

    @param sleep: blocks for a number of seconds (startup runs before the
        reactor does).
    @param monotonic: the clock C{wait} is measured on.
    @return: C{"free"} (no lock, or its holder is gone: FilesystemLock
        takes it), C{"broken"} (a zombie's lock was removed) or C{"held"}
        (a live process holds it; left alone).  A broken lock's socket file
        is removed with it.
    """
    deadline = monotonic() + wait
    while True:
        pid = _holder(path)
        if pid is None:
            return "free"
        if pid <= 0:
            # Not a pid: not FilesystemLock's; let it report the problem.
            return "held"
        st = state(pid)
        if st == GONE:
            return "free"
        if st == ZOMBIE:
            if _holder(path) == pid:
                _remove_socket(path)
                try:
                    os.remove(path)
                except FileNotFoundError:
                    pass
            log.warn("lock {path} was held by process {pid}, which has exited and is not "
                     "reaped yet (a zombie): taking the lock", path=path, pid=pid)
            return "broken"
        if monotonic() >= deadline:
            return "held"
        sleep(POLL)
