"""
Tests for L{relay.ingest.metrics}: the service's metrics in their own
registry, served in the Prometheus text format.  That the service moves
them is tested end to end in L{tests.test_ingest_http}.
"""

from twisted.trial import unittest
from twisted.web.test.requesthelper import DummyRequest

from relay.ingest.metrics import IngestMetrics, MetricsResource


class IngestMetricsTests(unittest.TestCase):
    """
    L{IngestMetrics} keeps its own registry, so two services (or two
    tests) never share or clash over a metric.
    """

    def test_private_registries(self):
        """
        Two instances count apart, and both render every metric name.
        """
        a, b = IngestMetrics(), IngestMetrics()
        a.rows_inserted.inc(3)
        a.requests.labels("200").inc()
        a.insert_seconds.labels("copy").observe(0.2)
        self.assertIn(b"relay_ingest_rows_inserted_total 3.0", a.render())
        self.assertIn(b"relay_ingest_rows_inserted_total 0.0", b.render())
        for name in (b"relay_ingest_requests", b"relay_ingest_duplicates",
                     b"relay_ingest_bytes_in", b"relay_ingest_collisions",
                     b"relay_ingest_db_waiting", b"relay_ingest_db_busy",
                     b"relay_ingest_insert_seconds"):
            self.assertIn(b"# TYPE " + name, a.render())


class MetricsResourceTests(unittest.TestCase):
    """
    L{MetricsResource} serves C{GET /metrics}.
    """

    def test_get(self):
        """
        The body is the registry's text with Prometheus' content type.
        """
        metrics = IngestMetrics()
        metrics.duplicates.inc(2)
        request = DummyRequest([b""])
        body = MetricsResource(metrics).render_GET(request)
        self.assertIn(b"relay_ingest_duplicates_total 2.0", body)
        self.assertTrue(request.responseHeaders.getRawHeaders(b"content-type")[0]
                        .startswith(b"text/plain"))
