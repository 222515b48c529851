"""python -m compiler.pipeline FLOWCHART --out DIR [--config configs/compile.yaml] [--set train.max_steps=600]

On many GPUs: ``accelerate launch --config_file configs/accelerate/fsdp.yaml -m compiler.pipeline ...``
(or ``tiergate compile`` under ``accelerate launch``; docs/compile.md). The main process renders the
data and, after every rank trained, evaluates and writes the artifact.

The whole compile: flowchart -> paths -> conversations -> split -> train -> eval -> artifact. Each stage
writes its output with a metadata JSON beside it, which later stages (and people) read back:

    DIR/data/train.jsonl, eval.jsonl, heldout.jsonl + data/meta.json   (paths, coverage, counts)
    DIR/run/                                                            (checkpoints, progress.json, model/)
    DIR/eval/report.json + report.md                                    (the gate)
    DIR/artifact/  (HF folder + manifest.json) only when the gate passes, else DIR/gate-report.md
    DIR/compile.json                                                    (stage timings, config, outcome)

``eval.jsonl`` drives the simulator; ``heldout.jsonl`` (same held-out paths, other slot values) is
the held-out loss that picks the best checkpoint, so the gate's own conversations stay unseen.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .config import CompileConfig, load_compile_config
from .train import parse_sets, write_json_atomic

EVAL_VARIANT_BASE = 10_000
HELDOUT_VARIANT_BASE = 20_000


@dataclass
class CompileResult:
    """Plain-data outcome for the CLI, the bench and the gateway's job runner."""

    workflow: str
    out_dir: str
    passed: bool
    artifact: str | None
    report: str
    reasons: list[str]
    metrics: dict[str, Any]
    data: dict[str, Any]
    train: dict[str, Any]
    stages: dict[str, float] = field(default_factory=dict)
    config_hash: str = ""
    main_process: bool = True  # False on the other ranks of `accelerate launch`: they train and stop there


