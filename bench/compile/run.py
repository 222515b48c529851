"""Compile benchmark: path and conversation counts, tokens, training tokens/s, wall time per stage, eval metrics.

    python -m bench.compile.run [--workflow configs/workflows/travel-booking.yaml] [--base-model scratch:tiny]
                                [--out build/bench-compile] [--set KEY=VALUE ...] [--md docs/bench-compile.md]

Runs the real `tiergate compile` pipeline (``compiler.pipeline.compile_workflow``) once per workflow and
prints a markdown table plus the command that produced it; ``--md`` appends the table to a results file.
On a GPU (``--gpu``: a scratch model of 100M+ parameters in bf16) it also reports model FLOPs utilisation:
6 * parameters * tokens/s over the device's dense bf16 peak.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

# dense bf16 peak, FLOP/s, by device-name fragment
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12, "A10": 125e12}


def peak_flops() -> tuple[str, float | None]:
    import torch

    if not torch.cuda.is_available():
        return "cpu", None
    name = torch.cuda.get_device_name(0)
    for key, value in PEAK_BF16.items():
        if key in name:
            return name, value
    return name, None


def load_note() -> str:
    """What else the machine was doing: load averages over the core count."""
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "load unknown"
    return f"load avg {one:.1f}/{five:.1f}/{fifteen:.1f} on {os.cpu_count()} cores"


def run_one(workflow: str, out: Path, overrides: dict[str, Any]) -> dict[str, Any]:
    from compiler.config import load_compile_config
    from compiler.pipeline import compile_workflow

    cfg = load_compile_config("configs/compile.yaml" if Path("configs/compile.yaml").is_file() else None, overrides)
    load_before = load_note()
    t0 = time.monotonic()
    result = compile_workflow(workflow, out, cfg, echo=lambda line: print(f"  {line}", file=sys.stderr))
    wall = time.monotonic() - t0
    device, peak = peak_flops()
    mfu = None
    if peak:
        mfu = 6 * result.train["parameters"] * result.train["tokens_per_s"] / peak
    return {"result": result, "wall": wall, "device": device, "mfu": mfu, "load": f"{load_before} -> {load_note()}",
            "base_model": cfg.train.base_model, "bf16": result.train.get("bf16")}


def from_folder(folder: Path) -> dict[str, Any]:
    """A row from a finished compile's ``compile.json`` (e.g. one run through `tiergate compile`)."""
    import json
    from types import SimpleNamespace

    data = json.loads((folder / "compile.json").read_text())
    res = SimpleNamespace(**{k: data[k] for k in ("workflow", "data", "metrics", "stages", "train", "passed",
                                                  "reasons")})
    return {"result": res, "wall": sum(data["stages"].values()), "device": data["train"].get("device"), "mfu": None,
            "load": "see the run's notes", "base_model": data["config"]["train"]["base_model"],
            "bf16": data["train"].get("bf16")}


def table(rows: list[dict[str, Any]]) -> str:
    head = ("| workflow | base model | params | paths (train/eval) | conversations (train/eval) | train-set tokens "
            "| tokens trained | train tok/s | MFU | data s | train s | eval s | total s | node acc | success | tool acc | gate |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        res = r["result"]
        d, m, s = res.data, res.metrics, res.stages
        mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "n/a (CPU)"
        lines.append(
            f"| {res.workflow} | {r['base_model']}{' bf16' if r['bf16'] else ''} | {res.train['parameters'] / 1e6:.2f}M "
            f"| {d['paths']['total']} ({d['paths']['train']}/{d['paths']['eval']}) "
            f"| {d['conversations']['train']}/{d['conversations']['eval']} | {d['tokens']['train']:,} "
            f"| {res.train['train_tokens']:,} | {res.train['tokens_per_s']:,.0f} | {mfu} | {s['data']} | {s['train']} | {s['eval']} "
            f"| {r['wall']:.0f} | {m['node_accuracy']:.3f} | {m['success_rate']:.3f} | {m['tool_accuracy']} "
            f"| {'pass' if res.passed else 'FAIL'} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.compile.run", description=__doc__.splitlines()[0])
    parser.add_argument("--workflow", action="append", default=None, help="flowchart(s) to compile")
    parser.add_argument("--base-model", default=None, help="e.g. scratch:tiny (CPU) or scratch:100m (GPU)")
    parser.add_argument("--out", default="build/bench-compile", help="work folder")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="compile config override")
    parser.add_argument("--gpu", action="store_true", help="scratch:100m in bf16 unless --base-model says otherwise")
    parser.add_argument("--md", default=None, help="append the table to this markdown file")
    parser.add_argument("--from", dest="from_dirs", action="append", default=None, metavar="DIR",
                        help="tabulate finished compile folders (their compile.json) instead of compiling")
    args = parser.parse_args(argv)
    from compiler.train import parse_sets

    overrides: dict[str, Any] = parse_sets(args.set)
    if args.base_model or args.gpu:
        overrides["train.base_model"] = args.base_model or "scratch:100m"
    workflows = args.workflow or ["configs/workflows/travel-booking.yaml"]
    rows = []
    if args.from_dirs:
        rows = [from_folder(Path(d)) for d in args.from_dirs]
    else:
        for wf in workflows:
            rows.append(run_one(wf, Path(args.out) / Path(wf).stem, overrides))
    command = "python -m bench.compile.run " + shlex.join(argv if argv is not None else sys.argv[1:])
    text = table(rows)
    notes = "\n".join(f"- {r['result'].workflow}: device {r['device']}, {r['load']}; gate reasons: "
                      f"{'; '.join(r['result'].reasons) or 'none'}" for r in rows)
    report = f"{text}\n\n{notes}\n\nCommand: `{command.strip()}`\n"
    print(report)
    if args.md:
        md = Path(args.md)
        md.parent.mkdir(parents=True, exist_ok=True)
        header = "" if md.exists() else "# Compile benchmark\n\n"
        with md.open("a") as fh:
            fh.write(header + f"## {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n\n{report}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
