"""Workflow flowcharts: the data model, its plain-data form, and validation.

A flowchart is the single source a compiled model is built from, so it must be
checked before anything is synthesised from it: a missing utterance found here costs
a minute; found after training, it costs a training run. The file formats (YAML,
Mermaid, DOT, LangGraph) live in :mod:`compiler.formats`, which builds on this module
and never the other way round; the YAML format is documented in ``docs/flowcharts.md``.

Example::

    from compiler.formats import load_flowchart

    fc = load_flowchart("configs/workflows/travel-booking.yaml")
    for issue in validate(fc):
        print(issue)
    fc.out_edges(fc.start)
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, cast, get_args

NodeKind = Literal["start", "agent", "tool", "decision", "terminal"]
# `handoff`: the conversation continues elsewhere (another chart, another team); imported
# drawings end their unmarked dead ends there.
Outcome = Literal["success", "abandon", "escalate", "handoff"]
IssueKind = Literal["structure", "synthesis"]

NODE_KINDS: tuple[str, ...] = get_args(NodeKind)
OUTCOMES: tuple[str, ...] = get_args(Outcome)

# `{slot}` placeholders; a bare identifier between braces, so the JSON braces of a
# tool-result template (`{"ok": true}`) are never mistaken for one.
PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


class FlowchartError(ValueError):
    """A flowchart that cannot be loaded or used; the message names the file or node."""


@dataclass(frozen=True)
class Node:
    """One step of the workflow.

    ``start`` and ``agent`` nodes (and terminals with ``say``) are spoken by the
    agent; ``tool`` nodes become a tool call plus its result; ``decision`` nodes are
    never spoken: the branch is chosen by the user's words or by a tool's result.
    """

    id: str
    kind: NodeKind
    text: str
    say: tuple[str, ...] = ()
    tool: str | None = None
    args: Mapping[str, str] = field(default_factory=dict)
    result: str | None = None
    outcome: Outcome | None = None
    group: str | None = None  # the subgraph or cluster a drawing put it in; for readers only

    @property
    def speaks(self) -> bool:
        """Whether the node produces an assistant text message."""
        if self.kind == "agent":
            return True
        return self.kind in ("start", "terminal") and bool(self.say)


@dataclass(frozen=True)
class Edge:
    """A transition; ``utterances`` are what a user says to take it.

    ``result`` is for branches that follow a tool call: the tool's result template on
    this branch (it overrides the tool node's ``result``), so a "no flights found"
    branch is rendered with an empty search result.
    """

    source: str
    target: str
    condition: str = ""
    utterances: tuple[str, ...] = ()
    result: str | None = None


@dataclass(frozen=True)
class Issue:
    """A problem found by :func:`validate`.

    ``structure`` issues make the chart unusable; ``synthesis`` issues only stop
    conversations being rendered from it (typical of a freshly imported Mermaid or DOT
    chart, which has no utterances or reply templates yet).
    """

    node: str
    problem: str
    kind: IssueKind = "structure"

    def __str__(self) -> str:
        return f"node `{self.node}`: {self.problem}"


@dataclass(frozen=True)
class Flowchart:
    """A whole workflow. ``source`` (the file it came from) is not part of its identity."""

    name: str
    system_prompt: str
    start: str
    nodes: Mapping[str, Node]
    edges: tuple[Edge, ...]
    slots: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    tools: tuple[dict[str, Any], ...] = ()
    description: str = ""
    source: str = field(default="", compare=False)
    # What an importer repaired or guessed (a dead end made a hand-off, say): shown by
    # `flowchart check`, not part of the chart's identity.
    notes: tuple[str, ...] = field(default=(), compare=False)
    _out: Mapping[str, tuple[int, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Path enumeration asks for a node's edges millions of times on large charts.
        out: dict[str, list[int]] = {}
        for i, e in enumerate(self.edges):
            out.setdefault(e.source, []).append(i)
        object.__setattr__(self, "_out", {k: tuple(v) for k, v in out.items()})

    def out_edges(self, node_id: str) -> tuple[Edge, ...]:
        """Outgoing edges in file order (the order paths are enumerated in)."""
        return tuple(self.edges[i] for i in self._out.get(node_id, ()))

    def out_edge_indexes(self, node_id: str) -> tuple[int, ...]:
        return self._out.get(node_id, ())

    def tool_schema(self, name: str) -> dict[str, Any] | None:
        for tool in self.tools:
            if tool.get("function", {}).get("name") == name:
                return tool
        return None

    @property
    def decision_hubs(self) -> tuple[str, ...]:
        return tuple(n.id for n in self.nodes.values() if n.kind == "decision")

    @property
    def terminals(self) -> tuple[str, ...]:
        return tuple(n.id for n in self.nodes.values() if n.kind == "terminal")

    def to_dict(self) -> dict[str, Any]:
        """The YAML document for this chart (plain data, stable key order)."""
        return to_dict(self)

    def digest(self) -> str:
        """The "flowchart hash": sha256 of a canonical JSON dump, independent of file format."""
        canon = json.dumps(to_dict(self), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(canon.encode("utf-8")).hexdigest()


# ----------------------------------------------------------------------- plain data


_TOP_KEYS = {"name", "description", "system_prompt", "start", "slots", "tools", "nodes", "edges"}
_NODE_KEYS = {"kind", "text", "say", "tool", "args", "result", "outcome", "group"}
_EDGE_KEYS = {"from", "to", "condition", "utterances", "result"}


def from_dict(doc: Mapping[str, Any], source: str = "<dict>", default_name: str = "workflow") -> Flowchart:
    """Build a chart from the YAML document's plain data (see ``docs/flowcharts.md``)."""

    def fail(msg: str) -> FlowchartError:
        return FlowchartError(f"`{source}`: {msg}")

    unknown = sorted(set(doc) - _TOP_KEYS)
    if unknown:
        raise fail(f"unknown key `{unknown[0]}`; allowed keys are {', '.join(sorted(_TOP_KEYS))}")
    raw_nodes = doc.get("nodes")
    if not isinstance(raw_nodes, dict) or not raw_nodes:
        raise fail("`nodes` must be a non-empty mapping of node id to node")
    nodes: dict[str, Node] = {}
    for node_id, raw in raw_nodes.items():
        nid = str(node_id)
        nodes[nid] = _node_from_dict(nid, raw, fail)
    raw_edges = doc.get("edges") or []
    if not isinstance(raw_edges, list):
        raise fail("`edges` must be a list of {from, to, condition, utterances}")
    edges = tuple(_edge_from_dict(i, raw, fail) for i, raw in enumerate(raw_edges))

    start = doc.get("start")
    if start is None:
        starts = [n.id for n in nodes.values() if n.kind == "start"]
        if len(starts) != 1:
            raise fail(
                f"no `start` key and {len(starts)} nodes of kind `start`; name the start node with `start:`"
            )
        start = starts[0]
    slots_raw = doc.get("slots") or {}
    if not isinstance(slots_raw, dict):
        raise fail("`slots` must map a slot name to a list of example values")
    slots: dict[str, tuple[str, ...]] = {}
    for slot, values in slots_raw.items():
        vals = values if isinstance(values, list) else [values]
        if not vals:
            raise fail(f"slot `{slot}` has no values; give at least one example value")
        slots[str(slot)] = tuple(str(v) for v in vals)
    tools_raw = doc.get("tools") or []
    if not isinstance(tools_raw, list):
        raise fail("`tools` must be a list of OpenAI tool schemas")
    tools = tuple(_tool_schema(t, i, fail) for i, t in enumerate(tools_raw))
    return Flowchart(
        name=str(doc.get("name") or default_name),
        system_prompt=str(doc.get("system_prompt") or ""),
        start=str(start),
        nodes=nodes,
        edges=edges,
        slots=slots,
        tools=tools,
        description=str(doc.get("description") or ""),
        source=source,
    )


def _strings(value: Any, what: str, fail: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list):
        flags = [v for v in value if isinstance(v, bool)]
        if flags:
            # YAML 1.1 reads an unquoted yes/no/on/off (and `Yes, please` in a [flow, list]) as a boolean
            raise fail(f"{what} holds `{flags[0]}`, which YAML read as a boolean; quote that item "
                       "(e.g. \"Yes, please\")")
        if all(isinstance(v, str | int | float) for v in value):
            return tuple(str(v) for v in value)
    raise fail(f"{what} must be a string or a list of strings")


def _node_from_dict(nid: str, raw: Any, fail: Any) -> Node:
    if isinstance(raw, str):  # shorthand: `greet: Say hello` is an agent node
        raw = {"kind": "agent", "text": raw}
    if not isinstance(raw, dict):
        raise fail(f"node `{nid}` must be a mapping with at least `kind`")
    unknown = sorted(set(raw) - _NODE_KEYS)
    if unknown:
        raise fail(
            f"node `{nid}`: unknown key `{unknown[0]}`; allowed keys are {', '.join(sorted(_NODE_KEYS))}"
        )
    kind = raw.get("kind", "agent")
    if kind not in NODE_KINDS:
        raise fail(f"node `{nid}`: unknown kind `{kind}`; use one of {', '.join(NODE_KINDS)}")
    outcome = raw.get("outcome")
    if outcome is not None and outcome not in OUTCOMES:
        raise fail(f"node `{nid}`: unknown outcome `{outcome}`; use one of {', '.join(OUTCOMES)}")
    args = raw.get("args") or {}
    if not isinstance(args, dict):
        raise fail(f"node `{nid}`: `args` must map argument names to templates")
    result = raw.get("result")
    if result is not None and not isinstance(result, str):
        result = json.dumps(result, ensure_ascii=False)  # allow the result written as YAML data
    return Node(
        id=nid,
        kind=cast(NodeKind, kind),
        text=str(raw.get("text") or nid),
        say=_strings(raw.get("say"), f"node `{nid}`: `say`", fail),
        tool=None if raw.get("tool") is None else str(raw["tool"]),
        args={str(k): str(v) for k, v in args.items()},
        result=result,
        outcome=cast(Outcome | None, outcome),
        group=None if raw.get("group") is None else str(raw["group"]),
    )


def _edge_from_dict(i: int, raw: Any, fail: Any) -> Edge:
    if not isinstance(raw, dict) or "from" not in raw or "to" not in raw:
        raise fail(f"edge #{i + 1} must be a mapping with `from` and `to`")
    unknown = sorted(set(raw) - _EDGE_KEYS)
    if unknown:
        raise fail(
            f"edge #{i + 1} (`{raw['from']}` -> `{raw['to']}`): unknown key `{unknown[0]}`; "
            f"allowed keys are {', '.join(sorted(_EDGE_KEYS))}"
        )
    result = raw.get("result")
    if result is not None and not isinstance(result, str):
        result = json.dumps(result, ensure_ascii=False)
    return Edge(
        source=str(raw["from"]),
        target=str(raw["to"]),
        condition=str(raw.get("condition") or ""),
        utterances=_strings(raw.get("utterances"), f"edge #{i + 1} `utterances`", fail),
        result=result,
    )


def _tool_schema(raw: Any, i: int, fail: Any) -> dict[str, Any]:
    if isinstance(raw, dict) and "function" not in raw and "name" in raw:
        raw = {"type": "function", "function": raw}  # shorthand: the function object alone
    if (
        not isinstance(raw, dict)
        or not isinstance(raw.get("function"), dict)
        or not raw["function"].get("name")
    ):
        raise fail(
            f"tool #{i + 1} must be an OpenAI tool schema: {{type: function, function: {{name, parameters}}}}"
        )
    return {"type": raw.get("type", "function"), "function": dict(raw["function"])}


def to_dict(fc: Flowchart) -> dict[str, Any]:
    """Plain data in the YAML format, omitting empty optional fields."""
    nodes: dict[str, Any] = {}
    for n in fc.nodes.values():
        d: dict[str, Any] = {"kind": n.kind, "text": n.text}
        if n.say:
            d["say"] = list(n.say)
        if n.tool is not None:
            d["tool"] = n.tool
        if n.args:
            d["args"] = dict(n.args)
        if n.result is not None:
            d["result"] = n.result
        if n.outcome is not None:
            d["outcome"] = n.outcome
        if n.group is not None:
            d["group"] = n.group
        nodes[n.id] = d
    edges: list[dict[str, Any]] = []
    for e in fc.edges:
        ed: dict[str, Any] = {"from": e.source, "to": e.target}
        if e.condition:
            ed["condition"] = e.condition
        if e.utterances:
            ed["utterances"] = list(e.utterances)
        if e.result is not None:
            ed["result"] = e.result
        edges.append(ed)
    out: dict[str, Any] = {"name": fc.name}
    if fc.description:
        out["description"] = fc.description
    out["system_prompt"] = fc.system_prompt
    out["start"] = fc.start
    out["slots"] = {k: list(v) for k, v in fc.slots.items()}
    out["tools"] = [dict(t) for t in fc.tools]
    out["nodes"] = nodes
    out["edges"] = edges
    return out


# ----------------------------------------------------------------------- validation


def reachable(fc: Flowchart, origin: str) -> set[str]:
    seen = {origin}
    todo = [origin]
    while todo:
        for e in fc.out_edges(todo.pop()):
            if e.target in fc.nodes and e.target not in seen:
                seen.add(e.target)
                todo.append(e.target)
    return seen


def strongly_connected(fc: Flowchart) -> list[list[str]]:
    """Tarjan's algorithm, iterative (charts with long chains must not hit the recursion limit)."""
    succ = {n: [e.target for e in fc.out_edges(n) if e.target in fc.nodes] for n in fc.nodes}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    comps: list[list[str]] = []
    counter = 0
    for root in fc.nodes:
        if root in index:
            continue
        work: list[tuple[str, int]] = [(root, 0)]
        while work:
            v, i = work.pop()
            if i == 0:
                index[v] = low[v] = counter
                counter += 1
                stack.append(v)
                on_stack.add(v)
            recurse = False
            for j in range(i, len(succ[v])):
                w = succ[v][j]
                if w not in index:
                    work.append((v, j + 1))
                    work.append((w, 0))
                    recurse = True
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            if recurse:
                continue
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                comps.append(comp)
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[v])
    return comps


