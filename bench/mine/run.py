"""Mining benchmark: how much of a known procedure `flowchart mine` recovers from traffic alone.

    python bench/mine/run.py [--sizes 100 400 2000] [--holdout 0.2] [--md docs/mining.md] [--traffic DIR]

``--traffic DIR`` also writes each traffic as ``DIR/<traffic>-<size>.jsonl``, the export format, so
``tiergate flowchart mine DIR/acme-app-400.jsonl`` can be run on it.

Four kinds of traffic whose procedure is known but never shown to the miner:

- ``acme-app``: the scripted orchestrated app of ``tests/compiler/test_mine_app.py`` (17 agent
  steps, 5 decision hubs, 2 loops, a procedure system message plus a per-step one);
- ``acme-app-no-steps``: the same app without the per-step message (replies are clustered);
- ``travel-booking``: conversations rendered from ``configs/workflows/travel-booking.yaml``
  (loops up to once), stripped of the renderer's node tags;
- ``travel-paraphrased``: the same with three phrasings per agent reply;
- ``insurance-claims``: conversations rendered from ``configs/workflows/insurance-claims.yaml``
  (the paper's scale: 44 agent steps, 26 hubs, 9 tools, 5 loops), paths sampled with loops up to once;
- ``acme-strays``: the app whose frontier leaves the procedure in 2% of the cases at two points
  (tracks an order without looking it up; says goodbye without asking for anything else),
  mined as it is and with ``--noise 0.05``.

Per row: conversations mined / held out, mining time, the true agent steps, how many of them
some mined node stands for (recovered), further nodes (extra), replay fitness on the held-out
conversations and node / edge coverage. CPU only, single process; seconds.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "compiler"))  # the scripted app and the paraphrases live with their tests

from compiler.flowchart import from_dict  # noqa: E402
from compiler.mine.fitness import fitness, step_recovery  # noqa: E402
from compiler.mine.miner import holdout_split, mine  # noqa: E402
from compiler.mine.traces import traces_from_records  # noqa: E402

Traffic = tuple[list[dict[str, Any]], list[list[str]], float]  # records, true steps, noise to mine with


def scenarios(n: int) -> dict[str, Traffic]:
    from test_mine_app import run_app
    from test_mine_travel import CHART, paraphrased, traffic

    fc = from_dict(yaml.safe_load(CHART.read_text(encoding="utf-8")))
    strays = run_app(n, stray=0.02)
    claims = from_dict(yaml.safe_load((ROOT / "configs" / "workflows" / "insurance-claims.yaml").read_text(encoding="utf-8")))
    return {
        "acme-app": (*run_app(n), 0.0),
        "acme-app-no-steps": (*run_app(n, step_messages=False), 0.0),
        "travel-booking": (*traffic(fc, n), 0.0),
        "travel-paraphrased": (*traffic(paraphrased(fc), n), 0.0),
        "insurance-claims": (*traffic(claims, n, budget=3000), 0.0),
        "acme-strays": (*strays, 0.0),
        "acme-strays --noise 0.05": (*strays, 0.05),
    }


def row(name: str, records: list[dict[str, Any]], truth: list[list[str]], holdout: float, noise: float) -> dict[str, Any]:
    traces = traces_from_records(records)
    by_id = {t.id: steps for t, steps in zip(traces, truth, strict=True)}
    train, held_out = holdout_split(traces, holdout, seed=0)
    began = time.perf_counter()
    mined = mine(train, name=name.split()[0], noise=noise)
    seconds = time.perf_counter() - began
    rec = step_recovery(mined.turn_nodes, [by_id[train[i].id] for i in mined.used])
    fit = fitness(mined, held_out)
    return {
        "traffic": name, "mined": len(mined.used), "held_out": len(held_out), "seconds": seconds,
        "steps": rec.true_steps, "recovered": rec.recovered, "extra": rec.extra,
        "fitness": fit.share, "node_coverage": fit.node_coverage, "edge_coverage": fit.edge_coverage,
        "chart_nodes": len(mined.flowchart.nodes), "hubs": len(mined.flowchart.decision_hubs),
    }


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| traffic | mined / held out | mining | true steps | recovered | extra | fitness | node / edge coverage | chart nodes (hubs) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['traffic']} | {r['mined']} / {r['held_out']} | {r['seconds']:.2f} s | {r['steps']} | "
            f"{r['recovered']} ({r['recovered'] / r['steps']:.0%}) | {r['extra']} ({r['extra'] / r['steps']:.0%}) | "
            f"{r['fitness']:.3f} | {r['node_coverage']:.0%} / {r['edge_coverage']:.0%} | {r['chart_nodes']} ({r['hubs']}) |"
        )
    return "\n".join(lines)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 400, 2000], help="conversations per traffic")
    parser.add_argument("--holdout", type=float, default=0.2, help="share held out to measure fitness")
    parser.add_argument("--md", type=Path, default=None, help="append the table to this markdown file")
    parser.add_argument("--traffic", type=Path, default=None, help="also write each traffic as JSONL here")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    rows = []
    for n in args.sizes:
        for name, (records, truth, noise) in scenarios(n).items():
            if args.traffic:
                args.traffic.mkdir(parents=True, exist_ok=True)
                with (args.traffic / f"{name.split()[0]}-{n}.jsonl").open("w", encoding="utf-8") as f:
                    f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
            rows.append(row(name, records, truth, args.holdout, noise))
            print(f"{name} x{n}: done", file=sys.stderr)
    text = table(rows)
    command = "python bench/mine/run.py --sizes " + " ".join(map(str, args.sizes)) + f" --holdout {args.holdout}"
    print(text)
    print(f"\n`{command}`")
    if args.md:
        with args.md.open("a", encoding="utf-8") as f:
            f.write(f"\n{text}\n\n`{command}`\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
