"""From a drawing (nodes with shapes and labels, labelled edges) to a flowchart.

Mermaid, DOT and LangGraph all end here, so the three importers infer kinds the same
way and a chart reads the same whichever tool drew it. A drawing that its own tool
accepts must come out checkable: where a drawing leaves something implicit (a node
with no way out, several entry points, a diagram that opens on a decision) the chart
is repaired the one obvious way and a note says so, instead of failing the import.

Example::

    nodes = {"s": DrawnNode("s", "Start", "oval"), "a": DrawnNode("a", "Ask", "rect")}
    fc = from_graph("demo", "<demo>", nodes, [DrawnEdge("s", "a")])
    fc.nodes["a"].outcome, fc.notes   # ('handoff', ('node `a` has no way out ...',))
"""

from __future__ import annotations

import dataclasses
import html
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from compiler.flowchart import (
    NODE_KINDS,
    OUTCOMES,
    Edge,
    Flowchart,
    FlowchartError,
    Node,
    NodeKind,
    Outcome,
    strongly_connected,
)

Shape = Literal["rect", "round", "oval", "decision", "tool"]

_END_WORDS = re.compile(
    r"\b(end|ends|ended|done|finish|finished|close|closed|goodbye|bye|success|resolved|complete|completed|"
    r"escalat\w*|transfer\w*|handover|hand over|human|abandon\w*|cancel\w*|gives? up|gave up|quit|hangs? up)\b",
    re.I,
)
_START_WORDS = re.compile(r"\b(start|begin|begins|entry|open|opens)\b", re.I)


@dataclass
class DrawnNode:
    """A node as an importer saw it.

    ``shape`` is the class kinds are inferred from; ``drawn`` is the shape's own name in
    the source format (Mermaid's ``hexagon``, DOT's ``box3d``), kept for messages and for
    comparing with the reference parsers; ``attrs`` holds explicit ``kind``/``tool``/
    ``outcome`` overrides.
    """

    id: str
    label: str = ""
    shape: Shape = "rect"
    attrs: dict[str, str] = field(default_factory=dict)
    line: int = 0
    drawn: str | None = None
    group: str | None = None


@dataclass
class DrawnEdge:
    source: str
    target: str
    label: str = ""
    line: int = 0
    drawn: str = ""  # the arrow as written (`-.->`, `==>`), for messages and tests


def clean_label(text: str) -> str:
    """One line of plain text from a drawn label: HTML line breaks and tags dropped, entities decoded."""
    text = re.sub(r"<br\s*/?>", " ", text, flags=re.I)
    text = re.sub(r"</?[A-Za-z][^<>]*>", "", text)
    text = html.unescape(text)
    return " ".join(text.replace("\\n", " ").split())


def infer_outcome(text: str) -> Outcome:
    """Read a terminal's outcome from its words: escalate and abandon are named, anything else succeeds."""
    low = text.lower()
    if re.search(r"escalat|transfer|handover|hand over|human|colleague|supervisor|operator", low):
        return "escalate"
    if re.search(
        r"abandon|cancel|gives? up|gave up|quit|hangs? up|declin|without|leaves|\bnot\b|\bno\b", low
    ):
        return "abandon"
    return "success"


def slug(text: str) -> str:
    out = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")
    return out or "tool"


def _fresh_id(base: str, taken: Mapping[str, object]) -> str:
    nid, i = base, 1
    while nid in taken:
        i += 1
        nid = f"{base}_{i}"
    return nid


def _components(nodes: Mapping[str, DrawnNode], edges: list[DrawnEdge]) -> list[list[str]]:
    """Strongly connected components, each in file order (Tarjan's, via the model's own)."""
    probe = Flowchart(
        name="",
        system_prompt="",
        start="",
        nodes={nid: Node(nid, "agent", nid) for nid in nodes},
        edges=tuple(Edge(e.source, e.target) for e in edges),
    )
    order = {nid: k for k, nid in enumerate(nodes)}
    comps = [sorted(c, key=order.__getitem__) for c in strongly_connected(probe)]
    return sorted(comps, key=lambda c: order[c[0]])


def _looks_like_start(n: DrawnNode) -> bool:
    return n.shape in ("oval", "round") or bool(_START_WORDS.search(n.label or n.id))


def _entries(nodes: Mapping[str, DrawnNode], edges: list[DrawnEdge], comps: list[list[str]]) -> list[str]:
    """One node per part of the drawing nothing leads into: where a conversation can begin.

    A root (no incoming edge) is its own part; a loop that nothing enters is one part,
    entered at its start-looking node or else its first node in the file. Explicit
    ``kind=start`` nodes come first.
    """
    comp_of = {nid: i for i, comp in enumerate(comps) for nid in comp}
    entered = {comp_of[e.target] for e in edges if comp_of[e.source] != comp_of[e.target]}
    picks = []
    for i, comp in enumerate(comps):
        if i in entered:
            continue
        members = [nodes[m] for m in comp]
        pick = next((n for n in members if n.attrs.get("kind") == "start"), None)
        pick = pick or next((n for n in members if _looks_like_start(n)), members[0])
        picks.append(pick)
    explicit = [n.id for n in picks if n.attrs.get("kind") == "start"]
    preferred = [n.id for n in picks if n.id not in explicit and _looks_like_start(n)]
    return explicit + preferred + [n.id for n in picks if n.id not in explicit and n.id not in preferred]


