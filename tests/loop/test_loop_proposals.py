"""Proposals from known ledgers: one per threshold crossing, stability and drift, decisions recorded."""

from __future__ import annotations

import json
import time

import pytest
from loop_helpers import FLOWCHART, ledger_rows, seed
from sqlalchemy import Engine, func, select

from gateway.errors import Conflict, InvalidRequest, NotFound
from gateway.loop import canary
from gateway.loop.jobs import list_jobs
from gateway.loop.payback import LoopConfig
from gateway.loop.proposals import approve, list_proposals, raise_due, reject, workflow_statuses
from gateway.settings import Settings, parse_settings
from gateway.store.loop_schema import proposals as P

# 0.03 per conversation now; static 800 of each request's prompt: compiled 400 + 300 tokens per conversation,
# saving 0.029911; a $0.50 compile pays back after ceil(0.5 / 0.029911) = 17 conversations.
CFG = LoopConfig(compile_cost_usd=0.5, min_conversations=10, stability_window_s=3600)

pytest_plugins = ["loop_fixtures"]  # store, start_loop_gateway


def settings(flowchart: str | None = str(FLOWCHART)) -> Settings:
    wf = {"name": "travel-booking"} | ({"flowchart": flowchart} if flowchart else {})
    return parse_settings(json.dumps({"workflows": [wf]}), "<test>")


def seed_travel(store: Engine, n: int, *, fp: str = "fp-a", start: float | None = None, prefix: str | None = None) -> None:
    seed(store, ledger_rows("travel-booking", n, fingerprint=fp, first_prompt=800, start=start, conv_prefix=prefix))


def count(store: Engine) -> int:
    with store.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(P)).scalar_one())


def test_numbers_from_a_known_ledger(store: Engine) -> None:
    seed_travel(store, 20, start=time.time() - 7200)
    [st] = workflow_statuses(store, CFG, settings())
    pb = st.payback
    assert pb.conversations == 20
    assert pb.cost_per_conversation == pytest.approx(0.03)
    assert pb.compiled_cost_per_conversation == pytest.approx((400 * 0.05 + 300 * 0.23) / 1e6)
    assert pb.payback_conversations == 17 and pb.threshold_conversations == 17 and pb.due
    assert st.stability.stable and st.stability.fingerprint == "fp-a" and st.mode == "frontier"


def test_one_proposal_per_threshold_crossing(store: Engine) -> None:
    old = time.time() - 7200
    seed_travel(store, 16, start=old, prefix="a")
    assert raise_due(store, CFG) == []  # 16 < 17: below its payback point
    seed_travel(store, 4, start=old + 100, prefix="b")
    raised = raise_due(store, CFG)
    assert len(raised) == 1
    assert raise_due(store, CFG) == [] and raise_due(store, CFG) == []  # never duplicates
    seed_travel(store, 30, start=old + 200, prefix="c")
    assert raise_due(store, CFG) == [] and count(store) == 1  # more traffic, same crossing
    [p] = list_proposals(store)
    assert p["status"] == "open" and p["kind"] == "compile" and p["fingerprint"] == "fp-a"
    assert p["numbers"]["payback_conversations"] == 17 and p["numbers"]["conversations"] == 20


def test_unstable_prompt_waits_and_drift_resets_the_window(store: Engine) -> None:
    now = time.time()
    seed_travel(store, 30, start=now - 600)  # only ten minutes old: inside the one-hour window
    assert raise_due(store, CFG, now=now) == []
    assert raise_due(store, CFG, now=now + 3700) != []  # an hour later it is stable
    # the prompt changes: a new crossing, counted on the new prompt's traffic only
    seed_travel(store, 12, fp="fp-b", start=now + 3800, prefix="b")
    [st] = workflow_statuses(store, CFG, now=now + 3900)
    assert st.stability.fingerprint == "fp-b" and not st.stability.stable and st.stability.fingerprints == 2
    assert raise_due(store, CFG, now=now + 3900) == []
    assert raise_due(store, CFG, now=now + 3800 + 12 + 3600) == []  # stable again but 12 < 17 conversations
    seed_travel(store, 6, fp="fp-b", start=now + 3900, prefix="c")
    assert len(raise_due(store, CFG, now=now + 3900 + 3700)) == 1
    assert [p["fingerprint"] for p in list_proposals(store)] == ["fp-b", "fp-a"]


def test_rejected_proposal_is_not_raised_again(store: Engine) -> None:
    seed_travel(store, 20, start=time.time() - 7200)
    [pid] = raise_due(store, CFG)
    decided = reject(store, pid, by="ana", note="not this quarter")
    assert decided["status"] == "rejected" and decided["decided_by"] == "ana" and decided["decided_at"] > 0
    assert raise_due(store, CFG) == []
    with pytest.raises(Conflict, match="already rejected by ana"):
        approve(store, pid, by="bob", settings=settings(), cfg=CFG)
    with pytest.raises(NotFound, match="No proposal `999`"):
        reject(store, 999, by="ana")


def test_approve_queues_one_job_per_workflow(store: Engine, tmp_path: object) -> None:
    cfg = LoopConfig(**{**CFG.__dict__, "jobs_dir": str(tmp_path)})
    seed_travel(store, 20, start=time.time() - 7200)
    [pid] = raise_due(store, cfg)
    prop, job = approve(store, pid, by="ana", settings=settings(), cfg=cfg)
    assert prop["status"] == "approved" and prop["decided_by"] == "ana"
    assert job["state"] == "queued" and job["workflow"] == "travel-booking" and job["proposal_id"] == pid
    assert job["flowchart"] == str(FLOWCHART.resolve())
    # drift brings a second proposal while the first job still runs: approving it is refused
    seed_travel(store, 20, fp="fp-b", start=time.time() - 3700, prefix="b")
    [pid2] = raise_due(store, cfg)
    with pytest.raises(Conflict, match="already running"):
        approve(store, pid2, by="ana", settings=settings(), cfg=cfg)
    assert [p["status"] for p in list_proposals(store)] == ["open", "approved"]  # rolled back with the job
    assert len(list_jobs(store)) == 1


def test_approve_needs_a_flowchart(store: Engine) -> None:
    seed_travel(store, 20, start=time.time() - 7200)
    [pid] = raise_due(store, CFG)
    with pytest.raises(InvalidRequest, match="has no flowchart"):
        approve(store, pid, by="ana", settings=settings(None), cfg=CFG)
    with pytest.raises(InvalidRequest, match="does not exist"):
        approve(store, pid, by="ana", settings=settings("/nonexistent/flow.yaml"), cfg=CFG)
    assert list_proposals(store)[0]["status"] == "open"


def test_drift_on_a_compiled_workflow_proposes_a_recompile(store: Engine) -> None:
    seed_travel(store, 20, start=time.time() - 7200)
    [pid] = raise_due(store, CFG)
    canary.start_canary(store, "travel-booking", model="m", share=1.0, job_id=1, artifact="/a", fingerprint="fp-a")
    assert raise_due(store, CFG) == []
    seed_travel(store, 3, fp="fp-b", start=time.time() - 3700, prefix="b")  # far below payback: still proposed
    [pid2] = raise_due(store, CFG)
    props = {p["id"]: p for p in list_proposals(store)}
    assert props[pid2]["kind"] == "recompile" and props[pid2]["fingerprint"] == "fp-b" and pid2 != pid
