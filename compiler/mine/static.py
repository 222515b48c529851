"""What is static across a workflow's requests and what is transient.

Compile keeps the static part (procedure, preloads, tool schemas: the same on every
request) in the weights and strips it when the compiled model serves; the transient
part (the current step, today's date, the user's name) stays in the prompt. The split is
read line by line from the system text of every captured request:

- static: a line on (nearly) every request;
- step: a line that changes within a conversation and recurs across conversations
  (an orchestrator's "current step"); it names the node the agent is at;
- conversation: anything else, a line constant within a conversation that changes
  across them (a date, a user's name, an account number).

Example::

    split = split_static(traces)
    split.transient(turn.system), split.step_key(turn.system)
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from compiler.mine.traces import Trace

_DIGITS = re.compile(r"\d+")


def system_lines(system: str) -> list[str]:
    return [line.strip() for line in system.splitlines() if line.strip()]


@dataclass(frozen=True)
class LineShape:
    """Transient per-conversation lines of one shape (their first words), with examples."""

    shape: str
    conversations: int
    examples: tuple[str, ...]


@dataclass(frozen=True)
class StaticSplit:
    """The split of the system text; ``step_lines`` maps each step line to its request count."""

    static_lines: tuple[str, ...]
    step_lines: dict[str, int]
    conversation_lines: tuple[LineShape, ...]
    tool_names: tuple[str, ...]
    tools_static: bool
    requests: int
    conversations: int
    _static: frozenset[str] = field(default=frozenset(), repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_static", frozenset(self.static_lines))

    def step_key(self, system: str) -> str:
        """The known step lines of one request, joined; "" when the app named no step."""
        return "\n".join(line for line in system_lines(system) if line in self.step_lines)

    def transient(self, system: str) -> str:
        """The system text as a compiled model is served it: static lines removed."""
        return "\n".join(line for line in system_lines(system) if line not in self._static)

    def persona(self) -> str:
        """The runtime persona line: the first static sentence saying who the agent is.

        Never the procedure: that is what compiling moves into the weights.
        """
        for line in self.static_lines:
            if re.match(r"(?i)you are\b", line):
                return line
        if self.static_lines:
            first = re.split(r"(?<=[.!?])\s", self.static_lines[0])[0]
            return first
        return "You are a helpful assistant."


def split_static(traces: Sequence[Trace], static_share: float = 0.9) -> StaticSplit:
    """Classify every system line seen; ``static_share`` is the share of requests a static line is on."""
    on_turns: Counter[str] = Counter()
    in_convs: Counter[str] = Counter()
    varies: set[str] = set()
    order: dict[str, int] = {}
    requests = 0
    for trace in traces:
        per_turn = [set(system_lines(t.system)) for t in trace.turns]
        requests += len(per_turn)
        seen = set().union(*per_turn) if per_turn else set()
        for turn_lines in per_turn:
            on_turns.update(turn_lines)
        for t in trace.turns:  # first-seen order, never set order (it changes with the hash seed)
            for line in system_lines(t.system):
                order.setdefault(line, len(order))
        for line in seen:
            in_convs[line] += 1
            if any(line not in s for s in per_turn):
                varies.add(line)
    static = [line for line in order if on_turns[line] >= static_share * max(requests, 1)]
    static_set = set(static)
    steps = {
        line: on_turns[line]
        for line in order
        if line not in static_set and line in varies and in_convs[line] >= 2
    }
    rest = [line for line in order if line not in static_set and line not in steps]
    shapes: dict[str, list[str]] = {}
    for line in rest:
        key = " ".join(_DIGITS.sub("0", line).split()[:2])
        shapes.setdefault(key, []).append(line)
    groups = tuple(
        LineShape(shape, sum(in_convs[x] for x in lines), tuple(lines[:3]))
        for shape, lines in sorted(shapes.items(), key=lambda kv: -len(kv[1]))
    )
    names = [tuple(sorted(str((t.get("function") or t).get("name", "")) for t in trace.tools)) for trace in traces]
    distinct = set(names)
    all_names = tuple(sorted({n for ns in names for n in ns if n}))
    return StaticSplit(
        static_lines=tuple(static),
        step_lines=steps,
        conversation_lines=groups,
        tool_names=all_names,
        tools_static=len(distinct) <= 1,
        requests=requests,
        conversations=len(traces),
    )
