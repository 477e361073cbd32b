# -*- test-case-name: tests.test_service -*-
"""
L{RelayService}: the daemon's top service.  The store opens before
anything listens, a listener that cannot bind stops startup with one line,
and on shutdown every pending write is flushed before the process exits.
"""

import os
import sys

from twisted.application import service
from twisted.internet import defer
from twisted.logger import Logger

from relay import compat
from relay.fdlimit import raise_fd_limit
from relay.lock import break_stale_lock, lock_path
from relay.startup import StartupError, check_socket_path, private_store, reason


class RelayService(service.MultiService):
    """
    The daemon: its children are the listeners (and the sync service);
    each listener carries C{relay_endpoint} (its endpoint string) and
    C{relay_socket_path} (its Unix socket path, or None).
    """

    log = Logger()

    def __init__(self, store, router, owner=None, reactor=None):
        service.MultiService.__init__(self)
        self.reactor = reactor
        self.store = store
        self.router = router
        # (uid, gid) of twistd -u/-g: Unix sockets bound as root are given
        # to that user, so that it (and agents running as it) can use them.
        self.owner = owner

    def privilegedStartService(self):
        # Listeners bind here; a bind failure must stop startup with a
        # clear message and a non-zero exit, not leave a deaf daemon.
        raise_fd_limit()  # one socket per agent: 10,000 agents need 10,000 fds
        for child in self:
            path = getattr(child, "relay_socket_path", None)
            if path is not None:
                # twistd -u/-g: the socket left by the last run is the
                # target user's (see _give_to_owner).
                check_socket_path(path, also=self.owner[0] if self.owner else None)
        for child in self:
            try:
                # A lock left by a daemon that died and is not reaped yet
                # (issue 9): take it rather than fail the restart.
                lock = lock_path(getattr(child, "relay_endpoint", ""))
                if lock is not None:
                    break_stale_lock(lock)
                child.privilegedStartService()
            except Exception as e:
                raise StartupError("relay: cannot listen on %s: %s"
                                   % (getattr(child, "relay_endpoint", child), reason(e)))
            waiting = getattr(child, "_waitingForPort", None)
            if self.owner is not None and waiting is not None:
                waiting.addCallback(self._give_to_owner)

    def _give_to_owner(self, port):
        # Runs while still root (the Deferred of a bound port fires at once).
        address = port.getHost()
        path = getattr(address, "name", None)
        if isinstance(path, bytes):
            path = path.decode(sys.getfilesystemencoding())
        if isinstance(path, str) and path and not path.startswith("\0"):
            uid, gid = self.owner
            os.chown(path, uid, gid)
            if os.path.lexists(path + ".lock"):
                os.lchown(path + ".lock", uid, gid)
            self.log.info("relay socket {path} given to uid {uid} gid {gid}",
                          path=path, uid=uid, gid=gid)
        return port

    def startService(self):
        private_store(self.store.path, self.log)
        try:
            self.store.open()
        except Exception as e:
            raise StartupError("relay: %s" % (reason(e),))
        self.router.start()
        self.log.info("relay store {path}: {n} messages so far", path=self.store.path,
                      n=self.store.last_seq())
        service.Service.startService(self)
        for child in self:
            child.startService()

    @defer.inlineCallbacks
    def stopService(self):
        yield defer.maybeDeferred(service.MultiService.stopService, self)
        self.router.stop()
        for conn in list(self.router.connections):
            conn.transport.loseConnection()
        yield self.store.close()
        self.log.info("relay store {path}: flushed and closed", path=self.store.path)
        if self.reactor is not None:
            compat.exit_zero_after_clean_stop(self.reactor)
