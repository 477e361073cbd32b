# -*- test-case-name: tests.test_ingest_metrics,tests.e2e.test_ingest_http -*-
"""
Prometheus metrics of the ingest service, in a private registry.

Imported by L{relay.ingest.tap.makeService}, never at plugin discovery.
"""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from twisted.web.resource import Resource

_LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)


class IngestMetrics:
    """
    The service's counters and histograms, in their own
    L{CollectorRegistry}.
    """

    def __init__(self):
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "relay_ingest_requests", "Sync requests by HTTP status.",
            ["status"], registry=self.registry,
        )
        self.rows_inserted = Counter(
            "relay_ingest_rows_inserted", "Message rows newly inserted.",
            registry=self.registry,
        )
        self.duplicates = Counter(
            "relay_ingest_duplicates", "Message rows skipped as already present.",
            registry=self.registry,
        )
        self.bytes_in = Counter(
            "relay_ingest_bytes_in", "Request body bytes received, as sent (compressed or not).",
            registry=self.registry,
        )
        self.collisions = Counter(
            "relay_ingest_collisions", "Message rows whose id was already stored with other "
            "content (stored under a disambiguated id).", registry=self.registry,
        )
        self.db_waiting = Gauge(
            "relay_ingest_db_waiting", "Database operations waiting for a connection.",
            registry=self.registry,
        )
        self.db_busy = Counter(
            "relay_ingest_db_busy", "Database operations refused (503) because too many "
            "were already waiting.", registry=self.registry,
        )
        self.insert_seconds = Histogram(
            "relay_ingest_insert_seconds", "Time to insert one batch, by strategy.",
            ["strategy"], buckets=_LATENCY_BUCKETS, registry=self.registry,
        )

        self.federation_requests = Counter(
            "relay_ingest_federation_requests", "Federation requests by route and HTTP status.",
            ["route", "status"], registry=self.registry,
        )
        self.federation_stored = Counter(
            "relay_ingest_federation_stored", "Federation rows handed over and newly stored "
            "(a broadcast is one row per target daemon).", registry=self.registry,
        )
        self.federation_duplicates = Counter(
            "relay_ingest_federation_duplicates", "Federation rows handed over again (already "
            "stored, confirmed or not).", registry=self.registry,
        )
        self.federation_confirmed = Counter(
            "relay_ingest_federation_confirmed", "Federation rows confirmed by their home daemon.",
            registry=self.registry,
        )
        self.federation_polls = Counter(
            "relay_ingest_federation_polls", "Polls answered: at_once (something was there), "
            "woken (after a wait, by a change), timeout (the wait ran out).",
            ["outcome"], registry=self.registry,
        )
        self.federation_waiting = Gauge(
            "relay_ingest_federation_waiting", "Polls held now, waiting for a change.",
            registry=self.registry,
        )

    def render(self):
        """
        @return: the registry in the Prometheus text format (L{bytes}).
        """
        return generate_latest(self.registry)


class MetricsResource(Resource):
    """
    C{GET /metrics}: the registry in the Prometheus text format.
    """

    isLeaf = True

    def __init__(self, metrics):
        """
        @param metrics: the L{IngestMetrics} to serve.
        """
        Resource.__init__(self)
        self.metrics = metrics

    def render_GET(self, request):
        request.setHeader(b"Content-Type", CONTENT_TYPE_LATEST.encode("ascii"))
        return self.metrics.render()
