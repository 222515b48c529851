"""A stand-in for `tiergate compile` with the same command line and the same output files, fast.

    python tests/loop/fake_compile.py FLOWCHART --out DIR [--base-model scratch:tiny]

It writes what the real pipeline writes (data/meta.json, run/progress.json step by step, eval/,
artifact/manifest.json, compile.json), so the job runner under test follows it exactly as it follows
the compiler. A rerun on the same DIR resumes from the step in run/progress.json, like the trainer.
Env: FAKE_COMPILE_STEPS (20), FAKE_COMPILE_STEP_S (0.05), FAKE_COMPILE_FAIL=1 (gate fails, exit 1).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path


def write(path: Path, data: dict) -> None:  # type: ignore[type-arg]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("flowchart")
    parser.add_argument("--out", required=True)
    parser.add_argument("--base-model", default="scratch:tiny")
    parser.add_argument("--max-steps", type=int, default=None)
    parser.add_argument("--set", action="append", default=[])
    args = parser.parse_args()
    out = Path(args.out)
    steps = args.max_steps or int(os.environ.get("FAKE_COMPILE_STEPS", "20"))
    pause = float(os.environ.get("FAKE_COMPILE_STEP_S", "0.05"))
    print(f"compiling {args.flowchart} into {out}", flush=True)
    write(out / "data" / "meta.json", {"paths": 12, "conversations": 480})
    progress = out / "run" / "progress.json"
    start = 0
    if progress.exists():
        start = int(json.loads(progress.read_text()).get("step", 0))
        print(f"resuming from step {start}", flush=True)
    for step in range(start, steps + 1):
        write(progress, {"status": "running", "step": step, "max_steps": steps, "loss": 2.0 / (step + 1),
                         "resumed_from": start or None, "pid": os.getpid()})
        time.sleep(pause)
    write(progress, {"status": "finished", "step": steps, "max_steps": steps, "pid": os.getpid()})
    (out / "eval").mkdir(exist_ok=True)
    passed = os.environ.get("FAKE_COMPILE_FAIL") != "1"
    write(out / "eval" / "report.json", {"passed": passed})
    if not passed:
        write(out / "compile.json", {"passed": False, "reasons": ["node accuracy 0.41 < 0.95"]})
        print("gate FAILED", flush=True)
        return 1
    write(out / "artifact" / "manifest.json", {"workflow": Path(args.flowchart).stem, "base_model": args.base_model,
                                               "eval": {"node_accuracy": 0.97, "success_rate": 0.95}, "created": time.time()})
    write(out / "compile.json", {"passed": True, "reasons": []})
    print("gate passed", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
