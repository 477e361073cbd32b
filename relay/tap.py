# -*- test-case-name: tests.e2e.test_tap -*-
"""
C{twistd relay}: options and service construction.
"""

import os
import pwd
import stat
import sys

from twisted.application import service, strports
from twisted.cred import credentials, strcred
from twisted.internet import defer, endpoints
from twisted.logger import Logger
from twisted.python import usage

from relay import compat

DEFAULT_LISTEN = "unix:/tmp/agent-relay.sock:mode=600"


def _positive_int(name):
    def convert(value):
        try:
            n = int(value)
        except ValueError:
            raise usage.UsageError("--%s must be an integer, not %r" % (name, value))
        if n <= 0:
            raise usage.UsageError("--%s must be positive, not %d" % (name, n))
        return n
    convert.coerceDoc = "A positive integer."
    return convert


def _non_negative_int(name):
    def convert(value):
        try:
            n = int(value)
        except ValueError:
            raise usage.UsageError("--%s must be an integer, not %r" % (name, value))
        if n < 0:
            raise usage.UsageError("--%s must not be negative, not %d" % (name, n))
        return n
    convert.coerceDoc = "A non-negative integer."
    return convert


def _positive_float(name):
    def convert(value):
        try:
            n = float(value)
        except ValueError:
            raise usage.UsageError("--%s must be a number, not %r" % (name, value))
        if n <= 0:
            raise usage.UsageError("--%s must be positive, not %s" % (name, value))
        return n
    convert.coerceDoc = "A positive number."
    return convert


def _sync_options():
    try:
        from relay.sync import options
    except ImportError:
        return None
    return options


class Options(compat.ExitOnUsageError, usage.Options, strcred.AuthOptionMixin):
    synopsis = "[options]"
    # --auth memory:NAME:TOKEN:..., --auth file:PATH, --help-auth (relay.auth).
    supportedInterfaces = (credentials.IUsernamePassword,)
    longdesc = (
        "Run the relay daemon: agents connect (agent-relay wire protocol v1), "
        "exchange messages, and every message is stored in a SQLite file "
        "before its receipt is sent.  Example: twistd -n relay --listen "
        "unix:/tmp/agent-relay.sock:mode=600 --listen tcp:7777:interface=127.0.0.1 "
        "--auth file:/etc/relay/tokens --db /var/lib/relay/relay.sqlite")

    optFlags = [
        ["no-rate-limit", None, "Do not rate-limit agents."],
    ]

    optParameters = [
        ["db", None, "relay.sqlite", "The SQLite store file (created if missing)."],
        ["max-frame-bytes", None, 1048576, "Largest frame accepted, in bytes.",
         _positive_int("max-frame-bytes")],
        ["heartbeat-ms", None, 5000, "PING interval; 6 missed answers close a connection.",
         _positive_int("heartbeat-ms")],
        ["ack-timeout-ms", None, 5000, "Resend a DELIVER not ACKed within this time.",
         _positive_int("ack-timeout-ms")],
        ["message-ttl", None, 86400, "Default message TTL in seconds (payload_meta.ttl_ms wins).",
         _positive_float("message-ttl")],
        ["batch-size", None, 50, "Flush the store batch at this many rows.",
         _positive_int("batch-size")],
        ["batch-delay-ms", None, 100, "Flush the store batch at least this often.",
         _positive_int("batch-delay-ms")],
        ["batch-bytes", None, 1048576, "Flush the store batch at this many bytes.",
         _positive_int("batch-bytes")],
        ["queue-high", None, 1500, "Outbound queue high water mark (frames): pause senders.",
         _positive_int("queue-high")],
        ["queue-low", None, 500, "Outbound queue low water mark (frames): resume senders.",
         _positive_int("queue-low")],
        ["queue-max", None, 2000, "Frames an outbound queue holds; the rest waits in the store.",
         _positive_int("queue-max")],
        ["max-inflight", None, 1000,
         "Deliveries written and not yet ACKed per connection (HELLO may ask for fewer).",
         _positive_int("max-inflight")],
        ["max-held-sends", None, 1000,
         "SENDs of one connection held while it is slowed down (flow control, rate "
         "limit, store); beyond, NACK BUSY or straight to the store.",
         _positive_int("max-held-sends")],
        ["max-held-bytes", None, 1048576, "Bytes of SENDs one connection may have held.",
         _positive_int("max-held-bytes")],
        ["max-control-bytes", None, 4194304,
         "Unwritten replies (receipts, NACKs, PONGs, STATUS...) per connection before "
         "the daemon stops reading that connection until it reads them.",
         _positive_int("max-control-bytes")],
        ["rate-limit", None, 500, "Messages per second an agent may send, sustained.",
         _positive_float("rate-limit")],
        ["rate-burst", None, 1000, "Messages an agent may send in a burst.",
         _positive_float("rate-burst")],
        ["dedupe-window", None, 100000,
         "Recent SENDs remembered in all by (sender, id), so that a client re-sending one "
         "it got no receipt for is receipted again, not stored twice (0: off; the store "
         "still keeps a SEND with an id once).",
         _non_negative_int("dedupe-window")],
        ["dedupe-per-sender", None, 1000,
         "Recent SENDs remembered for each sender (its newest), also across restarts.",
         _positive_int("dedupe-per-sender")],
        ["dedupe-hours", None, 6.0, "Hours a SEND stays in the dedupe window.",
         _positive_float("dedupe-hours")],
        ["rate-limit-policy", None, "throttle",
         "throttle: stop reading an agent over its budget; reject: NACK BUSY its SENDs."],
        ["synchronous", None, "full",
         "full: every store commit fsyncs before its receipts go out (a receipt survives "
         "power loss); normal: fsync at checkpoints only (a receipt survives a crash of "
         "the daemon, not of the machine)."],
    ]

    compData = usage.Completions(optActions={"db": usage.CompleteFiles("*.sqlite")})

    from relay import auth as _auth
    optParameters = optParameters + _auth.OPT_PARAMETERS
    optFlags = optFlags + _auth.OPT_FLAGS
    del _auth

    _sync = _sync_options()
    if _sync is not None:
        optParameters = optParameters + list(getattr(_sync, "OPT_PARAMETERS", []))
        optFlags = optFlags + list(getattr(_sync, "OPT_FLAGS", []))

    def __init__(self):
        usage.Options.__init__(self)
        self["listen"] = []

    def opt_listen(self, endpoint):
        """
        Listen on a strports endpoint (repeatable) [default:
        unix:/tmp/agent-relay.sock:mode=600].
        """
        self["listen"].append(endpoint)

    def postOptions(self):
        if not self["listen"]:
            self["listen"] = [DEFAULT_LISTEN]
        self["listen"] = [_unix_defaults(e) for e in self["listen"]]
        for e in self["listen"]:
            try:
                # Parses only: nothing binds, no reactor is needed yet.
                endpoints.serverFromString(None, e)
            except KeyError as err:
                # systemd:...:name=N with no inherited descriptor named N.
                raise usage.UsageError("bad --listen endpoint %r: no inherited socket named %s"
                                       " (LISTEN_FDNAMES=%r)"
                                       % (e, err, os.environ.get("LISTEN_FDNAMES", "")))
            except (ValueError, TypeError, OSError) as err:
                # OSError: an ssl: key or certificate file that cannot be read.
                raise usage.UsageError("bad --listen endpoint %r: %s" % (e, err))
        if self["synchronous"] not in ("full", "normal"):
            raise usage.UsageError("--synchronous must be full or normal, not %r"
                                   % (self["synchronous"],))
        if self["rate-limit-policy"] not in ("throttle", "reject"):
            raise usage.UsageError("--rate-limit-policy must be throttle or reject, not %r"
                                   % (self["rate-limit-policy"],))
        if not self["queue-low"] < self["queue-high"] <= self["queue-max"]:
            raise usage.UsageError("need --queue-low < --queue-high <= --queue-max (got %d, %d, %d)"
                                   % (self["queue-low"], self["queue-high"], self["queue-max"]))
        from relay.auth import check_options
        check_options(self)
        sync = _sync_options()
        if sync is not None and hasattr(sync, "check"):
            sync.check(self, os.environ)


