"""The flowchart draft: the mined graph written in tiergate's flowchart model.

- a node per graph node: a tool call is a ``tool`` node named by its tool, with ``args``
  templates (``{slot}`` where the value travels, else the literal seen most) and the
  result seen most; a reply is an ``agent`` node with the most frequent real reply as
  its ``say`` template (slot values as placeholders);
- a ``decision`` hub wherever conversations branch after a node: the user's words seen
  on each branch become that edge's ``utterances``, a tool's result seen on each branch
  its ``result``;
- terminals from how conversations end: a reply that only ever ends conversations is a
  terminal whose outcome is read from its words (escalate / abandon / success); a node
  after which conversations sometimes stop gets a silent ``abandon`` terminal;
- ``notes`` on the chart for hub branches that nothing at the hub tells apart (the same
  user words, or tool results alike): the choice was made earlier, which a chart cannot hold.

Example::

    fc, labels, ids = build_flowchart(graph, traces, slots, split, name="travel")
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from compiler.flowchart import Edge, Flowchart, Node, Outcome
from compiler.mine.actions import SAY, STEP, TOOL, tool_of
from compiler.mine.automaton import END, START, Graph
from compiler.mine.slots import SlotFinding, value_text
from compiler.mine.static import StaticSplit
from compiler.mine.traces import Trace

MAX_UTTERANCES = 8
MAX_SAY = 3
_SLOT = re.compile(r"\{[A-Za-z_][A-Za-z0-9_]*\}")
_STEP_PREFIX = re.compile(r"^\W*(current\s+|next\s+)?(step|stage|task)\b\s*\d*\s*[:\-–—]?\s*", re.I)
# `verify_identity ...`, `handover. Hand over...`, `greet: Say hello`: the step's own name.
_IDENT = re.compile(r"^([A-Za-z][A-Za-z0-9]*(?:[_\-][A-Za-z0-9]+)+)\b|^([A-Za-z][A-Za-z0-9]*)\s*[.:]")


_ESCALATE = re.compile(r"transfer|colleague|human|supervisor|specialist|escalat|hand (you )?over|agent will", re.I)
_ABANDON = re.compile(
    r"nothing (has been|was|is) \w+|no problem|\bnot (been )?(booked|filed|changed|done|processed|submitted|"
    r"registered|created|made|proceed\w*)\b|cancel|sorry to see|maybe next time|without|"
    r"(contact|come back to) us (again|later|at any time)|try again later", re.I
)


def reply_outcome(text: str) -> Outcome:
    """How a conversation ended, read from the agent's last words: handed over, given up, else done."""
    if _ESCALATE.search(text):
        return "escalate"
    if _ABANDON.search(text):
        return "abandon"
    return "success"


# Words that say nothing about what a step does; "no" and "not" stay (they flip its meaning).
_FILLER = frozenset(
    "a an the to of for on in at by is are was were be been has have had i you we they your my our it its "
    "this that these those and or with from me us would can could shall will please am do does there here "
    "let s ll m re ve".split()
)


def slug(text: str, words: int = 4) -> str:
    """An id from a reply's first telling words: "Sorry, there is no flight from {origin}..." -> ``sorry_no_flight``."""
    parts = re.findall(r"[a-z0-9]+", re.sub(r"\{[^}]*\}", " ", text.lower()))
    telling = [w for w in parts if w not in _FILLER and not w.isdigit()] or parts  # digits are masked to 0
    return "_".join(telling[:words]) or "step"


def step_name(step: str) -> str:
    """A node id from an app's step line: its identifier if it has one (``verify_identity``), else its words."""
    first = step.splitlines()[0] if step else ""
    rest = _STEP_PREFIX.sub("", first).strip()
    m = _IDENT.match(rest)
    return (m.group(1) or m.group(2)).replace("-", "_").lower() if m else slug(rest)


def _base_id(label: str) -> str:
    if label.startswith(TOOL):
        # `tool:file_claim(claim_type=motor)` -> `file_claim_motor`
        value = label.split("=", 1)[1].rstrip(")") if "(" in label else ""
        return "_".join(p for p in (tool_of(label) or "tool", slug(value, 3) if value else "") if p)
    if label.startswith(STEP):
        return step_name(label[len(STEP):])
    return slug(label[len(SAY):] if label.startswith(SAY) else label)


def node_ids(graph: Graph) -> dict[str, str]:
    """Readable, unique flowchart ids for the graph's nodes (``start`` stays the start's)."""
    taken = {"start"}
    out: dict[str, str] = {}
    for node, label in graph.nodes.items():
        base = _base_id(label)
        nid, i = base, 2
        while nid in taken:
            nid, i = f"{base}_{i}", i + 1
        taken.add(nid)
        out[node] = nid
    return out


