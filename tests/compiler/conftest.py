"""Shared fixtures for the compiler tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from compiler.flowchart import Flowchart, from_dict

ChartFactory = Callable[..., Flowchart]


def _chart(edges: list[tuple[str, str]], kinds: dict[str, str] | None = None, **extra: Any) -> Flowchart:
    """A chart from an edge list: `start` starts, `T*` are terminals, `D*` decisions, the rest agents.

    Every edge gets one utterance and every agent one reply, so the chart renders.
    """
    kinds = dict(kinds or {})
    nodes: dict[str, Any] = {}
    for a, b in edges:
        for n in (a, b):
            if n in nodes:
                continue
            kind = kinds.get(n) or (
                "start"
                if n == "start"
                else "terminal"
                if n.startswith("T")
                else "decision"
                if n.startswith("D")
                else "agent"
            )
            node: dict[str, Any] = {"kind": kind, "text": n}
            if kind == "terminal":
                node["outcome"] = "success"
            if kind == "agent":
                node["say"] = [f"say {n}"]
            nodes[n] = node
    doc = {
        "name": "t",
        "system_prompt": "You help.",
        "start": "start",
        "nodes": nodes,
        "edges": [{"from": a, "to": b, "utterances": [f"{a} to {b}"]} for a, b in edges],
        **extra,
    }
    return from_dict(doc)


@pytest.fixture
def make_chart() -> ChartFactory:
    """`make_chart([("start", "A"), ("A", "T1")])` builds a small renderable chart."""
    return _chart


# ---- training-side fixtures (compiler/train, evaluate, serve, pipeline tests) ----

WEATHER_CHART = __import__("pathlib").Path(__file__).with_name("weather.yaml")


@pytest.fixture(scope="session")
def weather_compile(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One real compile of the 4-node weather chart with a micro scratch model, shared by the slow-ish tests."""
    pytest.importorskip("trl", reason="the `compile` extra (torch, transformers, trl) is needed to train")
    from compiler.config import load_compile_config
    from compiler.pipeline import compile_workflow

    cfg = load_compile_config(None, WEATHER_OVERRIDES)
    out = tmp_path_factory.mktemp("weather-compile")
    return compile_workflow(WEATHER_CHART, out, cfg, echo=lambda _line: None)


WEATHER_OVERRIDES = {
    "data.max_loops": 2,  # 3 paths: 0, 1 and 2 lookups that fail before one succeeds
    "data.eval_share": 0.34,
    "data.seed": 5,  # holds out the 1-failure path: the model must read the tool result, not count turns
    "data.variants_per_path": 16,
    "data.eval_variants_per_path": 10,
    "train.base_model": "scratch:micro",
    "train.max_steps": 150,
    "train.batch_size": 8,
    "train.learning_rate": 0.005,
    "train.eval_steps": 50,
    "train.logging_steps": 10,
    "train.vocab_size": 400,
    "gate.max_new_tokens": 40,
}
