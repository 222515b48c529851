"""Train/eval split by path: an eval path is never seen in training.

A held-out path is still made only of edges the training set covers: a model cannot
be expected to take a branch it never saw, and the eval gate is meant to test that
the model composes known steps into unseen sequences, not that it guesses. So a path
goes to eval only if every one of its edges stays covered by the remaining training
paths; the eval share is therefore a target, and may come out smaller on charts
where most paths carry an edge no other path has (a tree-shaped chart has none to
spare).

Example::

    train, held_out = split_by_path(pathset.paths, eval_share=0.2, seed=0)
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable

from compiler.flowchart import FlowchartError
from compiler.paths import FlowPath


def split_by_path(
    paths: Iterable[FlowPath], eval_share: float, seed: int
) -> tuple[list[FlowPath], list[FlowPath]]:
    """Return (train, eval); the same paths, share and seed give the same split."""
    if not 0.0 <= eval_share < 1.0:
        raise FlowchartError(f"`eval_share` is {eval_share}; it must be at least 0 and below 1")
    unique = sorted({p.id: p for p in paths}.values(), key=lambda p: p.id)
    want = round(eval_share * len(unique))
    if eval_share > 0 and want == 0 and len(unique) >= 2:
        want = 1
    order = list(unique)
    random.Random(f"split|{seed}").shuffle(order)
    coverage: Counter[int] = Counter(i for p in unique for i in set(p.edges))
    held: set[str] = set()
    for p in order:
        if len(held) >= want or len(held) >= len(unique) - 1:
            break
        mine = set(p.edges)
        if all(coverage[i] >= 2 for i in mine):
            held.add(p.id)
            coverage.subtract(mine)
    train = [p for p in unique if p.id not in held]
    evals = [p for p in unique if p.id in held]
    return train, evals


def edges_covered(paths: Iterable[FlowPath]) -> set[int]:
    return {i for p in paths for i in p.edges}
