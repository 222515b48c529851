"""python -m compiler.evaluate --model RUN/model --flowchart FC.yaml --data DATA/eval.jsonl --out REPORT_DIR

The eval gate. On held-out paths (never seen in training) the user simulator drives the model turn by
turn; per conversation it records: the right terminal reached, node accuracy (each agent turn on the
node the flowchart expects), tool calls exact in name and arguments, turn count. A teacher, when
configured, is driven over the same paths for comparison, and an optional LLM judge (litellm) scores
the paper's five criteria 1-5. The gate's thresholds come from the config; ``passed`` is False with
one reason per failed threshold.

    report = evaluate(fc, eval_rows, ModelPolicy(model, tok), GateConfig())
    report.passed, report.reasons
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .config import GateConfig, load_compile_config
from .simulate import NodeMatcher, Policy, Transcript, paraphrase_matcher, simulate

JUDGE_CRITERIA = ("task_success", "information_accuracy", "consistency", "graceful_handling", "naturalness")


@dataclass
class ConversationResult:
    path_id: str
    terminal: str
    terminal_reached: bool
    node_accuracy: float
    nodes_ok: int
    nodes_expected: int
    tool_calls_exact: int
    tool_calls_expected: int
    turns: int
    expected_turns: int
    success: bool
    derailed_at: int | None = None
    derail: dict[str, Any] | None = None  # expected node, got node and the model's message where it left
    judge: dict[str, float] | None = None


@dataclass
class Metrics:
    conversations: int
    node_accuracy: float
    success_rate: float
    terminal_rate: float
    tool_accuracy: float | None
    mean_turns: float
    mean_expected_turns: float
    judge: dict[str, float] | None = None


@dataclass
class EvalReport:
    model: Metrics
    per_conversation: list[ConversationResult]
    thresholds: dict[str, float]
    passed: bool
    reasons: list[str]
    teacher: Metrics | None = None
    wall_s: float = 0.0
    decoding: str = "greedy"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def score_transcript(t: Transcript) -> ConversationResult:
    """Per-conversation figures; turns the simulator never reached count as misses."""
    expected = len(t.expected_nodes)
    ok = sum(1 for x in t.turns if x.node_ok)
    # expected tool turns the simulator never reached are misses too
    tool_expected = sum(t.expected_tools) if t.expected_tools else sum(1 for x in t.turns if x.expects_tool)
    tool_exact = sum(1 for x in t.turns if x.expects_tool and x.tool_ok)
    all_ok = t.completed and all(x.node_ok and x.tool_ok is not False for x in t.turns)
    terminal_reached = t.completed and bool(t.turns) and t.turns[-1].node_ok
    derail = None
    if t.derailed_at is not None and t.derailed_at < len(t.turns):
        bad = t.turns[t.derailed_at]
        derail = {"expected": bad.expected_node, "got": bad.got_node, "message": bad.message}
    elif t.error:
        derail = {"error": t.error}
    return ConversationResult(
        path_id=t.path_id,
        terminal=t.terminal,
        terminal_reached=terminal_reached,
        node_accuracy=ok / expected if expected else 0.0,
        nodes_ok=ok,
        nodes_expected=expected,
        tool_calls_exact=tool_exact,
        tool_calls_expected=tool_expected,
        turns=len(t.turns),
        expected_turns=expected,
        success=all_ok and terminal_reached,
        derailed_at=t.derailed_at,
        derail=derail,
    )


def aggregate(results: Sequence[ConversationResult]) -> Metrics:
    n = len(results)
    if n == 0:
        return Metrics(0, 0.0, 0.0, 0.0, None, 0.0, 0.0)
    nodes = sum(r.nodes_expected for r in results)
    tools = sum(r.tool_calls_expected for r in results)
    judged = [r.judge for r in results if r.judge]
    judge = None
    if judged:
        judge = {c: round(sum(j.get(c, 0.0) for j in judged) / len(judged), 3) for c in JUDGE_CRITERIA}
        judge["mean"] = round(sum(judge[c] for c in JUDGE_CRITERIA) / len(JUDGE_CRITERIA), 3)
    return Metrics(
        conversations=n,
        node_accuracy=round(sum(r.nodes_ok for r in results) / nodes, 4) if nodes else 0.0,
        success_rate=round(sum(r.success for r in results) / n, 4),
        terminal_rate=round(sum(r.terminal_reached for r in results) / n, 4),
        tool_accuracy=round(sum(r.tool_calls_exact for r in results) / tools, 4) if tools else None,
        mean_turns=round(sum(r.turns for r in results) / n, 2),
        mean_expected_turns=round(sum(r.expected_turns for r in results) / n, 2),
        judge=judge,
    )


def gate(metrics: Metrics, cfg: GateConfig) -> tuple[bool, list[str]]:
    """Thresholds from the config; each failure is one sentence naming the figure and the bar."""
    reasons = []
    checks = [
        ("node accuracy", metrics.node_accuracy, cfg.min_node_accuracy, "min_node_accuracy"),
        ("full-conversation success", metrics.success_rate, cfg.min_success_rate, "min_success_rate"),
    ]
    if metrics.tool_accuracy is not None:
        checks.append(("exact tool calls", metrics.tool_accuracy, cfg.min_tool_accuracy, "min_tool_accuracy"))
    if metrics.judge is not None:
        checks.append(("judge mean score", metrics.judge["mean"], cfg.min_judge_score, "min_judge_score"))
    if metrics.conversations == 0:
        reasons.append("no held-out conversations were evaluated; raise `data.eval_share`.")
    for label, value, bar, key in checks:
        if value < bar:
            reasons.append(
                f"{label} {value:.3f} is below `gate.{key}` = {bar:.3f}; train longer or on more data, "
                "or use a bigger base model."
            )
    return not reasons, reasons


def judge_conversation(judge_model: str, fc: Any, messages: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """The paper's five criteria scored 1-5 by an LLM through litellm; the reply must be a JSON object."""
    import litellm

    transcript = "\n".join(
        f"{m['role']}: {m.get('content') or json.dumps(m.get('tool_calls'))}" for m in messages if m["role"] != "system"
    )
    prompt = (
        f"You grade an AI agent running the workflow `{fc.name}`. Score the conversation below from 1 (bad) to "
        "5 (excellent) on each criterion: task_success, information_accuracy, consistency, graceful_handling, "
        "naturalness. Answer with one JSON object mapping each criterion to an integer and nothing else.\n\n"
        + transcript
    )
    resp = litellm.completion(model=judge_model, messages=[{"role": "user", "content": prompt}], temperature=0)
    return parse_judge_reply(resp.choices[0].message.content or "")


