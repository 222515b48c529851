"""Turn a flowchart path into a training conversation in the OpenAI chat format with tools.

Turn rules (documented for chart authors in ``docs/flowcharts.md``):

- ``start`` / ``agent`` nodes and terminals with ``say`` are assistant messages.
- ``tool`` nodes are an assistant message with one ``tool_calls`` entry, then a
  ``tool`` message with the result; the assistant continues right after a result.
- ``decision`` nodes are never spoken. After a spoken node the user answers with an
  utterance of the edges taken until the next assistant message (the last edge that
  has utterances, i.e. the one closest to the branch chosen). After a tool node, the
  branch's ``result`` (if any) replaces the tool node's result.
- If the start node is silent, the first edges' utterances (when given) open the
  conversation as the user; otherwise the assistant speaks first.

The system message is the chart's minimal runtime system prompt only: the procedure
has to live in the weights, not in the prompt.

Example::

    conv = render_offline(fc, path, seed=0, variant=2)
    conv["messages"][-1]["content"], conv["tiergate"]["nodes"]
"""

from __future__ import annotations

import difflib
import json
import random
import re
from collections.abc import Iterable, Mapping
from typing import Any

from compiler.flowchart import Edge, Flowchart, FlowchartError, Node, fill
from compiler.paths import FlowPath


def pick_slots(fc: Flowchart, rng: random.Random, novel_share: float = 0.0) -> dict[str, str]:
    """One value per slot from the chart's lists; with ``novel_share``, that share of slots get an unlisted value.

    Slots that share one list (a trip's origin and destination drawn from the same cities) get distinct
    values, so only where a value stands in the sentence tells which slot it fills: with a list per slot,
    a small model learns "which list is this city in" per city instead of copying the value after "to".
    Charts without shared lists draw exactly as before (same random calls).
    """
    slots: dict[str, str] = {}
    drawn: dict[tuple[str, ...], set[str]] = {}
    for name, values in fc.slots.items():
        taken = drawn.setdefault(tuple(values), set())
        free = [v for v in values if v not in taken] or list(values)
        slots[name] = rng.choice(free)
        taken.add(slots[name])
    if novel_share > 0:
        for name, value in slots.items():
            if rng.random() < novel_share:
                taken = {str(v) for values in fc.slots.values() for v in values} | set(slots.values())
                slots[name] = novel_value(str(value), fc.slots[name], rng, avoid=taken)
    return slots


def novel_value(value: str, pool: Iterable[Any], rng: random.Random, avoid: Iterable[str] = ()) -> str:
    """A value shaped like ``value`` that the chart does not list: ``22 May`` -> ``47 Mapril``.

    Digit runs stay digit runs of the same length (no leading zero, so integers keep their text),
    words longer than two letters become a splice of two words from the slot's list, and other
    characters keep their class (``SK214`` -> ``QB907``). Trained on such values, a small model cannot
    memorise one mapping per listed value and has to learn a general copy from the user's words.
    """
    avoid = set(avoid)
    donors = [w for v in pool for w in str(v).split() if w.isalpha() and len(w) > 2] or ["Alpha", "Bravo"]
    out = value
    for _ in range(8):
        parts = []
        for w in re.split(r"(\s+)", value):
            if not w or w.isspace():
                parts.append(w)
            elif w.isdigit():
                parts.append(str(rng.randint(1, 9)) + "".join(str(rng.randint(0, 9)) for _ in w[1:]))
            elif w.isalpha() and len(w) > 2:
                a, b = rng.choice(donors), rng.choice(donors)
                new = a[: rng.randint(2, len(a) - 1)] + b[rng.randint(1, len(b) - 2):]
                parts.append(new[0].upper() + new[1:].lower() if w[0].isupper() else new.lower())
            else:
                parts.append("".join(
                    str(rng.randint(0, 9)) if c.isdigit()
                    else chr(rng.randint(65, 90)) if c.isupper()
                    else chr(rng.randint(97, 122)) if c.islower() else c
                    for c in w
                ))
        out = "".join(parts)
        if out not in avoid:
            return out
    return out


def _rng(fc: Flowchart, path: FlowPath, seed: int, variant: int, mode: str) -> random.Random:
    # A string seed is hashed with sha512 by `random`, so this is stable across processes.
    return random.Random(f"{mode}|{fc.name}|{path.id}|{seed}|{variant}")


def _tool_args(fc: Flowchart, node: Node, slots: Mapping[str, str]) -> dict[str, Any]:
    """Render argument templates, typed by the tool's JSON schema so `2` is sent as a number."""
    schema = fc.tool_schema(node.tool or "")
    props = ((schema or {}).get("function", {}).get("parameters") or {}).get("properties") or {}
    args: dict[str, Any] = {}
    for name, template in node.args.items():
        value: Any = fill(template, slots)
        kind = (props.get(name) or {}).get("type")
        try:
            if kind == "integer":
                value = int(value)
            elif kind == "number":
                value = float(value)
            elif kind == "boolean":
                value = str(value).strip().lower() in ("true", "yes", "1")
            elif kind in ("array", "object"):
                value = json.loads(value)
        except ValueError as exc:
            raise FlowchartError(
                f"node `{node.id}`: argument `{name}` renders to `{value}`, which is not of the schema's type `{kind}`; "
                "fix the slot values or the template"
            ) from exc
        args[name] = value
    return args


