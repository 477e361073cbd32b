# -*- test-case-name: tests.test_startup -*-
"""
What the daemon checks about the files it is about to own before it
starts: Unix socket paths left by someone else, a store file others could
read, and the user C{twistd -u/-g} hands them to.  A check that fails
raises L{StartupError}: one line, exit status 1.
"""

import os
import pwd
import stat


class StartupError(SystemExit, Exception):
    """
    The daemon cannot start: one line saying why, exit status 1.

    A L{SystemExit}, so that C{twistd -n} prints just the line; and an
    L{Exception}, so that a daemonized C{twistd} (no C{-n}) reports it
    through its status pipe: the command that started the daemon then
    prints it and exits 1 instead of waiting for a child that is gone.
    """


def reason(e):
    """
    C{e} as one line (its class name when it has no message).
    """
    text = str(e) or e.__class__.__name__
    return text.strip().replace("\n", " ")


def _user(uid):
    try:
        return "%s, uid %d" % (pwd.getpwuid(uid).pw_name, uid)
    except KeyError:
        return "uid %d" % (uid,)


def check_socket_path(path, uid=None, also=None):
    """
    Refuse a socket path (or its lock file) that exists and belongs to
    another user than C{uid} (default: ours) or C{also}: while the daemon
    was down, another local user could have put a socket there to read
    what agents send.

    @raise StartupError: with a one-line reason.
    """
    uid = os.geteuid() if uid is None else uid
    allowed = {uid} if also is None or also < 0 else {uid, also}
    for name in (path, path + ".lock"):
        try:
            st = os.lstat(name)
        except FileNotFoundError:
            continue
        except OSError as e:
            raise StartupError("relay: cannot check %s: %s" % (name, reason(e)))
        if st.st_uid not in allowed:
            raise StartupError(
                "relay: refusing to listen on %s: %s exists and belongs to %s, not to this "
                "daemon (%s); remove it if you trust it, or choose another --listen path"
                % (path, name, _user(st.st_uid), _user(uid)))


def private_store(path, log=None):
    """
    Create the store file owner-only (0600) before SQLite opens it: SQLite
    then creates its -wal and -shm files with the same mode.  An existing
    store readable by others is left as it is, with a warning.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        mode = stat.S_IMODE(os.stat(path).st_mode)
        if mode & 0o077 and log is not None:
            log.warn("relay store {path} is mode {mode:o}: other users may read every "
                     "message (chmod 600 {path} and its -wal/-shm files)", path=path, mode=mode)
        return
    except OSError:
        # The store reports a missing directory or a permission problem
        # in its own words.
        return
    os.close(fd)


def twistd_owner(config):
    """
    The (uid, gid) that C{twistd -u/-g} will switch to after the listeners
    are bound, read from twistd's own options (the parent of C{config}),
    or None when there is no switch.
    """
    parent = getattr(config, "parent", None)
    if parent is None or not hasattr(parent, "get"):
        return None
    uid, gid = parent.get("uid"), parent.get("gid")
    if uid is None and gid is None:
        return None
    if uid is not None and gid is None:
        gid = pwd.getpwuid(uid).pw_gid
    return (-1 if uid is None else uid, gid)