def parse_judge_reply(text: str) -> dict[str, float]:
    found = re.search(r"\{.*\}", text, re.S)
    if not found:
        raise ValueError(f"judge reply `{text[:80]}` holds no JSON object; use a model that follows the format.")
    data = json.loads(found.group(0))
    scores = {}
    for c in JUDGE_CRITERIA:
        value = float(data.get(c, 0))
        if not 1 <= value <= 5:
            raise ValueError(f"judge score `{c}` = `{value}` is outside 1-5; the judge ignored the rubric.")
        scores[c] = value
    return scores


def evaluate(
    fc: Any,
    conversations: Sequence[Mapping[str, Any]],
    policy: Policy | Callable[[Mapping[str, Any]], Policy],
    cfg: GateConfig | None = None,
    teacher: Policy | None = None,
    matcher: NodeMatcher | None = None,
    echo: Callable[[str], None] | None = None,
) -> EvalReport:
    """Drive ``policy`` over every held-out conversation and gate the result.

    ``policy`` may be a factory taking the reference conversation (the oracle needs it).
    """
    cfg = cfg or GateConfig()
    t0 = time.monotonic()

    def run(p: Any, judge: bool, match: NodeMatcher | None = matcher) -> list[ConversationResult]:
        results = []
        for i, ref in enumerate(conversations):
            pol = p(ref) if _is_factory(p) else p
            t = simulate(ref, pol, fc, matcher=match, max_turns=cfg.max_turns)
            r = score_transcript(t)
            if judge and cfg.judge_model:
                r.judge = judge_conversation(cfg.judge_model, fc, t.messages)
            results.append(r)
            if echo and (i + 1) % 10 == 0:
                echo(f"eval {i + 1}/{len(conversations)}")
        return results

    results = run(policy, judge=True)
    metrics = aggregate(results)
    # a teacher paraphrases whatever the references' wording: its text turns are judged by node
    teacher_metrics = (
        aggregate(run(teacher, judge=False, match=matcher or paraphrase_matcher)) if teacher is not None else None
    )
    passed, reasons = gate(metrics, cfg)
    thresholds = {
        "min_node_accuracy": cfg.min_node_accuracy,
        "min_success_rate": cfg.min_success_rate,
        "min_tool_accuracy": cfg.min_tool_accuracy,
        "min_judge_score": cfg.min_judge_score,
    }
    return EvalReport(metrics, results, thresholds, passed, reasons, teacher_metrics, round(time.monotonic() - t0, 2))