def _call_id(rng: random.Random) -> str:
    return "call_" + "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(12))


def _stretches(fc: Flowchart, path: FlowPath) -> list[tuple[int, list[Edge]]]:
    """Split a path at nodes that produce assistant output.

    Returns (position of the producing node in ``path.nodes``, edges that led to it
    since the previous producing node); position -1 collects the edges after the last
    producer (into silent nodes).
    """
    out: list[tuple[int, list[Edge]]] = []
    pending: list[Edge] = []
    for pos, nid in enumerate(path.nodes):
        if pos > 0:
            pending.append(fc.edges[path.edges[pos - 1]])
        node = fc.nodes[nid]
        if node.speaks or node.kind == "tool":
            out.append((pos, pending))
            pending = []
    out.append((-1, pending))
    return out


def _check_path(fc: Flowchart, path: FlowPath) -> None:
    if not path.nodes or path.nodes[0] != fc.start:
        raise FlowchartError(
            f"path `{path.id}` does not begin at the start node `{fc.start}`; enumerate it from this chart"
        )
    for pos, i in enumerate(path.edges):
        if (
            i >= len(fc.edges)
            or fc.edges[i].source != path.nodes[pos]
            or fc.edges[i].target != path.nodes[pos + 1]
        ):
            raise FlowchartError(
                f"path `{path.id}` does not match flowchart `{fc.name}` at step {pos + 1}; enumerate it from this chart"
            )


def _plan(fc: Flowchart, path: FlowPath) -> list[dict[str, Any]]:
    """The conversation's skeleton: which turns come from whom, independent of wording.

    Steps: {"role": "user", "edges": [...]}, {"role": "assistant", "node": id},
    {"role": "call", "node": id}, {"role": "result", "node": id, "override": str|None}.
    """
    _check_path(fc, path)
    steps: list[dict[str, Any]] = []
    prev: Node | None = None  # the last producing node
    for pos, edges in _stretches(fc, path):
        target = fc.nodes[path.nodes[pos]] if pos >= 0 else None
        if prev is not None and prev.kind == "tool":
            override = next((e.result for e in reversed(edges) if e.result is not None), None)
            steps.append({"role": "result", "node": prev.id, "override": override})
        else:
            spoken = [e for e in edges if e.utterances]
            if target is not None and spoken:
                steps.append({"role": "user", "edge": spoken[-1]})
            elif target is not None and prev is not None:
                gap = edges[-1] if edges else None
                where = f"`{gap.source}` -> `{gap.target}`" if gap else f"into `{target.id}`"
                raise FlowchartError(
                    f"node `{prev.id}`: edge {where} needs example user `utterances` to render path `{path.id}`; "
                    "run `tiergate flowchart check` for every gap"
                )
        if target is not None:
            steps.append({"role": "call" if target.kind == "tool" else "assistant", "node": target.id})
            prev = target
    return steps


def _outcome(fc: Flowchart, path: FlowPath) -> tuple[str, str | None]:
    last = fc.nodes[path.nodes[-1]]
    return last.id, last.outcome


def render_offline(
    fc: Flowchart, path: FlowPath, seed: int, variant: int = 0, novel_share: float = 0.0
) -> dict[str, Any]:
    """One conversation from templates and slot values; the same (seed, variant) gives the same bytes.

    ``novel_share`` replaces that share of slot values with unlisted ones of the same shape (training data).
    """
    rng = _rng(fc, path, seed, variant, "offline")
    slots = pick_slots(fc, rng, novel_share)
    messages: list[dict[str, Any]] = [{"role": "system", "content": fc.system_prompt}]
    nodes: list[str] = []
    call_id = ""
    for step in _plan(fc, path):
        role = step["role"]
        if role == "user":
            messages.append({"role": "user", "content": fill(rng.choice(step["edge"].utterances), slots)})
            continue
        node = fc.nodes[step["node"]]
        if role == "assistant":
            text = rng.choice(node.say) if node.say else node.text
            messages.append({"role": "assistant", "content": fill(text, slots)})
            nodes.append(node.id)
        else:
            call_id = _tool_step(fc, step, slots, rng, call_id, messages, nodes)
    return _row(fc, path, messages, slots, nodes, source="offline", seed=seed, variant=variant)


