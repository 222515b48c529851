"""Replay fitness: how well a mined chart explains conversations it was not mined from.

A held-out conversation fits when the chart accepts its action sequence: starting at the
start node, each assistant turn's action (labelled as the mining labelled its traffic) is
a node reachable through silent decision hubs, and the last one ends the workflow (a
terminal, or a silent terminal behind it). Coverage says how much of the chart the
held-out traffic walks. The chart is walked as a nondeterministic automaton, so an
action that two nodes share (a split) is followed down both.

Example::

    report = fitness(mined, held_out)
    report.share, report.node_coverage, report.misfits[:3]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from compiler.flowchart import Flowchart
from compiler.mine.miner import MinedWorkflow
from compiler.mine.traces import Trace


@dataclass
class FitnessReport:
    """Fitness on held-out conversations; ``misfits`` are (conversation id, why)."""

    conversations: int
    fitting: int
    node_coverage: float
    edge_coverage: float
    misfits: list[tuple[str, str]] = field(default_factory=list)

    @property
    def share(self) -> float:
        return self.fitting / self.conversations if self.conversations else 0.0


def _producing(fc: Flowchart, nid: str) -> bool:
    node = fc.nodes[nid]
    return node.speaks or node.kind == "tool"


def _next_actions(fc: Flowchart, origin: str) -> list[tuple[str, tuple[int, ...]]]:
    """Producing nodes reachable from ``origin`` through silent nodes, with the edges taken."""
    out: list[tuple[str, tuple[int, ...]]] = []
    todo: list[tuple[str, tuple[int, ...]]] = [(origin, ())]
    seen = {origin}
    while todo:
        nid, path = todo.pop(0)
        for i in fc.out_edge_indexes(nid):
            target = fc.edges[i].target
            if target not in fc.nodes:
                continue
            if _producing(fc, target):
                out.append((target, (*path, i)))
            elif target not in seen:
                seen.add(target)
                todo.append((target, (*path, i)))
    return out


def _ending(fc: Flowchart, origin: str) -> tuple[int, ...] | None:
    """The edges to a silent terminal through silent nodes, () if ``origin`` is a terminal, else None."""
    if fc.nodes[origin].kind == "terminal":
        return ()
    todo: list[tuple[str, tuple[int, ...]]] = [(origin, ())]
    seen = {origin}
    while todo:
        nid, path = todo.pop(0)
        for i in fc.out_edge_indexes(nid):
            target = fc.edges[i].target
            if target not in fc.nodes or target in seen or _producing(fc, target):
                continue
            if fc.nodes[target].kind == "terminal":
                return (*path, i)
            seen.add(target)
            todo.append((target, (*path, i)))
    return None


def accepts(
    fc: Flowchart, node_labels: dict[str, str], actions: Sequence[str | None]
) -> tuple[bool, str, set[str], set[int]]:
    """Whether the chart accepts an action sequence; why not; the nodes and edges walked."""
    states: dict[str, tuple[int, ...]] = {fc.start: ()}
    prev = fc.start
    for k, action in enumerate(actions):
        if action is None:
            return False, f"turn {k + 1}: a reply like no mined step", _nodes(fc, states), _edges(states)
        nxt: dict[str, tuple[int, ...]] = {}
        for nid, walked in states.items():
            for target, path in _next_actions(fc, nid):
                if node_labels.get(target) == action and target not in nxt:
                    nxt[target] = walked + path
        if not nxt:
            want = next((n for n, lab in node_labels.items() if lab == action), _show(action))
            return False, f"turn {k + 1}: `{want}` never follows `{prev}`", _nodes(fc, states), _edges(states)
        states = nxt
        prev = next(iter(nxt))
    for nid, walked in states.items():
        tail = _ending(fc, nid)
        if tail is not None:
            done = {nid: walked + tail}
            return True, "", _nodes(fc, done), _edges(done)
    return False, f"ends at `{prev}`, where the workflow does not end", _nodes(fc, states), _edges(states)


def _show(label: str) -> str:
    kind, _, rest = label.partition(":")
    return f"{kind}:{rest.splitlines()[0][:60]}" if rest else label


def _edges(states: dict[str, tuple[int, ...]]) -> set[int]:
    return {i for walked in states.values() for i in walked}


def _nodes(fc: Flowchart, states: dict[str, tuple[int, ...]]) -> set[str]:
    out = {fc.start}
    for walked in states.values():
        for i in walked:
            out.add(fc.edges[i].target)
    return out


def label_trace(mined: MinedWorkflow, trace: Trace) -> list[str | None]:
    """A new conversation's actions, labelled the way the mined traffic was."""
    binding = mined.bind(trace)
    return [mined.model.label(turn, binding) for turn in trace.turns]


def fitness(mined: MinedWorkflow, held_out: Sequence[Trace], fc: Flowchart | None = None) -> FitnessReport:
    """Fitness and coverage of ``fc`` (the mined chart, or an edited copy with the same node ids)."""
    chart = fc or mined.flowchart
    fitting = 0
    nodes: set[str] = set()
    edges: set[int] = set()
    misfits: list[tuple[str, str]] = []
    for trace in held_out:
        ok, why, walked_nodes, walked_edges = accepts(chart, mined.node_labels, label_trace(mined, trace))
        nodes |= walked_nodes
        edges |= walked_edges
        if ok:
            fitting += 1
        else:
            misfits.append((trace.id, why))
    return FitnessReport(
        conversations=len(held_out),
        fitting=fitting,
        node_coverage=len(nodes & set(chart.nodes)) / (len(chart.nodes) or 1),
        edge_coverage=len(edges) / (len(chart.edges) or 1),
        misfits=misfits,
    )


@dataclass
class Recovery:
    """How a mined chart's nodes line up with a known procedure's steps (for tests and benchmarks).

    Each mined node stands for the true step most of its turns came from; a true step is
    recovered when some node stands for it, and every further node standing for an
    already recovered step (or for nothing) is extra.
    """

    true_steps: int
    recovered: int
    extra: int
    mapping: dict[str, str]  # mined node -> true step

    @property
    def share(self) -> float:
        return self.recovered / self.true_steps if self.true_steps else 0.0

    @property
    def extra_share(self) -> float:
        return self.extra / self.true_steps if self.true_steps else 0.0


def step_recovery(turn_nodes: Sequence[Sequence[str]], truth: Sequence[Sequence[str]]) -> Recovery:
    """Compare mined nodes with the true step of every assistant turn (same conversations, same order)."""
    votes: dict[str, dict[str, int]] = {}
    steps: set[str] = set()
    for mined_row, true_row in zip(turn_nodes, truth, strict=True):
        if len(mined_row) != len(true_row):
            raise ValueError("a conversation's mined and true turns differ in number; pass the same conversations")
        for node, step in zip(mined_row, true_row, strict=True):
            steps.add(step)
            per = votes.setdefault(node, {})
            per[step] = per.get(step, 0) + 1
    mapping = {node: max(per, key=lambda s: (per[s], s)) for node, per in votes.items()}
    recovered = set(mapping.values())
    return Recovery(len(steps), len(recovered), len(mapping) - len(recovered), mapping)
