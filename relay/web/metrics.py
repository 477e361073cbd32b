# -*- test-case-name: tests.test_web_metrics,tests.e2e.test_web -*-
"""
C{GET /metrics}: the daemon in the Prometheus text format, in a registry of
its own (never the process-global one).

Counters and gauges are read from the router, the store, the sync
service and the retention service when Prometheus scrapes (L{RelayCollector}): a message costs
nothing for them.  The three histograms are fed by the router's events
(L{relay.events}) and the batcher's commit listener.

Imported by L{relay.web.add_http} inside C{makeService}, never at plugin
discovery.
"""

from bisect import bisect_left

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                   2.5, 5.0, 10.0, 30.0, 60.0, 300.0)

# Router counters exported as relay_messages_<name>_total.
MESSAGE_COUNTERS = (
    ("accepted", "Messages accepted from agents (stored before any receipt)."),
    ("delivered", "Deliveries written to a recipient's connection (first attempts and resends)."),
    ("acked", "Deliveries acknowledged by their recipient."),
    ("redelivered", "Deliveries sent again (ACK timeout, or after a reconnect)."),
    ("expired", "Deliveries whose message's TTL ran out before an ACK."),
    ("retransmits", "SENDs a client sent again (same id and content): receipted, not stored twice."),
)

# Retention counters (relay.retention.Retention.stats) exported as
# relay_retention_<name>_total.
RETENTION_COUNTERS = (
    ("deleted_messages", "Messages retention deleted (old, finished, confirmed)."),
    ("deleted_deliveries", "Delivery rows retention deleted with their messages."),
    ("deleted_dead_letters", "Dead-letter rows retention deleted (--dead-letter-retention)."),
    ("deleted_quarantine", "Quarantined rows retention deleted (--dead-letter-retention)."),
    ("vacuumed_pages", "Free pages retention gave back to the file system."),
    ("passes", "Retention passes begun."),
    ("errors", "Retention passes that failed (the loop goes on)."),
)

# How many accepted messages' times are remembered to measure SEND to
# DELIVER; a delivery of an older message (one that waited in the store
# for an agent that was away) is not observed.
ACCEPT_MEMORY = 10000


class RelayCollector:
    """
    Reads the daemon's own counters on each scrape.

    @param waiting: a dict of deliveries waiting in the store by status,
        refreshed by the resource before each scrape (it needs a query).
    """

    def __init__(self, router, store, sync_stats=None, started=None, retention_stats=None):
        self.router = router
        self.store = store
        self.sync_stats = sync_stats
        self.retention_stats = retention_stats
        self.started = router.clock.seconds() if started is None else started
        self.waiting = {}

    def collect(self):
        router = self.router
        counters = router.counters
        for name, doc in MESSAGE_COUNTERS:
            c = CounterMetricFamily("relay_messages_%s" % (name,), doc)
            c.add_metric([], counters.get(name, 0))
            yield c
        c = CounterMetricFamily("relay_nacks", "NACKs sent for SENDs, by code.", labels=["code"])
        for code, n in sorted(router.nacks.items()):
            c.add_metric([code], n)
        yield c
        c = CounterMetricFamily("relay_busy_frames", "BUSY frames sent (a sender paused).")
        c.add_metric([], counters.get("busy", 0))
        yield c
        c = CounterMetricFamily("relay_error_frames",
                                "ERROR frames sent (bad frames, refused HELLOs), by code.",
                                labels=["code"])
        for code, n in sorted(router.errors.items()):
            c.add_metric([code], n)
        yield c

        sessions = list(router.sessions.values())
        g = GaugeMetricFamily("relay_agents_connected", "Agents registered (HELLO done).")
        g.add_metric([], len(sessions))
        yield g
        g = GaugeMetricFamily("relay_connections", "Open agent connections.")
        g.add_metric([], len(router.connections))
        yield g
        depth = GaugeMetricFamily("relay_queue_depth_frames",
                                  "Frames queued in agents' outboxes (sum and largest).",
                                  labels=["agg"])
        depths = [s.conn.outbox.depth() for s in sessions]
        depth.add_metric(["sum"], sum(depths))
        depth.add_metric(["max"], max(depths) if depths else 0)
        yield depth
        g = GaugeMetricFamily("relay_inflight_deliveries",
                              "Deliveries written and not yet acked.")
        g.add_metric([], sum(len(s.inflight) for s in sessions))
        yield g
        g = GaugeMetricFamily("relay_backpressured_agents",
                              "Agents whose outbox is above its high water mark.")
        g.add_metric([], sum(1 for s in sessions if s.conn.outbox.backpressured))
        yield g
        g = GaugeMetricFamily("relay_store_waiting_deliveries",
                              "Deliveries in the store not yet acked nor expired, by status.",
                              labels=["status"])
        for status, n in sorted(self.waiting.items()):
            g.add_metric([status], n)
        yield g
        stats = self.store.stats()
        g = GaugeMetricFamily("relay_store_pending_rows", "Rows queued for the next commit.")
        g.add_metric([], stats["pending_rows"])
        yield g
        c = CounterMetricFamily("relay_store_commit_failures", "Store commits that failed "
                                "(their rows are kept and retried).")
        c.add_metric([], stats.get("failures", 0))
        yield c
        c = CounterMetricFamily("relay_store_quarantined_rows",
                                "Rows SQLite refused, kept in the quarantine table.")
        c.add_metric([], stats.get("quarantined", 0))
        yield c
        sync = self.sync_stats() if self.sync_stats else None
        if sync is not None:
            for name, key, doc in (
                    ("relay_sync_backlog_messages", "backlog",
                     "Stored messages not yet accepted by the sync target."),
                    ("relay_sync_spill_files", "spilled_files", "Sync batches spilled to disk."),
                    ("relay_sync_spill_bytes", "spilled_bytes", "Bytes of spilled sync batches."),
                    ("relay_sync_in_flight_batches", "in_flight", "Sync requests in flight.")):
                g = GaugeMetricFamily(name, doc)
                g.add_metric([], sync.get(key) or 0)
                yield g
            c = CounterMetricFamily("relay_sync_messages", "Messages the sync target accepted.")
            c.add_metric([], sync.get("synced") or 0)
            yield c
            g = GaugeMetricFamily("relay_sync_state", "The sync service's state (1 = current).",
                                  labels=["state"])
            g.add_metric([str(sync.get("state"))], 1)
            yield g
        if self.retention_stats is not None:
            yield from retention_metrics(self.retention_stats())
        g = GaugeMetricFamily("relay_uptime_seconds", "Seconds since the daemon started.")
        g.add_metric([], router.clock.seconds() - self.started)
        yield g


