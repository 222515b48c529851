"""Path enumeration (exact counts, loops unrolled k times), sampling coverage, and the split by path."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import pytest

from compiler.flowchart import Flowchart, FlowchartError
from compiler.formats import load_flowchart
from compiler.paths import FlowPath, count_paths, enumerate_paths
from compiler.split import decision_contexts, edges_covered, split_by_path, split_with_rule

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
# one retry loop whose hub B also has two ways out
RETRY_TWO_EXITS = [("start", "A"), ("A", "B"), ("B", "A"), ("B", "T1"), ("B", "T2")]
# two ways round one loop at A, then a decision D1 outside it
LOOP_THEN_DECISION = [("start", "A"), ("A", "X"), ("X", "A"), ("A", "Y"), ("Y", "A"), ("A", "D1"), ("D1", "T1"),
                      ("D1", "T2")]


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


def _route(p: FlowPath) -> str:
    return "".join(n for n in p.nodes if n != "start")


def _assert_held_contexts_stay_in_training(train: list[FlowPath], held: list[FlowPath], rule: str) -> None:
    ctx = decision_contexts(train + held, rule)
    seen = set().union(*(ctx[p.id] for p in train))
    for p in held:
        assert ctx[p.id] <= seen, f"{_route(p)} takes a decision training never shows in that loop state ({rule})"


def test_split_keeps_in_training_a_decision_seen_nowhere_else_in_its_loop_state(
    make_chart: Callable[..., Flowchart],
) -> None:
    # A D1 T1 and A D1 T2 are the only paths that decide at D1 without going round the loop first: every
    # edge of theirs is on other paths too (an edge-only split may hold them out), their decision is not
    paths = enumerate_paths(make_chart(LOOP_THEN_DECISION), max_loops=1).paths
    assert sorted(_route(p) for p in paths) == ["AD1T1", "AD1T2", "AXAD1T1", "AXAD1T2", "AYAD1T1", "AYAD1T2"]
    for seed in range(20):
        train, held, rule = split_with_rule(paths, eval_share=0.5, seed=seed)
        routes = {_route(p) for p in held}
        assert rule == "loops+last" and not routes & {"AD1T1", "AD1T2"}, f"seed {seed} held out {sorted(routes)}"
        # the share is a target: two of the four looping paths, not one of each pair that shares a context
        assert len(held) == 2 and routes not in ({"AXAD1T1", "AYAD1T1"}, {"AXAD1T2", "AYAD1T2"})
        _assert_held_contexts_stay_in_training(train, held, rule)
    # a path twice round the loop differs from training only in how often: it may be held out
    paths = enumerate_paths(make_chart(LOOP_THEN_DECISION), max_loops=2).paths
    held_routes = {_route(p) for seed in range(10) for p in split_by_path(paths, 0.3, seed)[1]}
    assert any(r.count("A") == 3 for r in held_routes), held_routes


def test_a_decision_on_the_last_round_is_no_evidence_for_the_same_one_before(
    make_chart: Callable[..., Flowchart],
) -> None:
    paths = {_route(p): p for p in enumerate_paths(make_chart(RETRY_TWO_EXITS), max_loops=2).paths}
    strict, loose = decision_contexts(list(paths.values())), decision_contexts(list(paths.values()), "loops")
    # "leave by T2 after a round": the 1-retry path chooses it; on the 2-retry path the bound leaves B no
    # way back to A (the last round), so it is a different context, except under the looser rule
    after_one, after_two = paths["ABABT2"].id, paths["ABABABT2"].id
    assert not strict[after_one] <= strict[after_two] | strict[paths["ABABT1"].id]
    assert {c for c in loose[after_one] if c[0] == "decision" and c[1] == 4} <= loose[after_two]
    # so nothing can be held out under `loops+last`: the split falls back to `loops`, which holds out
    # one exit after a round, not both
    for seed in range(10):
        train, held, rule = split_with_rule(list(paths.values()), eval_share=0.34, seed=seed)
        assert rule == "loops" and len(held) == 2, (seed, [_route(p) for p in held])
        assert not {"ABABT1", "ABABABT1"} <= {_route(p) for p in held}
        _assert_held_contexts_stay_in_training(train, held, rule)


def test_split_falls_back_to_a_looser_rule_rather_than_an_empty_eval_set(
    make_chart: Callable[..., Flowchart],
) -> None:
    # one retry loop, unrolled twice (tests/compiler/weather.yaml's shape): exits after 0, 1 and 2 tries,
    # each in its own round; `loops` holds out the 1-retry exit, seen in training after 2 (the last round)
    paths = enumerate_paths(make_chart(RETRY), max_loops=2).paths
    for seed in range(10):
        train, held, rule = split_with_rule(paths, eval_share=0.5, seed=seed)
        assert rule == "loops" and [_route(p) for p in held] == ["ABABT1"]
        assert sorted(_route(p) for p in train) == ["ABABABT1", "ABT1"]
    # unrolled once, only the edges rule holds one out: the exit without a retry
    train, held, rule = split_with_rule(enumerate_paths(make_chart(RETRY), max_loops=1).paths, 0.5, 0)
    assert rule == "edges" and [_route(p) for p in held] == ["ABT1"]
    # weather.yaml itself: the compile tests hold out its 1-failure path for every seed
    weather = enumerate_paths(load_flowchart(Path(__file__).with_name("weather.yaml")), max_loops=2).paths
    for seed in range(6):
        held = split_with_rule(weather, 0.34, seed)[1]
        assert [p.nodes.count("lookup") for p in held] == [2], seed


def test_travel_booking_keeps_first_decline_then_a_person_in_training() -> None:
    """Seed 3's old failure (docs/bench-compile.md): a person asked for right after the first declined payment,
    with no "no flights" loop before, was held out while training only showed it after that loop. And seed 1
    under the rule without the last-round flag: both paths with a person after the second decline (after a
    "no flights" loop) held out, while training showed that decision only on the last round, forced."""
    fc = load_flowchart(WORKFLOWS / "travel-booking.yaml")
    paths = enumerate_paths(fc, max_loops=2, budget=400).paths
    first_decline_person = ("start", "ask_trip", "search_flights", "flights_found", "offer_flight", "offer_answer",
                            "book_flight", "booking_ok", "payment_failed", "payment_answer", "handover")
    assert any(p.nodes == first_decline_person for p in paths)

    def second_decline_person_after_no_flights(p: FlowPath) -> bool:
        return p.terminal == "handover" and p.nodes.count("payment_failed") == 2 and "no_flights" in p.nodes

    assert sum(map(second_decline_person_after_no_flights, paths)) == 2
    for seed in range(20):
        train, held, rule = split_with_rule(paths, eval_share=0.2, seed=seed)
        assert rule == "loops+last" and len(held) == 5 and len(train) == 22, f"seed {seed}: 0.2 of 27 paths"
        assert all(p.nodes != first_decline_person for p in held), f"seed {seed}"
        assert sum(map(second_decline_person_after_no_flights, held)) <= 1, f"seed {seed}"
        _assert_held_contexts_stay_in_training(train, held, rule)