def _write_jsonl(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def _spread(rows: list[Any], cap: int) -> list[Any]:
    """At most ``cap`` rows, evenly over the list (which is grouped by path), so every path keeps some."""
    if cap <= 0 or len(rows) <= cap:
        return rows
    step = len(rows) / cap
    return [rows[int(i * step)] for i in range(cap)]


def build_data(fc: Any, cfg: CompileConfig, out: Path, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Paths, split and rendered conversations; returns the metadata written to ``data/meta.json``."""
    from .paths import enumerate_paths
    from .render import render_offline
    from .split import edges_covered, split_with_rule
    from .teacher_run import render_teacher_jobs

    d = cfg.data
    ps = enumerate_paths(fc, max_loops=d.max_loops, budget=d.path_budget, seed=d.seed)
    train_paths, eval_paths, split_rule = split_with_rule(ps.paths, d.eval_share, d.seed)

    # capped before rendering: a teacher is paid only for the conversations that are kept
    train_jobs = _spread([(p, v) for p in train_paths for v in range(d.variants_per_path)], d.max_train_conversations)
    # a tree-shaped chart (every path has an edge no other path has) leaves no path to hold out: the gate
    # then drives the training paths with conversations never trained on (other slot values and
    # utterances). It tests the values and words, not new compositions; meta and the log say which.
    eval_on = "held-out paths" if eval_paths or not d.eval_share else (
        "unseen conversations of the training paths (no path could be held out: each has an edge no other has)")
    eval_source = eval_paths if eval_paths or not d.eval_share else train_paths
    eval_jobs = _spread([(p, EVAL_VARIANT_BASE + v) for p in eval_source for v in range(d.eval_variants_per_path)],
                        d.max_eval_conversations)
    # no path could be held out (tree-shaped chart): held-out loss falls back to unseen slot values
    loss_paths = eval_paths or train_paths
    heldout_jobs = [(p, HELDOUT_VARIANT_BASE + v) for p in loss_paths for v in range(2)]
    teacher_report: dict[str, Any] | None = None
    if d.teacher_model:
        rows, teacher_report = render_teacher_jobs(
            fc, d, {"train": train_jobs, "eval": eval_jobs, "heldout": heldout_jobs}, out, echo)
        train_rows, eval_rows, heldout_rows = rows["train"], rows["eval"], rows["heldout"]
    else:
        train_rows = [render_offline(fc, p, seed=d.seed, variant=v, novel_share=d.novel_slot_share)
                      for p, v in train_jobs]
        eval_rows = [render_offline(fc, p, seed=d.seed, variant=v) for p, v in eval_jobs]
        heldout_rows = [render_offline(fc, p, seed=d.seed, variant=v) for p, v in heldout_jobs]
    traffic_rows = 0
    if d.traffic:
        from .traffic import load_traffic, merge_conversations

        logged = load_traffic(d.traffic, fc)
        before = len(train_rows)
        train_rows = merge_conversations(train_rows, logged)
        traffic_rows = len(train_rows) - before
    data_dir = out / "data"
    _write_jsonl(data_dir / "train.jsonl", train_rows)
    _write_jsonl(data_dir / "eval.jsonl", eval_rows)
    _write_jsonl(data_dir / "heldout.jsonl", heldout_rows)
    covered_train = edges_covered(train_paths)
    meta = {
        "workflow": fc.name,
        "flowchart_hash": fc.digest(),
        "paths": {
            "total": len(ps.paths),
            "enumerated_total": ps.total,
            "train": len(train_paths),
            "eval": len(eval_paths),
            "sampled": ps.sampled,
            "method": ps.method,
            "max_loops": d.max_loops,
            "split_rule": split_rule,  # compiler/split.py: what a held-out path's decisions must share with training
        },
        "coverage": {
            "node_coverage": ps.node_coverage,
            "edge_coverage": ps.edge_coverage,
            "train_edge_coverage": round(len(covered_train) / len(fc.edges), 4) if fc.edges else 1.0,
            "uncovered_nodes": list(ps.uncovered_nodes),
            "uncovered_edges": list(ps.uncovered_edges),
        },
        "conversations": {
            "train": len(train_rows),
            "eval": len(eval_rows),
            "heldout_loss": len(heldout_rows),
            "traffic_added": traffic_rows,
        },
        "mode": "teacher" if d.teacher_model else "offline",
        "eval_on": eval_on,
        "eval_path_ids": [p.id for p in eval_paths],
    }
    if teacher_report is not None:
        meta["teacher"] = teacher_report
    write_json_atomic(data_dir / "meta.json", meta)
    echo(
        f"paths {len(ps.paths)} ({len(train_paths)} train / {len(eval_paths)} eval, split rule {split_rule}), "
        f"node coverage {ps.node_coverage:.0%}, edge coverage {ps.edge_coverage:.0%}; "
        f"conversations {len(train_rows)} train / {len(eval_rows)} eval"
        + ("" if eval_paths or not eval_rows else f" ({eval_on})")
    )
    return meta


def count_tokens(tokenizer: Any, rows: Sequence[Mapping[str, Any]]) -> int:
    from .templates import chat_messages

    total = 0
    for r in rows:
        messages, tools = chat_messages(r)
        ids = tokenizer.apply_chat_template(messages, tools=tools or None, tokenize=True,
                                            return_dict=True)["input_ids"]
        total += len(ids)
    return total


def compile_workflow(
    flowchart: str | Path,
    out_dir: str | Path,
    cfg: CompileConfig | None = None,
    echo: Callable[[str], None] = print,
) -> CompileResult:
    """Run every stage; the artifact is written only if the gate passes (``CompileResult.passed``)."""
    from .artifact import Manifest, tool_call_parser, write_artifact, write_gate_failure
    from .base_model import check_base_model, check_base_template
    from .flowchart import check
    from .formats import load_flowchart

    cfg = cfg or CompileConfig()
    check_base_model(cfg.train.base_model, lora=cfg.train.lora)  # refuse before any work
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stages: dict[str, float] = {}
    t = time.monotonic()
    fc = check(load_flowchart(flowchart))
    check_base_template(cfg.train.base_model, calls_tools=bool(fc.tools))  # before any rendering is paid for

    import torch
    from accelerate import PartialState
    from transformers.utils import logging as hf_logging

    # one process, or every rank of `accelerate launch` / torchrun: the main one renders the data and, after
    # training on all ranks, evaluates and writes the artifact; the others wait here and stop after training.
    # `cpu=True` without a GPU: then PartialState joins the ranks over gloo (the default would see one process)
    state = PartialState(cpu=not torch.cuda.is_available())
    if state.is_main_process:
        meta = build_data(fc, cfg, out, echo)
    state.wait_for_everyone()
    if not state.is_main_process:
        meta = json.loads((out / "data" / "meta.json").read_text())
    stages["data"] = round(time.monotonic() - t, 2)

    hf_logging.disable_progress_bar()
    from .train import read_jsonl, train

    t = time.monotonic()
    train_rows = read_jsonl(out / "data" / "train.jsonl")
    result = train(train_rows, read_jsonl(out / "data" / "heldout.jsonl"), out / "run", cfg.train, echo=echo)
    stages["train"] = round(time.monotonic() - t, 2)
    if not state.is_main_process:
        return CompileResult(
            workflow=fc.name, out_dir=str(out), passed=False, artifact=None, report="",
            reasons=[f"rank {state.process_index} trains only; the main process evaluates and writes the artifact"],
            metrics={}, data=meta, train={k: v for k, v in asdict(result).items() if k != "losses"},
            stages=stages, config_hash=cfg.config_hash(), main_process=False,
        )

    from .evaluate import evaluate, write_report
    from .simulate import LiteLLMPolicy, ModelPolicy, procedure_text

    t = time.monotonic()
    policy = ModelPolicy.from_folder(result.model_dir, cfg.gate.max_new_tokens)
    tok = policy.tokenizer
    meta["tokens"] = {"train": count_tokens(tok, train_rows)}
    teacher = LiteLLMPolicy(cfg.gate.teacher_model, procedure_text(fc)) if cfg.gate.teacher_model else None
    report = evaluate(fc, read_jsonl(out / "data" / "eval.jsonl"), policy, cfg.gate, teacher=teacher, echo=echo)
    report_path = write_report(report, out / "eval", {"model": result.model_dir, "flowchart": str(flowchart)})
    stages["eval"] = round(time.monotonic() - t, 2)

    manifest = Manifest(
        workflow=fc.name,
        flowchart_hash=fc.digest(),
        base_model=cfg.train.base_model,
        data={"paths": meta["paths"], "conversations": meta["conversations"], "tokens": meta["tokens"]},
        coverage=meta["coverage"],
        eval=asdict(report.model) | {"passed": report.passed, "thresholds": report.thresholds},
        config_hash=cfg.config_hash(),
        system_prompt=fc.system_prompt,
        tools=[dict(x) for x in fc.tools],
        tool_call_parser=tool_call_parser(tok),
        end_of_turn=result.end_of_turn,
    )
    t = time.monotonic()
    artifact: Path | None = None
    if report.passed:
        artifact = write_artifact(result.model_dir, out / "artifact", manifest, report)
        gate_report = out / "gate-report.md"
        if gate_report.exists():
            gate_report.unlink()
        echo(f"gate passed: artifact at {artifact}")
    else:
        import shutil

        if (out / "artifact").exists():
            shutil.rmtree(out / "artifact")
        path = write_gate_failure(out, manifest, report)
        echo(f"gate FAILED ({'; '.join(report.reasons)}); report at {path}")
    stages["artifact"] = round(time.monotonic() - t, 2)
    outcome = CompileResult(
        workflow=fc.name,
        out_dir=str(out),
        passed=report.passed,
        artifact=str(artifact) if artifact else None,
        report=str(report_path),
        reasons=report.reasons,
        metrics=asdict(report.model),
        data=meta,
        train={k: v for k, v in asdict(result).items() if k != "losses"},
        stages=stages,
        config_hash=cfg.config_hash(),
    )
    write_json_atomic(out / "compile.json", asdict(outcome) | {"config": cfg.to_dict()})
    return outcome


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m compiler.pipeline", description=__doc__.splitlines()[0])
    parser.add_argument("flowchart", help="workflow flowchart (.yaml, .mmd, .dot)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--config", default=None, help="compile YAML (configs/compile.yaml)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override, e.g. train.max_steps=50")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        cfg = load_compile_config(args.config, parse_sets(args.set))
        result = compile_workflow(args.flowchart, args.out, cfg)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not result.main_process:  # another rank of `accelerate launch`: the main process reports
        return 0
    print(json.dumps({"passed": result.passed, "metrics": result.metrics, "stages": result.stages}, indent=2))
    return 0 if result.passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
