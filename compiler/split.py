"""Train/eval split by path: an eval path is never seen in training.

A held-out path is still made only of *decisions the training set shows in the same
loop state*: the eval gate is meant to test that the model composes known local
decisions into unseen sequences, not that it guesses a decision it never saw in that
situation. A decision context is (edge taken at a decision hub, loop state when it is
taken), and a path goes to eval only if every one of its decision contexts (and every
plain edge it takes) stays covered by the remaining training paths.

The loop state (rule ``loops+last``) is one flag per loop (a strongly connected part
of the chart, as the paths run it): has the path gone round it yet; plus one flag for
the hub's own loop: is this its last round, the one where the unroll bound
(``max_loops``) lets the paths only leave the loop.

Why that granularity. Edges alone are too weak: with a "no flights" retry loop and a
declined-payment loop, a split by edges could keep "first decline, then ask for a
person" in training only on paths that went round the no-flights loop first, while
every training path without that loop retried after a first decline. A small model
learns that as a rule ("no earlier loop, first decline: retry") and fails the held-out
path that asks for a person there (travel-booking, seed 3, docs/bench-compile.md).
The last-round flag is there for the same reason: on the last round every training
path leaves the loop because enumeration stops it, not because the conversation says
so, so "a person after the third decline" (forced) is no evidence for "a person after
the second" (a choice); without the flag travel-booking's seed 1 held out both paths
with a person after a second decline (and a "no flights" loop before), and its model,
one held-out check after the one that passed the gate, retried there in 6 of their 16
conversations (success 0.850, a fail). Exact visit counts are too
strong: a path is then fixed by its last decision and how many times each loop went
round before it, so every path's last decision is a context no other path has and
nothing can be held out (travel-booking: 0 of 27 paths with loops unrolled twice).
With the flags, every decision is seen in training on a first round and on a later
one that was still a choice, with and without each other loop taken before, and
held-out paths differ from training paths in how the known decisions follow each
other and in *how many* times a loop went round (what unrolling loops twice is there
to teach: the next node depends on the last turn, not on the length of the
conversation). travel-booking with ``max_loops: 2``: 16 of its 27 paths may be held
out, and the 5-path eval share is reached for every seed.

A chart with nothing to spare under that rule still gets an eval set: the split falls
back to ``loops`` (no last-round flag), then to ``edges`` (every edge covered), the
first rule that holds out a path. One retry loop and nothing else, unrolled twice
(tests/compiler/weather.yaml: exits after 0, 1 and 2 failures), has each exit in its
own round, so only ``loops`` holds one out: the 1-failure path, whose exit training
shows only on the last round. With loops unrolled once, travel-booking falls back to
``edges`` (a loop then has a first round and a last one, nothing between). Within a
rule the eval share is a target: it comes out smaller on charts where most paths
carry a context no other path has (a tree-shaped chart has none to spare, under
every rule).

Example::

    train, held_out = split_by_path(pathset.paths, eval_share=0.2, seed=0)
    train, held_out, rule = split_with_rule(pathset.paths, eval_share=0.2, seed=0)
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Hashable, Iterable, Sequence

from compiler.flowchart import FlowchartError
from compiler.paths import FlowPath

Context = tuple[Hashable, ...]
RULES = ("loops+last", "loops", "edges")  # strictest first


def split_by_path(
    paths: Iterable[FlowPath], eval_share: float, seed: int
) -> tuple[list[FlowPath], list[FlowPath]]:
    """Return (train, eval); the same paths, share and seed give the same split."""
    train, evals, _rule = split_with_rule(paths, eval_share, seed)
    return train, evals


def split_with_rule(
    paths: Iterable[FlowPath], eval_share: float, seed: int
) -> tuple[list[FlowPath], list[FlowPath], str]:
    """(train, eval, the rule of ``RULES`` that made the eval set: the strictest that holds out a path)."""
    if not 0.0 <= eval_share < 1.0:
        raise FlowchartError(f"`eval_share` is {eval_share}; it must be at least 0 and below 1")
    unique = sorted({p.id: p for p in paths}.values(), key=lambda p: p.id)
    want = round(eval_share * len(unique))
    if eval_share > 0 and want == 0 and len(unique) >= 2:
        want = 1
    order = list(unique)
    random.Random(f"split|{seed}").shuffle(order)
    for rule in RULES:
        held = _hold_out(order, decision_contexts(unique, rule), want)
        if held:
            break
    train = [p for p in unique if p.id not in held]
    evals = [p for p in unique if p.id in held]
    return train, evals, rule


def _hold_out(order: list[FlowPath], contexts: dict[str, set[Context]], want: int) -> set[str]:
    """Greedy in ``order``: a path goes to eval when every context of it is on another path still in training."""
    coverage: Counter[Context] = Counter(c for p in order for c in contexts[p.id])
    held: set[str] = set()
    for p in order:
        if len(held) >= want or len(held) >= len(order) - 1:
            break
        mine = contexts[p.id]
        if all(coverage[c] >= 2 for c in mine):
            held.add(p.id)
            coverage.subtract(mine)
    return held


def decision_contexts(paths: Sequence[FlowPath], rule: str = RULES[0]) -> dict[str, set[Context]]:
    """Per path id: its plain edges ``("edge", i)`` and decision contexts ``("decision", i, state, last)``.

    Decision hubs, loops and the state are read off the paths themselves: a hub is a node the
    paths leave by two or more edges; a loop is a strongly connected set of nodes of the graph
    the paths run (two nodes or more, or one with an edge to itself); ``state`` is one
    ``(loop, gone_round)`` per loop (some node of it visited twice so far), and ``last`` whether
    the hub's own loop is on its last round (some node of it has had as many visits as any path
    gives a node: ``max_loops + 1``). Rule ``loops`` leaves ``last`` out; rule ``edges`` gives
    plain edges only.
    """
    if rule not in RULES:
        raise ValueError(f"unknown split rule {rule!r}; one of {', '.join(RULES)}")
    succ: dict[str, set[str]] = {}
    outs: dict[str, set[int]] = {}
    for p in paths:
        for k, e in enumerate(p.edges):
            succ.setdefault(p.nodes[k], set()).add(p.nodes[k + 1])
            outs.setdefault(p.nodes[k], set()).add(e)
    hubs = {n for n, es in outs.items() if len(es) >= 2} if rule != "edges" else set()
    cap = max((max(Counter(p.nodes).values()) for p in paths), default=1)
    loop_of = _loops(succ)
    loops = sorted(set(loop_of.values()))
    members: dict[str, list[str]] = {}
    for node, name in loop_of.items():
        members.setdefault(name, []).append(node)
    result: dict[str, set[Context]] = {}
    for p in paths:
        visits: Counter[str] = Counter()
        gone_round: set[str] = set()
        mine: set[Context] = set()
        for k, e in enumerate(p.edges):
            node = p.nodes[k]
            visits[node] += 1
            if visits[node] > 1:
                gone_round.add(loop_of[node])
            if node in hubs:
                state = tuple((name, name in gone_round) for name in loops)
                own = loop_of.get(node)
                last = rule == "loops+last" and own is not None and any(visits[m] >= cap for m in members[own])
                mine.add(("decision", e, state, last))
            else:
                mine.add(("edge", e))
        result[p.id] = mine
    return result


def _loops(succ: dict[str, set[str]]) -> dict[str, str]:
    """Node -> name of its loop (the smallest node name in its strongly connected set); loop nodes only."""

    def reach(origin: str) -> set[str]:
        seen: set[str] = set()
        todo = [origin]
        while todo:
            for nxt in succ.get(todo.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    ahead = {n: reach(n) for n in succ}
    loop_of: dict[str, str] = {}
    for n, fwd in ahead.items():
        if n in fwd:  # n can come back to itself
            members = {m for m in fwd if n in ahead.get(m, ())} | {n}
            loop_of[n] = min(members)
    return loop_of


def edges_covered(paths: Iterable[FlowPath]) -> set[int]:
    return {i for p in paths for i in p.edges}
