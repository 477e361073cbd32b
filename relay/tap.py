# -*- test-case-name: tests.e2e.test_tap -*-
"""
C{twistd relay}: its options, and L{makeService} building the store, the
router, the listeners and the sync service from them.

The startup checks live in L{relay.startup}, the C{--listen} handling in
L{relay.listeners}, the top service in L{relay.service} and the option
coercers in L{relay.options}.
"""

import os

from twisted.application import strports
from twisted.cred import credentials, strcred
from twisted.python import usage

from relay import auth, compat, options
from relay.listeners import DEFAULT_LISTEN, check_endpoint, unix_address, unix_defaults
from relay.service import RelayService
from relay.startup import twistd_owner
from relay.federation import options as federation_options
from relay.sync import options as sync_options


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
         options.positive_int("max-frame-bytes")],
        ["heartbeat-ms", None, 5000, "PING interval; 6 missed answers close a connection.",
         options.positive_int("heartbeat-ms")],
        ["ack-timeout-ms", None, 5000, "Resend a DELIVER not ACKed within this time.",
         options.positive_int("ack-timeout-ms")],
        ["message-ttl", None, 86400, "Default message TTL in seconds (payload_meta.ttl_ms wins).",
         options.positive_float("message-ttl")],
        ["batch-size", None, 50, "Flush the store batch at this many rows.",
         options.positive_int("batch-size")],
        ["batch-delay-ms", None, 100, "Flush the store batch at least this often.",
         options.positive_int("batch-delay-ms")],
        ["batch-bytes", None, 1048576, "Flush the store batch at this many bytes.",
         options.positive_int("batch-bytes")],
        ["queue-high", None, 1500, "Outbound queue high water mark (frames): pause senders.",
         options.positive_int("queue-high")],
        ["queue-low", None, 500, "Outbound queue low water mark (frames): resume senders.",
         options.positive_int("queue-low")],
        ["queue-max", None, 2000, "Frames an outbound queue holds; the rest waits in the store.",
         options.positive_int("queue-max")],
        ["max-inflight", None, 1000,
         "Deliveries written and not yet ACKed per connection (HELLO may ask for fewer).",
         options.positive_int("max-inflight")],
        ["max-held-sends", None, 1000,
         "SENDs of one connection held while it is slowed down (flow control, rate "
         "limit, store); beyond, NACK BUSY or straight to the store.",
         options.positive_int("max-held-sends")],
        ["max-held-bytes", None, 1048576, "Bytes of SENDs one connection may have held.",
         options.positive_int("max-held-bytes")],
        ["max-control-bytes", None, 4194304,
         "Unwritten replies (receipts, NACKs, PONGs, STATUS...) per connection before "
         "the daemon stops reading that connection until it reads them.",
         options.positive_int("max-control-bytes")],
        ["rate-limit", None, 500, "Messages per second an agent may send, sustained.",
         options.positive_float("rate-limit")],
        ["rate-burst", None, 1000, "Messages an agent may send in a burst.",
         options.positive_float("rate-burst")],
        ["dedupe-window", None, 100000,
         "Recent SENDs remembered in all by (sender, id), so that a client re-sending one "
         "it got no receipt for is receipted again, not stored twice (0: off; the store "
         "still keeps a SEND with an id once).",
         options.non_negative_int("dedupe-window")],
        ["dedupe-per-sender", None, 1000,
         "Recent SENDs remembered for each sender (its newest), also across restarts.",
         options.positive_int("dedupe-per-sender")],
        ["dedupe-hours", None, 6.0, "Hours a SEND stays in the dedupe window.",
         options.positive_float("dedupe-hours")],
        ["rate-limit-policy", None, "throttle",
         "throttle: stop reading an agent over its budget; reject: NACK BUSY its SENDs.",
         options.choice("rate-limit-policy", ("throttle", "reject"))],
        ["synchronous", None, "full",
         "full: every store commit fsyncs before its receipts go out (a receipt survives "
         "power loss); normal: fsync at checkpoints only (a receipt survives a crash of "
         "the daemon, not of the machine).",
         options.choice("synchronous", ("full", "normal"))],
        ["retention", None, "30d",
         "Delete a message this long after it was accepted, once every delivery of it is "
         "acked or expired (and, with sync on, the ingest confirmed it); 0 keeps everything.",
         options.duration("retention")],
        ["dead-letter-retention", None, "0",
         "Delete dead letters and quarantined rows this long after they were recorded "
         "(0, the default: never).", options.duration("dead-letter-retention")],
    ]

    compData = usage.Completions(optActions={"db": usage.CompleteFiles("*.sqlite")})

    optParameters = (optParameters + auth.OPT_PARAMETERS + sync_options.OPT_PARAMETERS
                     + federation_options.OPT_PARAMETERS)
    optFlags = optFlags + auth.OPT_FLAGS + sync_options.OPT_FLAGS + federation_options.OPT_FLAGS

    def __init__(self):
        usage.Options.__init__(self)
        self["listen"] = []
        self["http"] = []
        self["federate-url"] = []

    def opt_federate_url(self, url):
        """
        Another ingest instance of the same PostgreSQL, tried when the one
        in use does not answer (repeatable; --sync-url is the first).
        """
        self["federate-url"].append(url)

    def opt_listen(self, endpoint):
        """
        Listen on a strports endpoint (repeatable) [default:
        unix:/tmp/agent-relay.sock:mode=600].
        """
        self["listen"].append(endpoint)

    def opt_http(self, endpoint):
        """
        Serve /metrics, /healthz, the JSON API and the dashboard on a
        strports endpoint (repeatable; off by default), e.g.
        tcp:8765:interface=127.0.0.1.  One reachable from the network needs --auth.
        """
        self["http"].append(endpoint)

    def postOptions(self):
        options.convert(self, [p for p in self.optParameters
                               if p[0] in ("retention", "dead-letter-retention")])
        if not self["listen"]:
            self["listen"] = [DEFAULT_LISTEN]
        self["listen"] = [unix_defaults(e) for e in self["listen"]]
        for e in self["listen"]:
            check_endpoint(e, os.environ)
        if not self["queue-low"] < self["queue-high"] <= self["queue-max"]:
            raise usage.UsageError("need --queue-low < --queue-high <= --queue-max (got %d, %d, %d)"
                                   % (self["queue-low"], self["queue-high"], self["queue-max"]))
        auth.check_options(self)
        from relay.web import check_http
        check_http(self)
        sync_options.check(self, os.environ)
        federation_options.check(self)


