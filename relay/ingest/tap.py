# -*- test-case-name: tests.test_ingest_tap -*-
"""
C{twistd relay-ingest}: receives sync batches from relay daemons over HTTP
and bulk-inserts them into PostgreSQL.
"""

import os

from twisted.application import service, strports
from twisted.internet import endpoints
from twisted.logger import Logger
from twisted.python import usage

from relay import compat, options
from relay.ingest import admission, db

_log = Logger()

DEFAULT_LISTEN = "tcp:8080:interface=127.0.0.1"
MiB = 1024 * 1024

# The strategy for batches up to --copy-threshold rows.  benchmarks/
# bench_ingest.py measures both; see README.rst for the figures.
SMALL_STRATEGIES = ("multirow", "unnest")
DEFAULT_SMALL_STRATEGY = "unnest"


class Options(compat.ExitOnUsageError, usage.Options):
    """
    Command-line options of C{twistd relay-ingest}.
    """

    synopsis = "[options]"
    longdesc = (
        "Receive message sync batches from relay daemons on "
        "POST /api/daemons/messages/sync and store them in PostgreSQL; "
        "relay messages between the federated daemons of a workspace on "
        "POST /api/federation/presence, /handover and /poll. "
        "Also serves GET /healthz and GET /metrics."
    )

    optParameters = [
        ["postgres", None, None,
         "PostgreSQL DSN (default: $RELAY_POSTGRES_DSN, else %r)." % (db.DEFAULT_DSN,)],
        ["pool-size", None, 4, "PostgreSQL connections per pool.",
         options.positive_int("pool-size")],
        ["chunk-size", None, 100, "Rows per multi-row INSERT statement.",
         options.positive_int("chunk-size")],
        ["copy-threshold", None, 1000,
         "Batches of more rows than this go through COPY.",
         options.positive_int("copy-threshold")],
        ["max-body-bytes", None, 16 * MiB, "Largest request body, as sent.",
         options.positive_int("max-body-bytes")],
        ["max-inflated-bytes", None, 64 * MiB, "Largest request body after gzip inflation.",
         options.positive_int("max-inflated-bytes")],
        ["max-buffered-bytes", None, 128 * MiB,
         "Request body bytes (as received, or inflated) held in memory by all requests "
         "together; beyond it a request gets 503 with Retry-After.",
         options.positive_int("max-buffered-bytes")],
        ["max-waiting", None, 16,
         "Database operations that may wait for a connection (per pool); more get 503 "
         "with Retry-After at once.", options.positive_int("max-waiting")],
        ["db-timeout", None, 30.0,
         "Seconds to wait for PostgreSQL before answering 503.",
         options.positive_float("db-timeout")],
        ["small-strategy", None, DEFAULT_SMALL_STRATEGY,
         "Insert strategy up to --copy-threshold rows: %s." % (" or ".join(SMALL_STRATEGIES),),
         options.choice("small-strategy", SMALL_STRATEGIES)],
    ]

    def __init__(self):
        usage.Options.__init__(self)
        self["listen"] = []

    def opt_listen(self, description):
        """
        A strports description to listen on (repeatable; default %s).
        """
        self["listen"].append(description)

    opt_listen.__doc__ = opt_listen.__doc__ % (DEFAULT_LISTEN,)

    def postOptions(self):
        if not self["listen"]:
            self["listen"] = [DEFAULT_LISTEN]
        if self["postgres"] is None:
            self["postgres"] = os.environ.get("RELAY_POSTGRES_DSN") or db.DEFAULT_DSN
        try:
            from psycopg2.extensions import parse_dsn
            parse_dsn(self["postgres"])
        except Exception as e:
            raise usage.UsageError("--postgres is not a valid DSN: %s" % (e,))
        # The coercers ran only on what the command line gave.
        options.convert(self, self.optParameters)
        for description in self["listen"]:
            # Parse it now (without a reactor: nothing listens yet), so a
            # typo or a missing certificate file is a usage error.
            try:
                endpoints.serverFromString(None, description)
            except Exception as e:
                raise usage.UsageError("--listen %r: %s" % (description, e))


