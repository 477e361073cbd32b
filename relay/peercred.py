# -*- test-case-name: tests.test_peercred,tests.test_auth -*-
"""
The operating-system identity of a Unix socket peer (C{SO_PEERCRED}: the
pid, uid and gid of the process that connected), read by the daemon for
each connection.  The kernel fills it in at C{connect()}; the peer cannot
forge it.
"""

import socket
import struct

from twisted.internet.address import UNIXAddress

_UCRED = struct.Struct("3i")


def is_unix(transport):
    """
    Whether C{transport}'s peer came in over a Unix socket.
    """
    try:
        return isinstance(transport.getPeer(), UNIXAddress)
    except Exception:
        return False


def peer_credentials(transport):
    """
    C{{"pid", "uid", "gid"}} of the Unix peer of C{transport}, or None for
    other transports (or where the platform has no C{SO_PEERCRED}).
    """
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None or not is_unix(transport):
        return None
    try:
        sock = transport.getHandle()
        raw = sock.getsockopt(socket.SOL_SOCKET, option, _UCRED.size)
    except (AttributeError, OSError):
        return None
    pid, uid, gid = _UCRED.unpack(raw)
    return {"pid": pid, "uid": uid, "gid": gid}