def _is_factory(p: Any) -> bool:
    return isinstance(p, type) or getattr(p, "is_factory", False)


def report_markdown(report: EvalReport, title: str = "Eval gate") -> str:
    m = report.model
    lines = [
        f"# {title}: {'PASSED' if report.passed else 'FAILED'}",
        "",
        "| metric | model | threshold |" + (" teacher |" if report.teacher else ""),
        "|---|---|---|" + ("---|" if report.teacher else ""),
    ]
    t = report.teacher

    def row(label: str, value: Any, bar: Any, tv: Any = None) -> str:
        return f"| {label} | {value} | {bar} |" + (f" {tv} |" if t else "")

    lines.append(row("conversations", m.conversations, "", t.conversations if t else None))
    lines.append(row("node accuracy", m.node_accuracy, report.thresholds["min_node_accuracy"],
                     t.node_accuracy if t else None))
    lines.append(row("full-conversation success", m.success_rate, report.thresholds["min_success_rate"],
                     t.success_rate if t else None))
    lines.append(row("right terminal reached", m.terminal_rate, "", t.terminal_rate if t else None))
    lines.append(row("exact tool calls", m.tool_accuracy, report.thresholds["min_tool_accuracy"],
                     t.tool_accuracy if t else None))
    lines.append(row("mean turns (expected)", f"{m.mean_turns} ({m.mean_expected_turns})", "",
                     t.mean_turns if t else None))
    if m.judge:
        lines.append(row("judge mean (1-5)", m.judge["mean"], report.thresholds["min_judge_score"]))
    lines += ["", f"Decoding: {report.decoding}. Eval wall time: {report.wall_s} s.", ""]
    if report.reasons:
        lines += ["## Why the gate failed", ""] + [f"- {r}" for r in report.reasons] + [""]
    derails = [r for r in report.per_conversation if r.derail]
    if derails:
        lines += ["## First derailments", ""]
        for r in derails[:10]:
            lines.append(f"- `{r.path_id}` turn {r.derailed_at}: {json.dumps(r.derail, default=str)[:300]}")
    return "\n".join(lines) + "\n"


def write_report(report: EvalReport, out_dir: str | Path, meta: Mapping[str, Any] | None = None) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report.to_dict() | {"meta": dict(meta or {})}, indent=2,
                                                default=str))
    (out / "report.md").write_text(report_markdown(report))
    return out / "report.json"


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m compiler.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="trained model folder")
    parser.add_argument("--flowchart", required=True, help="the workflow's flowchart")
    parser.add_argument("--data", required=True, help="held-out rendered conversations (JSONL)")
    parser.add_argument("--out", required=True, help="folder for report.json / report.md")
    parser.add_argument("--config", default=None, help="compile YAML with the gate thresholds")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    from .formats import load_flowchart
    from .simulate import ModelPolicy
    from .train import read_jsonl

    try:
        cfg = load_compile_config(args.config)
        fc = load_flowchart(args.flowchart)
        policy = ModelPolicy.from_folder(args.model, cfg.gate.max_new_tokens)
        rows = read_jsonl(args.data)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    report = evaluate(fc, rows, policy, cfg.gate, echo=print)
    write_report(report, args.out, {"model": args.model, "data": args.data})
    print(report_markdown(report))
    return 0 if report.passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
