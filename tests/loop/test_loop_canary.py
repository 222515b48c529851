"""Canary: sticky assignment, the promote / rollback rules, and every switch recorded."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest
from loop_helpers import ledger_rows, seed
from sqlalchemy import Engine

from gateway.errors import Conflict, InvalidRequest
from gateway.loop import canary
from gateway.loop.canary import (
    CanaryMetrics,
    RouteState,
    decide,
    on_compiled,
    route_for,
)
from gateway.loop.payback import LoopConfig
from gateway.loop.runner import make_handle
from gateway.proxy.plan import RouteChoice, strip_for_compiled
from gateway.settings import parse_settings

pytest_plugins = ["loop_fixtures"]  # store, start_loop_gateway

WF = "travel-booking"


def test_assignment_is_sticky_and_matches_the_share() -> None:
    ids = [uuid.uuid4().hex for _ in range(20_000)]
    for share in (0.0, 0.1, 0.5, 1.0):
        first = [on_compiled(c, share) for c in ids]
        assert first == [on_compiled(c, share) for c in ids]  # same conversation, same side, every time
        assert sum(first) / len(ids) == pytest.approx(share, abs=0.015)
    # a larger share only moves conversations towards the compiled side
    assert all(on_compiled(c, 0.5) for c in ids if on_compiled(c, 0.1))


def test_route_for_reads_the_table() -> None:
    table = {
        "a": RouteState("a", "frontier", 0.0, None),
        "b": RouteState("b", "canary", 0.5, "b-compiled"),
        "c": RouteState("c", "compiled", 1.0, "c-compiled"),
    }
    assert route_for(table, "a", "x") is None and route_for(table, "missing", "x") is None
    assert route_for(table, "c", "x") == RouteChoice(model="c-compiled", canary=False)
    on = [c for c in (uuid.uuid4().hex for _ in range(200)) if on_compiled(c, 0.5)]
    assert route_for(table, "b", on[0]) == RouteChoice(model="b-compiled", canary=True)
    off = next(c for c in (uuid.uuid4().hex for _ in range(200)) if not on_compiled(c, 0.5))
    assert route_for(table, "b", off) is None


def test_strip_for_compiled_drops_what_the_weights_hold() -> None:
    body = {"model": "gpt-4o", "messages": [{"role": "system", "content": "procedure"}, {"role": "user", "content": "hi"}],
            "tools": [{"type": "function"}], "tool_choice": "auto", "temperature": 0}
    out = strip_for_compiled(body, RouteChoice(model="m"))
    assert out == {"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 0}
    assert body["model"] == "gpt-4o" and len(body["messages"]) == 2  # the caller's body is untouched


CFG = LoopConfig(min_samples=5, min_quality=0.8, max_error_rate=0.2, promote_after=10)


def m(requests: int = 0, errors: int = 0, conversations: int = 0, samples: int = 0, scored: int = 0,
      mean: float | None = None, failures: int = 0) -> CanaryMetrics:
    return CanaryMetrics(requests, errors, conversations, samples, scored, mean, failures)


@pytest.mark.parametrize(
    ("metrics", "mode", "action"),
    [
        (m(), "frontier", None),
        (m(requests=4, errors=4), "canary", None),                            # too few calls to judge
        (m(requests=10, errors=3, conversations=10), "canary", "rollback"),   # 30% errors > 20%
        (m(requests=10, errors=2, conversations=10), "canary", None),         # 20% is the limit, not over it
        (m(samples=6, scored=6, mean=0.5, conversations=6), "canary", "rollback"),
        (m(samples=6, scored=6, mean=0.5, conversations=6), "compiled", "rollback"),  # after promotion too
        (m(samples=4, scored=4, mean=0.1), "canary", None),                   # too few samples to judge
        (m(samples=10, failures=5), "canary", "rollback"),                    # sample failures when no ledger rows
        (m(requests=40, conversations=10, samples=5, scored=5, mean=0.9), "canary", "promote"),
        (m(requests=40, conversations=9, samples=5, scored=5, mean=0.9), "canary", None),
        (m(requests=40, conversations=30, samples=2, scored=2, mean=0.9), "canary", None),  # quality unmeasured
        (m(requests=40, conversations=30, samples=9, scored=9, mean=0.9), "compiled", None),
    ],
)
def test_decide(metrics: CanaryMetrics, mode: str, action: str | None) -> None:
    assert decide(metrics, CFG, mode)[0] == action


def _handle(store: Engine, **loop: object):  # type: ignore[no-untyped-def]
    cfg = {"min_samples": 5, "min_quality": 0.8, "promote_after": 10, "serve_command": None, "stability_window_s": 0,
           "min_conversations": 10_000, **loop}
    return make_handle(store, parse_settings(json.dumps({"loop": cfg}), "<test>"))


def test_rollback_on_injected_quality_drop(store: Engine) -> None:
    seed(store, ledger_rows(WF, 5, fingerprint="fp-a"))
    canary.start_canary(store, WF, model="wf-compiled", share=0.2, job_id=1, artifact="/a", fingerprint="fp-a")
    handle = _handle(store)
    for i in range(4):
        canary.record_sample(store, WF, f"c{i}", score=0.95)
    handle.run_once()
    assert handle.table[WF].mode == "canary"
    for i in range(4, 10):  # the quality drops: 4 x 0.95 + 6 x 0.3 = mean 0.56 < 0.8
        canary.record_sample(store, WF, f"c{i}", score=0.3)
    handle.run_once()
    route = canary.get_route(store, WF)
    assert route["mode"] == "frontier" and handle.table[WF].mode == "frontier"
    last = route["switches"][0]
    assert (last["from_mode"], last["to_mode"], last["actor"]) == ("canary", "frontier", "loop")
    assert "quality 0.56 < 0.80 over 10 sampled conversations" in last["reason"]
    assert handle.route_for(WF, "any") is None


def test_promotion_after_good_conversations_then_error_rollback(store: Engine) -> None:
    seed(store, ledger_rows(WF, 5, fingerprint="fp-a", start=time.time() - 100))
    canary.start_canary(store, WF, model="wf-compiled", share=0.1, job_id=1, artifact="/a", fingerprint="fp-a")
    handle = _handle(store)
    seed(store, ledger_rows(WF, 9, tier="compiled", fingerprint="fp-a", start=time.time() + 1))
    for i in range(5):
        canary.record_sample(store, WF, f"s{i}", score=0.9)
    handle.run_once()
    assert handle.table[WF].mode == "canary"  # 9 good conversations < 10
    seed(store, ledger_rows(WF, 1, tier="compiled", fingerprint="fp-a", start=time.time() + 2))
    handle.run_once()
    assert handle.table[WF] == RouteState(WF, "compiled", 1.0, "wf-compiled")
    assert handle.route_for(WF, "anyone") == RouteChoice(model="wf-compiled")
    # after promotion the window restarts; errors past 20% roll back
    seed(store, ledger_rows(WF, 4, tier="compiled", fingerprint="fp-a", status=502, start=time.time() + 3))
    handle.run_once()
    hist = canary.get_route(store, WF)["switches"]
    assert [(s["from_mode"], s["to_mode"]) for s in hist] == [
        ("compiled", "frontier"), ("canary", "compiled"), ("frontier", "canary")]
    assert hist[0]["reason"].startswith("error rate") and "> 10%" in hist[0]["reason"]


def test_drift_rolls_a_compiled_workflow_back(store: Engine) -> None:
    seed(store, ledger_rows(WF, 5, fingerprint="fp-a", start=time.time() - 100))
    canary.start_canary(store, WF, model="wf-compiled", share=1.0, job_id=1, artifact="/a", fingerprint="fp-a")
    seed(store, ledger_rows(WF, 1, fingerprint="fp-b", start=time.time()))
    _handle(store).run_once()
    route = canary.get_route(store, WF)
    assert route["mode"] == "frontier" and "prompt drift: fingerprint fp-a -> fp-b" in route["switches"][0]["reason"]


def test_manual_rollback_is_recorded(store: Engine) -> None:
    with pytest.raises(Conflict, match="already runs on the frontier"):
        canary.rollback(store, WF, reason="x", actor="ana")
    canary.start_canary(store, WF, model="wf-compiled", share=0.5, job_id=3, artifact="/a", fingerprint="fp")
    out = canary.rollback(store, WF, reason="customer complaint", actor="ana")
    assert out["mode"] == "frontier" and out["switches"][0]["actor"] == "ana"
    assert out["switches"][0]["reason"] == "customer complaint"
    with pytest.raises(InvalidRequest, match="score"):
        canary.record_sample(store, WF, "c", score=1.5)


def test_a_traffic_compiled_canary_scores_replies_by_their_mined_step(store: Engine, tmp_path: Path) -> None:
    """Two wordings of one step agree (the frontier picks among them, the compiled model says one); a reply
    of another step does not; an artifact without mined steps (a flowchart compile) leaves word overlap."""
    art = tmp_path / "artifact"
    art.mkdir()
    (art / "prompt.json").write_text(json.dumps({"persona": "You are Acme's assistant.", "static_lines": [],
                                                 "step_lines": [], "replies": {
        "ask_intent": ["How can I help you with your order today?", "What can I do for you today?"],
        "report_status": ["Your order {order_id} is with {carrier} and should arrive on {eta}."],
        "confirm_return": ["Your return {return_id} is registered. A return label is on its way to you."]}}))
    canary.start_canary(store, WF, model="wf-compiled", share=0.5, job_id=1, artifact=str(art), fingerprint="fp-a")
    canary.start_canary(store, "other", model="o-compiled", share=0.5, job_id=2, artifact="/a", fingerprint="fp-a")
    handle = _handle(store)
    handle.run_once()
    assert handle.reply_score(WF, "What can I do for you today?", "How can I help you with your order today?") == 1.0
    assert handle.reply_score(WF, "Your order A12345 is with DHL and should arrive on 5 December.",
                              "Your return R1234 is registered. A return label is on its way to you.") == 0.0
    assert handle.reply_score(WF, "Something no step says at all.", "What can I do for you today?") is None
    assert handle.reply_score("other", "What can I do for you today?", "Hello") is None  # no steps: word overlap
    assert canary.reply_step("your order a1 is with ups", handle.table[WF].replies) == "report_status"
