"""Compile proposals: when a stable workflow passes its payback point, raise one, and record the decision.

    statuses = workflow_statuses(engine, cfg, settings)     # payback + stability per workflow, one query
    raise_due(engine, cfg, settings)                        # -> ids of proposals raised now
    approve(engine, 3, by="ana", settings=settings, cfg=cfg)   # -> (proposal, job) dicts; the job is queued
    reject(engine, 4, by="ana", note="not this quarter")

One proposal per threshold crossing: a crossing is the pair (workflow, stable prompt fingerprint), and
the store's unique constraint on that pair makes a duplicate impossible even with several gateways.
Drift (a new fingerprint) resets the stability window; on a compiled workflow it rolls the route back
to the frontier and, once the new prompt is stable, raises a `recompile` proposal.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, insert, select, update
from sqlalchemy.exc import IntegrityError

from gateway.errors import Conflict, InvalidRequest, NotFound
from gateway.loop.payback import LoopConfig, Payback, WorkflowUsage, payback
from gateway.loop.rollup import totals
from gateway.proxy.defaults import resolve
from gateway.settings import Settings
from gateway.store.loop_schema import jobs, proposals, routes
from gateway.store.money import is_client

MIN_SPAN_S = 60.0  # a rate measured over less than a minute is noise; floor the span


@dataclass(frozen=True)
class Stability:
    fingerprint: str | None
    stable_since: float | None
    stable: bool
    fingerprints: int  # how many prompt versions the ledger has seen for this workflow


@dataclass(frozen=True)
class WorkflowStatus:
    workflow: str
    stability: Stability
    payback: Payback
    mode: str  # route mode: frontier, canary, compiled
    proposal: dict[str, Any] | None  # the proposal for the current fingerprint, if any
    cannot_compile: str | None = None  # why no proposal is raised for it (`compile_source`), or None

    def as_dict(self) -> dict[str, Any]:
        return {
            "workflow": self.workflow,
            "stability": asdict(self.stability),
            "payback": self.payback.as_dict(),
            "mode": self.mode,
            "proposal": self.proposal,
            "cannot_compile": self.cannot_compile,
        }


@dataclass(frozen=True)
class CompileSource:
    """What a compile of a workflow starts from: its flowchart, its captured traffic, or nothing (and why)."""

    flowchart: Path | None = None
    from_traffic: bool = False
    why_not: str | None = None


def compile_source(engine: Engine, settings: Settings, cfg: LoopConfig, workflow: str) -> CompileSource:
    """The one test of "can this workflow be compiled": proposals are raised, shown and approved by it.

    A workflow compiles from the flowchart its config entry names, else from its captured conversations
    once there are `loop.min_captured_conversations` of them; otherwise `why_not` says what is missing.
    """
    wf = settings.workflow(workflow)
    if wf is not None and wf.flowchart:
        flowchart = Path(wf.flowchart)
        if not flowchart.is_file():
            return CompileSource(why_not=f"The flowchart `{flowchart}` of workflow `{workflow}` does not exist; "
                                 "fix its path.")
        return CompileSource(flowchart=flowchart.resolve())
    attached = cfg.attached_flowchart(workflow)  # a mined chart a person reviewed and attached from the page
    if attached.is_file():
        return CompileSource(flowchart=attached)
    captured = captured_conversations(engine, workflow)
    if captured < cfg.min_captured_conversations:
        return CompileSource(why_not=(
            f"Workflow `{workflow}` has no flowchart in {settings.source} and {captured} captured conversations; "
            f"mining its procedure needs {cfg.min_captured_conversations} (loop.min_captured_conversations). "
            "Keep capture on, or add `flowchart: PATH` under `workflows:`."))
    return CompileSource(from_traffic=True)


def _fingerprint_groups(engine: Engine, workflow: str | None = None) -> dict[str, list[dict[str, Any]]]:
    """Per workflow and prompt fingerprint: traffic sums (hourly rollup + live tail, see gateway.loop.rollup).

    Cost is everything spent, shadow calls included; requests and tokens are the clients' own, since
    they are what a compiled model would serve.
    """
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for row in totals(engine, ("workflow", "fingerprint", "tier"), workflow=workflow):
        g = groups.setdefault((row["workflow"], row["fingerprint"]), {
            "workflow": row["workflow"], "prompt_fingerprint": row["fingerprint"], "requests": 0, "conversations": 0,
            "cost_usd": 0.0, "prompt_tokens": 0, "completion_tokens": 0, "min_first_prompt": None,
            "first_ts": row["first_ts"], "last_ts": row["last_ts"],
        })
        g["cost_usd"] += row["cost_ok"]
        g["first_ts"] = min(g["first_ts"], row["first_ts"])
        g["last_ts"] = max(g["last_ts"], row["last_ts"])
        if not is_client(row["tier"]):  # shadow labels and canary comparisons: spend, not requests
            continue
        g["requests"] += row["requests"]
        g["conversations"] += row["conversations"]
        g["prompt_tokens"] += row["prompt_ok"]
        g["completion_tokens"] += row["completion_ok"]
        if row["min_first_prompt"] is not None:
            g["min_first_prompt"] = min(row["min_first_prompt"], g["min_first_prompt"] or row["min_first_prompt"])
    out: dict[str, list[dict[str, Any]]] = {}
    for g in groups.values():
        out.setdefault(g["workflow"], []).append(g)
    return out


def stability_of(groups: list[dict[str, Any]], window_s: float, now: float) -> Stability:
    """The current prompt is the one seen last; it is stable once no other was seen for `window_s`."""
    if not groups:
        return Stability(None, None, False, 0)
    current = max(groups, key=lambda g: g["last_ts"])
    others_last = max((g["last_ts"] for g in groups if g is not current), default=None)
    since = current["first_ts"] if others_last is None else max(current["first_ts"], others_last)
    return Stability(current["prompt_fingerprint"], since, now - since >= window_s, len(groups))


def usage_of(group: dict[str, Any], static_prompt_tokens: int | None) -> WorkflowUsage:
    """Plain numbers for `payback()`; the static prompt defaults to the smallest first-turn prompt."""
    static = static_prompt_tokens if static_prompt_tokens is not None else int(group["min_first_prompt"] or 0)
    span = max(MIN_SPAN_S, float(group["last_ts"]) - float(group["first_ts"]))
    return WorkflowUsage(
        conversations=int(group["conversations"]),
        requests=int(group["requests"]),
        cost_usd=float(group["cost_usd"]),
        prompt_tokens=int(group["prompt_tokens"]),
        completion_tokens=int(group["completion_tokens"]),
        static_prompt_tokens=static,
        days=span / 86400.0,
    )




def _proposal_row(row: Any) -> dict[str, Any]:
    d = dict(row)
    d["numbers"] = json.loads(d["numbers"]) if d.get("numbers") else {}
    return d


def workflow_statuses(
    engine: Engine, cfg: LoopConfig, settings: Settings | None = None, *, workflow: str | None = None,
    now: float | None = None,
) -> list[WorkflowStatus]:
    now = time.time() if now is None else now
    groups = _fingerprint_groups(engine, workflow)
    with engine.connect() as conn:
        modes = {r.workflow: r.mode for r in conn.execute(select(routes.c.workflow, routes.c.mode))}
        props = {
            (r["workflow"], r["fingerprint"]): _proposal_row(r)
            for r in conn.execute(select(proposals)).mappings()
        }
    out = []
    for wf, gs in sorted(groups.items()):
        stab = stability_of(gs, cfg.stability_window_s, now)
        current = next(g for g in gs if g["prompt_fingerprint"] == stab.fingerprint)
        pb = payback(usage_of(current, cfg.static_prompt_tokens.get(wf)), cfg)
        why_not = compile_source(engine, settings, cfg, wf).why_not if settings is not None else None
        out.append(WorkflowStatus(wf, stab, pb, modes.get(wf, "frontier"), props.get((wf, stab.fingerprint or "")),
                                  why_not))
    return out


def raise_due(engine: Engine, cfg: LoopConfig, settings: Settings | None = None, *, now: float | None = None) -> list[int]:
    """Raise a proposal for every stable workflow past its threshold that has none for its prompt."""
    now = time.time() if now is None else now
    raised = []
    with engine.connect() as conn:
        compiled_fp = {r.workflow: r.fingerprint for r in conn.execute(
            select(routes.c.workflow, routes.c.fingerprint).where(routes.c.mode != "frontier"))}
        built_fp = {r.workflow: r.fingerprint for r in conn.execute(
            select(routes.c.workflow, routes.c.fingerprint).where(routes.c.fingerprint.is_not(None)))}
    for st in workflow_statuses(engine, cfg, settings, now=now):
        if not st.stability.stable or st.stability.fingerprint is None or st.proposal is not None:
            continue
        if settings is not None and not resolve(settings, st.workflow).propose:
            continue  # `propose: false` in `defaults:` or the workflow's entry
        if st.cannot_compile is not None:
            continue  # nothing to compile it from: the pages say why (`compile_source`)
        fp = st.stability.fingerprint
        if compiled_fp.get(st.workflow) == fp:
            continue  # already compiled for this very prompt
        recompile = st.workflow in built_fp and built_fp[st.workflow] != fp
        if not recompile and not st.payback.due:
            continue
        try:
            with engine.begin() as conn:
                res = conn.execute(insert(proposals).values(
                    workflow=st.workflow, fingerprint=fp, kind="recompile" if recompile else "compile",
                    status="open", created=now, numbers=json.dumps(st.payback.as_dict()),
                ))
                raised.append(int(res.inserted_primary_key[0]))  # type: ignore[index]
        except IntegrityError:
            continue  # another gateway raised it a moment ago
    return raised


def list_proposals(engine: Engine, status: str | None = None) -> list[dict[str, Any]]:
    stmt = select(proposals).order_by(proposals.c.id.desc())
    if status:
        stmt = stmt.where(proposals.c.status == status)
    with engine.connect() as conn:
        return [_proposal_row(r) for r in conn.execute(stmt).mappings()]


def get_proposal(engine: Engine, proposal_id: int) -> dict[str, Any]:
    with engine.connect() as conn:
        row = conn.execute(select(proposals).where(proposals.c.id == proposal_id)).mappings().first()
    if row is None:
        raise NotFound(f"No proposal `{proposal_id}`; list them with GET /api/proposals or `tiergate proposals`.")
    return _proposal_row(row)


def _decide(conn: Any, proposal_id: int, status: str, by: str, note: str | None, now: float) -> dict[str, Any]:
    row = conn.execute(select(proposals).where(proposals.c.id == proposal_id)).mappings().first()
    if row is None:
        raise NotFound(f"No proposal `{proposal_id}`; list them with GET /api/proposals or `tiergate proposals`.")
    if row["status"] != "open":
        raise Conflict(
            f"Proposal `{proposal_id}` was already {row['status']} by {row['decided_by']}; "
            "only open proposals can be decided."
        )
    done = conn.execute(
        update(proposals)
        .where(proposals.c.id == proposal_id, proposals.c.status == "open")
        .values(status=status, decided_by=by, decided_at=now, note=note)
    )
    if done.rowcount != 1:
        raise Conflict(f"Proposal `{proposal_id}` was decided by someone else just now; reload it.")
    return _proposal_row(dict(row) | {"status": status, "decided_by": by, "decided_at": now, "note": note})


def reject(engine: Engine, proposal_id: int, *, by: str, note: str | None = None) -> dict[str, Any]:
    with engine.begin() as conn:
        return _decide(conn, proposal_id, "rejected", by, note, time.time())


def approve(
    engine: Engine, proposal_id: int, *, by: str, settings: Settings, cfg: LoopConfig, note: str | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Mark the proposal approved and queue its compile job in one transaction; the loop starts it."""
    now = time.time()
    prop = get_proposal(engine, proposal_id)
    if prop["status"] != "open":
        raise Conflict(
            f"Proposal `{proposal_id}` was already {prop['status']} by {prop['decided_by']}; "
            "only open proposals can be decided."
        )
    name = prop["workflow"]
    source = compile_source(engine, settings, cfg, name)
    if source.why_not is not None:
        raise InvalidRequest(f"{source.why_not} Then approve again.")
    # no flowchart: the job mines the workflow's captured conversations (`compile --from-traffic`)
    chart = str(source.flowchart) if source.flowchart is not None else ""
    out_dir = Path(cfg.jobs_dir).resolve() / f"{_safe(name)}-p{proposal_id}"
    try:
        with engine.begin() as conn:
            decided = _decide(conn, proposal_id, "approved", by, note, now)
            res = conn.execute(insert(jobs).values(
                workflow=name, proposal_id=proposal_id, state="queued", progress=0.0,
                detail=json.dumps({"source": "flowchart" if chart else "traffic"}),
                out_dir=str(out_dir), flowchart=chart, attempts=0, created=now, updated=now,
            ))
            job_id = int(res.inserted_primary_key[0])  # type: ignore[index]
    except IntegrityError:
        raise Conflict(
            f"A compile job for `{name}` is already running; wait for it (GET /api/jobs) before approving another."
        ) from None
    from gateway.loop.jobs import get_job

    return decided, get_job(engine, job_id)


def captured_conversations(engine: Engine, workflow: str) -> int:
    """Conversations capture holds for the workflow (what a compile without a flowchart mines)."""
    from sqlalchemy import func

    from gateway.store.schema import transcripts

    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(transcripts)
                                .where(transcripts.c.workflow == workflow)).scalar() or 0)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:80]
