"""Prometheus metrics, in a registry per app (no module-level global state)."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

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

    @classmethod
    def create(cls) -> Metrics:
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
        )