def _infer_kind(n: DrawnNode, start: str, has_out: bool) -> str:
    label = (n.label or n.id).strip()
    if n.shape == "decision":
        return "decision"
    if n.shape == "tool" or "tool" in n.attrs:
        return "tool"
    if n.id == start:
        return "start" if (n.shape in ("oval", "round") or _START_WORDS.search(label)) else "agent"
    if not has_out and (n.shape == "oval" or _END_WORDS.search(label)):
        return "terminal"
    return "agent"


def from_graph(
    name: str,
    source: str,
    nodes: Mapping[str, DrawnNode],
    edges: Iterable[DrawnEdge],
    tool_schemas: Mapping[str, dict[str, Any]] | None = None,
    clusters: Mapping[str, list[str]] | None = None,
) -> Flowchart:
    """Turn a drawing into a chart, inferring kinds from shapes and position.

    Decisions come from diamond/hexagon shapes and tools from subroutine-like shapes (or
    an explicit ``kind``/``tool`` attribute). The start is where the drawing begins: a node
    nothing leads to, or a loop nothing leads into (an oval/stadium node, or one labelled
    "start", preferred; an explicit ``kind=start`` first). A node with no way out
    is a terminal: drawn as an oval/stadium or labelled like an ending ("done", "escalate
    to a human"), its outcome is read from the label; otherwise it is a **hand-off**
    (outcome ``handoff``: the conversation continues in another chart or team), with a
    note naming it. Repairs, each with a note: nodes connected to nothing are left out;
    several entry points (roots, or loops nothing leads into) get one start node leading to
    each; a chart that opens on a decision, tool or end gets a start node before it; a
    loop with no way out gets a hand-off exit. So every drawing its own tool accepts comes
    out with no structural issue, unless its explicit ``kind``/``outcome`` say otherwise.
    """
    edge_list = list(edges)
    notes: list[str] = []
    where = f"`{source}`"
    for cid, members in (clusters or {}).items():
        if cid in nodes:
            nodes, edge_list = _enter_cluster(cid, members, nodes, edge_list, notes, where)
    if edge_list:
        linked = {e.source for e in edge_list} | {e.target for e in edge_list}
        isolated = [n.id for n in nodes.values() if n.id not in linked and n.attrs.get("kind") != "start"]
        if isolated:
            notes.append(
                f"{where}: {_names(isolated, verb=False)} connected to no other node; left out of the chart"
            )
            nodes = {k: v for k, v in nodes.items() if k not in isolated}
    outgoing = {e.source for e in edge_list}
    comps = _components(nodes, edge_list)
    entries = _entries(nodes, edge_list, comps)
    start = entries[0] if entries else ""
    built: dict[str, Node] = {}
    handoffs: list[str] = []
    for n in nodes.values():
        label = (n.label or n.id).strip()
        explicit = n.attrs.get("kind", "")
        kind = explicit or _infer_kind(n, start, n.id in outgoing)
        if kind not in NODE_KINDS:
            raise FlowchartError(
                f"{where} line {n.line}: node `{n.id}` has unknown kind `{kind}`; use one of {', '.join(NODE_KINDS)}"
            )
        outcome = n.attrs.get("outcome")
        if not explicit and n.id not in outgoing and kind != "terminal" and n.id != start:
            kind = "terminal"  # a dead end the drawing did not mark as an end: the chart hands off here
            outcome = outcome or "handoff"
            handoffs.append(n.id)
        if outcome is None and kind == "terminal":
            outcome = infer_outcome(label)
        if outcome is not None and outcome not in OUTCOMES:
            raise FlowchartError(
                f"{where} line {n.line}: node `{n.id}` has unknown outcome `{outcome}`; use one of {', '.join(OUTCOMES)}"
            )
        tool = (n.attrs.get("tool") or slug(label)) if kind == "tool" else None
        built[n.id] = Node(
            id=n.id,
            kind=cast(NodeKind, kind),
            text=label,
            tool=tool,
            # a real schema's required arguments, as `{slot}` placeholders for the author to fill
            args=_required_args((tool_schemas or {}).get(tool or "")),
            outcome=cast(Outcome | None, outcome) if kind == "terminal" else None,
            group=n.group,
        )
    if handoffs:
        notes.append(
            f"{where}: {_names(handoffs)} no way out and not drawn as an end; imported as hand-off "
            "terminal(s) (outcome `handoff`): mark real ends with an oval/stadium shape or an ending label"
        )
    chart_edges = [Edge(e.source, e.target, condition=e.label.strip()) for e in edge_list]
    chart_edges += _close_loops(comps, edge_list, built, notes, where)
    if built and (len(entries) > 1 or built[start].kind not in ("start", "agent")):
        new = _fresh_id("start", built)
        for r in entries:  # the entries become ordinary steps behind the one start
            if built[r].kind == "start" and nodes[r].attrs.get("kind") != "start":
                built[r] = dataclasses.replace(built[r], kind="agent")
        built = {new: Node(new, "start", "The conversation starts."), **built}
        several = len(entries) > 1
        chart_edges = [
            Edge(new, r, condition=built[r].text if several else "") for r in entries
        ] + chart_edges
        notes.append(
            f"{where}: added a start node `{new}` leading to {_names(entries, verb=False)}"
            + (" (the drawing has several entry points)" if several else " (the drawing opens on a "
               f"`{built[start].kind}` node)")
        )
        start = new
    # Stub schemas (unless the source had real ones) so the YAML shows where parameters go.
    known = tool_schemas or {}
    tools = tuple(
        known.get(t)
        or {
            "type": "function",
            "function": {
                "name": t,
                "description": n.text,
                "parameters": {"type": "object", "properties": {}},
            },
        }
        for t, n in {n.tool: n for n in built.values() if n.tool}.items()
    )
    return Flowchart(
        name=name,
        system_prompt="",
        start=start,
        tools=tools,
        nodes=built,
        edges=tuple(chart_edges),
        source=source,
        notes=tuple(notes),
    )


