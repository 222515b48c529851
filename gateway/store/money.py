"""Where the money went: one definition of each rung's saving, for the dashboard, /api/workflows and the CLI.

    select(KIND.label("kind"), func.sum(R.c.cost_usd), ...).group_by(KIND)   # the ledger by kind of row
    rungs = savings_by_rung([{"kind": "routed", "cost": 0.01, "baseline": 0.05, "trim_saved": 0.002}, ...])
    rungs["routing"], rungs["trimming"], rungs["compile"], rungs["shadow_labels"], rungs["fallbacks"]
    usd(-0.00042)  # '-$0.00042'

Every ledger row is of one kind (`KIND`): a client request served as planned (`frontier`, `routed`,
`compiled`), a client request a fallback model answered (`fallback`, marked by the request path's
`route_reason` prefix `FALLBACK`), a shadow call that labels routing (`shadow`), or a canary
comparison that checks a compiled model (`comparison`). From the sums per kind (docs/ledger.md,
"Where the money went"):

- trimming: the removed tokens at the served model's price (`trim_saved_usd`), on every client row but
  compiled ones (a compiled request's shorter prompt is compile's saving);
- routing: frontier and routed rows' baseline minus cost, less trimming's share. A cascade's failed
  cheap answer is paid by the request it escalated, so it lands here, as routing's cost;
- compile: compiled rows' baseline minus cost, minus the canary comparisons that check them;
- shadow labels: minus the cost of the shadow calls, the price of learning to route;
- fallbacks: fallback rows' baseline minus cost, less trimming's share: no rung chose that model.

The five add up to baseline minus spend (side calls have a baseline of 0), so the headline saving and
its split never disagree.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import and_, case, literal_column

from gateway.store.schema import requests as R

FALLBACK = "fallback from "  # route_reason prefix the request path writes when a fallback model answered
COMPARISON = "canary comparison"  # route_reason prefix of a canary's sampled comparison (proxy/learn.py)
RUNGS = ("routing", "trimming", "compile", "shadow_labels", "fallbacks")
SIDE_KINDS = frozenset({"shadow", "comparison"})  # calls no client asked for: spend, but not requests



def _sql(text: str) -> Any:
    # literals, not bound parameters: PostgreSQL matches a GROUP BY expression to the SELECT's only when
    # both are spelled the same, and two bound parameters ($1, $5) are not
    return literal_column("'" + text.replace("'", "''") + "'")


KIND = case(
    (and_(R.c.tier == _sql("shadow"), R.c.route_reason.like(_sql(COMPARISON + "%"))), _sql("comparison")),
    (R.c.tier == _sql("shadow"), _sql("shadow")),
    (R.c.route_reason.like(_sql(FALLBACK + "%")), _sql("fallback")),
    else_=R.c.tier,
)

# the dashboard's "route reasons": side calls grouped by what they are for, not one row per request
REASON = case(
    (R.c.route_reason.like(_sql(COMPARISON + "%")), _sql("canary comparison (checks the compiled model)")),
    (R.c.route_reason.like(_sql("shadow of %")), _sql("shadow label (learning to route)")),
    else_=R.c.route_reason,
)


def is_client(kind: str) -> bool:
    """A row a client asked for (any tier, fallbacks included), not a side call."""
    return kind not in SIDE_KINDS


def savings_by_rung(rows: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """Each rung's saving in USD from sums per kind: `kind`, `cost`, `baseline`, `trim_saved` per row."""
    out = dict.fromkeys(RUNGS, 0.0)
    for r in rows:
        kind = r["kind"]
        cost, baseline, trim = float(r["cost"] or 0), float(r["baseline"] or 0), float(r["trim_saved"] or 0)
        if kind == "shadow":
            out["shadow_labels"] -= cost
        elif kind == "comparison":
            out["compile"] -= cost
        elif kind == "compiled":
            out["compile"] += baseline - cost
        elif kind == "fallback":
            out["trimming"] += trim
            out["fallbacks"] += baseline - cost - trim
        else:  # frontier, routed
            out["trimming"] += trim
            out["routing"] += baseline - cost - trim
    return {k: _clean(v) for k, v in out.items()}


def _clean(v: float) -> float:
    """Float noise (1e-17 from subtracting equal sums) is zero, so it never prints as a negative."""
    return 0.0 if abs(v) < 1e-12 else v


def usd(v: float | None) -> str:
    """Dollars with enough digits to tell small amounts apart, and a sign when negative.

    `usd(1234.5)` '$1,234', `usd(12.345)` '$12.35', `usd(0.5)` '$0.50', `usd(0.00123)` '$0.00123',
    `usd(-0.02)` '-$0.02', `usd(None)` '-'.
    """
    if v is None:
        return "-"
    v = float(v)
    a = abs(v)
    if a < 5e-9:
        return "$0.00"
    sign = "-" if v < 0 else ""
    if a >= 100:
        return f"{sign}${a:,.0f}"
    if a >= 1:
        return f"{sign}${a:,.2f}"
    decimals = max(2, 2 - math.floor(math.log10(a)))  # three significant digits
    text = f"{a:.{decimals}f}"
    while text.endswith("0") and len(text.split(".")[1]) > 2:
        text = text[:-1]
    return f"{sign}${text}"
