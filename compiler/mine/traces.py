"""Captured conversations read into per-conversation sequences of assistant turns.

The miner works on the agent's turns: what the assistant did (a reply or a tool call) and
what led to it (the user's words and the tool results since its previous turn, and the
system text in effect). Everything else in a conversation is context for those turns.

Example::

    traces = read_traces("exports/travel.jsonl")
    [turn.tool or turn.text for turn in traces[0].turns]
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compiler.simulate import canonical_args


class MineError(ValueError):
    """Traffic that cannot be mined; the message names the file, line or conversation."""


def message_text(message: Mapping[str, Any]) -> str:
    """The words of a message, whether ``content`` is a string or a list of parts."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


@dataclass(frozen=True)
class Turn:
    """One assistant turn and what led to it.

    ``history`` is how many of the conversation's messages came before the turn, so a
    replay can cut the recorded conversation right where the agent has to act.
    """

    index: int
    message: Mapping[str, Any]
    system: str
    user: tuple[str, ...]
    results: tuple[str, ...]
    history: int

    @property
    def calls(self) -> list[Mapping[str, Any]]:
        return list(self.message.get("tool_calls") or [])

    @property
    def is_call(self) -> bool:
        return bool(self.calls)

    @property
    def tool(self) -> str | None:
        """The called tool's name; a turn with several calls is named by its first."""
        if not self.calls:
            return None
        return str((self.calls[0].get("function") or {}).get("name") or "")

    @property
    def arguments(self) -> dict[str, Any]:
        if not self.calls:
            return {}
        args = canonical_args((self.calls[0].get("function") or {}).get("arguments") or "{}")
        return args if isinstance(args, dict) else {}

    @property
    def text(self) -> str:
        return message_text(self.message)


@dataclass(frozen=True)
class Trace:
    """One captured conversation: its messages, the tools offered, and its assistant turns."""

    id: str
    messages: tuple[Mapping[str, Any], ...]
    tools: tuple[Mapping[str, Any], ...]
    turns: tuple[Turn, ...]
    trailing_user: tuple[str, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)


_WORDS = re.compile(r"\w+")


def _similar(a: str, b: str) -> float:
    wa, wb = set(_WORDS.findall(a.lower())), set(_WORDS.findall(b.lower()))
    return len(wa & wb) / (len(wa | wb) or 1)


def _update_block(block: list[str], arrived: Sequence[str]) -> list[str]:
    """The system messages in effect after new ones arrive mid-conversation.

    Exports keep system messages where the app sent them. An orchestrator re-sends its
    per-step message each turn (replacing the previous step's) or its whole system text
    (replacing all of it): a new message replaces the one it most resembles, else the
    last one of a block of two or more (the per-step slot), else it is added.
    """
    out = list(block)
    for text in arrived:
        if not out:
            out.append(text)
            continue
        scores = [_similar(text, old) for old in out]
        best = max(range(len(out)), key=lambda i: scores[i])
        if scores[best] >= 0.5:
            out[best] = text
        elif len(out) >= 2:
            out[-1] = text
        else:
            out.append(text)
    return out


def trace_from_record(record: Any, trace_id: str) -> Trace:
    """One OpenAI chat object (``messages``, optional ``tools``) as a :class:`Trace`."""
    if not isinstance(record, dict) or not isinstance(record.get("messages"), list):
        raise MineError(f"{trace_id}: expected an object with a `messages` list (OpenAI chat format)")
    messages = [m for m in record["messages"] if isinstance(m, dict)]
    block: list[str] = []
    arrived: list[str] = []
    users: list[str] = []
    results: list[str] = []
    turns: list[Turn] = []
    leading = True
    for pos, m in enumerate(messages):
        role = m.get("role")
        if role in ("system", "developer"):
            if leading:
                block.append(message_text(m))
            else:
                arrived.append(message_text(m))
            continue
        leading = False
        if role == "user":
            users.append(message_text(m))
        elif role == "tool":
            results.append(message_text(m))
        elif role == "assistant":
            block = _update_block(block, arrived)
            turns.append(
                Turn(
                    index=len(turns),
                    message=m,
                    system="\n".join(block),
                    user=tuple(users),
                    results=tuple(results),
                    history=pos,
                )
            )
            arrived, users, results = [], [], []
    tools = tuple(t for t in record.get("tools") or [] if isinstance(t, dict))
    extra = {k: v for k, v in record.items() if k not in ("messages", "tools")}
    return Trace(trace_id, tuple(messages), tools, tuple(turns), tuple(users), extra)


def read_traces(path: str | Path) -> list[Trace]:
    """Read a JSONL export (one conversation a line); a bad line raises naming its number.

    Conversations without an assistant turn carry nothing to mine and are skipped. The file is read
    line by line: only the traces stay in memory, never the file's text besides them.
    """
    p = Path(path)
    try:
        with open(p, "rb") as fh:  # bytes: lines end at b"\n" only (a U+2028 inside a string is no line end)
            return traces_from_lines(fh, f"`{p.name}`", where=f"`{p}`")
    except OSError as exc:
        raise MineError(f"`{p}`: cannot read the conversations ({exc.strerror or exc}); check the path") from exc


def traces_from_lines(
    lines: Iterable[str | bytes], label: str, *, unit: str = "line", where: str | None = None
) -> list[Trace]:
    """JSONL lines (a file's, or an export streamed from the gateway's store) as traces.

    A trace's id is ``f"{label} {unit} {n}"`` (``n`` counts lines from 1); errors name ``where``
    (default: ``label``). Lines are parsed one at a time, so a streamed export is never held whole.

        traces_from_lines(export_lines(engine, "acme"), "`acme`", unit="conversation")
    """
    where = where or label
    out: list[Trace] = []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            why = exc.msg if isinstance(exc, json.JSONDecodeError) else "not UTF-8"
            raise MineError(f"{where} {unit} {n}: not JSON ({why}); each line must be one conversation") from exc
        trace = trace_from_record(record, f"{label} {unit} {n}")
        if trace.turns:
            out.append(trace)
    if not out:
        raise MineError(f"{where}: no conversation with an assistant turn; export the workflow's traffic first")
    return out


def traces_from_records(records: Iterable[Any]) -> list[Trace]:
    """In-memory conversations (as rendered or exported) as traces, numbered from 1."""
    out = [trace_from_record(r, f"conversation {i}") for i, r in enumerate(records, start=1)]
    return [t for t in out if t.turns]
