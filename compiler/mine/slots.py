"""Slots: values that travel through a conversation, found by following them.

A value the agent copies from the user's words (or from a tool's result) into a later
tool call's arguments is a scenario variable: a compiled model has to learn to copy it,
so the mined chart declares it as a slot, uses ``{slot}`` in the tool's ``args``, and the
user utterances and replies that carry it become templates. Values a reply quotes from a
tool's result (a price, a reference) are slots too (``kind="quoted"``): the say-templates
need them.

Example::

    found = find_slots(traces)
    [(s.name, s.source, s.values[:3]) for s in found.slots]
    found.mask("From London to Paris", found.bindings[0])   # 'From {origin} to {destination}'
"""

from __future__ import annotations

import functools
import json
import re
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from compiler.mine.traces import Trace


def value_text(value: Any) -> str | None:
    """A scalar argument or result value as the words a message would carry; None for containers."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else str(value)
    if isinstance(value, str):
        return value.strip() or None
    return None


@functools.lru_cache(maxsize=1 << 16)  # compiling dominated mining time (5 s of 8 s for 1,000 conversations)
def _word_re(value: str) -> re.Pattern[str]:
    # Whole words only: a passenger count of "1" must not match inside "SK101" or "14 April".
    return re.compile(rf"(?<![A-Za-z0-9]){re.escape(value)}(?![A-Za-z0-9])", re.I)


def contains(text: str, value: str) -> bool:
    return value.lower() in text.lower() and bool(_word_re(value).search(text))


def _leaves(data: Any, key: str = "") -> Iterator[tuple[str, str]]:
    """(key, value text) for every scalar in a parsed tool result."""
    if isinstance(data, dict):
        for k, v in data.items():
            yield from _leaves(v, str(k))
    elif isinstance(data, list):
        for v in data:
            yield from _leaves(v, key)
    else:
        text = value_text(data)
        if text is not None and key:
            yield key, text


def _parse(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


@dataclass(frozen=True)
class Slot:
    """A scenario variable: where its values come from and where they go."""

    name: str
    kind: str  # "argument" (copied into a tool call) or "quoted" (a tool result quoted in a reply)
    source: str  # "user" or "tool:<name>"
    used_in: tuple[str, ...]  # "tool.argument" or "reply"
    values: tuple[str, ...]  # distinct values seen, most frequent first


@dataclass(frozen=True)
class SlotFinding:
    """Slots, and per conversation the values each slot took (several when a loop changed it)."""

    slots: tuple[Slot, ...]
    bindings: tuple[dict[str, list[str]], ...]
    arg_slots: dict[tuple[str, str], str]  # (tool, argument) -> slot name

    def mask(self, text: str, binding: Mapping[str, Sequence[str]]) -> str:
        """``text`` with this conversation's slot values replaced by ``{slot}``, longest value first."""
        pairs = sorted(
            ((v, name) for name, values in binding.items() for v in values if v),
            key=lambda p: len(p[0]),
            reverse=True,
        )
        low = text.lower()
        for value, name in pairs:
            if value.lower() in low:
                text = _word_re(value).sub("{" + name + "}", text)
        return text


