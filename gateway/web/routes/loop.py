"""The loop's JSON API under /api/: proposals and decisions, compile jobs, route state and rollback.

    GET  /api/proposals[?status=open]            POST /api/proposals/{id}/approve   {"by": "ana"}
    GET  /api/jobs[?workflow=w]                  POST /api/proposals/{id}/reject    {"by": "ana", "note": "..."}
    GET  /api/jobs/{id}                          GET  /api/workflows/{id}/route
    GET  /api/workflows/{id}/payback             POST /api/workflows/{id}/rollback  {"by": "ana", "reason": "..."}
    POST /api/workflows/{id}/samples  {"conversation": "c1", "score": 0.93}   (sampled comparisons)

Guarded by the admin key like the rest of /api/.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from gateway.errors import NotFound
from gateway.loop import canary
from gateway.loop.jobs import get_job, list_jobs
from gateway.loop.payback import LoopConfig
from gateway.loop.proposals import approve, list_proposals, reject, workflow_statuses
from gateway.web.deps import Admin, State

router = APIRouter(prefix="/api", dependencies=[Admin])


class Decision(BaseModel):
    model_config = ConfigDict(extra="forbid")

    by: str = Field(default="api", min_length=1, max_length=200, description="who decides, recorded with the time")
    note: str | None = Field(default=None, max_length=2000)


class RollbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    by: str = Field(default="api", min_length=1, max_length=200)
    reason: str = Field(default="manual rollback", min_length=1, max_length=2000)


class SampleCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    conversation: str = Field(min_length=1, max_length=64)
    score: float | None = Field(default=None, ge=0.0, le=1.0, description="comparison with the frontier, 0..1")
    ok: bool = True


def loop_config(st: Any) -> LoopConfig:
    return LoopConfig.from_dict(st.settings.loop)


@router.get("/proposals")
async def get_proposals(st: State, status: str | None = Query(None, pattern="^(open|approved|rejected)$")) -> dict[str, Any]:
    return {"data": await asyncio.to_thread(list_proposals, st.engine, status)}


@router.post("/proposals/{proposal_id}/approve")
async def post_approve(proposal_id: int, st: State, decision: Decision | None = None) -> dict[str, Any]:
    d = decision or Decision()
    prop, job = await asyncio.to_thread(
        approve, st.engine, proposal_id, by=d.by, note=d.note, settings=st.settings, cfg=loop_config(st)
    )
    return {"proposal": prop, "job": job}


@router.post("/proposals/{proposal_id}/reject")
async def post_reject(proposal_id: int, st: State, decision: Decision | None = None) -> dict[str, Any]:
    d = decision or Decision()
    return {"proposal": await asyncio.to_thread(reject, st.engine, proposal_id, by=d.by, note=d.note)}


@router.get("/jobs")
async def get_jobs(st: State, workflow: str | None = None) -> dict[str, Any]:
    return {"data": await asyncio.to_thread(list_jobs, st.engine, workflow)}


@router.get("/jobs/{job_id}")
async def get_one_job(job_id: int, st: State) -> dict[str, Any]:
    return await asyncio.to_thread(get_job, st.engine, job_id)


@router.get("/workflows/{workflow_id}/route")
async def get_route(workflow_id: str, st: State) -> dict[str, Any]:
    route = await asyncio.to_thread(canary.get_route, st.engine, workflow_id)
    if route.get("since"):
        metrics = await asyncio.to_thread(canary.canary_metrics, st.engine, workflow_id, route["since"])
        route["metrics"] = metrics.as_dict()
    return route


@router.post("/workflows/{workflow_id}/rollback")
async def post_rollback(workflow_id: str, st: State, body: RollbackRequest | None = None) -> dict[str, Any]:
    b = body or RollbackRequest()
    return await asyncio.to_thread(canary.rollback, st.engine, workflow_id, reason=b.reason, actor=b.by)


@router.post("/workflows/{workflow_id}/samples", status_code=201)
async def post_sample(workflow_id: str, sample: SampleCreate, st: State) -> dict[str, Any]:
    await asyncio.to_thread(canary.record_sample, st.engine, workflow_id, sample.conversation,
                            score=sample.score, ok=sample.ok)
    return {"workflow": workflow_id, "recorded": True}


@router.get("/workflows/{workflow_id}/payback")
async def get_payback(workflow_id: str, st: State) -> dict[str, Any]:
    rows = await asyncio.to_thread(workflow_statuses, st.engine, loop_config(st), st.settings, workflow=workflow_id)
    if not rows:
        raise NotFound(f"No workflow `{workflow_id}` in the ledger; list them with GET /api/workflows.")
    return rows[0].as_dict()