def _top(counter: Counter[str], n: int) -> tuple[str, ...]:
    return tuple(t for t, _ in sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))[:n])


def _arg_text(value: Any) -> str:
    text = value_text(value)
    return text if text is not None else json.dumps(value, ensure_ascii=False)


class _Evidence:
    """What was seen on each transition and at each node, slot values masked."""

    def __init__(self, graph: Graph, traces: Sequence[Trace], slots: SlotFinding, split: StaticSplit) -> None:
        self.user: dict[tuple[str, str], Counter[str]] = {}
        self.result: dict[tuple[str, str], Counter[str]] = {}
        self.say: dict[str, Counter[str]] = {}
        self.args: dict[str, dict[str, Counter[str]]] = {}
        self.steps: dict[str, Counter[str]] = {}
        for ti, (trace, walk) in enumerate(zip(traces, graph.walks, strict=True)):
            binding = slots.bindings[ti]
            prev = START
            for turn, node in zip(trace.turns, walk, strict=True):
                self._gap(prev, node, turn.user, turn.results, slots, binding)
                step = split.step_key(turn.system)
                if step:
                    self.steps.setdefault(node, Counter())[step.splitlines()[0]] += 1
                if turn.is_call:
                    per_arg = self.args.setdefault(node, {})
                    for arg, value in turn.arguments.items():
                        slot = slots.arg_slots.get((turn.tool or "", str(arg)))
                        per_arg.setdefault(str(arg), Counter())["{" + slot + "}" if slot else _arg_text(value)] += 1
                else:
                    self.say.setdefault(node, Counter())[slots.mask(turn.text.strip(), binding)] += 1
                prev = node
            trailing_results = tuple(
                str(m.get("content") or "") for m in trace.messages[trace.turns[-1].history + 1:]
                if m.get("role") == "tool"
            )
            self._gap(prev, END, trace.trailing_user, trailing_results, slots, binding)

    def _gap(
        self,
        prev: str,
        node: str,
        user: Sequence[str],
        results: Sequence[str],
        slots: SlotFinding,
        binding: Mapping[str, Sequence[str]],
    ) -> None:
        key = (prev, node)
        if user:
            self.user.setdefault(key, Counter())[slots.mask(user[-1].strip(), binding)] += 1
        if results:
            self.result.setdefault(key, Counter())[slots.mask(results[-1].strip(), binding)] += 1


def _shape(results: Counter[str]) -> str | None:
    """What a branch's tool results say, with what varies between conversations blanked.

    ``{"status": "confirmed", "ref": *}`` and ``{"status": "payment_declined", "ref": null}``
    differ; two branches after a lookup that both get ``{"order_id": *, "status": "shipped"}``
    do not, whatever order each conversation looked up.
    """
    seen: dict[str, set[str]] = {}
    for text in results:
        try:  # a number masked as `{amount}` is no JSON until quoted
            data = json.loads(re.sub(r'(?<!")(\{[A-Za-z_][A-Za-z0-9_]*\})(?!")', r'"\1"', text))
        except ValueError:
            data = text
        for path, value in _paths(data, ""):
            seen.setdefault(path, set()).add(value)
    if not seen:
        return None
    # A slot placeholder varies by definition, whether or not this branch's sample shows it varying.
    return json.dumps(
        {p: (next(iter(v)) if len(v) == 1 and not _SLOT.search(next(iter(v))) else "*") for p, v in sorted(seen.items())}
    )


def _paths(data: Any, at: str) -> list[tuple[str, str]]:
    if isinstance(data, dict):
        return [pv for k, v in data.items() for pv in _paths(v, f"{at}.{k}")]
    if isinstance(data, list):
        return [pv for v in data for pv in _paths(v, f"{at}[]")] or [(at, "[]")]
    return [(at, json.dumps(data))]


def _alike(hub: str, branches: Sequence[tuple[str, frozenset[str] | str | None]], from_tool: bool) -> list[str]:
    """Branches of one hub that the conversation at the hub cannot tell apart.

    The choice was made earlier (an intent stated three turns before), which a flowchart
    cannot remember: conversations rendered from the chart would contradict each other.
    """
    out = []
    for i, (a, sig_a) in enumerate(branches):
        for b, sig_b in branches[i + 1:]:
            if from_tool:
                same = sig_a is not None and sig_a == sig_b
                what = "results alike"
            else:
                shared = sorted(sig_a & sig_b) if isinstance(sig_a, frozenset) and isinstance(sig_b, frozenset) else []
                same = bool(shared)
                what = f"the same words (`{shared[0][:60]}`)" if shared else ""
            if same:
                out.append(
                    f"hub `{hub}`: `{a}` and `{b}` follow {what}; what chose between them came earlier in the "
                    "conversation: edit these edges before rendering conversations from the chart"
                )
    return out


