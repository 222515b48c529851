"""Hourly sums of the ledger, so the dashboard and the threshold checks stay fast over millions of records.

    advance(engine)                                    # the loop folds finished hours in, once per pass
    totals(engine, ("workflow", "fingerprint"))        # rollup + live tail, summed by those dimensions

Why: grouping a million ledger rows takes seconds on SQLite (measured 1.4 to 3.3 s per query on this
machine), and the loop checks thresholds every second. Finished hours are summed once into
`loop_rollup`; only the rows after the watermark (`loop_meta.rollup_until`) are read live, through an
index on `requests.ts`. The watermark trails the clock by `LAG_S` so a request whose record is written
late (a long stream is logged when it ends) still lands before its hour is folded.

Conversations are counted as first turns (each conversation has exactly one), which adds up across
hours where COUNT(DISTINCT) would not. The `tier` dimension is the row's kind (`gateway.store.money.KIND`):
the ledger's tier, with fallbacks, shadow labels and canary comparisons told apart, so readers leave side
calls (real spend, not client requests: `money.is_client`) out of request counts and split savings by
rung with `money.savings_by_rung`. Hours folded before kinds existed hold plain tiers (comparisons as
`shadow`, fallbacks under their tier).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from typing import Any

from sqlalchemy import Engine, Index, and_, case, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from gateway.store.loop_schema import meta, rollup
from gateway.store.money import KIND
from gateway.store.schema import requests as R

LAG_S = 900.0
HOUR = 3600.0
WATERMARK = "rollup_until"
DIMS = ("workflow", "fingerprint", "tier", "requested_model", "hour")
SUMS = ("requests", "conversations", "errors", "cost", "baseline", "cost_ok", "prompt_ok", "completion_ok", "trimmed",
        "trim_saved")

# declared here too so the metadata matches what migration 0002 creates on the ledger's table
Index("ix_requests_ts", R.c.ts)


def _ledger_columns(hour_width: float = HOUR) -> dict[str, Any]:
    ok = R.c.status < 400
    trimmed = R.c.prompt_tokens_before_trim - R.c.prompt_tokens
    return {
        "workflow": R.c.workflow,
        "fingerprint": func.coalesce(R.c.prompt_fingerprint, ""),
        "tier": KIND,
        "requested_model": R.c.requested_model,
        # an integer cast, not floor(): SQLite builds often lack floor(); a bucket is a group, not a boundary
        "hour": func.cast(R.c.ts / hour_width, R.c.turn.type) * hour_width,
    } | {
        "requests": func.count(),
        # shadow calls (the router learning) repeat a client request's turn: not a conversation of their own
        "conversations": func.coalesce(func.sum(case((and_(R.c.turn == 1, R.c.tier != "shadow"), 1), else_=0)), 0),
        "errors": func.coalesce(func.sum(case((ok, 0), else_=1)), 0),
        "cost": func.coalesce(func.sum(R.c.cost_usd), 0.0),
        "baseline": func.coalesce(func.sum(R.c.baseline_cost_usd), 0.0),
        "cost_ok": func.coalesce(func.sum(case((ok, R.c.cost_usd), else_=0.0)), 0.0),
        "prompt_ok": func.coalesce(func.sum(case((ok, R.c.prompt_tokens), else_=0)), 0),
        "completion_ok": func.coalesce(func.sum(case((ok, R.c.completion_tokens), else_=0)), 0),
        "trimmed": func.coalesce(func.sum(case((trimmed > 0, trimmed), else_=0)), 0),
        "trim_saved": func.coalesce(func.sum(R.c.trim_saved_usd), 0.0),
        "min_first_prompt": func.min(case((R.c.turn == 1, R.c.prompt_tokens))),
        "first_ts": func.min(R.c.ts),
        "last_ts": func.max(R.c.ts),
    }


def watermark(engine: Engine) -> float:
    with engine.connect() as conn:
        value = conn.execute(select(meta.c.value).where(meta.c.key == WATERMARK)).scalar()
    return float(value) if value is not None else 0.0


def advance(engine: Engine, now: float | None = None, lag_s: float = LAG_S) -> int:
    """Fold the finished hours before `now - lag_s` into the rollup; returns the rollup rows added.

    Safe with several gateways: the watermark moves with a compare-and-set in the same transaction as
    the insert, so a pass that lost the race adds nothing.
    """
    now = time.time() if now is None else now
    old = watermark(engine)
    new = math.floor((now - lag_s) / HOUR) * HOUR
    if new <= old:
        return 0
    cols = _ledger_columns()
    dims = [cols[d] for d in DIMS]
    stmt = select(*[c.label(n) for n, c in cols.items()]).where(R.c.ts >= old, R.c.ts < new).group_by(*dims)
    try:
        with engine.begin() as conn:
            rows = [dict(r) for r in conn.execute(stmt).mappings()]
            if old == 0.0 and conn.execute(select(meta.c.key).where(meta.c.key == WATERMARK)).first() is None:
                conn.execute(insert(meta).values(key=WATERMARK, value=new))
            else:
                moved = conn.execute(update(meta).where(meta.c.key == WATERMARK, meta.c.value == old).values(value=new))
                if moved.rowcount != 1:
                    raise _Lost
            if rows:
                conn.execute(insert(rollup), rows)
    except (_Lost, IntegrityError):
        return 0  # another gateway advanced it first
    return len(rows)


class _Lost(Exception):
    """Another process moved the watermark first; this pass's transaction rolls back."""


