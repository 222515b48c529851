"""The mining stage: captured conversations in, a flowchart draft (and what it was built from) out.

Stages, each in its own module: static/transient split of the system text (``static``),
slots (``slots``), action labels (``actions``), the graph (``automaton``), the chart
(``build``). Fitness on held-out conversations is in ``fitness``, the replay gate in
``replay``.

Example::

    train, held_out = holdout_split(read_traces("travel.jsonl"), 0.2)
    mined = mine(train, name="travel")
    print(fitness(mined, held_out).share)
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from compiler.flowchart import Flowchart
from compiler.mine.actions import ActionModel, label_actions
from compiler.mine.automaton import END, START, Graph, infer_graph
from compiler.mine.build import build_flowchart
from compiler.mine.slots import SlotFinding, find_slots, value_text
from compiler.mine.static import StaticSplit, split_static
from compiler.mine.traces import MineError, Trace


@dataclass
class MinedWorkflow:
    """The draft chart plus the models that relate new conversations to it."""

    flowchart: Flowchart
    node_labels: dict[str, str]  # action node id -> action label
    model: ActionModel
    split: StaticSplit
    slots: SlotFinding
    graph: Graph
    turn_nodes: list[list[str]]  # per conversation the chart was built from: the node of each assistant turn
    conversations: int
    seconds: float
    used: list[int] = field(default_factory=list)  # indexes of the conversations the chart was built from
    outliers: list[str] = field(default_factory=list)  # ids of conversations set aside as noise

    def nodes_for(self, label: str | None) -> list[str]:
        return [n for n, lab in self.node_labels.items() if lab == label]

    def bind(self, trace: Trace) -> dict[str, list[str]]:
        """A new conversation's slot values, read from its tool calls (for masking its replies)."""
        out: dict[str, list[str]] = {}
        for turn in trace.turns:
            for arg, raw in turn.arguments.items():
                slot = self.slots.arg_slots.get((turn.tool or "", str(arg)))
                value = value_text(raw)
                if slot and value is not None:
                    bound = out.setdefault(slot, [])
                    if value not in bound:
                        bound.append(value)
        return out


def mine(
    traces: Sequence[Trace],
    name: str = "workflow",
    min_support: int | None = None,
    distance: float = 0.5,
    noise: float = 0.0,
) -> MinedWorkflow:
    """Mine a flowchart draft from conversations of one workflow.

    ``min_support``: turns each side of a node split needs (default: 2% of the
    conversations, at least 5); ``distance``: cosine distance under which replies are one
    step when the app names no step; ``noise``: a conversation taking a transition seen in
    less than this share of its node's departures is set aside (``outliers``) and the chart
    is built from the rest. 0 keeps everything: every transition seen becomes an edge.
    """
    if not traces:
        raise MineError("no conversations to mine; export the workflow's traffic first")
    began = time.perf_counter()
    split = split_static(traces)
    slots = find_slots(traces)
    labels, model = label_actions(traces, split, slots, distance=distance)
    support = min_support if min_support is not None else max(5, len(traces) // 50)
    graph = infer_graph(labels, min_support=support)
    used = list(range(len(traces)))
    if noise > 0:
        used = [i for i, walk in enumerate(graph.walks) if not _rare(graph, walk, noise)]
        if not used:
            raise MineError(f"every conversation takes a transition rarer than `noise` {noise}; lower it")
        if len(used) < len(traces):
            graph = infer_graph([labels[i] for i in used], min_support=support)
    kept = [traces[i] for i in used]
    kept_slots = replace(slots, bindings=tuple(slots.bindings[i] for i in used))
    fc, node_labels, ids = build_flowchart(graph, kept, kept_slots, split, name=name)
    once = sum(1 for occ in graph.occurrences.values() if len(occ) == 1)
    if len(graph.nodes) >= 10 and once > len(graph.nodes) / 2:
        fc = replace(fc, notes=(
            *fc.notes,
            f"{once} of {len(graph.nodes)} steps were seen once: this traffic may not follow one procedure, "
            "or its replies vary more than clustering joins (see docs/mining.md)",
        ))
    turn_nodes = [[ids[n] for n in walk] for walk in graph.walks]
    outliers = [traces[i].id for i in sorted(set(range(len(traces))) - set(used))]
    return MinedWorkflow(
        fc, node_labels, model, split, slots, graph, turn_nodes, len(traces), time.perf_counter() - began,
        used, outliers,
    )


def _rare(graph: Graph, walk: Sequence[str], noise: float) -> bool:
    """Whether a conversation takes a transition below ``noise`` of its source's departures."""
    prev = START
    for node in [*walk, END]:
        out = graph.succ.get(prev)
        if out is not None and out[node] < noise * sum(out.values()):
            return True
        prev = node
    return False


def holdout_split(traces: Sequence[Trace], share: float, seed: int = 0) -> tuple[list[Trace], list[Trace]]:
    """(mining, held-out) by whole conversation, seeded; at least one conversation is mined."""
    if not 0.0 <= share < 1.0:
        raise MineError(f"holdout share `{share}` must be in [0, 1); e.g. 0.2 holds out a fifth")
    order = list(range(len(traces)))
    random.Random(seed).shuffle(order)
    out = set(order[:held_out_count(len(traces), share)])
    return [t for i, t in enumerate(traces) if i not in out], [t for i, t in enumerate(traces) if i in out]


def held_out_count(conversations: int, share: float) -> int:
    """How many of ``conversations`` :func:`holdout_split` holds out: ``share`` of them, rounded, at most all but one."""
    return max(0, min(int(round(share * conversations)), conversations - 1))


def fewest_to_hold_out(share: float) -> int:
    """The fewest conversations of which ``share`` (> 0) holds at least one out: 3 for 0.2, 2 for 0.5."""
    if share <= 0:
        raise MineError(f"holdout share `{share}` holds nothing out, however many conversations there are")
    n = max(2, int(0.5 / share))
    while held_out_count(n, share) < 1:
        n += 1
    return n
