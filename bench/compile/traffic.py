"""Traffic compile vs flowchart compile of the same workflow, side by side.

    python -m bench.compile.traffic [--conversations 200] [--set train.max_steps=60 ...] [--out build/bench-traffic]
                                    [--md docs/bench-compile.md]

The shipped travel-booking example twice, with the same compile settings:

- **flowchart**: `tiergate compile configs/workflows/travel-booking.yaml` (paths rendered from the chart);
- **traffic**: the chart withheld; N conversations rendered from it the way an orchestrator sends them
  (the whole procedure as the system message, tool schemas every turn, node tags stripped) stand in for
  captured traffic, and `tiergate compile --from-traffic` mines them, trains on them (plus rendered thin
  paths) and gates on the simulator over the mined graph and on the replay of held-out conversations.

Prints one markdown row per compile (mining time, conversations used, gate figures, wall time) and the
command that produced them; ``--md`` appends the table to a results file.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "configs" / "workflows" / "travel-booking.yaml"


def orchestrated_traffic(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """Rendered conversations as an orchestrator sends them: procedure prompt, every tool, no node tags."""
    import random

    import yaml

    from compiler.flowchart import from_dict
    from compiler.paths import enumerate_paths
    from compiler.render import render_offline
    from compiler.simulate import procedure_text

    fc = from_dict(yaml.safe_load(CHART.read_text(encoding="utf-8")))
    paths = enumerate_paths(fc, max_loops=1, seed=seed).paths
    rng = random.Random(seed)
    procedure = procedure_text(fc)
    out = []
    for i in range(n):
        conv = render_offline(fc, paths[rng.randrange(len(paths))], seed=seed, variant=30_000 + i)
        messages = [{"role": "system", "content": procedure}, *conv["messages"][1:]]
        out.append({"messages": messages, "tools": conv["tools"]})
    return out


def row(kind: str, result: Any, wall: float) -> dict[str, Any]:
    m, data = result.metrics, result.data
    replay = m.get("replay") or {}
    mined = data.get("mined") or {}
    conv = data.get("conversations") or {}
    return {
        "compile": kind,
        "mining_s": mined.get("mining_s", "-"),
        "fitness": mined.get("fitness", "-"),
        "captured": conv.get("train_captured", "-"),
        "rendered": conv.get("train_rendered", conv.get("train", "-")),
        "node_accuracy": round(m["node_accuracy"], 3),
        "success": round(m["success_rate"], 3),
        "tool_accuracy": m.get("tool_accuracy"),
        "replay": f"{replay['accuracy']:.3f} / {replay['turns']}" if replay else "-",
        "passed": result.passed,
        "train_s": result.stages.get("train"),
        "wall_s": round(wall, 1),
    }


def table(rows: list[dict[str, Any]]) -> str:
    head = ["compile", "mining", "fitness", "train conversations (captured + rendered)", "simulator node acc",
            "simulator success", "exact tool calls", "replay acc / turns", "gate", "train", "wall"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        mining = f"{r['mining_s']} s" if r["mining_s"] != "-" else "-"
        used = f"{r['captured']} + {r['rendered']}" if r["captured"] != "-" else f"0 + {r['rendered']}"
        lines.append(f"| {r['compile']} | {mining} | {r['fitness']} | {used} | {r['node_accuracy']} | {r['success']} | "
                     f"{r['tool_accuracy']} | {r['replay']} | {'passed' if r['passed'] else 'failed'} | "
                     f"{r['train_s']} s | {r['wall_s']} s |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.compile.traffic", description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=200, help="captured conversations to mine")
    parser.add_argument("--out", default="build/bench-traffic")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--only", choices=["flowchart", "traffic"], default=None)
    parser.add_argument("--md", default=None)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from compiler.config import load_compile_config
    from compiler.pipeline import compile_workflow
    from compiler.traffic_compile import compile_from_traffic
    from compiler.train import parse_sets

    cfg = load_compile_config(ROOT / "configs" / "compile.yaml", parse_sets(args.set))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    if args.only in (None, "traffic"):
        traffic = out / "travel-traffic.jsonl"
        traffic.write_text("".join(json.dumps(r) + "\n" for r in orchestrated_traffic(args.conversations)))
        t = time.monotonic()
        res = compile_from_traffic(traffic, out / "traffic", cfg, name="travel-booking")
        rows.append(row(f"traffic ({args.conversations} conversations, chart withheld)", res, time.monotonic() - t))
    if args.only in (None, "flowchart"):
        t = time.monotonic()
        res = compile_workflow(CHART, out / "flowchart", cfg)
        rows.append(row("flowchart", res, time.monotonic() - t))
    import os

    cmd = "python -m bench.compile.traffic " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    text = (f"{table(rows)}\n\n`{cmd}`; base {cfg.train.base_model}, {cfg.train.max_steps} steps, "
            f"load avg {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}\n")
    print(text)
    if args.md:
        with open(args.md, "a") as fh:
            fh.write("\n" + text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
