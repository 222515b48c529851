"""The compile pipeline end to end through the CLI: stage outputs and metadata, gate failure, refusals."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from compiler.cli import register

ROOT = Path(__file__).resolve().parents[2]
INSURANCE = ROOT / "configs" / "workflows" / "insurance-claims.yaml"
STAGES = ("train", "simulate", "evaluate", "serve", "pipeline")


def _app() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


def test_every_stage_module_is_runnable_and_says_how() -> None:
    for stage in STAGES:
        mod = importlib.import_module(f"compiler.{stage}")
        assert (mod.__doc__ or "").startswith(f"python -m compiler.{stage}"), stage
    out = subprocess.run([sys.executable, "-m", "compiler.pipeline", "--help"], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0 and "--out" in out.stdout


def test_import_compiler_stays_light() -> None:
    code = ("import sys, compiler.cli, compiler.pipeline, compiler.serve, compiler.evaluate; "
            "print(sorted(m for m in ('torch', 'transformers', 'trl') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stderr


def test_cli_refuses_lora_and_bad_input_in_one_line(tmp_path: Path) -> None:
    runner = CliRunner()
    chart = Path(__file__).with_name("weather.yaml")
    res = runner.invoke(_app(), ["compile", str(chart), "--out", str(tmp_path / "o"), "--lora"])
    assert res.exit_code == 2 and "procedural knowledge is not low-rank" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    res = runner.invoke(_app(), ["compile", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "`" in res.stderr and "does not exist" in res.stderr
    res = runner.invoke(_app(), ["compile", str(chart), "--out", str(tmp_path / "o"), "--base-model",
                                 "scratch:huge"])
    assert res.exit_code == 2 and "unknown scratch size `huge`" in res.stderr
    res = runner.invoke(_app(), ["serve-model", str(tmp_path)])
    assert res.exit_code == 2 and "not a compiled model folder" in res.stderr


def test_compile_writes_every_stage_with_metadata(weather_compile: Any) -> None:
    out = Path(weather_compile.out_dir)
    meta = json.loads((out / "data" / "meta.json").read_text())
    assert meta["paths"] == {"total": 3, "enumerated_total": 3, "train": 2, "eval": 1, "sampled": False,
                             "method": meta["paths"]["method"], "max_loops": 2, "split_rule": "loops"}
    assert meta["coverage"]["edge_coverage"] == 1.0 and meta["coverage"]["train_edge_coverage"] == 1.0
    train_ids = {json.loads(x)["tiergate"]["path_id"] for x in (out / "data" / "train.jsonl").open()}
    eval_ids = {json.loads(x)["tiergate"]["path_id"] for x in (out / "data" / "eval.jsonl").open()}
    assert train_ids and eval_ids and not train_ids & eval_ids  # split by path
    for line in (out / "data" / "train.jsonl").open():
        system = json.loads(line)["messages"][0]
        assert system == {"role": "system", "content": "You are a weather assistant."}  # no procedure in it
    report = json.loads((out / "eval" / "report.json").read_text())
    assert report["passed"] and report["decoding"] == "greedy"
    manifest = json.loads((out / "artifact" / "manifest.json").read_text())
    for key in ("workflow", "flowchart_hash", "base_model", "data", "coverage", "eval", "created", "config_hash"):
        assert manifest[key], key
    assert manifest["eval"]["node_accuracy"] == weather_compile.metrics["node_accuracy"]
    assert manifest["data"]["tokens"]["train"] > 0
    summary = json.loads((out / "compile.json").read_text())
    assert set(summary["stages"]) == {"data", "train", "eval", "artifact"}
    assert summary["config_hash"] == manifest["config_hash"]


def test_insurance_example_compiles_offline_and_reports_why_the_gate_fails(tmp_path: Path) -> None:
    pytest.importorskip("trl", reason="the `compile` extra (torch, transformers, trl) is needed to train")
    out = tmp_path / "insurance"
    res = CliRunner().invoke(_app(), [
        "compile", str(INSURANCE), "--out", str(out), "--base-model", "scratch:micro", "--max-steps", "4",
        "--set", "data.variants_per_path=1", "--set", "data.max_eval_conversations=4",
        "--set", "train.eval_steps=2", "--set", "gate.max_new_tokens=8", "--set", "train.vocab_size=400",
    ])
    assert res.exit_code == 1, res.output
    assert "eval gate failed" in res.stderr
    assert not (out / "artifact").exists()
    text = (out / "gate-report.md").read_text()
    assert "Why the gate failed" in text and "min_node_accuracy" in text
    meta = json.loads((out / "data" / "meta.json").read_text())
    assert meta["paths"]["total"] > 10 and meta["coverage"]["edge_coverage"] == 1.0


def test_a_chart_with_no_path_to_hold_out_is_gated_on_unseen_conversations_of_its_paths(tmp_path: Path) -> None:
    """A tree-shaped chart (here: weather without its retry loop, one path) leaves no path to hold out;
    the gate drives its training paths with conversations never trained on instead of failing with
    "no held-out conversations", and says so."""
    import yaml

    from compiler.config import CompileConfig
    from compiler.flowchart import from_dict
    from compiler.pipeline import EVAL_VARIANT_BASE, build_data

    raw = yaml.safe_load(Path(__file__).with_name("weather.yaml").read_text())
    raw["edges"] = [e for e in raw["edges"] if not (e["from"] == "lookup" and e["to"] == "ask_city")]
    lines: list[str] = []
    meta = build_data(from_dict(raw), CompileConfig(), tmp_path, echo=lines.append)
    assert meta["paths"]["eval"] == 0 and meta["conversations"]["eval"] > 0
    assert meta["eval_on"].startswith("unseen conversations of the training paths")
    assert "no path could be held out" in lines[-1]
    evals = [json.loads(x) for x in (tmp_path / "data" / "eval.jsonl").read_text().splitlines()]
    trains = [json.loads(x) for x in (tmp_path / "data" / "train.jsonl").read_text().splitlines()]
    assert all(r["tiergate"]["variant"] >= EVAL_VARIANT_BASE for r in evals)
    assert not {r["tiergate"]["variant"] for r in evals} & {r["tiergate"]["variant"] for r in trains}
    # a chart with paths to spare keeps its held-out paths
    full = build_data(from_dict(yaml.safe_load(Path(__file__).with_name("weather.yaml").read_text())),
                      CompileConfig(), tmp_path / "full", echo=lambda _l: None)
    assert full["paths"]["eval"] >= 1 and full["eval_on"] == "held-out paths"