def validate(fc: Flowchart) -> list[Issue]:
    """Every problem found, structure first; an empty list means the chart can be compiled."""
    issues: list[Issue] = []
    if fc.start not in fc.nodes:
        issues.append(Issue(fc.start, "the start node does not exist; set `start:` to a node id"))
    elif fc.nodes[fc.start].kind not in ("start", "agent"):
        issues.append(
            Issue(fc.start, f"the start node is of kind `{fc.nodes[fc.start].kind}`; use `start` or `agent`")
        )
    for e in fc.edges:
        if e.source not in fc.nodes:
            issues.append(Issue(e.source, f"edge `{e.source}` -> `{e.target}` starts at an unknown node"))
        if e.target not in fc.nodes:
            issues.append(
                Issue(e.source, f"edge `{e.source}` -> `{e.target}` points to an unknown node `{e.target}`")
            )
    for n in fc.nodes.values():
        if n.kind == "start" and n.id != fc.start:
            issues.append(
                Issue(n.id, f"a second start node (the start is `{fc.start}`); make it an `agent` node")
            )
    if fc.start in fc.nodes:
        seen = reachable(fc, fc.start)
        for nid in fc.nodes:
            if nid not in seen:
                issues.append(
                    Issue(
                        nid, f"unreachable from the start node `{fc.start}`; add an edge into it or remove it"
                    )
                )
    for n in fc.nodes.values():
        outs = fc.out_edges(n.id)
        if n.kind == "terminal":
            if outs:
                issues.append(
                    Issue(
                        n.id,
                        f"a terminal with outgoing edges (to `{outs[0].target}`); terminals end the conversation",
                    )
                )
            if n.outcome is None:
                issues.append(
                    Issue(n.id, "a terminal without `outcome`; set it to success, abandon, escalate or handoff")
                )
        elif not outs:
            issues.append(
                Issue(
                    n.id,
                    f"a dead end: `{n.kind}` node with no outgoing edge; add an edge or make it a terminal",
                )
            )
        if n.kind == "tool":
            issues.extend(_tool_issues(fc, n))
    for comp in strongly_connected(fc):
        members = set(comp)
        looped = len(comp) > 1 or any(e.target == comp[0] for e in fc.out_edges(comp[0]))
        if not looped:
            continue
        exits = [e for m in comp for e in fc.out_edges(m) if e.target not in members]
        if not exits:
            first = next(n for n in fc.nodes if n in members)  # file order, for a stable message
            loop = " -> ".join(f"`{m}`" for m in sorted(members, key=list(fc.nodes).index))
            issues.append(Issue(first, f"a loop with no exit ({loop}); add an edge out of the loop"))
    issues.extend(_synthesis_issues(fc))
    return issues