def _enter_cluster(
    cid: str,
    members: list[str],
    nodes: Mapping[str, DrawnNode],
    edges: list[DrawnEdge],
    notes: list[str],
    where: str,
) -> tuple[dict[str, DrawnNode], list[DrawnEdge]]:
    """A link to a subgraph (Mermaid's `A --> sub`) enters it at its first steps; one from it leaves from its last."""
    inner = [m for m in members if m in nodes and m != cid]
    if not inner:
        return dict(nodes), edges
    inside = set(inner)
    heads = [m for m in inner if not any(e.target == m and e.source in inside for e in edges)] or inner[:1]
    tails = [m for m in inner if not any(e.source == m and e.target in inside for e in edges)] or inner[-1:]
    out: list[DrawnEdge] = []
    for e in edges:
        if e.source == cid and e.target == cid:
            continue
        if e.target == cid:
            out.extend(DrawnEdge(e.source, h, e.label, e.line, e.drawn) for h in heads)
        elif e.source == cid:
            out.extend(DrawnEdge(t, e.target, e.label, e.line, e.drawn) for t in tails)
        else:
            out.append(e)
    notes.append(
        f"{where}: links to the subgraph `{cid}` enter it at {_names(heads, verb=False)}; "
        f"links from it leave from {_names(tails, verb=False)}"
    )
    return {k: v for k, v in nodes.items() if k != cid}, out


def _required_args(schema: Mapping[str, Any] | None) -> dict[str, str]:
    params = (schema or {}).get("function", {}).get("parameters") or {}
    return {str(p): "{" + str(p) + "}" for p in params.get("required") or []}


def _close_loops(
    comps: list[list[str]], edges: list[DrawnEdge], built: dict[str, Node], notes: list[str], where: str
) -> list[Edge]:
    """A hand-off exit for every loop the drawing gives no way out of (else the chart could never end)."""
    comp_of = {nid: i for i, comp in enumerate(comps) for nid in comp}
    looped = {comp_of[e.source] for e in edges if comp_of[e.source] == comp_of[e.target]}
    left = {comp_of[e.source] for e in edges if comp_of[e.source] != comp_of[e.target]}
    added: list[Edge] = []
    for i in sorted(looped - left):
        comp = comps[i]
        if any(built[m].kind == "terminal" for m in comp):
            continue  # an explicit terminal inside: validation names the real problem
        exit_id = _fresh_id(f"{comp[0]}_handoff", built)
        built[exit_id] = Node(exit_id, "terminal", "The conversation continues elsewhere.", outcome="handoff")
        added.append(Edge(comp[0], exit_id, condition="the loop ends"))
        loop = " -> ".join(f"`{m}`" for m in comp)
        notes.append(
            f"{where}: the loop {loop} has no way out; added a hand-off exit `{exit_id}` from `{comp[0]}`"
        )
    return added


def _names(ids: list[str], verb: bool = True) -> str:
    shown = ", ".join(f"`{i}`" for i in ids[:8]) + (f" and {len(ids) - 8} more" if len(ids) > 8 else "")
    if not verb:
        return shown
    return f"node {shown} has" if len(ids) == 1 else f"nodes {shown} have"
