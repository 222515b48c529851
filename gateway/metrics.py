"""Prometheus metrics, in a registry per app (no module-level global state).

    metrics = Metrics.create(max_workflows=100)
    metrics.requests.labels(metrics.workflow(name), model, tier, "200").inc()

Workflow names come from clients (a header, `metadata.workflow`), so the `workflow` label is capped:
the first `max_workflows` distinct names keep their own series, later ones count as `other`; a
client inventing names cannot grow /metrics without limit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

OTHER = "other"
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


@dataclass
class Metrics:
    registry: CollectorRegistry
    requests: Counter
    rejected: Counter
    latency: Histogram
    ttfb: Histogram
    tokens: Counter
    cost: Counter
    baseline_cost: Counter
    ledger_pending: Gauge
    redis_degraded: Gauge
    ledger_dead_lettered: Counter
    ledger_lost: Counter
    ledger_degraded: Gauge
    capture_dropped: Counter
    max_workflows: int = 100
    _workflows: set[str] = field(default_factory=set)

    def workflow(self, name: str) -> str:
        """The `workflow` label for `name`: itself while under the cap, else `other`."""
        if name in self._workflows:
            return name
        if len(self._workflows) < self.max_workflows:
            self._workflows.add(name)
            return name
        return OTHER

    def ledger_problem(self, kind: str, n: int) -> None:
        """The ledger writer's report: `dead_lettered` or `lost` records."""
        (self.ledger_dead_lettered if kind == "dead_lettered" else self.ledger_lost).inc(n)

    def capture_drop(self, n: int) -> None:
        """The transcript writer's report: captured turns it could not store."""
        self.capture_dropped.inc(n)

    @classmethod
    def create(cls, max_workflows: int = 100) -> Metrics:
        reg = CollectorRegistry()
        labels = ("workflow", "model", "tier")
        return cls(
            registry=reg,
            requests=Counter(
                "tiergate_requests", "Chat completion requests", (*labels, "status"), registry=reg
            ),
            rejected=Counter(
                "tiergate_rejected", "Requests refused before any upstream call", ("reason",), registry=reg
            ),
            latency=Histogram(
                "tiergate_request_duration_seconds",
                "Total request latency",
                labels,
                buckets=_LATENCY_BUCKETS,
                registry=reg,
            ),
            ttfb=Histogram(
                "tiergate_time_to_first_byte_seconds",
                "Upstream time to first byte",
                labels,
                buckets=_LATENCY_BUCKETS,
                registry=reg,
            ),
            tokens=Counter("tiergate_tokens", "Tokens by kind", (*labels, "kind"), registry=reg),
            cost=Counter("tiergate_cost_usd", "Spend in USD", labels, registry=reg),
            baseline_cost=Counter(
                "tiergate_baseline_cost_usd",
                "Spend had every request gone to its requested model",
                labels,
                registry=reg,
            ),
            ledger_pending=Gauge(
                "tiergate_ledger_pending_records", "Ledger records not yet written", registry=reg
            ),
            redis_degraded=Gauge(
                "tiergate_redis_degraded", "1 while Redis is configured but unreachable", registry=reg
            ),
            ledger_dead_lettered=Counter(
                "tiergate_ledger_dead_lettered",
                "Ledger records the store refused, kept in ledger_dead_letters",
                registry=reg,
            ),
            ledger_lost=Counter(
                "tiergate_ledger_lost",
                "Ledger records not stored (queue full, or store and dead-letter table both failed)",
                registry=reg,
            ),
            ledger_degraded=Gauge(
                "tiergate_ledger_degraded",
                "1 while the ledger is refusing, losing or holding records",
                registry=reg,
            ),
            capture_dropped=Counter(
                "tiergate_capture_dropped_turns",
                "Captured conversation turns not stored (queue full, or the store refused them); requests unaffected",
                registry=reg,
            ),
            max_workflows=max_workflows,
        )