def find_slots(
    traces: Sequence[Trace], min_share: float = 0.5, min_quoted: float = 0.2, max_values: int = 50
) -> SlotFinding:
    """Follow every tool-call argument back to the user turn or tool result it came from.

    An argument is a slot when at least ``min_share`` of its values were seen earlier in
    the conversation and it took at least two values (a constant stays a literal).
    Arguments whose values agree in the conversations they share (a passenger count sent
    to search and to booking) are one slot. A tool-result field is a quoted slot when a
    later reply quotes it in ``min_quoted`` of the cases (and at least 3 times).
    """
    # (tool, arg) -> per trace: list of values; and how many occurrences were traced to a source
    per_arg: dict[tuple[str, str], dict[int, list[str]]] = {}
    found: Counter[tuple[str, str]] = Counter()
    total: Counter[tuple[str, str]] = Counter()
    sources: dict[tuple[str, str], Counter[str]] = {}
    result_keys: dict[tuple[str, str], Counter[tuple[str, str]]] = {}  # (tool, result key) -> arguments fed
    for ti, trace in enumerate(traces):
        seen_user: list[str] = []
        seen_results: list[tuple[str, str]] = []  # (tool that produced it, text)
        last_tool = ""
        for turn in trace.turns:
            seen_user.extend(turn.user)
            seen_results.extend((last_tool, r) for r in turn.results)
            if not turn.is_call:
                continue
            tool = turn.tool or ""
            for arg, raw in turn.arguments.items():
                value = value_text(raw)
                if value is None:
                    continue
                key = (tool, str(arg))
                per_arg.setdefault(key, {}).setdefault(ti, []).append(value)
                total[key] += 1
                origin = "user" if any(contains(u, value) for u in seen_user) else next(
                    (f"tool:{t}" for t, r in seen_results if contains(r, value)), None
                )
                if origin:
                    found[key] += 1
                    sources.setdefault(key, Counter())[origin] += 1
                if origin and origin.startswith("tool:"):
                    for producer, r in seen_results:
                        for leaf, leaf_value in _leaves(_parse(r)):
                            if leaf_value == value:
                                result_keys.setdefault((producer, leaf), Counter())[key] += 1
            last_tool = tool
    candidates = [
        key
        for key in per_arg
        if found[key] >= min_share * total[key] and len({v for vs in per_arg[key].values() for v in vs}) >= 2
    ]
    # Group arguments that always carry the same value into one slot.
    groups: list[list[tuple[str, str]]] = []
    for key in candidates:
        mine = per_arg[key]
        for group in groups:
            # Loops change values (a corrected order number, a second question about another order),
            # so one shared value in a conversation counts as agreeing, and most conversations must agree.
            pairs = [(k, ti) for k in group for ti in mine if ti in per_arg[k]]
            agree = sum(1 for k, ti in pairs if set(per_arg[k][ti]) & set(mine[ti]))
            if pairs and agree >= 0.8 * len(pairs):
                group.append(key)
                break
        else:
            groups.append([key])
    slots: list[Slot] = []
    arg_slots: dict[tuple[str, str], str] = {}
    bindings: list[dict[str, list[str]]] = [{} for _ in traces]
    taken: set[str] = set()
    for group in groups:
        tool, arg = group[0]
        name = arg if arg not in taken else f"{tool}_{arg}"
        taken.add(name)
        counts: Counter[str] = Counter()
        came_from: Counter[str] = Counter()
        for key in group:
            arg_slots[key] = name
            came_from.update(sources.get(key, Counter()))
            for ti, values in per_arg[key].items():
                counts.update(values)
                bound = bindings[ti].setdefault(name, [])
                bound.extend(v for v in values if v not in bound)
        slots.append(
            Slot(
                name=name,
                kind="argument",
                source=came_from.most_common(1)[0][0],
                used_in=tuple(f"{t}.{a}" for t, a in group),
                values=tuple(v for v, _ in counts.most_common(max_values)),
            )
        )
    # A result field that feeds an argument slot is that slot wherever a reply quotes it.
    fed = {
        where: arg_slots[key]
        for where, counts in result_keys.items()
        for key, _ in counts.most_common(1)
        if key in arg_slots
    }
    slots.extend(_quoted_slots(traces, bindings, taken, fed, min_quoted, max_values))
    return SlotFinding(tuple(slots), tuple(bindings), arg_slots)


def _quoted_slots(
    traces: Sequence[Trace],
    bindings: list[dict[str, list[str]]],
    taken: set[str],
    fed: Mapping[tuple[str, str], str],
    min_share: float,
    max_values: int,
) -> list[Slot]:
    """Tool-result values that a later reply quotes (``price_eur`` in "... at 89 EUR")."""
    total: Counter[tuple[str, str]] = Counter()
    quoted: Counter[tuple[str, str]] = Counter()
    per_key: dict[tuple[str, str], dict[int, list[str]]] = {}
    for ti, trace in enumerate(traces):
        bound = {v for vs in bindings[ti].values() for v in vs}
        last_tool = ""
        pending: list[tuple[tuple[str, str], str]] = []
        for turn in trace.turns:
            for r in turn.results:
                for leaf, value in _leaves(_parse(r)):
                    if value in bound or len(value) < 2:
                        continue
                    if (last_tool, leaf) in fed:  # bound for masking, not a slot of its own
                        named = bindings[ti].setdefault(fed[(last_tool, leaf)], [])
                        if value not in named:
                            named.append(value)
                        continue
                    pending.append(((last_tool, leaf), value))
            if not turn.is_call and pending:
                for where, value in pending:
                    total[where] += 1
                    if contains(turn.text, value):
                        quoted[where] += 1
                        per_key.setdefault(where, {}).setdefault(ti, []).append(value)
                pending = []
            if turn.is_call:
                last_tool = turn.tool or ""
    out: list[Slot] = []
    for key in sorted(per_key, key=lambda k: -quoted[k]):
        values = Counter(v for vs in per_key[key].values() for v in vs)
        # A result field is quoted by one branch's reply only (the returned item, on the returns branch),
        # so a lower share than for arguments; whole-word matches of 2+ characters are rarely chance.
        if quoted[key] < max(3, min_share * total[key]) or len(values) < 2:
            continue
        tool, field_name = key
        name = field_name if field_name not in taken else f"{tool}_{field_name}"
        if name in taken:
            continue
        taken.add(name)
        for ti, vs in per_key[key].items():
            bound_values = bindings[ti].setdefault(name, [])
            bound_values.extend(v for v in vs if v not in bound_values)
        out.append(
            Slot(name, "quoted", f"tool:{tool}", ("reply",), tuple(v for v, _ in values.most_common(max_values)))
        )
    return out
