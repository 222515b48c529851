"""Payback arithmetic on known numbers, and the `loop:` config section."""

from __future__ import annotations

import math

import pytest

from gateway.loop.payback import LoopConfig, LoopConfigError, WorkflowUsage, compile_cost, payback

BASE = WorkflowUsage(conversations=1000, requests=5000, cost_usd=120.0, prompt_tokens=5_000_000,
                     completion_tokens=500_000, static_prompt_tokens=800, days=10.0)


def test_payback_on_a_known_workflow() -> None:
    p = payback(BASE, LoopConfig())
    assert p.cost_per_conversation == pytest.approx(0.12)
    # 5M prompt tokens less 800 static x 5000 requests = 1M kept: 1000 per conversation, 500 completion
    assert p.compiled_prompt_tokens_per_conversation == pytest.approx(1000)
    assert p.compiled_cost_per_conversation == pytest.approx((1000 * 0.05 + 500 * 0.23) / 1e6)
    assert p.saving_per_conversation == pytest.approx(0.12 - 0.000165)
    assert p.payback_conversations == math.ceil(65 / (0.12 - 0.000165)) == 543
    assert p.threshold_conversations == 543
    assert p.conversations_per_day == pytest.approx(100)
    assert p.days_to_payback == pytest.approx(5.43)
    assert p.due and p.progress == 1.0


@pytest.mark.parametrize(
    ("conversations", "cost", "min_conv", "pay", "threshold", "due"),
    [
        (100, 13.0, 500, 500, 500, False),      # saving 0.13 - tiny: pays back at exactly 500 -> the minimum
        (600, 78.0, 500, 500, 500, True),
        (100, 1.0, 10, 6500, 6500, False),      # 1 cent a conversation: payback far beyond the minimum
        (100, 100.0, 0, 65, 65, True),          # minimum 0: the payback count alone ($65 at $1 each)
    ],
)
def test_threshold_is_the_larger_of_payback_and_minimum(
    conversations: int, cost: float, min_conv: int, pay: int, threshold: int, due: bool
) -> None:
    usage = WorkflowUsage(conversations=conversations, requests=conversations, cost_usd=cost, prompt_tokens=0,
                          completion_tokens=0, static_prompt_tokens=0, days=1.0)
    p = payback(usage, LoopConfig(min_conversations=min_conv))
    assert p.payback_conversations == pay
    assert p.threshold_conversations == threshold
    assert p.due is due
    assert p.progress == pytest.approx(min(1.0, conversations / threshold))


def test_no_saving_means_no_payback() -> None:
    usage = WorkflowUsage(conversations=50, requests=50, cost_usd=0.0, prompt_tokens=10_000,
                          completion_tokens=1_000, static_prompt_tokens=0, days=1.0)
    p = payback(usage, LoopConfig())
    assert p.saving_per_conversation < 0
    assert p.payback_conversations is None and p.threshold_conversations is None and p.days_to_payback is None
    assert not p.due and p.progress == 0.0


def test_empty_workflow() -> None:
    p = payback(WorkflowUsage(0, 0, 0.0, 0, 0, 0, 0.0), LoopConfig())
    assert p.cost_per_conversation == 0.0 and not p.due


def test_compile_cost_flat_or_estimated() -> None:
    assert compile_cost(LoopConfig()) == 65.0
    est = LoopConfig(compile_cost_usd=None, teacher_tokens_input=4_000_000, teacher_tokens_output=1_000_000,
                     teacher_input_per_million=2.5, teacher_output_per_million=10.0, gpu_hours=2.0, gpu_hour_usd=1.5)
    assert compile_cost(est) == pytest.approx(4 * 2.5 + 1 * 10.0 + 3.0)
    assert payback(BASE, est).compile_cost_usd == pytest.approx(23.0)


def test_loop_config_from_dict() -> None:
    cfg = LoopConfig.from_dict({"min_conversations": "200", "compile_cost_usd": None, "compile_command": "python x.py",
                                "compiled_models": {"wf": "m"}, "serve_command": None, "canary_share": 0.25})
    assert cfg.min_conversations == 200 and isinstance(cfg.min_conversations, int)
    assert cfg.compile_cost_usd is None
    assert cfg.compile_command == ("python", "x.py")
    assert cfg.compiled_models == {"wf": "m"} and cfg.serve_command is None and cfg.canary_share == 0.25
    assert LoopConfig.from_dict(None) == LoopConfig()


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"min_conversation": 5}, "loop.min_conversation: unknown key"),
        ({"min_conversations": "many"}, "loop.min_conversations: `many` is not a number"),
        ({"compile_cost_usd": -1}, "loop.compile_cost_usd: `-1` is negative"),
        ({"canary_share": 2}, "loop.canary_share: `2.0` must lie between 0 and 1"),
        ({"compile_args": [1, 2]}, "loop.compile_args: `[1, 2]` must be a list of strings"),
    ],
)
def test_loop_config_errors_name_the_key(raw: dict[str, object], message: str) -> None:
    with pytest.raises(LoopConfigError, match="^" + message.replace("[", r"\[").replace("]", r"\]")
                       .replace(".", r"\.").replace("`", "`")):
        LoopConfig.from_dict(raw)


@pytest.mark.parametrize(("days", "window_s", "extrapolated"), [
    (0.01, 86400.0, False),  # 15 minutes of traffic: no forecast in days yet
    (1.0, 86400.0, True),
    (0.01, 600.0, True),     # a demo may shorten the window
    (0.01, 0.0, True),
])
def test_days_to_payback_needs_a_minimum_observation_window(days: float, window_s: float, extrapolated: bool) -> None:
    usage = WorkflowUsage(conversations=100, requests=300, cost_usd=10.0, prompt_tokens=0, completion_tokens=0,
                          static_prompt_tokens=0, days=days)
    p = payback(usage, LoopConfig(min_observation_s=window_s, compile_cost_usd=0.65))
    assert p.payback_conversations == 7 and p.observed_days == days  # the count does not depend on time
    assert (p.days_to_payback is not None) is extrapolated
    if extrapolated:
        assert p.days_to_payback == pytest.approx(7 / (100 / days))