def _tool_issues(fc: Flowchart, n: Node) -> list[Issue]:
    if not n.tool:
        return [Issue(n.id, "a tool node without `tool`; name the tool it calls")]
    if not fc.tools:
        return []
    schema = fc.tool_schema(n.tool)
    if schema is None:
        known = ", ".join(f"`{t['function']['name']}`" for t in fc.tools)
        return [Issue(n.id, f"calls tool `{n.tool}`, which is not in `tools` ({known}); add its schema")]
    params = schema["function"].get("parameters") or {}
    props = params.get("properties") or {}
    out = []
    for arg in n.args:
        if props and arg not in props:
            out.append(Issue(n.id, f"argument `{arg}` is not a parameter of tool `{n.tool}`; fix the name"))
    for req in params.get("required") or []:
        if req not in n.args:
            out.append(Issue(n.id, f"tool `{n.tool}` requires argument `{req}`; add it to `args`"))
    return out


def _needs_utterance(fc: Flowchart, edge: Edge) -> list[Edge]:
    """Edges after a spoken turn that leave the user nothing to say.

    Decisions are looked through: each branch of a decision the user drives needs its
    own utterances, since the user's words are what tells the branches apart. Each edge
    is looked at once (a chart with many decision loops would otherwise take
    exponential time: one imported drawing took minutes).
    """
    missing: list[Edge] = []
    seen: set[int] = set()
    todo = [edge]
    while todo:
        e = todo.pop()
        if e.target not in fc.nodes:
            continue
        target = fc.nodes[e.target]
        if e.utterances and target.kind != "decision":
            continue
        if target.kind == "terminal" and not target.speaks:
            continue  # the conversation simply ends
        if target.kind != "decision":
            missing.append(e)
            continue
        for i in reversed(fc.out_edge_indexes(target.id)):
            if i not in seen:
                seen.add(i)
                todo.append(fc.edges[i])
    return missing


