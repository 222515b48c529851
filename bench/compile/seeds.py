"""Compile pass rate over seeds: the honest figure for a scratch compile (one seed's pass can be luck).

    python -m bench.compile.seeds [--seeds 0-4] [--workflow configs/workflows/travel-booking.yaml]
                                  [--set KEY=VALUE ...] [--jobs 1] [--out build/bench-seeds] [--md FILE]

Each seed N compiles the workflow with ``data.seed=N`` and ``train.seed=N`` (other slot values, split and
initial weights) through the real pipeline, in its own process; the table gives the gate outcome with
wall time, tokens trained and tokens/s per seed, and the headline pass rate. ``--jobs 2`` runs two seeds
at a time with one torch thread each (on a 2-core machine that is the same CPU as one run with two
threads, and faster when the cores are shared with others); ``--from DIR ...`` tabulates finished runs.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def parse_seeds(text: str) -> list[int]:
    """``0-4`` or ``0,2,5`` -> the seeds."""
    out: list[int] = []
    for part in text.split(","):
        a, sep, b = part.strip().partition("-")
        out.extend(range(int(a), int(b) + 1) if sep else [int(a)])
    return out


def load_note() -> str:
    try:
        one, five, _ = os.getloadavg()
    except OSError:
        return "?"
    return f"{one:.1f}/{five:.1f}"


def start(workflow: str, out: Path, seed: int, sets: list[str], threads: int | None) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "compiler.pipeline", workflow, "--out", str(out), "--config", "configs/compile.yaml",
           "--set", f"data.seed={seed}", "--set", f"train.seed={seed}"]
    if threads:
        cmd += ["--set", f"train.threads={threads}"]
    for s in sets:
        cmd += ["--set", s]
    out.mkdir(parents=True, exist_ok=True)
    log = (out / "bench.log").open("wb")
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)


def row(folder: Path, seed: int | None = None, wall: float | None = None, load: str = "") -> dict[str, Any]:
    """One table row from a finished compile's ``compile.json`` (or a failed run's log)."""
    path = folder / "compile.json"
    if not path.is_file():
        return {"seed": seed, "folder": str(folder), "error": "no compile.json (see bench.log)"}
    data = json.loads(path.read_text())
    train, metrics, cfg = data["train"], data["metrics"], data["config"]
    tokens = train.get("train_tokens") or 0
    steps = train.get("steps")
    return {
        "seed": cfg["data"]["seed"] if seed is None else seed,
        "folder": str(folder),
        "passed": data["passed"],
        "wall": wall if wall is not None else sum(data["stages"].values()),
        "train_s": data["stages"].get("train"),
        "steps": steps,
        "tokens": tokens,
        "tokens_per_s": train.get("tokens_per_s"),
        "best_eval_loss": train.get("best_eval_loss"),
        "node_accuracy": metrics["node_accuracy"],
        "success_rate": metrics["success_rate"],
        "tool_accuracy": metrics["tool_accuracy"],
        "reasons": data.get("reasons") or [],
        "load": load,
    }


def table(rows: list[dict[str, Any]]) -> str:
    head = ("| seed | gate | node acc | success | tool acc | steps | tokens trained | train tok/s | best held-out loss "
            "| train s | wall | load before |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['seed']} | error: {r['error']} |" + " |" * 10)
            continue
        wall = r["wall"]
        loss = f"{r['best_eval_loss']:.4f}" if r["best_eval_loss"] is not None else "-"
        lines.append(
            f"| {r['seed']} | {'pass' if r['passed'] else 'FAIL'} | {r['node_accuracy']:.3f} | {r['success_rate']:.3f} "
            f"| {r['tool_accuracy']:.3f} | {r['steps']} | {r['tokens']:,} | {r['tokens_per_s']:,.0f} | {loss} "
            f"| {r['train_s']:.0f} | {int(wall // 60)} min {wall % 60:02.0f} s | {r['load'] or '-'} |"
        )
    done = [r for r in rows if "error" not in r]
    passed = sum(1 for r in done if r["passed"])
    lines.append("")
    lines.append(f"**Pass rate: {passed} of {len(rows)} seeds.**")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.compile.seeds", description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0-4", help="seeds, e.g. 0-4 or 0,3")
    parser.add_argument("--workflow", default="configs/workflows/travel-booking.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="compile config override")
    parser.add_argument("--jobs", type=int, default=1, help="seeds compiled at once (one torch thread each when > 1)")
    parser.add_argument("--out", default="build/bench-seeds", help="work folder (one subfolder per seed)")
    parser.add_argument("--md", default=None, help="append the table to this markdown file")
    parser.add_argument("--from", dest="from_dirs", nargs="+", default=None, metavar="DIR",
                        help="tabulate finished compile folders instead of compiling")
    args = parser.parse_args(argv)

    rows: list[dict[str, Any]] = []
    if args.from_dirs:
        rows = [row(Path(d)) for d in args.from_dirs]
    else:
        pending = parse_seeds(args.seeds)
        running: list[tuple[int, Path, subprocess.Popen[bytes], float, str]] = []
        threads = 1 if args.jobs > 1 else None
        results: dict[int, dict[str, Any]] = {}
        while pending or running:
            while pending and len(running) < max(1, args.jobs):
                seed = pending.pop(0)
                out = Path(args.out) / f"seed-{seed}"
                print(f"seed {seed}: compiling into {out}", file=sys.stderr)
                running.append((seed, out, start(args.workflow, out, seed, args.set, threads), time.monotonic(),
                                load_note()))
            time.sleep(2)
            for item in list(running):
                seed, out, proc, t0, load = item
                if proc.poll() is not None:
                    running.remove(item)
                    results[seed] = row(out, seed, time.monotonic() - t0, load)
                    r = results[seed]
                    print(f"seed {seed}: {'pass' if r.get('passed') else 'FAIL'} in {time.monotonic() - t0:.0f} s",
                          file=sys.stderr)
        rows = [results[s] for s in sorted(results)]
    command = "python -m bench.compile.seeds " + shlex.join(argv if argv is not None else sys.argv[1:])
    report = f"{table(rows)}\n\nCommand: `{command.strip()}`\n"
    reasons = [f"- seed {r['seed']}: {'; '.join(r['reasons'])}" for r in rows if r.get("reasons")]
    if reasons:
        report += "\nGate reasons:\n" + "\n".join(reasons) + "\n"
    print(report)
    if args.md:
        md = Path(args.md)
        with md.open("a") as fh:
            fh.write(f"\n### {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n\n{report}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