def totals(
    engine: Engine, by: Iterable[str], *, workflow: str | None = None, since: float | None = None
) -> list[dict[str, Any]]:
    """Sums by the given dimensions (of DIMS) over the whole ledger: rollup rows plus the live tail."""
    by = tuple(by)
    unknown = set(by) - set(DIMS)
    if unknown:
        raise ValueError(f"cannot group by `{sorted(unknown)[0]}`; use some of {', '.join(DIMS)}")
    wm = watermark(engine)
    rollup_stmt = select(
        *[rollup.c[d].label(d) for d in by],
        *[func.sum(rollup.c[s]).label(s) for s in SUMS],
        func.min(rollup.c.min_first_prompt).label("min_first_prompt"),
        func.min(rollup.c.first_ts).label("first_ts"),
        func.max(rollup.c.last_ts).label("last_ts"),
    )
    if by:
        rollup_stmt = rollup_stmt.group_by(*[rollup.c[d] for d in by])
    cols = _ledger_columns()
    live_stmt = select(*[cols[d].label(d) for d in by], *[cols[n].label(n) for n in (*SUMS, "min_first_prompt",
                                                                                      "first_ts", "last_ts")])
    live_stmt = live_stmt.where(R.c.ts >= wm)
    if by:
        live_stmt = live_stmt.group_by(*[cols[d] for d in by])
    if workflow is not None:
        rollup_stmt = rollup_stmt.where(rollup.c.workflow == workflow)
        live_stmt = live_stmt.where(R.c.workflow == workflow)
    if since is not None:
        rollup_stmt = rollup_stmt.where(rollup.c.last_ts >= since)
        live_stmt = live_stmt.where(R.c.ts >= since)
    merged: dict[tuple[Any, ...], dict[str, Any]] = {}
    with engine.connect() as conn:
        parts = [conn.execute(rollup_stmt).mappings().all()] if wm > 0 else []
        parts.append(conn.execute(live_stmt).mappings().all())
    for part in parts:
        for row in part:
            if row["first_ts"] is None:
                continue  # an empty aggregate (no rows at all)
            key = tuple(row[d] for d in by)
            cur = merged.get(key)
            if cur is None:
                merged[key] = dict(row)
                continue
            for s in SUMS:
                cur[s] = (cur[s] or 0) + (row[s] or 0)
            for k, pick in (("min_first_prompt", min), ("first_ts", min), ("last_ts", max)):
                vals = [v for v in (cur[k], row[k]) if v is not None]
                cur[k] = pick(vals) if vals else None
    return list(merged.values())