def build_flowchart(
    graph: Graph,
    traces: Sequence[Trace],
    slots: SlotFinding,
    split: StaticSplit,
    name: str = "workflow",
) -> tuple[Flowchart, dict[str, str], dict[str, str]]:
    """The chart draft; for each of its action nodes, the action label it stands for; graph node -> chart id."""
    ev = _Evidence(graph, traces, slots, split)
    ids = node_ids(graph)
    ids[START] = "start"
    nodes: dict[str, Node] = {"start": Node("start", "start", "The conversation opens.")}
    labels: dict[str, str] = {}
    edges: list[Edge] = []
    notes: list[str] = []
    schemas: dict[str, dict[str, Any]] = {}
    for trace in traces:
        for t in trace.tools:
            fn = t.get("function") if isinstance(t.get("function"), dict) else t
            if isinstance(fn, dict) and fn.get("name") and fn["name"] not in schemas:
                schemas[str(fn["name"])] = {"type": "function", "function": dict(fn)}
    ends_only = {n for n in graph.nodes if set(graph.succ.get(n, Counter())) == {END}}
    for node, label in graph.nodes.items():
        nid = ids[node]
        labels[nid] = label
        # An app's step line is the step's instruction (a tool call's too); mined replies only have their words.
        text = _top(ev.steps[node], 1)[0] if node in ev.steps else ""
        if label.startswith(TOOL):
            tool = tool_of(label)
            out_results: Counter[str] = Counter()
            for (src, _dst), seen in ev.result.items():
                if src == node:
                    out_results.update(seen)
            args = {a: _top(c, 1)[0] for a, c in ev.args.get(node, {}).items()}
            nodes[nid] = Node(
                nid, "tool", text or f"Call `{tool}`.", tool=tool, args=args,
                result=(_top(out_results, 1) or (None,))[0],
            )
            continue
        say = _top(ev.say.get(node, Counter()), MAX_SAY)
        if node in ends_only:
            nodes[nid] = Node(nid, "terminal", text or f"Close: {say[0][:80]}", say=say, outcome=reply_outcome(say[0]))
        else:
            nodes[nid] = Node(nid, "agent", text or f"Reply like: {say[0][:80]}", say=say)
    for src in [START, *graph.nodes]:
        if src in ends_only:
            continue
        outs = sorted(graph.succ.get(src, Counter()).items(), key=lambda kv: (-kv[1], kv[0]))
        sid = ids[src]
        from_tool = src != START and graph.nodes[src].startswith(TOOL)
        branches: list[Edge] = []
        signatures: list[tuple[str, frozenset[str] | str | None]] = []
        for dst, _count in outs:
            if dst == END:
                tid = f"{sid}_end"
                nodes[tid] = Node(tid, "terminal", "The customer leaves here.", outcome="abandon")
                branches.append(Edge(sid, tid, condition="The conversation ends here."))
                continue
            utterances = _top(ev.user.get((src, dst), Counter()), MAX_UTTERANCES)
            results = _top(ev.result.get((src, dst), Counter()), 1)
            if utterances:
                condition = f"The customer says something like “{utterances[0]}”."
            elif from_tool and results:
                condition = f"`{tool_of(graph.nodes[src])}` returns {results[0][:100]}"
            else:
                condition = ""
            result = results[0] if from_tool and results and len(outs) > 1 else None
            branches.append(Edge(sid, ids[dst], condition, utterances, result))
            seen = ev.result.get((src, dst), Counter()) if from_tool else ev.user.get((src, dst), Counter())
            signatures.append((ids[dst], _shape(seen) if from_tool else frozenset(seen)))
        if len(branches) == 1:
            edges.append(branches[0])
            continue
        hub = "opening" if src == START else f"{sid}_result" if from_tool else f"{sid}_answer"
        question = (
            "How does the conversation open?" if src == START
            else f"What did `{tool_of(graph.nodes[src])}` return?" if from_tool
            else "What does the customer answer?"
        )
        nodes[hub] = Node(hub, "decision", question)
        edges.append(Edge(sid, hub))
        edges.extend(Edge(hub, b.target, b.condition, b.utterances, b.result) for b in branches)
        notes.extend(_alike(hub, signatures, from_tool))
    fc = Flowchart(
        name=name,
        system_prompt=split.persona(),
        start="start",
        nodes=nodes,
        edges=tuple(edges),
        slots={s.name: s.values for s in slots.slots},
        tools=tuple(schemas.values()),
        description=f"Mined from {len(traces)} captured conversations by `tiergate flowchart mine`.",
        notes=tuple(notes),
    )
    return fc, labels, {n: i for n, i in ids.items() if n != START}
