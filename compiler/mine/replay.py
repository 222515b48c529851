"""The replay gate: a policy's next action against the frontier's, on held-out captured conversations.

Each held-out conversation is cut before every assistant turn; the policy gets the
recorded history (the frontier's own earlier turns, so one mistake does not derail the
rest) and its answer is compared with what the frontier did there:

- a tool call must match in name and arguments, exactly (argument order and JSON spacing
  aside);
- a reply must be at the same node: the mined action model labels both replies, so
  different wording of the same step passes and a reply of another step fails.

Figures are per node (the node the frontier was at), so a report says where a compiled
model falls short. Thresholds belong to the compile config; :func:`replay_passes` applies
them.

Example::

    report = replay_gate(policy, held_out, mined)
    report.accuracy, report.per_node["search_flights"].accuracy
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from compiler.mine.miner import MinedWorkflow
from compiler.mine.static import StaticSplit
from compiler.mine.traces import Trace, message_text
from compiler.simulate import Policy, tool_calls_equal

Message = dict[str, Any]


@dataclass
class NodeFigures:
    """One node's turns in the replay; ``args_exact`` counts tool turns with exact arguments."""

    turns: int = 0
    correct: int = 0
    tool_turns: int = 0
    args_exact: int = 0

    @property
    def accuracy(self) -> float:
        return self.correct / self.turns if self.turns else 0.0


@dataclass
class ReplayReport:
    conversations: int = 0
    conversations_exact: int = 0  # every turn right
    turns: int = 0
    correct: int = 0
    per_node: dict[str, NodeFigures] = field(default_factory=dict)
    failures: list[tuple[str, int, str, str]] = field(default_factory=list)  # (conversation, turn, node, why)

    @property
    def accuracy(self) -> float:
        return self.correct / self.turns if self.turns else 0.0

    @property
    def conversation_share(self) -> float:
        return self.conversations_exact / self.conversations if self.conversations else 0.0


def served_history(messages: Sequence[Mapping[str, Any]], split: StaticSplit, persona: str) -> list[Message]:
    """The history as a compiled model is served it: static system lines gone, the persona first.

    The procedure, preloads and tool descriptions are in the weights; only what changes
    (the step, the user, the date) stays in the prompt.
    """
    out: list[Message] = [{"role": "system", "content": persona}]
    for m in messages:
        if m.get("role") in ("system", "developer"):
            rest = split.transient(message_text(m))
            if rest:
                out.append({"role": "system", "content": rest})
        else:
            out.append(dict(m))
    return out


def replay_gate(
    policy: Policy,
    conversations: Sequence[Trace],
    mined: MinedWorkflow,
    prepare: Callable[[Sequence[Mapping[str, Any]]], list[Message]] | None = None,
    max_failures: int = 50,
) -> ReplayReport:
    """Replay every held-out conversation turn by turn; ``prepare`` shapes the history (default: as served)."""
    shape = prepare or (lambda msgs: served_history(msgs, mined.split, mined.flowchart.system_prompt))
    report = ReplayReport()
    for trace in conversations:
        binding = mined.bind(trace)
        all_right = True
        for turn in trace.turns:
            want = mined.model.label(turn, binding)
            node = (mined.nodes_for(want) or [want or "?"])[0]
            figures = report.per_node.setdefault(node, NodeFigures())
            try:
                got = dict(policy(shape(trace.messages[: turn.history]), list(trace.tools)))
            except Exception as exc:  # a failing policy fails the turn, not the gate run
                got, why = {}, f"the policy failed: {type(exc).__name__}: {exc}"
            else:
                why = _compare(got, dict(turn.message), want, mined, binding)
            figures.turns += 1
            report.turns += 1
            if turn.is_call:
                figures.tool_turns += 1
                figures.args_exact += int(tool_calls_equal(got, dict(turn.message)))
            if why:
                all_right = False
                if len(report.failures) < max_failures:
                    report.failures.append((trace.id, turn.index + 1, node, why))
            else:
                figures.correct += 1
                report.correct += 1
        report.conversations += 1
        report.conversations_exact += int(all_right)
    return report


def _compare(
    got: Message, want_msg: Message, want: str | None, mined: MinedWorkflow, binding: Mapping[str, Sequence[str]]
) -> str:
    """"" when the policy did what the frontier did, else why not."""
    if want_msg.get("tool_calls"):
        if not got.get("tool_calls"):
            return "replied where the frontier called a tool"
        if not tool_calls_equal(got, want_msg):
            fn = (got["tool_calls"][0].get("function") or {})
            return f"called `{fn.get('name')}` with {fn.get('arguments')}; not the frontier's call"
        return ""
    if got.get("tool_calls"):
        return "called a tool where the frontier replied"
    text = message_text(got)
    if " ".join(text.split()) == " ".join(message_text(want_msg).split()):
        return ""
    label, _score = mined.model.text_label(text, binding)
    if want is None or label != want:
        at = (mined.nodes_for(label) or [label or "no node"])[0]
        return f"a reply of `{at}`"
    return ""


def replay_passes(report: ReplayReport, min_accuracy: float = 0.95, min_node_accuracy: float = 0.0) -> tuple[bool, list[str]]:
    """Apply the gate's thresholds; the reasons name every shortfall."""
    reasons = []
    if report.accuracy < min_accuracy:
        reasons.append(f"turn accuracy {report.accuracy:.3f} < {min_accuracy}")
    for node, fig in sorted(report.per_node.items()):
        if fig.accuracy < min_node_accuracy:
            reasons.append(f"node `{node}`: accuracy {fig.accuracy:.3f} < {min_node_accuracy}")
    return not reasons, reasons


def replay_markdown(report: ReplayReport, title: str = "Replay gate") -> str:
    """The gate's figures as a markdown section for a compile report: totals, then one row per node."""
    lines = [
        f"## {title}",
        "",
        f"{report.conversations} held-out captured conversations, {report.turns} agent turns: "
        f"turn accuracy {report.accuracy:.3f}, conversations right at every turn {report.conversation_share:.3f}.",
        "",
        "| node | turns | correct | accuracy | tool turns | exact arguments |",
        "|---|---|---|---|---|---|",
    ]
    for node, fig in sorted(report.per_node.items(), key=lambda kv: (kv[1].accuracy, kv[0])):
        args = f"{fig.args_exact}/{fig.tool_turns}" if fig.tool_turns else "-"
        lines.append(f"| {node} | {fig.turns} | {fig.correct} | {fig.accuracy:.3f} | {fig.tool_turns} | {args} |")
    if report.failures:
        lines += ["", "First failures:", ""]
        lines += [f"- {cid}, turn {turn} (`{node}`): {why}" for cid, turn, node, why in report.failures[:10]]
    return "\n".join(lines) + "\n"
