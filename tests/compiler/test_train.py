"""Training: a tiny real model learns the 4-node weather chart on CPU; progress file; resume after a kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from compiler.base_model import LORA_REFUSAL, BaseModelError, check_base_model
from compiler.scratch import ScratchError, parse_spec
from compiler.toolcalls import parse_assistant_text

ROOT = Path(__file__).resolve().parents[2]
CHART = Path(__file__).with_name("weather.yaml")


def test_lora_is_refused_with_the_reason() -> None:
    with pytest.raises(BaseModelError, match="procedural knowledge is not low-rank"):
        check_base_model("scratch:tiny", lora=True)
    assert "not low-rank" in LORA_REFUSAL
    with pytest.raises(ScratchError, match="scratch:tiny"):
        parse_spec("scratch:enormous")
    with pytest.raises(BaseModelError, match="no config.json"):
        check_base_model(str(ROOT / "configs"))


def test_template_and_parser_round_trip() -> None:
    pytest.importorskip("tokenizers", reason="the `compile` extra is needed for the scratch tokenizer")
    from compiler.scratch import train_tokenizer

    call = {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}
    conv = {
        "messages": [
            {"role": "system", "content": "You help."},
            {"role": "user", "content": "Oslo please"},
            {"role": "assistant", "content": "", "tool_calls": [call]},
        ],
        "tools": [{"type": "function", "function": {"name": "get_weather",
                                                    "parameters": {"properties": {"city": {}}}}}],
    }
    tok = train_tokenizer([conv] * 3, vocab_size=300)
    from compiler.templates import chat_messages, end_of_turn, tokenize_conversation

    assert end_of_turn(tok) == "<|end|>"
    messages, tools = chat_messages(conv)
    ids, mask = tokenize_conversation(tok, messages, tools)
    text = tok.decode(ids)
    assert "<|tools|>get_weather(city)<|end|>" in text
    masked = [i for i, m in zip(ids, mask, strict=True) if m]
    assistant_text = tok.decode(masked)
    # Hermes format, arguments a JSON object, and the end token trained so the model learns to stop
    assert assistant_text == '<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call><|end|>'
    msg = parse_assistant_text(assistant_text, ["<|end|>"])
    assert msg["content"] is None
    assert msg["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": '{"city": "Oslo"}'}


def test_tiny_training_learns_the_four_node_flowchart(weather_compile: Any) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from compiler.scratch import build_model

    run = Path(weather_compile.out_dir) / "run"
    meta = json.loads((run / "model" / "train_meta.json").read_text())
    losses = [x["loss"] for x in meta["result"]["losses"] if "loss" in x]
    assert len(losses) >= 5 and losses[-1] < losses[0] / 4  # loss was logged and fell
    assert any("eval_loss" in x for x in meta["result"]["losses"])  # held-out loss picked the checkpoint

    tok = AutoTokenizer.from_pretrained(run / "tokenizer")
    initial = build_model("scratch:micro", tok, seed=0)  # the same seeded init training started from
    trained = AutoModelForCausalLM.from_pretrained(run / "model")
    before = dict(initial.named_parameters())
    unchanged = [n for n, p in trained.named_parameters() if torch.equal(p, before[n])]
    assert unchanged == []  # every parameter was trained

    m = weather_compile.metrics
    assert m["conversations"] >= 10
    assert m["node_accuracy"] >= 0.95 and m["success_rate"] >= 0.9, weather_compile.reasons
    assert weather_compile.passed and weather_compile.artifact


def test_progress_file_is_readable_by_another_process(weather_compile: Any) -> None:
    from compiler.train import read_progress

    progress = read_progress(Path(weather_compile.out_dir) / "run")
    assert progress is not None and progress["status"] == "finished"
    assert progress["step"] == progress["max_steps"] == weather_compile.train["steps"]
    assert progress["tokens_per_s"] > 0 and progress["loss"] is not None and "eta_s" in progress


def test_resume_after_a_killed_run(tmp_path: Path) -> None:
    pytest.importorskip("trl", reason="the `compile` extra (torch, transformers, trl) is needed to train")
    from compiler.config import TrainConfig
    from compiler.formats import load_flowchart
    from compiler.paths import enumerate_paths
    from compiler.render import render_offline
    from compiler.train import read_jsonl, read_progress, train

    fc = load_flowchart(CHART)
    rows = [render_offline(fc, p, seed=0, variant=v) for p in enumerate_paths(fc).paths for v in range(8)]
    for name, part in (("train", rows[2:]), ("eval", rows[:2])):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
    run = tmp_path / "run"
    sets = ["train.base_model=scratch:micro", "train.batch_size=4", "train.eval_steps=3", "train.vocab_size=300",
            "train.logging_steps=1"]
    cmd = [sys.executable, "-m", "compiler.train", "--train", str(tmp_path / "train.jsonl"), "--eval",
           str(tmp_path / "eval.jsonl"), "--out", str(run), "--set", "train.max_steps=100000"]
    for s in sets:
        cmd += ["--set", s]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=os.environ | {"OMP_NUM_THREADS": "1"})
    try:
        deadline = time.monotonic() + 180
        while not list((run / "checkpoints").glob("checkpoint-*/trainer_state.json")):
            assert proc.poll() is None, "training exited before its first checkpoint"
            assert time.monotonic() < deadline, "no checkpoint within 180 s"
            time.sleep(0.2)
        time.sleep(0.5)  # let the checkpoint finish writing, then crash hard
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    progress = read_progress(run)
    assert progress is not None and progress["status"] == "running"  # it never got to finish
    done = max(int(p.name.split("-")[1]) for p in (run / "checkpoints").glob("checkpoint-*")
               if (p / "trainer_state.json").is_file())

    lines: list[str] = []
    cfg = TrainConfig(base_model="scratch:micro", batch_size=4, eval_steps=3, vocab_size=300, logging_steps=1,
                      max_steps=done + 3)
    result = train(read_jsonl(tmp_path / "train.jsonl"), read_jsonl(tmp_path / "eval.jsonl"), run, cfg,
                   echo=lines.append)
    assert result.resumed_from is not None and result.resumed_from.endswith(f"checkpoint-{done}")
    assert result.steps == done + 3
    assert lines[0].startswith("resuming from")
    assert read_progress(run)["status"] == "finished"  # type: ignore[index]
    assert (Path(result.model_dir) / "config.json").is_file()

    lines.clear()  # other data in the same folder: a resume would mix two runs, so it starts over
    cfg.max_steps = 2
    again = train(read_jsonl(tmp_path / "train.jsonl")[1:], read_jsonl(tmp_path / "eval.jsonl"), run, cfg,
                  echo=lines.append)
    assert again.resumed_from is None and again.steps == 2
    assert lines[0].startswith("not resuming")