def _synthesis_issues(fc: Flowchart) -> list[Issue]:
    issues: list[Issue] = []
    for n in fc.nodes.values():
        if n.kind == "agent" and not n.say:
            issues.append(
                Issue(
                    n.id,
                    "an agent node without `say` templates; offline rendering needs the agent's words",
                    "synthesis",
                )
            )
        for text in (*n.say, *n.args.values(), n.result or ""):
            for slot in PLACEHOLDER.findall(text):
                if slot not in fc.slots:
                    issues.append(
                        Issue(
                            n.id,
                            f"placeholder `{{{slot}}}` names no slot; declare `{slot}` under `slots`",
                            "synthesis",
                        )
                    )
        if n.speaks and n.kind != "terminal":
            for e in fc.out_edges(n.id):
                for gap in _needs_utterance(fc, e):
                    issues.append(
                        Issue(
                            gap.source,
                            f"edge `{gap.source}` -> `{gap.target}` needs example user `utterances` "
                            f"(the user answers `{n.id}` there)",
                            "synthesis",
                        )
                    )
    for e in fc.edges:
        for text in (*e.utterances, e.result or ""):
            for slot in PLACEHOLDER.findall(text):
                if slot not in fc.slots:
                    issues.append(
                        Issue(
                            e.source,
                            f"edge to `{e.target}`: placeholder `{{{slot}}}` names no slot; declare it under `slots`",
                            "synthesis",
                        )
                    )
    # Dedupe (a gap behind a decision is found once per spoken node leading to it).
    return list(dict.fromkeys(issues))


def check(fc: Flowchart, synthesis: bool = True) -> Flowchart:
    """Raise :class:`FlowchartError` listing every issue; return the chart when clean."""
    issues = [i for i in validate(fc) if synthesis or i.kind == "structure"]
    if issues:
        where = f"`{fc.source}`" if fc.source else f"flowchart `{fc.name}`"
        lines = "\n".join(f"  - {i}" for i in issues)
        raise FlowchartError(f"{where} has {len(issues)} problem(s):\n{lines}")
    return fc


def fill(template: str, slots: Mapping[str, str]) -> str:
    """Replace ``{slot}`` placeholders; unknown names and JSON braces are left alone."""
    return PLACEHOLDER.sub(lambda m: slots.get(m.group(1), m.group(0)), template)


def placeholders(texts: Iterable[str]) -> set[str]:
    return {s for t in texts for s in PLACEHOLDER.findall(t)}
