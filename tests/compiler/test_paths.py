"""Path enumeration (exact counts, loops unrolled k times), sampling coverage, and the split by path."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import pytest

from compiler.flowchart import Flowchart, FlowchartError
from compiler.formats import load_flowchart
from compiler.paths import count_paths, enumerate_paths
from compiler.split import edges_covered, split_by_path

WORKFLOWS = Path(__file__).resolve().parents[2] / "configs" / "workflows"

DIAMOND = [("start", "D1"), ("D1", "A"), ("D1", "B"), ("A", "T1"), ("B", "T1")]
RETRY = [("start", "A"), ("A", "B"), ("B", "A"), ("B", "T1")]
SELF_LOOP = [("start", "A"), ("A", "A"), ("A", "T1")]
TWO_LOOPS_ONE_HUB = [("start", "D1"), ("D1", "X"), ("X", "D1"), ("D1", "Y"), ("Y", "D1"), ("D1", "T1")]
TWO_DECISIONS = [
    ("start", "D1"),
    ("D1", "A"),
    ("D1", "B"),
    ("A", "M"),
    ("B", "M"),
    ("M", "D2"),
    ("D2", "T1"),
    ("D2", "T2"),
]
THREE_TERMINALS = [("start", "D1"), ("D1", "T1"), ("D1", "T2"), ("D1", "T3")]


@pytest.mark.parametrize(
    ("edges", "max_loops", "expected"),
    [
        (DIAMOND, 0, 2),
        (DIAMOND, 3, 2),
        (THREE_TERMINALS, 1, 3),
        (TWO_DECISIONS, 1, 4),
        (RETRY, 0, 1),
        (RETRY, 1, 2),
        (RETRY, 2, 3),
        (RETRY, 5, 6),
        (SELF_LOOP, 0, 1),
        (SELF_LOOP, 1, 2),
        (SELF_LOOP, 3, 4),
        # D1 may be visited k+1 times: sequences of at most k loops over {X, Y}.
        (TWO_LOOPS_ONE_HUB, 0, 1),
        (TWO_LOOPS_ONE_HUB, 1, 3),
        (TWO_LOOPS_ONE_HUB, 2, 7),
        (TWO_LOOPS_ONE_HUB, 3, 15),
    ],
)
def test_exact_path_counts(
    edges: list[tuple[str, str]], max_loops: int, expected: int, make_chart: Callable[..., Flowchart]
) -> None:
    fc = make_chart(edges)
    ps = enumerate_paths(fc, max_loops=max_loops)
    assert len(ps) == expected == ps.total == count_paths(fc, max_loops)
    assert not ps.sampled and ps.method == "exhaustive"
    assert len({p.id for p in ps.paths}) == expected
    for p in ps.paths:
        assert p.nodes[0] == "start" and fc.nodes[p.terminal].kind == "terminal"
        assert max(p.nodes.count(n) for n in p.nodes) <= max_loops + 1
        assert all(
            fc.edges[i].source == a and fc.edges[i].target == b
            for i, a, b in zip(p.edges, p.nodes[:-1], p.nodes[1:], strict=True)
        )


def test_parallel_edges_are_distinct_paths(make_chart: Callable[..., Flowchart]) -> None:
    fc = make_chart([("start", "A"), ("A", "T1"), ("A", "T1")])
    ps = enumerate_paths(fc)
    assert [p.edges for p in ps.paths] == [(0, 1), (0, 2)]
    assert ps.paths[0].id != ps.paths[1].id


def test_coverage_reports_what_loops_0_cannot_reach(make_chart: Callable[..., Flowchart]) -> None:
    fc = make_chart(RETRY)
    simple = enumerate_paths(fc, max_loops=0)
    assert simple.node_coverage == 1.0
    assert simple.edge_coverage == pytest.approx(3 / 4)
    assert [(fc.edges[i].source, fc.edges[i].target) for i in simple.uncovered_edges] == [("B", "A")]
    assert enumerate_paths(fc, max_loops=1).edge_coverage == 1.0


def test_travel_booking_counts_are_stable(make_chart: Callable[..., Flowchart]) -> None:
    fc = load_flowchart(WORKFLOWS / "travel-booking.yaml")
    assert [count_paths(fc, k) for k in range(4)] == [5, 14, 27, 44]
    first = enumerate_paths(fc, max_loops=1)
    assert [p.id for p in first.paths] == [p.id for p in enumerate_paths(fc, max_loops=1).paths]
    assert first.edge_coverage == first.node_coverage == 1.0


def test_sampling_past_budget_still_covers_every_edge(make_chart: Callable[..., Flowchart]) -> None:
    # A ladder of 6 two-way decisions: 64 simple paths, each branch an edge to cover.
    edges: list[tuple[str, str]] = [("start", "D0")]
    for i in range(6):
        nxt = f"D{i + 1}" if i < 5 else "T1"
        edges += [(f"D{i}", f"A{i}"), (f"D{i}", f"B{i}"), (f"A{i}", nxt), (f"B{i}", nxt)]
    edges += [("B5", "D0")]  # plus a loop back to the top
    fc = make_chart(edges)
    assert count_paths(fc, 1, limit=1000) > 1000
    for budget in (3, 10, 50):
        ps = enumerate_paths(fc, max_loops=1, budget=budget, seed=7)
        assert ps.sampled and ps.method == "edge-cover+random-walk" and ps.total is None
        assert ps.edge_coverage == 1.0 and ps.node_coverage == 1.0
        assert len(ps) >= min(budget, 2)
        assert len(ps) <= max(budget, len(fc.edges))
        assert len({p.id for p in ps.paths}) == len(ps)
        for p in ps.paths:
            assert fc.nodes[p.terminal].kind == "terminal"
            assert max(p.nodes.count(n) for n in p.nodes) <= 2
    again = enumerate_paths(fc, max_loops=1, budget=10, seed=7)
    assert [p.id for p in again.paths] == [
        p.id for p in enumerate_paths(fc, max_loops=1, budget=10, seed=7).paths
    ]


def test_insurance_sample_covers_every_edge(make_chart: Callable[..., Flowchart]) -> None:
    fc = load_flowchart(WORKFLOWS / "insurance-claims.yaml")
    ps = enumerate_paths(fc, max_loops=1, budget=200, seed=0)
    assert ps.edge_coverage == 1.0 and ps.node_coverage == 1.0
    assert len(ps) <= 200


def test_bad_arguments_and_charts_are_refused(make_chart: Callable[..., Flowchart]) -> None:
    fc = make_chart(DIAMOND)
    with pytest.raises(FlowchartError, match="`max_loops` is -1"):
        enumerate_paths(fc, max_loops=-1)
    with pytest.raises(FlowchartError, match="`budget` is 0"):
        enumerate_paths(fc, budget=0)
    stuck = make_chart([("start", "A"), ("A", "B"), ("B", "A")])
    with pytest.raises(FlowchartError, match="no terminal is reachable from the start node `start`"):
        enumerate_paths(stuck)
    missing = dataclasses.replace(fc, start="nope")
    with pytest.raises(FlowchartError, match="start node `nope` does not exist"):
        enumerate_paths(missing)


def test_split_by_path_keeps_every_edge_in_training(make_chart: Callable[..., Flowchart]) -> None:
    fc = load_flowchart(WORKFLOWS / "travel-booking.yaml")
    paths = enumerate_paths(fc, max_loops=2).paths
    train, held = split_by_path(paths, eval_share=0.25, seed=3)
    assert held, "some paths must be held out"
    assert not {p.id for p in train} & {p.id for p in held}
    assert len(train) + len(held) == len(paths)
    assert edges_covered(train) == edges_covered(paths)
    assert len(held) <= round(0.25 * len(paths))
    assert split_by_path(paths, 0.25, 3) == (train, held)
    assert split_by_path(reversed(paths), 0.25, 3) == (train, held), "input order must not matter"
    assert split_by_path(paths, 0.0, 3) == (sorted(paths, key=lambda p: p.id), [])


def test_split_holds_nothing_back_when_every_path_has_a_unique_edge(
    make_chart: Callable[..., Flowchart],
) -> None:
    paths = enumerate_paths(make_chart(THREE_TERMINALS)).paths
    train, held = split_by_path(paths, eval_share=0.5, seed=0)
    assert held == [] and len(train) == 3


def test_split_refuses_bad_share() -> None:
    with pytest.raises(FlowchartError, match="`eval_share` is 1.0"):
        split_by_path([], 1.0, 0)
