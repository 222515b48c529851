"""Read-back of the ledger, aggregated in SQL (the store may hold millions of records).

workflow_summaries(engine)            # one dict per workflow
conversations(engine, "travel-booking", limit=50)
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import Engine, and_, case, func, select

from gateway.store.money import KIND, savings_by_rung
from gateway.store.schema import requests as R


def _percentiles(engine: Engine, ps: tuple[tuple[int, int], ...]) -> dict[str, dict[float, float]]:
    """Per-workflow latency percentiles (nearest rank), with window functions SQLite and PostgreSQL share.

    Each p is a fraction a/b so the rank ceil(n*a/b) stays in integer arithmetic, (n*a + b - 1) // b:
    SQLite may lack ceil().
    """
    ranked = select(
        R.c.workflow,
        R.c.latency_ms,
        func.row_number().over(partition_by=R.c.workflow, order_by=R.c.latency_ms).label("rn"),
        func.count().over(partition_by=R.c.workflow).label("n"),
    ).subquery()
    out: dict[str, dict[float, float]] = {}
    with engine.connect() as conn:
        for a, b in ps:
            target = (ranked.c.n * a + (b - 1)) // b
            rows = conn.execute(
                select(ranked.c.workflow, ranked.c.latency_ms).where(ranked.c.rn == target)
            ).all()
            for wf, value in rows:
                out.setdefault(wf, {})[a / b] = float(value)
    return out


def workflow_summaries(engine: Engine) -> list[dict[str, Any]]:
    """Per workflow. Side calls (shadow labels, canary comparisons) count in cost, not in requests.

    `savings_by_rung` splits `savings_usd` as the dashboard does (gateway/store/money.py).
    """
    ok = R.c.status < 400
    client = R.c.tier != "shadow"
    stmt = (
        select(
            R.c.workflow,
            func.sum(case((client, 1), else_=0)).label("requests"),
            func.sum(case((R.c.tier == "routed", 1), else_=0)).label("routed_requests"),
            func.coalesce(func.sum(case((R.c.tier == "shadow", R.c.cost_usd), else_=0.0)), 0.0).label(
                "shadow_cost_usd"
            ),
            func.coalesce(func.sum(R.c.trim_saved_usd), 0.0).label("trim_savings_usd"),
            func.coalesce(
                func.sum(case((client, R.c.prompt_tokens_before_trim - R.c.prompt_tokens), else_=0)), 0
            ).label("trimmed_prompt_tokens"),
            func.sum(case((ok, 0), else_=1)).label("errors"),
            func.count(func.distinct(R.c.conversation)).label("conversations"),
            func.coalesce(func.sum(R.c.prompt_tokens), 0).label("prompt_tokens"),
            func.coalesce(func.sum(R.c.completion_tokens), 0).label("completion_tokens"),
            func.coalesce(func.sum(R.c.cached_tokens), 0).label("cached_tokens"),
            func.coalesce(func.sum(R.c.cost_usd), 0.0).label("cost_usd"),
            func.coalesce(func.sum(R.c.baseline_cost_usd), 0.0).label("baseline_cost_usd"),
            func.min(R.c.ts).label("first_seen"),
            func.max(R.c.ts).label("last_seen"),
        )
        .group_by(R.c.workflow)
        .order_by(func.sum(R.c.cost_usd).desc(), R.c.workflow)
    )
    with engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(stmt).mappings()]
    pct = _percentiles(engine, ((1, 2), (19, 20)))
    by_kind = _sums_by_kind(engine)
    for r in rows:
        r["savings_usd"] = r["baseline_cost_usd"] - r["cost_usd"]
        # one definition of each rung's share, shared with the dashboard (gateway/store/money.py)
        rungs = savings_by_rung(by_kind.get(r["workflow"], []))
        r["savings_by_rung"] = rungs
        r["routing_savings_usd"] = rungs["routing"]
        r["trim_savings_usd"] = rungs["trimming"]
        r["p50_latency_ms"] = pct.get(r["workflow"], {}).get(0.5)
        r["p95_latency_ms"] = pct.get(r["workflow"], {}).get(0.95)
        r["id"] = r["workflow"]
    return rows


def _sums_by_kind(engine: Engine) -> dict[str, list[dict[str, Any]]]:
    stmt = select(
        R.c.workflow,
        KIND.label("kind"),
        func.coalesce(func.sum(R.c.cost_usd), 0.0).label("cost"),
        func.coalesce(func.sum(R.c.baseline_cost_usd), 0.0).label("baseline"),
        func.coalesce(func.sum(R.c.trim_saved_usd), 0.0).label("trim_saved"),
    ).group_by(R.c.workflow, KIND)
    out: dict[str, list[dict[str, Any]]] = {}
    with engine.connect() as conn:
        for row in conn.execute(stmt).mappings():
            out.setdefault(row["workflow"], []).append(dict(row))
    return out


def conversations(
    engine: Engine, workflow: str, *, limit: int = 100, offset: int = 0
) -> list[dict[str, Any]]:
    stmt = (
        select(
            R.c.conversation,
            func.count().label("requests"),
            func.max(R.c.turn).label("turns"),
            func.coalesce(func.sum(R.c.prompt_tokens), 0).label("prompt_tokens"),
            func.coalesce(func.sum(R.c.completion_tokens), 0).label("completion_tokens"),
            func.coalesce(func.sum(R.c.cost_usd), 0.0).label("cost_usd"),
            func.coalesce(func.sum(R.c.baseline_cost_usd), 0.0).label("baseline_cost_usd"),
            func.min(R.c.ts).label("started"),
            func.max(R.c.ts).label("last_seen"),
        )
        .where(R.c.workflow == workflow)
        .group_by(R.c.conversation)
        .order_by(func.max(R.c.ts).desc())
        .limit(limit)
        .offset(offset)
    )
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(stmt).mappings()]


def workflow_exists(engine: Engine, workflow: str) -> bool:
    with engine.connect() as conn:
        return conn.execute(select(R.c.id).where(R.c.workflow == workflow).limit(1)).first() is not None


def month_spend(engine: Engine, key_id: str) -> float:
    t = time.gmtime()
    start = time.mktime((t.tm_year, t.tm_mon, 1, 0, 0, 0, 0, 0, 0)) - time.timezone
    with engine.connect() as conn:
        value = conn.execute(
            select(func.coalesce(func.sum(R.c.cost_usd), 0.0)).where(
                and_(R.c.key_id == key_id, R.c.ts >= start)
            )
        ).scalar_one()
    return float(value)
