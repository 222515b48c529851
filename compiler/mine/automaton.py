"""From labelled conversations to a graph of agent steps: prefix tree, then state merging.

Every assistant turn of every conversation is a state of the prefix-tree acceptor (one
state per distinct conversation prefix). States are merged into graph nodes by the
action that enters them, the coarsest merge, which on its own gives the directly-follows
graph of process mining. That over-merges when one action plays two roles (the same
tool called at two points of the procedure, leading to different things), so a node is
split again where the evidence says so: when the states entering it from some
predecessors are followed by actions that never follow it from the others, and each side
has at least ``min_support`` turns. Splitting repeats until nothing changes (a split can
reveal another); a loop back to a step is merged with it because both are followed by
the same actions.

Example::

    graph = infer_graph(labels, min_support=10)
    graph.nodes, graph.succ["tool:search_flights"]
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

START = "^start"
END = "$end"


@dataclass
class Graph:
    """Nodes (id -> action label), transitions with counts, and each conversation's walk."""

    nodes: dict[str, str]
    succ: dict[str, Counter[str]]  # node (or START) -> next node (or END) -> conversations
    walks: list[list[str]]  # per conversation: the node of each assistant turn
    splits: int = 0
    prefix_states: int = 0
    occurrences: dict[str, list[tuple[int, int]]] = field(default_factory=dict)


def _components(keys: list[str], sets: dict[str, set[str]]) -> list[list[str]]:
    """Predecessors grouped when their successor sets overlap (union-find)."""
    parent = {k: k for k in keys}

    def find(k: str) -> str:
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    for i, a in enumerate(keys):
        for b in keys[i + 1:]:
            if sets[a] & sets[b]:
                parent[find(a)] = find(b)
    groups: dict[str, list[str]] = {}
    for k in keys:
        groups.setdefault(find(k), []).append(k)
    return list(groups.values())


def _prefix_states(labels: Sequence[Sequence[str]]) -> int:
    seen: set[tuple[str, ...]] = set()
    for row in labels:
        for k in range(1, len(row) + 1):
            seen.add(tuple(row[:k]))
    return len(seen)


def infer_graph(labels: Sequence[Sequence[str]], min_support: int = 10, max_rounds: int = 50) -> Graph:
    """Merge the prefix tree's states by entering action, then split where futures disagree."""
    walks = [list(row) for row in labels]
    node_label = {lab: lab for row in walks for lab in row}
    splits = 0
    for _ in range(max_rounds):
        changed = False
        occ: dict[str, list[tuple[int, int]]] = {}
        for ti, walk in enumerate(walks):
            for k, node in enumerate(walk):
                occ.setdefault(node, []).append((ti, k))
        for node in sorted(occ):
            by_pred: dict[str, list[tuple[int, int]]] = {}
            futures: dict[str, set[str]] = {}
            for ti, k in occ[node]:
                pred = walks[ti][k - 1] if k > 0 else START
                nxt = walks[ti][k + 1] if k + 1 < len(walks[ti]) else END
                by_pred.setdefault(pred, []).append((ti, k))
                futures.setdefault(pred, set()).add(nxt)
            if len(by_pred) < 2:
                continue
            preds = sorted(by_pred, key=lambda p: min(by_pred[p]))
            groups = _components(preds, futures)
            if len(groups) < 2 or any(sum(len(by_pred[p]) for p in g) < min_support for g in groups):
                continue
            groups.sort(key=lambda g: min(min(by_pred[p]) for p in g))
            for i, group in enumerate(groups[1:], start=2):
                new = f"{node}#{i}"
                node_label[new] = node_label[node]
                for p in group:
                    for ti, k in by_pred[p]:
                        walks[ti][k] = new
            splits += 1
            changed = True
            break  # occurrences changed: recount before the next split
        if not changed:
            break
    succ: dict[str, Counter[str]] = {}
    occurrences: dict[str, list[tuple[int, int]]] = {}
    for ti, walk in enumerate(walks):
        prev = START
        for k, node in enumerate(walk):
            succ.setdefault(prev, Counter())[node] += 1
            occurrences.setdefault(node, []).append((ti, k))
            prev = node
        succ.setdefault(prev, Counter())[END] += 1
    # Nodes in the order a reader meets them: by their mean position in the conversations.
    order = sorted(occurrences, key=lambda n: (sum(k for _, k in occurrences[n]) / len(occurrences[n]), n))
    nodes = {n: node_label[n] for n in order}
    return Graph(nodes, succ, walks, splits, _prefix_states(labels), occurrences)
