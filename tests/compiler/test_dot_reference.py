"""Differential tests: tiergate's DOT importer against Graphviz (``dot -Tjson``).

The corpus is ``tests/compiler/charts/*.dot`` (attribute statements, defaults, clusters,
chains, quoted, concatenated and HTML labels, ports, all three comment styles, strict and
undirected graphs, off-page hand-offs) plus seeded random variations
(``chartgen.random_dot``). Graphviz and :func:`compiler.formats.dot.parse_graph` must both
reject a chart or both accept it with the same node names, the same edges (a multiset:
Graphviz lists them by tail) and the same labels.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from chart_reference import graphviz_reference
from chartgen import random_dot

from compiler.flowchart import FlowchartError, validate
from compiler.formats.dot import _label_text, parse_dot, parse_graph
from compiler.formats.drawing import clean_label
from compiler.formats.yaml import dump_yaml, loads_yaml

CHARTS = Path(__file__).resolve().parent / "charts"
SEED, RANDOM_CHARTS = 20261201, 300


def _ours(text: str) -> dict[str, Any]:
    try:
        nodes, edges, _ = parse_graph(text, "chart.dot")
    except FlowchartError as exc:
        return {"error": str(exc)}
    return {
        "nodes": sorted(nodes),
        "edges": sorted((e.source, e.target) for e in edges),
        "labels": {n.id: n.label for n in nodes.values()},
    }


def _theirs(ref: dict[str, Any]) -> dict[str, Any]:
    if "error" in ref:
        return {"error": ref["error"]}
    nodes = ref.get("objects", [])[ref.get("_subgraph_cnt", 0):]  # subgraphs are listed first
    names = {o["_gvid"]: o["name"] for o in nodes}
    labels = {}
    for o in nodes:
        label = _label_text(o.get("label", "\\N"), o["name"], ref.get("name", ""))
        labels[o["name"]] = clean_label(label) if "<" in o.get("label", "") else label  # HTML labels
    return {
        "nodes": sorted(names.values()),
        "edges": sorted((names[e["tail"]], names[e["head"]]) for e in ref.get("edges", [])),
        "labels": labels,
    }


@pytest.fixture(scope="module")
def corpus() -> list[tuple[str, str]]:
    rng = random.Random(SEED)
    charts = [(f.name, f.read_text(encoding="utf-8")) for f in sorted(CHARTS.glob("*.dot"))]
    return charts + [(f"random #{i} (seed {SEED})", random_dot(rng)) for i in range(RANDOM_CHARTS)]


@pytest.fixture(scope="module")
def reference(corpus: list[tuple[str, str]]) -> Iterator[list[dict[str, Any]]]:
    yield graphviz_reference([text for _, text in corpus])


def test_handwritten_corpus_is_valid_dot(corpus: list[tuple[str, str]], reference: list[dict[str, Any]]) -> None:
    rejected = [(name, ref["error"]) for (name, _), ref in zip(corpus, reference, strict=True)
                if not name.startswith("random") and "error" in ref]
    assert rejected == []


def test_nodes_edges_and_labels_equal_graphviz(
    corpus: list[tuple[str, str]], reference: list[dict[str, Any]]
) -> None:
    mismatches = []
    for (name, text), ref in zip(corpus, reference, strict=True):
        ours, theirs = _ours(text), _theirs(ref)
        if ("error" in ours) != ("error" in theirs):
            mismatches.append((name, "accepted by one parser only", ours.get("error"), theirs.get("error"), text))
        elif "error" not in ours and ours != theirs:
            mismatches.append((name, "different graphs", ours, theirs, text))
    assert mismatches == []
    accepted = sum("error" not in r for r in reference[-RANDOM_CHARTS:])
    assert RANDOM_CHARTS * 3 // 4 < accepted < RANDOM_CHARTS  # some broken on purpose, most valid


def test_every_graph_graphviz_accepts_imports_checks_and_round_trips(
    corpus: list[tuple[str, str]], reference: list[dict[str, Any]]
) -> None:
    problems = []
    for (name, text), ref in zip(corpus, reference, strict=True):
        if "error" in ref or not ref.get("edges"):
            continue  # a drawing without a single edge is no procedure: `check` says so (a dead end)
        fc = parse_dot(text, source=name)
        structure = [str(i) for i in validate(fc) if i.kind == "structure"]
        if structure:
            problems.append((name, structure, text))
        if loads_yaml(dump_yaml(fc)) != fc:  # and `convert --to yaml` keeps it whole
            problems.append((name, "changed by a YAML round trip", text))
    assert problems == []
