"""Logged conversations as extra training data, merged with the rendered ones without duplicates.

The gateway exports a workflow's conversations as JSONL in the OpenAI chat format (one
``{"messages": [...], "tools": [...]}`` a line). Their system prompts are replaced by
the chart's minimal runtime prompt: training data must look like what the compiled
model will be served, and the orchestrator's long procedure prompt is exactly what
compiling removes.

Example::

    logged = load_traffic("exports/travel.jsonl", fc)
    data = merge_conversations(rendered, logged)
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from compiler.flowchart import Flowchart, FlowchartError
from compiler.simulate import canonical_args

_ROLES = {"system", "user", "assistant", "tool", "developer"}


def load_traffic(path: str | Path, fc: Flowchart) -> list[dict[str, Any]]:
    """Read and normalise a JSONL export; a bad line raises naming its number."""
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise FlowchartError(
            f"`{p}`: cannot read the conversation log ({exc.strerror or exc}); check the path"
        ) from exc
    out: list[dict[str, Any]] = []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise FlowchartError(
                f"`{p}` line {n}: not JSON ({exc.msg}); each line must be one conversation object"
            ) from exc
        out.append(normalise(record, fc, where=f"`{p}` line {n}"))
    return out


def normalise(record: Any, fc: Flowchart, where: str = "conversation") -> dict[str, Any]:
    """One logged conversation in training shape: the chart's system prompt, its tools, a `tiergate` tag."""
    if not isinstance(record, dict) or not isinstance(record.get("messages"), list) or not record["messages"]:
        raise FlowchartError(
            f"{where}: expected an object with a non-empty `messages` list (OpenAI chat format)"
        )
    messages: list[dict[str, Any]] = []
    for i, m in enumerate(record["messages"]):
        if not isinstance(m, dict) or m.get("role") not in _ROLES:
            role = m.get("role") if isinstance(m, dict) else m
            raise FlowchartError(
                f"{where}: message {i + 1} has role `{role}`; use one of {', '.join(sorted(_ROLES))}"
            )
        if m["role"] in ("system", "developer"):
            continue
        messages.append(
            {k: v for k, v in m.items() if k in ("role", "content", "tool_calls", "tool_call_id", "name")}
        )
    if not any(m["role"] == "assistant" for m in messages):
        raise FlowchartError(f"{where}: no assistant message, so nothing to learn from; drop the line")
    tag = dict(record.get("tiergate") or {})
    tag.update({"workflow": fc.name, "source": "traffic"})
    return {
        "messages": [{"role": "system", "content": fc.system_prompt}, *messages],
        "tools": [dict(t) for t in fc.tools] or list(record.get("tools") or []),
        "tiergate": tag,
    }


def conversation_key(conv: dict[str, Any]) -> str:
    """Identity of a conversation: its turns' roles, words (whitespace and case folded) and tool calls.

    Tool-call ids are left out: two logs of the same exchange differ only there.
    """
    turns = []
    for m in conv["messages"]:
        if m.get("role") == "system":
            continue
        content = m.get("content")
        if isinstance(content, str):
            content = " ".join(content.split()).lower()
        calls = [
            (c.get("function", {}).get("name"), canonical_args(c.get("function", {}).get("arguments")))
            for c in m.get("tool_calls") or []
        ]
        turns.append([m.get("role"), content, calls])
    return hashlib.sha256(json.dumps(turns, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()


def merge_conversations(*sources: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Concatenate in order, keeping the first copy of each conversation."""
    seen: set[str] = set()
    out: list[dict[str, Any]] = []
    for source in sources:
        for conv in source:
            key = conversation_key(conv)
            if key not in seen:
                seen.add(key)
                out.append(conv)
    return out