def retention_metrics(stats):
    """
    The C{relay_retention_*} families from a L{relay.retention.Retention.stats}
    dict: its counters, the free pages left, and the last finished pass's
    start (Unix time) and duration (both absent before the first one).
    """
    for name, doc in RETENTION_COUNTERS:
        c = CounterMetricFamily("relay_retention_%s" % (name,), doc)
        c.add_metric([], stats.get(name) or 0)
        yield c
    g = GaugeMetricFamily("relay_retention_free_pages",
                          "Free pages left in the store file after retention's last vacuum step.")
    g.add_metric([], stats.get("free_pages") or 0)
    yield g
    if stats.get("last_run_at") is not None:
        g = GaugeMetricFamily("relay_retention_last_run_timestamp_seconds",
                              "When the last finished retention pass began (Unix time).")
        g.add_metric([], stats["last_run_at"])
        yield g
        g = GaugeMetricFamily("relay_retention_last_run_duration_seconds",
                              "How long the last finished retention pass took.")
        g.add_metric([], stats["last_run_s"])
        yield g


class EventHistogram:
    """
    A histogram observed from the reactor thread only: a bisect and three
    additions per observation (prometheus_client's Histogram takes locks and
    walks its buckets, several times the cost at three observations per
    message), exported on scrape as a Prometheus histogram.
    """

    def __init__(self, name, documentation, buckets=LATENCY_BUCKETS):
        self.name = name
        self.documentation = documentation
        self.bounds = tuple(float(b) for b in buckets)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value):
        # bisect_left: a value equal to a bound counts in that bucket (le).
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def collect(self):
        cumulative = 0
        buckets = []
        for bound, n in zip(self.bounds + (float("inf"),), self.counts):
            cumulative += n
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
        family = HistogramMetricFamily(self.name, self.documentation, buckets=buckets,
                                       sum_value=self.sum)
        yield family


class Metrics:
    """
    The registry, the collector and the event-fed histograms.
    """

    def __init__(self, router, store, events, sync_stats=None, started=None,
                 retention_stats=None):
        self.registry = CollectorRegistry(auto_describe=False)
        self.collector = RelayCollector(router, store, sync_stats, started, retention_stats)
        self.registry.register(self.collector)
        self.commit_seconds = EventHistogram(
            "relay_store_commit_seconds", "Time to commit one batch to the store.")
        self.send_to_deliver = EventHistogram(
            "relay_send_to_deliver_seconds",
            "From a SEND being accepted to its DELIVER being written to the recipient.")
        self.deliver_to_ack = EventHistogram(
            "relay_deliver_to_ack_seconds", "From a DELIVER being written to its ACK.")
        for histogram in (self.commit_seconds, self.send_to_deliver, self.deliver_to_ack):
            self.registry.register(histogram)
        # Message seq -> accept time (seconds), for the last ACCEPT_MEMORY
        # messages (seqs only grow: the one ACCEPT_MEMORY back is dropped).
        self._accepted = {}
        store.add_batch_listener(self._committed)
        # Positional: these run at three events per message (relay.events.FIELDS).
        events.subscribe(self._accepted_event, ("accepted",), positional=True)
        events.subscribe(self._delivered_event, ("delivered",), positional=True)
        events.subscribe(self._acked_event, ("acked",), positional=True)

    def _committed(self, seconds, rows):
        self.commit_seconds.observe(seconds)

    def _accepted_event(self, kind, values):
        # id, seq, sender, to, topic, payload, recipients, ts
        seq = values[1]
        accepted = self._accepted
        accepted[seq] = values[7] / 1000.0
        accepted.pop(seq - ACCEPT_MEMORY, None)

    def _delivered_event(self, kind, values):
        # id, seq, to, attempts, at
        if values[3] == 1:
            at = self._accepted.get(values[1])
            if at is not None:
                delay = values[4] - at
                self.send_to_deliver.observe(delay if delay > 0.0 else 0.0)

    def _acked_event(self, kind, values):
        # id, to, sent_at, at
        sent_at = values[2]
        if sent_at:
            delay = values[3] - sent_at
            self.deliver_to_ack.observe(delay if delay > 0.0 else 0.0)

    def render(self):
        return generate_latest(self.registry)


CONTENT_TYPE = CONTENT_TYPE_LATEST
