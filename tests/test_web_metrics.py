# -*- test-case-name: tests.test_web_metrics -*-
"""
Tests for L{relay.web.metrics}: the collector and the event-fed histograms.
"""

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import task
from twisted.trial import unittest

from relay.events import EventHub
from relay.router import Router
from relay.store import Store
from relay.web.metrics import Metrics
from tests.support.sse import accepted


class MetricsTests(unittest.TestCase):

    def setUp(self):
        self.clock = task.Clock()
        self.store = Store(self.clock, self.mktemp())
        self.hub = EventHub()
        self.router = Router(self.clock, self.store, events=self.hub)
        self.metrics = Metrics(self.router, self.store, self.hub)

    def samples(self):
        out = {}
        for family in text_string_to_metric_families(self.metrics.render().decode()):
            for s in family.samples:
                out[s.name + "".join("{%s=%s}" % kv for kv in sorted(s.labels.items()))] = s.value
        return out

    def test_histograms_from_events(self):
        """
        SEND-to-DELIVER is measured on first deliveries from the accept
        time, DELIVER-to-ACK from the write time; acks of deliveries of an
        earlier connection (no write time) and resends are not observed.
        """
        self.hub.emit("accepted", **dict(accepted(7), ts=10000))
        self.hub.emit("delivered", id="m-7", seq=7, to="bob", attempts=1, at=10.25)
        self.hub.emit("delivered", id="m-7", seq=7, to="bob", attempts=2, at=15.0)
        self.hub.emit("acked", id="m-7", to="bob", sent_at=10.25, at=10.75)
        self.hub.emit("acked", id="m-1", to="bob", sent_at=None, at=11.0)
        m = self.samples()
        self.assertEqual(m["relay_send_to_deliver_seconds_count"], 1)
        self.assertEqual(m["relay_send_to_deliver_seconds_sum"], 0.25)
        self.assertEqual(m["relay_send_to_deliver_seconds_bucket{le=0.25}"], 1)
        self.assertEqual(m["relay_send_to_deliver_seconds_bucket{le=0.1}"], 0)
        self.assertEqual(m["relay_deliver_to_ack_seconds_count"], 1)
        self.assertEqual(m["relay_deliver_to_ack_seconds_sum"], 0.5)

    def test_counters_read_on_scrape(self):
        """
        Counters are the router's own, read when scraped: no per-message work.
        """
        self.router.counters["accepted"] = 41
        self.router.nacks["BUSY"] = 3
        self.router.errors["BAD_REQUEST"] = 2
        m = self.samples()
        self.assertEqual(m["relay_messages_accepted_total"], 41)
        self.assertEqual(m["relay_nacks_total{code=BUSY}"], 3)
        self.assertEqual(m["relay_error_frames_total{code=BAD_REQUEST}"], 2)
        self.assertEqual(m["relay_agents_connected"], 0)

    def test_commit_time(self):
        """
        Each batch commit's duration lands in relay_store_commit_seconds.
        """
        for listener in self.store.batcher.commit_listeners:
            listener(0.003, 10)
        m = self.samples()
        self.assertEqual(m["relay_store_commit_seconds_count"], 1)
        self.assertEqual(m["relay_store_commit_seconds_bucket{le=0.005}"], 1)

    def test_retention_counters_read_on_scrape(self):
        """
        The retention service's counters are read on each scrape as
        relay_retention_*_total, with the free pages and the last pass's
        time and duration as gauges (absent before its first pass); a
        daemon without retention exports none of them.
        """
        self.assertFalse([k for k in self.samples() if k.startswith("relay_retention")])
        stats = {"deleted_messages": 5, "deleted_deliveries": 7, "deleted_dead_letters": 1,
                 "deleted_quarantine": 2, "vacuumed_pages": 40, "passes": 3, "errors": 1,
                 "free_pages": 6, "last_run_at": None, "last_run_s": None}
        metrics = Metrics(self.router, self.store, self.hub, retention_stats=lambda: stats)
        self.metrics = metrics
        m = self.samples()
        self.assertEqual(m["relay_retention_deleted_messages_total"], 5)
        self.assertEqual(m["relay_retention_deleted_deliveries_total"], 7)
        self.assertEqual(m["relay_retention_deleted_dead_letters_total"], 1)
        self.assertEqual(m["relay_retention_deleted_quarantine_total"], 2)
        self.assertEqual(m["relay_retention_vacuumed_pages_total"], 40)
        self.assertEqual(m["relay_retention_passes_total"], 3)
        self.assertEqual(m["relay_retention_errors_total"], 1)
        self.assertEqual(m["relay_retention_free_pages"], 6)
        self.assertNotIn("relay_retention_last_run_timestamp_seconds", m)
        stats.update(deleted_messages=9, last_run_at=1700000000.5, last_run_s=0.25)
        m = self.samples()
        self.assertEqual(m["relay_retention_deleted_messages_total"], 9)
        self.assertEqual(m["relay_retention_last_run_timestamp_seconds"], 1700000000.5)
        self.assertEqual(m["relay_retention_last_run_duration_seconds"], 0.25)
