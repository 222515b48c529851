"""Eval gate metrics on known-good (oracle replay) and known-bad policies, gate thresholds, artifact rules."""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from compiler.artifact import GateFailed, Manifest, resolve_artifact, write_artifact, write_gate_failure
from compiler.config import ConfigError, GateConfig, TrainConfig, load_compile_config
from compiler.evaluate import evaluate, gate, parse_judge_reply, report_markdown
from compiler.formats import load_flowchart
from compiler.paths import enumerate_paths
from compiler.render import render_offline
from compiler.simulate import ConstantPolicy, ReplayPolicy, simulate, tool_calls_equal

ROOT = Path(__file__).resolve().parents[2]
TRAVEL = ROOT / "configs" / "workflows" / "travel-booking.yaml"


@pytest.fixture(scope="module")
def travel() -> tuple[Any, list[dict[str, Any]]]:
    fc = load_flowchart(TRAVEL)
    rows = [render_offline(fc, p, seed=0, variant=v) for p in enumerate_paths(fc).paths for v in range(2)]
    return fc, rows


class WrongArgs:
    """Follows the flowchart but garbles every tool call's arguments: nodes right, calls wrong."""

    is_factory = True

    def __init__(self, reference: dict[str, Any]) -> None:
        self.replay = ReplayPolicy(reference)

    def __call__(self, messages: Any, tools: Any) -> dict[str, Any]:
        msg = self.replay(messages, tools)
        for call in msg.get("tool_calls") or []:
            args = json.loads(call["function"]["arguments"])
            call["function"]["arguments"] = json.dumps({k: f"{v}x" for k, v in args.items()})
        return msg


def test_oracle_passes_every_metric(travel: Any) -> None:
    fc, rows = travel
    report = evaluate(fc, rows, ReplayPolicy, GateConfig())
    m = report.model
    assert m.conversations == len(rows)
    assert m.node_accuracy == 1.0 and m.success_rate == 1.0 and m.terminal_rate == 1.0
    assert m.tool_accuracy == 1.0
    assert m.mean_turns == m.mean_expected_turns
    assert report.passed and report.reasons == []


def test_constant_policy_fails_the_gate_with_reasons(travel: Any) -> None:
    fc, rows = travel
    report = evaluate(fc, rows, ConstantPolicy(), GateConfig())
    m = report.model
    assert m.node_accuracy == 0.0 and m.success_rate == 0.0 and m.terminal_rate == 0.0
    assert m.tool_accuracy == 0.0
    assert not report.passed
    assert any("min_node_accuracy" in r for r in report.reasons)
    assert any("min_success_rate" in r for r in report.reasons)
    assert "FAILED" in report_markdown(report)


def test_wrong_tool_arguments_keep_node_but_fail_conversation(travel: Any) -> None:
    fc, rows = travel
    report = evaluate(fc, rows, WrongArgs, GateConfig(min_node_accuracy=0.0, min_success_rate=0.0,
                                                      min_tool_accuracy=0.5))
    m = report.model
    assert m.tool_accuracy == 0.0
    assert m.success_rate == 0.0
    assert 0.0 < m.node_accuracy < 1.0  # the garbled call is on the right node, then the user cannot go on
    assert not report.passed and "min_tool_accuracy" in report.reasons[0]
    first = report.per_conversation[0]
    assert first.derail is not None and first.derail["expected"] == first.derail["got"]


def test_simulator_feeds_model_call_ids_and_stops_off_chart(travel: Any) -> None:
    fc, rows = travel
    ref = next(r for r in rows if any(m.get("tool_calls") for m in r["messages"]))
    t = simulate(ref, ReplayPolicy(ref), fc)
    assert t.completed and len(t.turns) == len(ref["tiergate"]["nodes"])
    calls = [c["id"] for m in t.messages if m["role"] == "assistant" for c in m.get("tool_calls") or []]
    answers = [m["tool_call_id"] for m in t.messages if m["role"] == "tool"]
    assert answers == calls[: len(answers)]
    bad = simulate(ref, ConstantPolicy("The moon is made of cheese."), fc)
    assert bad.derailed_at == 0 and len(bad.turns) == 1 and bad.turns[0].got_node is None


def test_tool_call_comparison_ignores_json_spacing_not_values() -> None:
    def call(args: str) -> dict[str, Any]:
        return {"tool_calls": [{"function": {"name": "f", "arguments": args}}]}

    assert tool_calls_equal(call('{"a": 1, "b": "x"}'), call('{"b":"x","a":1}'))
    assert not tool_calls_equal(call('{"a": 2}'), call('{"a": 1}'))
    assert not tool_calls_equal(call('{"a": 1'), call('{"a": 1}'))


def test_gate_thresholds_come_from_config(tmp_path: Path, travel: Any) -> None:
    fc, rows = travel
    report = evaluate(fc, rows, WrongArgs, GateConfig(min_node_accuracy=0.0, min_success_rate=0.0))
    assert report.passed  # tool exactness not required by default...
    cfg_file = tmp_path / "compile.yaml"
    cfg_file.write_text("gate:\n  min_tool_accuracy: 0.9\n  min_node_accuracy: 0.0\n  min_success_rate: 0.0\n")
    cfg = load_compile_config(cfg_file)
    passed, reasons = gate(report.model, cfg.gate)
    assert not passed and "0.900" in reasons[0]  # ...but a config file can demand it