def _tool_step(
    fc: Flowchart, step: Mapping[str, Any], slots: Mapping[str, str], rng: random.Random, call_id: str,
    messages: list[dict[str, Any]], nodes: list[str],
) -> str:
    """Append a planned `call` (the agent's tool call) or `tool` (its result) turn; returns the open call id.

    Shared by offline and teacher rendering: tool turns are never paraphrased.
    """
    node = fc.nodes[step["node"]]
    if step["role"] == "call":
        call_id = _call_id(rng)
        messages.append(_call_message(fc, node, slots, call_id))
        nodes.append(node.id)
    else:
        result = step["override"] if step["override"] is not None else node.result
        messages.append({"role": "tool", "tool_call_id": call_id, "content": fill(result or "{}", slots)})
    return call_id


def _row(
    fc: Flowchart, path: FlowPath, messages: list[dict[str, Any]], slots: Mapping[str, str], nodes: list[str],
    **meta: Any,
) -> dict[str, Any]:
    """A rendered conversation in the export format, with its `tiergate` metadata (path, outcome, slots)."""
    terminal, outcome = _outcome(fc, path)
    return {
        "messages": messages,
        "tools": [dict(t) for t in fc.tools],
        "tiergate": {
            "path_id": path.id,
            "workflow": fc.name,
            "terminal": terminal,
            "outcome": outcome,
            "slots": slots,
            "nodes": nodes,
            **meta,
        },
    }


def _call_message(fc: Flowchart, node: Node, slots: Mapping[str, str], call_id: str) -> dict[str, Any]:
    # `content` is "" rather than None: both are valid OpenAI, and "" survives chat templates that concatenate.
    return {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {
                "id": call_id,
                "type": "function",
                "function": {
                    "name": node.tool,
                    "arguments": json.dumps(_tool_args(fc, node, slots), ensure_ascii=False),
                },
            }
        ],
    }


# ------------------------------------------------------------------------ matching

_WORD = re.compile(r"[a-z0-9]+")
SLOT_TOKEN = "\x00slot\x00"


def _normalise(text: str, slots: Mapping[str, str]) -> list[str]:
    """Lower-case words with every slot value (longest first) replaced by one token."""
    low = text.lower()
    for value in sorted({str(v).lower() for v in slots.values() if str(v).strip()}, key=len, reverse=True):
        # Whole words only: a passenger count of "1" must not eat the 1s of "SK101".
        low = re.sub(rf"(?<![a-z0-9]){re.escape(value)}(?![a-z0-9])", f" {SLOT_TOKEN} ", low)
    words: list[str] = []
    for part in low.split(f" {SLOT_TOKEN} "):
        words.extend(_WORD.findall(part))
        words.append("<slot>")
    words.pop()
    return words


def _template_words(template: str) -> list[str]:
    marked = re.sub(r"\{[A-Za-z_][A-Za-z0-9_]*\}", f" {SLOT_TOKEN} ", template.lower())
    words: list[str] = []
    for part in marked.split(f" {SLOT_TOKEN} "):
        words.extend(_WORD.findall(part))
        words.append("<slot>")
    words.pop()
    return words


def _similarity(a: list[str], b: list[str]) -> float:
    if not a and not b:
        return 1.0
    return difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()


def match_node(
    fc: Flowchart,
    message: Mapping[str, Any],
    slots: Mapping[str, str],
    candidates: Iterable[str] | None = None,
    threshold: float = 0.6,
) -> str | None:
    """The node whose template an assistant message matches best, or None below ``threshold``.

    Tool calls match tool nodes by tool name (ties broken by argument agreement); text
    matches ``say`` templates (or the node text) by word-sequence similarity after slot
    values and placeholders are both reduced to one token, so a right turn with wrong
    slot values still counts as the right node (argument exactness is scored apart).
    """
    pool = (
        [fc.nodes[c] for c in candidates if c in fc.nodes]
        if candidates is not None
        else list(fc.nodes.values())
    )
    calls = message.get("tool_calls") or []
    if calls:
        fn = calls[0].get("function") or {}
        name = fn.get("name")
        try:
            sent = json.loads(fn.get("arguments") or "{}")
        except (TypeError, ValueError):
            sent = {}
        best: tuple[float, str] | None = None
        for node in pool:
            if node.kind != "tool" or node.tool != name:
                continue
            try:
                want = _tool_args(fc, node, slots)
            except FlowchartError:
                want = {}
            keys = set(want) | set(sent if isinstance(sent, dict) else {})
            agree = sum(1 for k in keys if isinstance(sent, dict) and sent.get(k) == want.get(k)) / (
                len(keys) or 1
            )
            if best is None or agree > best[0]:
                best = (agree, node.id)
        return best[1] if best else None
    content = message.get("content")
    if isinstance(content, list):  # content parts
        content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    if not content:
        return None
    said = _normalise(str(content), slots)
    scored: tuple[float, str] | None = None
    for node in pool:
        if not node.speaks and node.kind not in ("agent", "start"):
            continue
        for template in node.say or (node.text,):
            score = _similarity(said, _template_words(template))
            if scored is None or score > scored[0]:
                scored = (score, node.id)
    if scored is None or scored[0] < threshold:
        return None
    return scored[1]