def _auth_policy(config, reactor):
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
    return policy


def makeService(config, reactor=None):
    if reactor is None:
        from twisted.internet import reactor
    from relay.events import EventHub
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
        dedupe_age=config["dedupe-hours"] * 3600.0, events=EventHub())
    from relay.status import StatusReporter
    auth = _auth_policy(config, reactor)
    sync_service = None
    if config.get("sync-url"):
        from relay.sync.service import make_sync_service
        sync_service = make_sync_service(config, store, reactor)
    retention = None
    if config["retention"] or config["dead-letter-retention"]:
        from relay.retention import Retention
        retention = Retention(reactor, store, config["retention"],
                              dead_retention=config["dead-letter-retention"] or None,
                              sync=sync_service is not None)
    federation = None
    if config.get("federate"):
        federation = federation_options.make_federation_service(config, router, store, reactor,
                                                                sync_service)
    status = StatusReporter(reactor, router, store, limiter, config["rate-limit-policy"],
                            sync_stats=sync_service.stats if sync_service else None,
                            auth_stats=auth.status,
                            federation_stats=federation.stats if federation else None,
                            retention_stats=retention.stats if retention else None)
    factory = RelayFactory(
        router, reactor, max_frame_bytes=config["max-frame-bytes"],
        heartbeat=config["heartbeat-ms"] / 1000.0, ack_timeout=config["ack-timeout-ms"] / 1000.0,
        queue_high=config["queue-high"], queue_low=config["queue-low"],
        queue_max=config["queue-max"], window=config["max-inflight"],
        rate_policy=config["rate-limit-policy"], hold_max=config["max-held-sends"],
        hold_bytes=config["max-held-bytes"], control_max=config["max-control-bytes"],
        status=status)
    factory.auth = auth
    top = RelayService(store, router, owner=twistd_owner(config), reactor=reactor)
    for endpoint in config["listen"]:
        listener = strports.service(endpoint, factory, reactor=reactor)
        listener.relay_endpoint = endpoint
        listener.relay_socket_path = unix_address(endpoint)[0]
        if endpoint.startswith("ssl:") and config.get("tls-client-ca-certs"):
            from relay.tls import require_client_certificates
            require_client_certificates(listener.endpoint, config["tls-client-ca-certs"])
        listener.setServiceParent(top)
    if sync_service is not None:
        sync_service.setServiceParent(top)
    if federation is not None:
        federation.setServiceParent(top)
    if retention is not None:
        retention.setServiceParent(top)
    if config.get("http"):
        from relay.web import add_http
        add_http(top, config, store, router, router.events, reactor, status)
    return top
