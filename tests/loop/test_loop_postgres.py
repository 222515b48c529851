"""The loop's store on the real PostgreSQL: migration 0002, proposals, the one-active-job index, the rollup,
the dashboard's aggregates and the route switches."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from loop_helpers import FLOWCHART, ledger_rows, seed
from sqlalchemy import Engine

from gateway.errors import Conflict
from gateway.loop import canary
from gateway.loop.payback import LoopConfig
from gateway.loop.proposals import approve, list_proposals, raise_due
from gateway.loop.rollup import HOUR, advance, totals
from gateway.settings import parse_settings
from gateway.store.engine import make_engine, migrate
from gateway.web.routes.dashboard import overview_numbers, workflow_series, workflow_table

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg(pg_url: str) -> Iterator[Engine]:
    engine = make_engine(pg_url)
    migrate(engine)
    yield engine
    engine.dispose()


def test_the_loop_on_postgres(pg: Engine, tmp_path: Path) -> None:
    now = time.time()
    seed(pg, ledger_rows("travel-booking", 20, start=now - 5 * HOUR, spacing=600, first_prompt=800))
    seed(pg, ledger_rows("travel-booking", 20, fingerprint="fp-b", start=now - 3 * HOUR, spacing=300, conv_prefix="b"))
    cfg = LoopConfig(compile_cost_usd=0.5, min_conversations=10, stability_window_s=3600, jobs_dir=str(tmp_path))
    live = {r["workflow"]: (r["requests"], r["conversations"]) for r in totals(pg, ("workflow",))}
    assert live == {"travel-booking": (120, 40)}
    assert advance(pg, now=now) > 0
    assert {r["workflow"]: (r["requests"], r["conversations"]) for r in totals(pg, ("workflow",))} == live
    [pid] = raise_due(pg, cfg, now=now)
    assert raise_due(pg, cfg, now=now) == []
    [p] = list_proposals(pg)
    assert p["fingerprint"] == "fp-b" and p["numbers"]["conversations"] == 20  # the prompt after the drift
    settings = parse_settings(json.dumps({"workflows": [{"name": "travel-booking", "flowchart": str(FLOWCHART)}]}),
                              "<t>")
    prop, job = approve(pg, pid, by="ana", settings=settings, cfg=cfg)
    assert prop["status"] == "approved" and job["state"] == "queued"
    seed(pg, ledger_rows("travel-booking", 20, fingerprint="fp-c", start=now - 800, spacing=5, conv_prefix="c"))
    assert raise_due(pg, cfg, now=now) == []  # a new prompt: not stable yet
    [pid2] = raise_due(pg, cfg, now=now + HOUR)
    with pytest.raises(Conflict, match="already running"):  # the partial unique index, on PostgreSQL
        approve(pg, pid2, by="ana", settings=settings, cfg=cfg)
    o = overview_numbers(pg)
    assert o["requests"] == 180 and o["spend"] == pytest.approx(1.8)
    assert workflow_table(pg)["travel-booking"]["conversations"] == 60
    series = workflow_series(pg, "travel-booking")
    assert sum(pt["requests"] for pt in series["points"]) == 180 and series["tiers"][0]["tier"] == "frontier"
    canary.start_canary(pg, "travel-booking", model="m", share=0.3, job_id=job["id"], artifact="/a", fingerprint="fp-c")
    canary.record_sample(pg, "travel-booking", "c-1", score=0.4)
    m = canary.canary_metrics(pg, "travel-booking", 0.0)
    assert m.samples == 1 and m.mean_score == pytest.approx(0.4)
    route = canary.rollback(pg, "travel-booking", reason="manual", actor="ana")
    assert [s["to_mode"] for s in route["switches"]] == ["frontier", "canary"]
