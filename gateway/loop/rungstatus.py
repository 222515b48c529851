"""Which rungs are active for each workflow, and why: default, configured, off, or not enough traffic yet.

    for wf in rung_status(engine, settings):      # every workflow in the ledger, plus the listed ones
        wf["workflow"], wf["rungs"]["trim"]       # {"state": "waiting", "why": "not enough traffic yet: 12 of 50 requests"}

States: `on` (applies now), `waiting` (on, but the workflow has not had the traffic the rung needs),
`off`. The dashboard and `tiergate workflows` print these; the numbers come from the ledger and the
transcript table, the settings from `gateway.proxy.defaults.resolve` (the same the request path uses).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, case, func, select

from gateway.loop.payback import LoopConfig
from gateway.proxy.defaults import resolve
from gateway.settings import Settings
from gateway.store.schema import requests as R
from gateway.store.schema import route_labels
from gateway.store.schema import transcripts as T

RUNG_TITLES = {"route": "routing", "trim": "trimming", "propose": "compile proposals", "capture": "capture"}


def _counts(engine: Engine) -> dict[str, dict[str, int]]:
    with engine.connect() as conn:
        out: dict[str, dict[str, int]] = {}
        for r in conn.execute(
            select(
                R.c.workflow,
                func.sum(case((R.c.tier != "shadow", 1), else_=0)),
                func.count(func.distinct(R.c.conversation)),
            ).group_by(R.c.workflow)
        ):
            out[r[0]] = {"requests": int(r[1] or 0), "conversations": int(r[2] or 0), "labels": 0, "captured": 0}
        for wf, n in conn.execute(select(route_labels.c.workflow, func.count()).group_by(route_labels.c.workflow)):
            out.setdefault(wf, {"requests": 0, "conversations": 0, "labels": 0, "captured": 0})["labels"] = int(n)
        for wf, n in conn.execute(select(T.c.workflow, func.count()).group_by(T.c.workflow)):
            out.setdefault(wf, {"requests": 0, "conversations": 0, "labels": 0, "captured": 0})["captured"] = int(n)
    return out


def describe(settings: Settings, name: str, counts: dict[str, int], min_conversations: int) -> dict[str, Any]:
    """One workflow's rungs: {rung: {"state", "why"}} from its settings and its traffic so far."""
    rs = resolve(settings, name)
    rungs: dict[str, dict[str, str]] = {}

    def put(rung: str, state: str, why: str) -> None:
        rungs[rung] = {"state": state, "why": why}

    if rs.policy is None:
        put("route", "off", rs.why["route"].removeprefix("off: "))
    elif rs.policy.kind == "learned" and counts["labels"] < rs.policy.min_labels:
        put("route", "waiting", f"{rs.why['route']}; not enough traffic yet: {counts['labels']} of "
            f"{rs.policy.min_labels} shadow labels to {rs.policy.cheap}")
    else:
        put("route", "on", f"{rs.why['route']}: {rs.policy.kind} to {rs.policy.cheap}")
    if rs.trim is None:
        put("trim", "off", rs.why["trim"])
    elif counts["requests"] < rs.trim.min_requests:
        put("trim", "waiting", f"{rs.why['trim']}; not enough traffic yet: {counts['requests']} of "
            f"{rs.trim.min_requests} requests")
    else:
        put("trim", "on", rs.why["trim"])
    if not rs.propose:
        put("propose", "off", rs.why["propose"])
    elif counts["conversations"] < min_conversations:
        put("propose", "waiting", f"{rs.why['propose']}; not enough traffic yet: {counts['conversations']} of "
            f"{min_conversations} conversations")
    else:
        put("propose", "on", f"{rs.why['propose']}; raised when the payback point is passed")
    cap = rs.capture
    if not cap.enabled:
        put("capture", "off", rs.why["capture"])
    else:
        keep = [f"{cap.retention_days:g} days" if cap.retention_days else "",
                f"latest {cap.max_conversations}" if cap.max_conversations else ""]
        kept = " and ".join(k for k in keep if k) or "forever"
        put("capture", "on", f"{rs.why['capture']}; {counts['captured']} conversations kept ({kept})")
    return {"workflow": name, "listed": rs.listed, "rungs": rungs}


def rung_status(engine: Engine, settings: Settings, workflows: list[str] | None = None) -> list[dict[str, Any]]:
    """Every workflow seen in the ledger (or those named), plus every listed one, with its rungs."""
    counts = _counts(engine)
    names = workflows if workflows is not None else sorted(set(counts) | {w.name for w in settings.workflows})
    empty = {"requests": 0, "conversations": 0, "labels": 0, "captured": 0}
    floor = LoopConfig.from_dict(settings.loop).min_conversations
    return [describe(settings, n, counts.get(n, empty), floor) for n in names]
