# -*- test-case-name: tests.test_status -*-
"""
STATUS: what the daemon reports about itself (agents, store, counters,
rate limit, sync, auth, retention), built from what it was given at
construction.
"""

# What an agent said about itself in its HELLO, shown by STATUS.
HELLO_INFO = ("entityType", "cli", "program", "model", "task", "workingDirectory",
              "displayName")


class StatusReporter:
    """
    @param clock: IReactorTime (uptime).
    @param router: the L{relay.router.Router} (its registry, connections,
        counters and dedupe window).
    @param store: an L{relay.interfaces.IMessageStore} (its C{stats()}).
    @param limiter: the L{relay.ratelimit.RateLimiter} or None.
    @param rate_policy: C{"throttle"} or C{"reject"}.
    @param sync_stats: callable() -> dict, the sync service's, or None.
    @param auth_stats: callable() -> dict, the auth policy's, or None.
    @param retention_stats: callable() -> dict, the retention service's
        (L{relay.retention.Retention.stats}), or None.
    """

    def __init__(self, clock, router, store, limiter=None, rate_policy="throttle",
                 sync_stats=None, auth_stats=None, federation_stats=None,
                 retention_stats=None):
        self.clock = clock
        self.router = router
        self.store = store
        self.limiter = limiter
        self.rate_policy = rate_policy
        self.sync_stats = sync_stats
        self.auth_stats = auth_stats
        self.federation_stats = federation_stats
        self.retention_stats = retention_stats
        self.started = clock.seconds()

    def report(self):
        router = self.router
        m = self.store.stats()
        m["dedupe_entries"] = len(router.dedupe)
        m["dedupe_senders"] = router.dedupe.senders()
        agents = []
        for s in router.sessions.values():
            outbox = s.conn.outbox
            agents.append({
                "name": s.name, "session_id": s.session_id,
                "connected_at": s.connected_at, "queue_depth": outbox.depth(),
                "inflight": len(s.inflight), "backpressured": outbox.backpressured,
                "paused": sorted(str(r) for r in s.conn.pause_reasons),
                "live": s.live, "topics": sorted(s.topics),
                "info": {k: s.hello[k] for k in HELLO_INFO
                         if isinstance(s.hello.get(k), (str, int, float))},
                "sent": s.sent, "delivered": s.delivered,
                "peer": getattr(s.conn, "peer", None),
            })
        limiter = self.limiter
        return {
            "agents": agents,
            "connections": len(router.connections),
            "store": m,
            "messages": dict(router.counters),
            "rate_limit": {
                "enabled": limiter is not None,
                "rate": limiter.rate if limiter else None,
                "burst": limiter.burst if limiter else None,
                "policy": self.rate_policy,
                "buckets": len(limiter.buckets) if limiter else 0,
                "throttled_agents": sorted(
                    c.session.name for c in router.connections
                    if c.session is not None and "rate" in c.pause_reasons),
            },
            "sync": self.sync_stats() if self.sync_stats else None,
            "auth": self.auth_stats() if self.auth_stats else None,
            "federation": self.federation_stats() if self.federation_stats else None,
            "retention": self.retention_stats() if self.retention_stats else None,
            "uptime_s": self.clock.seconds() - self.started,
        }
