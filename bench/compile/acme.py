"""The scripted acme app's traffic compile: its export, and its gates re-run on a compiled folder with the
copy rule of compiler/copying.py and without it (same weights, so the difference is the decoding alone).

    python -m bench.compile.acme export --conversations 250 --out acme.jsonl
    tiergate compile --from-traffic acme.jsonl --out build/acme --base-model scratch:tiny \\
        --set data.render_unwalked=false --set data.value_variants=2
    python -m bench.compile.acme gates acme.jsonl build/acme

The app is tests/compiler/test_mine_app.py's (17 agent steps, random five-digit order numbers, emails,
addresses copied from the user into tool calls). Results: docs/bench-traffic-compile.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def _app() -> Any:
    spec = importlib.util.spec_from_file_location("tiergate_mine_app", ROOT / "tests" / "compiler" / "test_mine_app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def export(n: int, out: Path) -> None:
    records, _steps = _app().run_app(n)
    out.write_text("".join(json.dumps(r) + "\n" for r in records))
    print(f"{n} conversations -> {out}")


def gates(traffic: Path, folder: Path) -> None:
    from compiler.config import GateConfig
    from compiler.copying import read_copied
    from compiler.evaluate import evaluate
    from compiler.mine.replay import replay_gate
    from compiler.simulate import ModelPolicy
    from compiler.traffic_compile import mine_stage, serve_prepare
    from compiler.train import read_jsonl

    gate = GateConfig(**json.loads((folder / "compile.json").read_text())["config"]["gate"])
    mined, _train, held, _report = mine_stage(traffic, folder / "bench-mine", gate.replay_holdout, 0, None,
                                              lambda _s: None)
    model_dir = folder / "run" / "model"
    tools = [dict(t) for t in mined.flowchart.tools]
    rows = read_jsonl(folder / "data" / "eval.jsonl")
    print("| decoding | simulator node accuracy | simulator success | replay turn accuracy | replay turns | s |")
    print("|---|---|---|---|---|---|")
    loaded = ModelPolicy.from_folder(model_dir, gate.max_new_tokens)
    for label, copied in [("copy rule", read_copied(model_dir)), ("plain", {})]:
        t = time.monotonic()
        policy = ModelPolicy(loaded.model, loaded.tokenizer, gate.max_new_tokens, copied)
        sim = evaluate(mined.flowchart, rows, policy, gate, echo=lambda _s: None)
        rep = replay_gate(lambda m, _t, p=policy: p(m, tools), held, mined, prepare=serve_prepare(mined))
        print(f"| {label} | {sim.model.node_accuracy:.3f} | {sim.model.success_rate:.3f} | {rep.accuracy:.3f} | "
              f"{rep.turns} | {time.monotonic() - t:.0f} |")
    print(f"\n`python -m bench.compile.acme gates {traffic} {folder}`")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.compile.acme", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    ex = sub.add_parser("export")
    ex.add_argument("--conversations", type=int, default=250)
    ex.add_argument("--out", type=Path, required=True)
    ga = sub.add_parser("gates")
    ga.add_argument("traffic", type=Path)
    ga.add_argument("folder", type=Path)
    args = parser.parse_args(argv)
    if args.cmd == "export":
        export(args.conversations, args.out)
    else:
        gates(args.traffic, args.folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