class IngestService(service.Service):
    """
    Owns the database pools and insert strategies; creates or upgrades the
    schema at startup, retrying until PostgreSQL answers.

    @ivar ready: whether the schema is current and requests can be served.
    @ivar tx_pool: the L{db.TxPostgresPool} (key lookups, small batches).
    @ivar thread_pool: the blocking pool (migrations, COPY).
    @ivar inserter: the L{relay.ingest.inserters.ThresholdInserter}.
    @ivar waiters: the L{relay.ingest.notify.Waiters} of held federation
        polls.
    @ivar listener: the L{relay.ingest.notify.NotifyListener} that wakes
        them (one LISTEN connection).
    @ivar db_timeout: seconds to wait for PostgreSQL before answering 503.
    @ivar migration_retry_delay: seconds between attempts to prepare the
        schema while PostgreSQL does not answer.
    """

    name = "relay-ingest-db"
    migration_retry_delay = 1.0

    def __init__(self, config, reactor, metrics):
        """
        @param config: the parsed L{Options}.
        @param reactor: the reactor the pools and retries run on.
        @param metrics: the L{relay.ingest.metrics.IngestMetrics} to update.
        """
        self.config = config
        self.reactor = reactor
        self.metrics = metrics
        self.db_timeout = config["db-timeout"]
        self.ready = False
        self.tx_pool = None
        self.thread_pool = None
        self.copy_admission = None
        self._refused = 0
        self.inserter = None
        self._retry = None
        from relay.ingest.notify import Waiters
        self.waiters = Waiters(reactor, on_change=metrics.federation_waiting.set)
        self.listener = None

    def startService(self):
        from relay.ingest import inserters
        from relay.ingest.notify import NotifyListener
        service.Service.startService(self)
        c = self.config
        dsn = db.with_keepalives(c["postgres"])
        self.listener = NotifyListener(dsn, self.reactor, self.waiters)
        self.listener.start()
        self.tx_pool = db.TxPostgresPool(dsn, c["pool-size"], self.reactor,
                                        max_waiting=c["max-waiting"], on_change=self._queue_changed)
        self.thread_pool = db.thread_pool(dsn, c["pool-size"], self.reactor)
        self.copy_admission = admission.Admission(c["pool-size"], c["max-waiting"], self._queue_changed)
        if c["small-strategy"] == "multirow":
            small = inserters.MultiRowInserter(self.tx_pool, c["chunk-size"])
        else:
            small = inserters.UnnestInserter(self.tx_pool)
        large = inserters.CopyInserter(self.thread_pool, admission=self.copy_admission)
        self.inserter = inserters.ThresholdInserter(small, large, c["copy-threshold"])
        self.tx_pool.start()
        self._migrate()

    def _queue_changed(self, _):
        queues = [q for q in (self.tx_pool and self.tx_pool.admission, self.copy_admission)
                  if q is not None]
        self.metrics.db_waiting.set(sum(q.waiting for q in queues))
        refused = sum(q.refused for q in queues)
        if refused > self._refused:
            self.metrics.db_busy.inc(refused - self._refused)
            self._refused = refused

    def _migrate(self):
        from relay.ingest.schema import migrate
        self._retry = None
        d = self.thread_pool.runWithConnection(migrate)

        def done(applied):
            if applied:
                _log.info("Schema upgraded, applied migrations {versions}", versions=applied)
            else:
                _log.info("Schema is current")
            self.ready = True

        def failed(f):
            if not self.running:
                return
            _log.warn("Cannot prepare the schema yet ({error}); retrying in {delay}s",
                      error=f.getErrorMessage().strip(), delay=self.migration_retry_delay)
            self._retry = self.reactor.callLater(self.migration_retry_delay, self._migrate)

        d.addCallbacks(done, failed)
        d.addErrback(lambda f: _log.failure("Schema migration", f))

    def stopService(self):
        service.Service.stopService(self)
        self.ready = False
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        if self.listener is not None:
            self.listener.stop()
        if self.tx_pool is not None:
            self.tx_pool.close()
        # Held polls answer now (503: the pool is closed).
        self.waiters.wake_all()
        if self.thread_pool is not None:
            self.thread_pool.close()


def makeService(config, reactor=None):
    """
    Build the service tree: the database service and one listener per
    C{--listen}, under one L{service.MultiService}.

    @param config: the parsed L{Options}.
    @param reactor: the reactor to run on (default: the global one,
        imported only here).
    """
    if reactor is None:
        from twisted.internet import reactor
    from relay.ingest import metrics as metrics_module
    from relay.ingest import web

    top = service.MultiService()
    metrics = metrics_module.IngestMetrics()
    ingest = IngestService(config, reactor, metrics)
    ingest.setServiceParent(top)
    root = web.build_root(ingest, metrics_module.MetricsResource(metrics))
    site = web.IngestSite(
        root,
        max_body_bytes=config["max-body-bytes"],
        max_inflated_bytes=config["max-inflated-bytes"],
        metrics=metrics,
        service=ingest,
        max_buffered_bytes=config["max-buffered-bytes"],
    )
    for description in config["listen"]:
        strports.service(description, site, reactor=reactor).setServiceParent(top)
    return top
