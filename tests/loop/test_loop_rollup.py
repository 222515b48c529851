"""The hourly rollup: the same sums as the raw ledger, before and after folding, never counted twice."""

from __future__ import annotations

import time

import pytest
from loop_helpers import ledger_rows, seed
from sqlalchemy import Engine

from gateway.loop.rollup import HOUR, advance, totals, watermark

pytest_plugins = ["loop_fixtures"]  # store, start_loop_gateway


def by_workflow(store: Engine) -> dict[str, dict[str, float]]:
    return {r["workflow"]: {k: round(r[k], 9) for k in ("requests", "conversations", "cost", "errors", "prompt_ok")}
            for r in totals(store, ("workflow",))}


def test_rollup_matches_the_ledger_across_the_watermark(store: Engine) -> None:
    now = time.time()
    seed(store, ledger_rows("a", 30, start=now - 5 * HOUR, spacing=300))  # spread over hours, all foldable
    seed(store, ledger_rows("b", 4, start=now - 60, status=500))  # recent: stays in the live tail
    live = by_workflow(store)
    assert live == {"a": {"requests": 90, "conversations": 30, "cost": 0.9, "errors": 0,
                          "prompt_ok": 90_000},
                    "b": {"requests": 12, "conversations": 4, "cost": 0.12, "errors": 12,
                          "prompt_ok": 0}}
    added = advance(store, now=now)
    assert added > 0 and watermark(store) <= now - 900
    assert by_workflow(store) == live
    assert advance(store, now=now) == 0 and by_workflow(store) == live  # a second pass folds nothing twice
    seed(store, ledger_rows("a", 2, start=now + 10, conv_prefix="late"))
    later = by_workflow(store)
    assert later["a"]["requests"] == 96 and later["a"]["conversations"] == 32
    assert advance(store, now=now + 3 * HOUR) > 0 and by_workflow(store) == later


def test_grouping_is_checked(store: Engine) -> None:
    with pytest.raises(ValueError, match="cannot group by `colour`"):
        totals(store, ("colour",))


def test_overview_numbers_split_savings_by_rung(store: Engine) -> None:
    from gateway.web.routes.dashboard import overview_numbers, workflow_table

    now = time.time()
    frontier = ledger_rows("a", 10, turns=1, start=now - 5 * HOUR, spacing=600, cost=0.03)
    routed = ledger_rows("a", 10, turns=1, start=now - 5 * HOUR, spacing=600, cost=0.002)
    for r in routed:  # baseline: the requested model on the untrimmed prompt
        r.update(tier="routed", baseline_cost_usd=0.035, trim_saved_usd=0.001, prompt_tokens_before_trim=1200)
    shadow = ledger_rows("a", 4, turns=1, start=now - 60, cost=0.001)
    for r in shadow:
        r.update(tier="shadow", baseline_cost_usd=0.0, conversation=frontier[0]["conversation"])
    compiled = ledger_rows("a", 5, turns=2, start=now - 30, cost=0.0001)
    for r in compiled:
        r.update(tier="compiled", baseline_cost_usd=0.03)
    seed(store, frontier + routed + shadow + compiled)
    for fold in (False, True):
        if fold:
            assert advance(store, now=now) > 0
        o = overview_numbers(store)
        assert o["spend"] == pytest.approx(0.3 + 0.02 + 0.004 + 0.001)
        assert o["baseline"] == pytest.approx(0.3 + 0.35 + 0.3)
        assert o["savings"] == pytest.approx(o["baseline"] - o["spend"])
        assert o["rungs"]["trimming"] == pytest.approx(0.01)
        assert o["rungs"]["compile"] == pytest.approx(0.3 - 0.001)
        assert o["rungs"]["routing"] == pytest.approx(0.35 - 0.02 - 0.01)
        assert o["rungs"]["shadow_labels"] == pytest.approx(-0.004)  # the price of learning, a line of its own
        assert sum(o["rungs"].values()) == pytest.approx(o["savings"])
        assert o["requests"] == 10 + 10 + 10  # shadow calls are not client requests
        t = workflow_table(store)["a"]
        assert (t["requests"], t["conversations"]) == (30, 25)
