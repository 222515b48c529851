"""Differential tests: tiergate's Mermaid importer against Mermaid's own parser.

The corpus is the hand-written charts in ``tests/compiler/charts/*.mmd`` (every shape,
link, label style and statement kind the importer claims) plus seeded random variations
(``chartgen.random_mermaid``). For each chart, Mermaid 12.3's flowchart parser (run under
Node, one process for the whole corpus) and :func:`compiler.formats.mermaid.parse_graph`
must agree: both reject it, or both accept it with the same nodes (ids in order, shapes,
labels, innermost subgraph) and the same edges (ends, labels, arrow heads and strokes, in order).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from chart_reference import mermaid_reference
from chartgen import random_mermaid

from compiler.flowchart import FlowchartError, validate
from compiler.formats.mermaid import parse_graph, parse_mermaid
from compiler.formats.mermaid_vocab import Text, label_text
from compiler.formats.yaml import dump_yaml, loads_yaml

CHARTS = Path(__file__).resolve().parent / "charts"
SEED, RANDOM_CHARTS = 20261201, 300


def _ours(text: str) -> dict[str, Any]:
    try:
        nodes, edges, _ = parse_graph(text, "chart.mmd")
    except FlowchartError as exc:
        return {"error": str(exc)}
    return {
        "nodes": [(n.id, n.drawn, n.label, n.group) for n in nodes.values()],
        "edges": [(e.source, e.target, e.label, e.drawn) for e in edges],
    }


def _theirs(ref: dict[str, Any]) -> dict[str, Any]:
    if "error" in ref:
        return {"error": ref["error"]}
    group: dict[str, str] = {}
    for sg in ref["subgraphs"]:  # inner subgraphs come first and keep their nodes, as Mermaid lists them
        for member in sg["nodes"]:
            group.setdefault(member, label_text(Text(sg["title"], "text")) or sg["id"])
    return {
        # the same label normalisation on both sides: HTML line breaks, tags, entities, markdown
        "nodes": [
            (i, v["type"], label_text(Text(v["text"], v["labelType"])), group.get(i)) for i, v in ref["nodes"]
        ],
        "edges": [
            (e["start"], e["end"], label_text(Text(e["text"], e["labelType"])), f"{e['type']}/{e['stroke']}")
            for e in ref["edges"]
        ],
    }


@pytest.fixture(scope="module")
def corpus() -> list[tuple[str, str]]:
    rng = random.Random(SEED)
    charts = [(f.name, f.read_text(encoding="utf-8")) for f in sorted(CHARTS.glob("*.mmd"))]
    return charts + [(f"random #{i} (seed {SEED})", random_mermaid(rng)) for i in range(RANDOM_CHARTS)]


@pytest.fixture(scope="module")
def reference(corpus: list[tuple[str, str]]) -> Iterator[list[dict[str, Any]]]:
    yield mermaid_reference([text for _, text in corpus])


def test_handwritten_corpus_is_valid_mermaid(corpus: list[tuple[str, str]], reference: list[dict[str, Any]]) -> None:
    rejected = [(name, ref["error"]) for (name, _), ref in zip(corpus, reference, strict=True)
                if not name.startswith("random") and "error" in ref]
    assert rejected == []
    assert sum(not name.startswith("random") for name, _ in corpus) >= 7


def test_nodes_and_edges_equal_mermaids(corpus: list[tuple[str, str]], reference: list[dict[str, Any]]) -> None:
    mismatches = []
    for (name, text), ref in zip(corpus, reference, strict=True):
        ours, theirs = _ours(text), _theirs(ref)
        if ("error" in ours) != ("error" in theirs):
            mismatches.append((name, "accepted by one parser only", ours.get("error"), theirs.get("error"), text))
        elif "error" not in ours and ours != theirs:
            diff = [(k, a, b) for k in ("nodes", "edges") for a, b in zip(ours[k], theirs[k], strict=False) if a != b]
            mismatches.append((name, "different graphs", diff[:3], len(ours["nodes"]), text))
    assert mismatches == []


def test_random_charts_reach_every_shape_and_link(reference: list[dict[str, Any]]) -> None:
    accepted = [r for r in reference[-RANDOM_CHARTS:] if "error" not in r]
    rejected = RANDOM_CHARTS - len(accepted)
    shapes = {v["type"] for r in accepted for _, v in r["nodes"]}
    links = {(e["type"], e["stroke"]) for r in accepted for e in r["edges"]}
    assert 0 < rejected < RANDOM_CHARTS // 4  # some broken on purpose, most valid
    assert {"square", "round", "stadium", "subroutine", "cylinder", "circle", "doublecircle", "ellipse",
            "diamond", "hexagon", "odd", "lean_right", "lean_left", "trapezoid", "inv_trapezoid", None} <= shapes
    assert {("arrow_point", "normal"), ("arrow_open", "normal"), ("arrow_point", "dotted"),
            ("arrow_point", "thick"), ("arrow_circle", "normal"), ("arrow_cross", "normal"),
            ("double_arrow_point", "normal"), ("arrow_open", "invisible")} <= links
    labels = [v["text"] for r in accepted for _, v in r["nodes"]]
    assert any("\n" in t for t in labels) and any("<br>" in t for t in labels)


def test_every_chart_mermaid_accepts_imports_checks_and_round_trips(
    corpus: list[tuple[str, str]], reference: list[dict[str, Any]]
) -> None:
    problems = []
    for (name, text), ref in zip(corpus, reference, strict=True):
        if "error" in ref or not ref["edges"]:
            continue  # a drawing without a single link is no procedure: `check` says so (a dead end)
        fc = parse_mermaid(text, source=name)
        structure = [str(i) for i in validate(fc) if i.kind == "structure"]
        if structure:
            problems.append((name, structure, text))
        if loads_yaml(dump_yaml(fc)) != fc:  # and `convert --to yaml` keeps it whole
            problems.append((name, "changed by a YAML round trip", text))
    assert problems == []
