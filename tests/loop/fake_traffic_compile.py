"""`tiergate compile --from-traffic` with every stage real except training, for the loop's end-to-end test.

    python tests/loop/fake_traffic_compile.py --from-traffic FILE --out DIR --script-dir DIR [--base-model ...]

Mining, the data build, the served prompt and the replay gate are the compiler's own
(compiler/traffic_compile.py, compiler/mine/replay.py); the model is a stand-in that answers what the
scripted frontier answered at the same point of the same conversation (tests/loop/step_frontier.py),
looked up from the prompt exactly as the gateway will serve it, so a prompt reduced wrongly fails the
replay gate. The files written are the real compile's: mined/, data/, run/progress.json, eval/,
artifact/ (manifest.json, prompt.json) and compile.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from step_frontier import history_key  # noqa: E402

from compiler.config import CompileConfig  # noqa: E402
from compiler.mine.replay import replay_gate, replay_passes  # noqa: E402
from compiler.traffic_compile import _thin_rows, mine_stage, serve_prepare, training_row  # noqa: E402
from compiler.train import write_json_atomic  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--from-traffic", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--script-dir", required=True)
    parser.add_argument("--base-model", default="scratch:tiny")
    parser.add_argument("--replay-min-accuracy", type=float, default=0.9)
    args = parser.parse_args()
    out = Path(args.out)
    mined, mined_set, held, report = mine_stage(args.from_traffic, out, 0.2, 0, None, print)
    rows = [training_row(t, mined) for t in mined_set]
    rendered, _paths, info = _thin_rows(mined, CompileConfig())
    (out / "data").mkdir(exist_ok=True)
    (out / "data" / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows + rendered))
    write_json_atomic(out / "data" / "meta.json", {"source": "traffic", "paths": info, "conversations": {
        "captured": len(mined_set) + len(held), "train_captured": len(rows), "train_rendered": len(rendered),
        "replay": len(held)}})
    for step in range(0, 11):
        write_json_atomic(out / "run" / "progress.json", {"status": "running", "step": step, "max_steps": 10})
        time.sleep(0.02)
    write_json_atomic(out / "run" / "progress.json", {"status": "finished", "step": 10, "max_steps": 10})
    persona = mined.flowchart.system_prompt
    script = Path(args.script_dir)

    def stand_in(messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        assert messages[0] == {"role": "system", "content": persona}, messages[0]
        path = script / f"{history_key([dict(m) for m in messages])}.json"
        reply = json.loads(path.read_text()) if path.is_file() else {"content": "?"}
        msg: dict[str, Any] = {"role": "assistant", "content": reply.get("content") or ""}
        if reply.get("tool_calls"):
            msg["tool_calls"] = [{"id": "c", "type": "function", "function": {
                "name": c["name"], "arguments": json.dumps(c["arguments"])}} for c in reply["tool_calls"]]
        return msg

    replay = replay_gate(stand_in, held, mined, prepare=serve_prepare(mined))
    ok, reasons = replay_passes(replay, min_accuracy=args.replay_min_accuracy)
    figures = {"conversations": replay.conversations, "turns": replay.turns, "accuracy": replay.accuracy,
               "per_node": {k: asdict(v) for k, v in replay.per_node.items()}, "passed": ok}
    write_json_atomic(out / "eval" / "report.json", {"passed": ok, "replay": figures, "reasons": reasons})
    if not ok:
        write_json_atomic(out / "compile.json", {"passed": False, "reasons": [f"replay: {r}" for r in reasons]})
        print("gate FAILED:", reasons, flush=True)
        return 1
    art = out / "artifact"
    write_json_atomic(art / "prompt.json", {"persona": persona, "static_lines": list(mined.split.static_lines),
                                            "step_lines": sorted(mined.split.step_lines)})
    write_json_atomic(art / "manifest.json", {"workflow": mined.flowchart.name, "base_model": args.base_model,
                                              "eval": {"replay": figures}, "created": time.time()})
    write_json_atomic(out / "compile.json", {"passed": True, "reasons": [], "metrics": {"replay": figures},
                                             "data": {"mined": report}})
    print(f"gate passed: replay accuracy {replay.accuracy:.3f} over {replay.turns} turns", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