def _unix_address(endpoint):
    """
    The socket path of a C{unix:} server endpoint string and its keyword
    arguments, or C{(None, None)} for any other endpoint (or one that does
    not parse: L{Options.postOptions} reports that).
    """
    if not endpoint.startswith("unix:"):
        return None, None
    try:
        args, kwargs = endpoints._parse(endpoint)
    except Exception:
        return None, None
    path = kwargs.get("address") or (args[1] if len(args) > 1 else None)
    return path, kwargs


def _unix_defaults(endpoint):
    """
    Unix sockets get C{mode=600} unless a mode is given (Twisted's default
    is 666: any local user could talk to the daemon), and C{lockfile=1}: a
    socket file left by a daemon that was killed is then replaced, while a
    live daemon's is never stolen.
    """
    path, kwargs = _unix_address(endpoint)
    if path is None:
        return endpoint
    if "mode" not in kwargs:
        endpoint += ":mode=600"
    if "lockfile" not in kwargs:
        endpoint += ":lockfile=1"
    return endpoint


def _user(uid):
    try:
        return "%s, uid %d" % (pwd.getpwuid(uid).pw_name, uid)
    except KeyError:
        return "uid %d" % (uid,)


def check_socket_path(path, uid=None, also=None):
    """
    Refuse a socket path (or its lock file) that exists and belongs to
    another user than C{uid} (default: ours): while the daemon was down,
    another local user could have put a socket there to read what agents
    send.

    @raise SystemExit: with a one-line reason (exit status 1).
    """
    uid = os.geteuid() if uid is None else uid
    allowed = {uid} if also is None or also < 0 else {uid, also}
    for name in (path, path + ".lock"):
        try:
            st = os.lstat(name)
        except FileNotFoundError:
            continue
        except OSError as e:
            raise StartupError("relay: cannot check %s: %s" % (name, _reason(e)))
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


