"""A chart as a Mermaid ``flowchart`` drawing, so a person can look at what was mined.

Shapes follow the importer's conventions (``docs/flowcharts.md``), so the drawing reads
back as the same kinds: ``([...])`` start and terminals, ``[[...]]`` tool calls,
``{...}`` decisions, ``[...]`` replies. Edge labels are the first example utterance (or
the condition), shortened.

Example::

    print(to_mermaid(mined.flowchart))
"""

from __future__ import annotations

import re

from compiler.flowchart import Flowchart, Node

_RESERVED = {"end", "graph", "flowchart", "subgraph", "style", "class", "click", "default"}


def _id(nid: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9_]", "_", nid)
    return f"{safe}_" if safe.lower() in _RESERVED else safe


def _text(text: str, limit: int = 60) -> str:
    one = " ".join(text.split())
    if len(one) > limit:
        one = one[: limit - 1].rstrip() + "…"
    # Backticks open Mermaid's markdown strings and entities read badly in a diagram: plain quotes only.
    return '"' + one.replace('"', "'").replace("`", "") + '"'


def _shape(node: Node) -> str:
    if node.kind == "tool":
        return f"[[{_text(node.tool or node.id)}]]"
    if node.kind == "decision":
        return "{" + _text(node.text, 40) + "}"
    if node.kind == "terminal":
        words = node.say[0] if node.say else node.text
        return f"([{_text(f'{node.outcome}: {words}')}])"
    if node.kind == "start":
        return f"([{_text(node.text)}])"
    return f"[{_text(node.say[0] if node.say else node.text)}]"


def to_mermaid(fc: Flowchart) -> str:
    """Mermaid text for ``fc``, top to bottom."""
    lines = ["flowchart TD", f"  %% {fc.name}: {len(fc.nodes)} nodes, {len(fc.edges)} edges"]
    lines.extend(f"  {_id(n.id)}{_shape(n)}" for n in fc.nodes.values())
    for e in fc.edges:
        label = e.utterances[0] if e.utterances else e.condition
        arrow = f" -->|{_text(label, 40)}| " if label else " --> "
        lines.append(f"  {_id(e.source)}{arrow}{_id(e.target)}")
    return "\n".join(lines) + "\n"