def test_config_precedence_and_errors(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("train:\n  max_steps: 50\n  learning_rate: 0.01\n")
    cfg = load_compile_config(f, {"train.max_steps": "7"})
    assert cfg.train.max_steps == 7 and cfg.train.learning_rate == 0.01  # command line > file
    assert cfg.train.batch_size == TrainConfig().batch_size  # file > defaults, untouched keys keep them
    assert cfg.config_hash() != load_compile_config(f).config_hash()
    with pytest.raises(ConfigError, match="`train.nope`"):
        load_compile_config(f, {"train.nope": 1})
    with pytest.raises(ConfigError, match="`train.max_steps` = `many`"):
        load_compile_config(None, {"train.max_steps": "many"})


def test_judge_reply_parsing() -> None:
    reply = 'Scores: {"task_success": 5, "information_accuracy": 4, "consistency": 5, ' \
            '"graceful_handling": 3, "naturalness": 4}'
    assert parse_judge_reply(reply)["graceful_handling"] == 3.0
    with pytest.raises(ValueError, match="outside 1-5"):
        parse_judge_reply('{"task_success": 9}')
    with pytest.raises(ValueError, match="no JSON"):
        parse_judge_reply("great job")


def _manifest() -> Manifest:
    return Manifest(workflow="travel-booking", flowchart_hash="abc", base_model="scratch:micro", data={},
                    coverage={}, eval={}, config_hash="h")


def test_artifact_written_only_when_gate_passes(tmp_path: Path, travel: Any) -> None:
    pytest.importorskip("transformers", reason="the `compile` extra is needed to save a model folder")
    from compiler.scratch import build_model, train_tokenizer

    fc, rows = travel
    tok = train_tokenizer(rows, vocab_size=300)
    model_dir = tmp_path / "model"
    build_model("scratch:micro", tok).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)

    failing = evaluate(fc, rows[:3], ConstantPolicy(), GateConfig())
    with pytest.raises(GateFailed, match="min_node_accuracy"):
        write_artifact(model_dir, tmp_path / "out" / "artifact", _manifest(), failing)
    assert not (tmp_path / "out" / "artifact").exists()
    report_path = write_gate_failure(tmp_path / "out", _manifest(), failing)
    assert "No artifact was written" in report_path.read_text()
    with pytest.raises(FileNotFoundError, match="eval gate failed"):
        resolve_artifact(tmp_path / "out")

    passing = evaluate(fc, rows[:3], ReplayPolicy, GateConfig())
    art = write_artifact(model_dir, tmp_path / "out" / "artifact", _manifest(), passing)
    manifest = json.loads((art / "manifest.json").read_text())
    assert manifest["workflow"] == "travel-booking" and manifest["config_hash"] == "h" and manifest["created"]
    assert (art / "config.json").is_file() and (art / "tokenizer.json").is_file()
    assert resolve_artifact(tmp_path / "out") == art

    from compiler.templates import TemplateError
    from compiler.toolcalls import ToolFormatError

    # what is written is what serves: a folder that lost its template, or whose template renders tool calls
    # the serving parser cannot read, is refused and nothing is left behind
    (model_dir / "chat_template.jinja").unlink()
    with pytest.raises(TemplateError, match="no chat template"):
        write_artifact(model_dir, tmp_path / "out2" / "artifact", _manifest(), passing)
    (model_dir / "chat_template.jinja").write_text("{% for m in messages %}<|user|>{{ m.content }}<|end|>{% endfor %}")
    with pytest.raises(ToolFormatError, match="renders no tool calls"):
        write_artifact(model_dir, tmp_path / "out2" / "artifact", replace(_manifest(), tools=rows[0]["tools"]),
                       passing)
    assert not (tmp_path / "out2").exists() or not any((tmp_path / "out2").iterdir())


def test_replay_policy_does_not_share_state_between_calls(travel: Any) -> None:
    fc, rows = travel
    ref = rows[0]
    policy = ReplayPolicy(ref)
    a = policy([], [])
    a["content"] = "mutated"
    assert policy([], [])["content"] == copy.deepcopy(ref["messages"][2]["content"])


class Reworded:
    """Follows the flowchart but words every text turn its own way (here: the words reversed), as a teacher does."""

    is_factory = True

    def __init__(self, reference: dict[str, Any]) -> None:
        self.replay = ReplayPolicy(reference)

    def __call__(self, messages: Any, tools: Any) -> dict[str, Any]:
        msg = self.replay(messages, tools)
        if isinstance(msg.get("content"), str) and msg["content"].strip():
            msg["content"] = " ".join(reversed(msg["content"].split()))
        return msg


def test_the_teacher_is_judged_by_node_not_by_template_wording(travel: Any) -> None:
    fc, rows = travel
    report = evaluate(fc, rows, Reworded, GateConfig(), teacher=Reworded)
    assert report.model.node_accuracy < 0.5  # offline references: the model is held to the template
    assert report.teacher is not None and report.teacher.node_accuracy == 1.0  # the teacher, by node
