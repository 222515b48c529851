"""Start-to-terminal paths through a flowchart: what the training conversations cover.

Loops are unrolled by bounding node visits: a path may visit any node at most
``max_loops + 1`` times, so ``max_loops=0`` gives the simple paths and each extra unit
lets every loop be taken once more. Paths run over edges, not nodes, so two labelled
edges between the same nodes give two paths.

Past ``budget`` paths, enumeration stops and a sample is drawn instead, by the method
``edge-cover+random-walk``: first, for every edge in file order that no chosen path
covers yet, the shortest path through it (BFS to its source, the edge, BFS to the
nearest terminal) is added if it respects the visit bound; then seeded random walks
that prefer the least-used edges fill the budget (and when the walks start
repeating themselves, a depth-first enumeration in seeded random edge order tops the
sample up to the budget). Every edge that any bounded path can
cover is therefore covered, even when the cover alone exceeds the budget (coverage
wins over the budget; the count is reported).

Example::

    ps = enumerate_paths(fc, max_loops=1, budget=500)
    print(len(ps.paths), ps.edge_coverage, ps.method)
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field

from compiler.flowchart import Flowchart, FlowchartError


@dataclass(frozen=True)
class FlowPath:
    """One start-to-terminal walk; ``edges`` index into ``Flowchart.edges``."""

    id: str
    nodes: tuple[str, ...]
    edges: tuple[int, ...]

    @property
    def terminal(self) -> str:
        return self.nodes[-1]


@dataclass(frozen=True)
class PathSet:
    paths: tuple[FlowPath, ...]
    node_coverage: float
    edge_coverage: float
    sampled: bool
    method: str
    max_loops: int = 1
    total: int | None = None  # exact count when enumerated; None when sampling cut it short
    uncovered_nodes: tuple[str, ...] = field(default=())
    uncovered_edges: tuple[int, ...] = field(default=())

    def __len__(self) -> int:
        return len(self.paths)


def path_id(nodes: tuple[str, ...], edges: tuple[int, ...]) -> str:
    """Stable across runs and processes: a hash of the walk itself, not its position."""
    key = "|".join(nodes) + "#" + ",".join(map(str, edges))
    return "p-" + hashlib.sha1(key.encode("utf-8")).hexdigest()[:10]


def make_path(fc: Flowchart, edges: tuple[int, ...]) -> FlowPath:
    nodes = (fc.start, *(fc.edges[i].target for i in edges))
    return FlowPath(path_id(nodes, edges), nodes, edges)


def _can_finish(fc: Flowchart) -> set[str]:
    """Nodes from which some terminal is reachable (ignoring the visit bound)."""
    into: dict[str, list[str]] = {n: [] for n in fc.nodes}
    for e in fc.edges:
        if e.target in into and e.source in fc.nodes:
            into[e.target].append(e.source)
    ok = {n.id for n in fc.nodes.values() if n.kind == "terminal"}
    todo = list(ok)
    while todo:
        for src in into[todo.pop()]:
            if src not in ok:
                ok.add(src)
                todo.append(src)
    return ok


def _usable(fc: Flowchart) -> None:
    if fc.start not in fc.nodes:
        raise FlowchartError(f"flowchart `{fc.name}`: start node `{fc.start}` does not exist; fix `start:`")
    if fc.start not in _can_finish(fc):
        raise FlowchartError(
            f"flowchart `{fc.name}`: no terminal is reachable from the start node `{fc.start}`; "
            "run `tiergate flowchart check` and fix the dead ends"
        )


def count_paths(fc: Flowchart, max_loops: int = 1, limit: int | None = None) -> int:
    """Number of bounded paths, or ``limit + 1`` as soon as it exceeds ``limit``."""
    n = 0
    for _ in _walk(fc, max_loops):
        n += 1
        if limit is not None and n > limit:
            break
    return n


def _walk(fc: Flowchart, max_loops: int, rng: random.Random | None = None) -> Iterator[tuple[int, ...]]:
    """Depth-first, edges in file order (or shuffled by ``rng``): a deterministic order for a given chart."""
    finish = _can_finish(fc)
    cap = max_loops + 1
    visits: Counter[str] = Counter({fc.start: 1})
    trail: list[int] = []
    out = {n: [i for i in fc.out_edge_indexes(n) if fc.edges[i].target in finish] for n in fc.nodes}
    if rng is not None:
        for choices in out.values():
            rng.shuffle(choices)
    # Explicit stack of (node, next out-edge position) to survive deep charts.
    stack: list[tuple[str, int]] = [(fc.start, 0)]
    while stack:
        node, pos = stack.pop()
        if pos == 0 and fc.nodes[node].kind == "terminal":
            yield tuple(trail)
        choices = out[node]
        advanced = False
        while pos < len(choices):
            i = choices[pos]
            pos += 1
            nxt = fc.edges[i].target
            if visits[nxt] >= cap:
                continue
            stack.append((node, pos))
            stack.append((nxt, 0))
            visits[nxt] += 1
            trail.append(i)
            advanced = True
            break
        if not advanced and stack:
            # Leaving `node`: undo the step that entered it (the start node is never undone).
            visits[node] -= 1
            trail.pop()


def enumerate_paths(fc: Flowchart, max_loops: int = 1, budget: int | None = None, seed: int = 0) -> PathSet:
    """All bounded paths, or past ``budget`` a seeded sample that covers every coverable edge."""
    if max_loops < 0:
        raise FlowchartError(f"`max_loops` is {max_loops}; it must be 0 or more")
    if budget is not None and budget < 1:
        raise FlowchartError(f"`budget` is {budget}; it must be at least 1 (or None for no limit)")
    _usable(fc)
    found: list[tuple[int, ...]] = []
    over = False
    for edges in _walk(fc, max_loops):
        found.append(edges)
        if budget is not None and len(found) > budget:
            over = True
            break
    if not over:
        return _pathset(fc, [make_path(fc, e) for e in found], max_loops, False, "exhaustive", len(found))
    assert budget is not None
    paths = _sample(fc, max_loops, budget, seed)
    return _pathset(fc, paths, max_loops, True, "edge-cover+random-walk", None)


def _pathset(
    fc: Flowchart, paths: list[FlowPath], max_loops: int, sampled: bool, method: str, total: int | None
) -> PathSet:
    nodes_seen = {n for p in paths for n in p.nodes}
    edges_seen = {i for p in paths for i in p.edges}
    un_nodes = tuple(n for n in fc.nodes if n not in nodes_seen)
    un_edges = tuple(i for i in range(len(fc.edges)) if i not in edges_seen)
    return PathSet(
        paths=tuple(paths),
        node_coverage=len(nodes_seen) / len(fc.nodes) if fc.nodes else 1.0,
        edge_coverage=len(edges_seen) / len(fc.edges) if fc.edges else 1.0,
        sampled=sampled,
        method=method,
        max_loops=max_loops,
        total=total,
        uncovered_nodes=un_nodes,
        uncovered_edges=un_edges,
    )


def _bfs_edges(fc: Flowchart, origin: str, goal: set[str]) -> tuple[int, ...] | None:
    """Shortest edge sequence from ``origin`` to any node in ``goal`` (first edge in file order wins ties)."""
    if origin in goal:
        return ()
    prev: dict[str, tuple[str, int]] = {}
    seen = {origin}
    queue = deque([origin])
    while queue:
        node = queue.popleft()
        for i in fc.out_edge_indexes(node):
            nxt = fc.edges[i].target
            if nxt in seen or nxt not in fc.nodes:
                continue
            seen.add(nxt)
            prev[nxt] = (node, i)
            if nxt in goal:
                trail = []
                cur = nxt
                while cur != origin:
                    cur, idx = prev[cur]
                    trail.append(idx)
                return tuple(reversed(trail))
            queue.append(nxt)
    return None


def _within_bound(fc: Flowchart, edges: tuple[int, ...], max_loops: int) -> bool:
    counts = Counter(make_path(fc, edges).nodes)
    return max(counts.values()) <= max_loops + 1


def _sample(fc: Flowchart, max_loops: int, budget: int, seed: int) -> list[FlowPath]:
    terminals = set(fc.terminals)
    chosen: dict[tuple[int, ...], None] = {}
    used: Counter[int] = Counter()

    def add(edges: tuple[int, ...]) -> None:
        if edges not in chosen:
            chosen[edges] = None
            used.update(edges)

    for i, edge in enumerate(fc.edges):
        if i in used:
            continue
        head = _bfs_edges(fc, fc.start, {edge.source})
        tail = _bfs_edges(fc, edge.target, terminals)
        if head is None or tail is None:
            continue
        candidate = (*head, i, *tail)
        if _within_bound(fc, candidate, max_loops):
            add(candidate)
    rng = random.Random(f"paths|{fc.name}|{seed}")
    finish = _can_finish(fc)
    cap = max_loops + 1
    attempts = 0
    while len(chosen) < budget and attempts < budget * 5:
        attempts += 1
        walk = _random_walk(fc, rng, used, finish, cap)
        if walk is not None:
            add(walk)
    if len(chosen) < budget:
        # Walks favour short paths and start repeating; fill the rest from a depth-first
        # enumeration whose edge order is shuffled by the seed (there are more than
        # `budget` paths, so this always reaches the budget).
        for edges in _walk(fc, max_loops, rng):
            add(edges)
            if len(chosen) >= budget:
                break
    return [make_path(fc, e) for e in chosen]


def _random_walk(
    fc: Flowchart, rng: random.Random, used: Counter[int], finish: set[str], cap: int
) -> tuple[int, ...] | None:
    visits: Counter[str] = Counter({fc.start: 1})
    node = fc.start
    trail: list[int] = []
    for _ in range(cap * len(fc.nodes) + 1):
        if fc.nodes[node].kind == "terminal":
            return tuple(trail)
        options = [
            i
            for i in fc.out_edge_indexes(node)
            if fc.edges[i].target in finish and visits[fc.edges[i].target] < cap
        ]
        if not options:
            return None
        # Weight towards rarely used edges so the sample spreads over the chart.
        weights = [1.0 / (1 + used[i]) for i in options]
        i = rng.choices(options, weights=weights)[0]
        trail.append(i)
        node = fc.edges[i].target
        visits[node] += 1
    return None