class StartupError(SystemExit, Exception):
    """
    The daemon cannot start: one line saying why, exit status 1.

    A L{SystemExit}, so that C{twistd -n} prints just the line; and an
    L{Exception}, so that a daemonized C{twistd} (no C{-n}) reports it
    through its status pipe: the command that started the daemon then
    prints it and exits 1 instead of waiting for a child that is gone.
    """


def _twistd_owner(config):
    """
    The (uid, gid) that C{twistd -u/-g} will switch to after the listeners
    are bound, read from twistd's own options (the parent of ours), or
    L{None} when there is no switch.
    """
    parent = getattr(config, "parent", None)
    if parent is None or not hasattr(parent, "get"):
        return None
    uid, gid = parent.get("uid"), parent.get("gid")
    if uid is None and gid is None:
        return None
    if uid is not None and gid is None:
        import pwd
        gid = pwd.getpwuid(uid).pw_gid
    return (-1 if uid is None else uid, gid)


class RelayService(service.MultiService):
    """
    The daemon: the store opens before anything listens, and on shutdown
    every pending write is flushed before the process exits.
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
        from relay.lock import break_stale_lock, lock_path
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
                                   % (getattr(child, "relay_endpoint", child), _reason(e)))
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
            raise StartupError("relay: %s" % (_reason(e),))
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


def _reason(e):
    text = str(e) or e.__class__.__name__
    return text.strip().replace("\n", " ")


def _auth_policy(config, reactor, router):
    """
    The HELLO checks of issue 9 (relay.auth), and the startup warning for
    network listeners anyone may use.
    """
    from relay.auth import AuthPolicy, make_portal, network_listeners
    portal = make_portal(config)
    open_listeners = [e for e in network_listeners(config["listen"])
                      if portal is None and not (e.startswith("ssl:")
                                                 and config.get("tls-client-ca-certs"))]
    if open_listeners:
        RelayService.log.warn(
            "--allow-anonymous-tcp: anyone who can reach {listeners} may speak as any agent",
            listeners=", ".join(e.split(":")[0] + ":" + e.split(":")[1] for e in open_listeners))
    policy = AuthPolicy(reactor, portal=portal,
                        trust_unix_peers=bool(config.get("trust-unix-peers")),
                        client_ca=bool(config.get("tls-client-ca-certs")))
    router.auth_stats = policy.status
    return policy


def makeService(config, reactor=None):
    if reactor is None:
        from twisted.internet import reactor
    from relay.protocol import RelayFactory
    from relay.ratelimit import RateLimiter
    from relay.router import Router
    from relay.store import Store

    store = Store(reactor, config["db"], batch_size=config["batch-size"],
                  batch_delay=config["batch-delay-ms"] / 1000.0,
                  batch_bytes=config["batch-bytes"], recent_sends=config["dedupe-window"],
                  recent_per_sender=config["dedupe-per-sender"],
                  recent_age=config["dedupe-hours"] * 3600.0,
                  synchronous=config["synchronous"])
    limiter = None
    if not config["no-rate-limit"]:
        limiter = RateLimiter(reactor, rate=config["rate-limit"], burst=config["rate-burst"])
    router = Router(
        reactor, store, ack_timeout=config["ack-timeout-ms"] / 1000.0,
        message_ttl=config["message-ttl"], limiter=limiter,
        rate_policy=config["rate-limit-policy"], window=config["max-inflight"],
        dedupe_window=config["dedupe-window"], dedupe_per_sender=config["dedupe-per-sender"],
        dedupe_age=config["dedupe-hours"] * 3600.0)
    factory = RelayFactory(
        router, reactor, max_frame_bytes=config["max-frame-bytes"],
        heartbeat=config["heartbeat-ms"] / 1000.0, ack_timeout=config["ack-timeout-ms"] / 1000.0,
        queue_high=config["queue-high"], queue_low=config["queue-low"],
        queue_max=config["queue-max"], window=config["max-inflight"],
        rate_policy=config["rate-limit-policy"], hold_max=config["max-held-sends"],
        hold_bytes=config["max-held-bytes"], control_max=config["max-control-bytes"])
    factory.auth = _auth_policy(config, reactor, router)
    top = RelayService(store, router, owner=_twistd_owner(config), reactor=reactor)
    for endpoint in config["listen"]:
        listener = strports.service(endpoint, factory, reactor=reactor)
        listener.relay_endpoint = endpoint
        listener.relay_socket_path = _unix_address(endpoint)[0]
        if endpoint.startswith("ssl:") and config.get("tls-client-ca-certs"):
            from relay.auth import require_client_certificates
            require_client_certificates(listener.endpoint, config["tls-client-ca-certs"])
        listener.setServiceParent(top)
    sync = _sync_options()
    if sync is not None and config.get("sync-url"):
        from relay.sync.service import make_sync_service
        sync_service = make_sync_service(config, store, reactor)
        if sync_service is not None:
            sync_service.setServiceParent(top)
            router.sync_stats = sync_service.stats
    return top
