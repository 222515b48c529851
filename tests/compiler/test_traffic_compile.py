"""Compile from traffic: the served prompt (compiler and gateway alike), the training data, and the real
`tiergate compile --from-traffic` refusing an under-trained model at the replay gate."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from compiler.mine.miner import holdout_split, mine
from compiler.mine.traces import traces_from_records
from compiler.traffic_compile import serve_prepare, served_messages, training_row
from gateway.proxy.plan import RouteChoice, strip_for_compiled

ROOT = Path(__file__).resolve().parents[2]


def _app() -> Any:
    spec = importlib.util.spec_from_file_location("tiergate_mine_app", Path(__file__).parent / "test_mine_app.py")
    assert spec is not None and spec.loader is not None
    if spec.name not in sys.modules:
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    return sys.modules[spec.name]


@pytest.fixture(scope="module")
def acme() -> tuple[Any, list[Any], list[dict[str, Any]]]:
    records, _steps = _app().run_app(60)
    traces = traces_from_records(records)
    train, _held = holdout_split(traces, 0.2, seed=0)
    return mine(train, name="acme"), train, records


def test_training_rows_keep_the_transient_prompt_where_the_app_sent_it(acme: Any) -> None:
    mined, train, _records = acme
    row = training_row(train[0], mined)
    msgs = row["messages"]
    assert msgs[0] == {"role": "system", "content": "You are the support assistant of Acme Shop. Be brief and friendly."}
    systems = [m["content"] for m in msgs[1:] if m["role"] == "system"]
    text = "\n".join(systems)
    assert "Procedure:" not in text and "Hand over to a human" not in text  # static: in the weights
    assert systems[0].startswith("Today's date: 2026-12-") and "Customer name:" in systems[0]  # per conversation
    steps = [s for s in systems if s.startswith("Current step:")]
    assert len(steps) == len(train[0].turns)  # one step line before every agent turn, where the app sent it
    assert [m for m in msgs if m["role"] != "system"] == [m for m in train[0].messages if m["role"] != "system"]
    assert [t["function"]["name"] for t in row["tools"]] == [t["function"]["name"] for t in mined.flowchart.tools]


def test_the_gateway_serves_the_prompt_the_compiler_trained_on(acme: Any) -> None:
    """gateway.proxy.plan.served_messages and compiler.traffic_compile.served_messages are one rule."""
    mined, _train, records = acme
    static = frozenset(mined.split.static_lines)
    persona = mined.flowchart.system_prompt
    choice = RouteChoice(model="compiled/acme", persona=persona, static_lines=static)
    for record in records[:10]:
        msgs = record["messages"]
        for cut in range(1, len(msgs)):
            body = {"model": "gpt-4o", "messages": msgs[:cut], "tools": record["tools"]}
            sent = strip_for_compiled(body, choice)
            assert sent["messages"] == served_messages(msgs[:cut], persona, static)
            assert "tools" not in sent and sent["model"] == "compiled/acme"
    prepare = serve_prepare(mined)
    assert prepare(records[0]["messages"][:5]) == served_messages(records[0]["messages"][:5], persona, static)
    # a route without a persona (a flowchart compile) keeps the old rule: every system message goes
    plain = strip_for_compiled({"model": "m", "messages": records[0]["messages"][:5]}, RouteChoice(model="x"))
    assert all(m["role"] != "system" for m in plain["messages"])


def test_thin_paths_are_topped_up_and_unwalked_ones_rendered_only_when_asked(acme: Any) -> None:
    from compiler.config import CompileConfig
    from compiler.traffic_compile import _thin_rows, captured_rows, render_path

    mined, train, _records = acme
    walked = {tuple(n) for n in mined.turn_nodes}
    cfg = CompileConfig()
    rows, paths, info = _thin_rows(mined, cfg)
    assert info["total"] == len(paths) and 0 < info["thin"] <= len(paths)
    assert any(tuple(r["tiergate"]["nodes"]) not in walked for r in rows)  # default: unwalked paths too
    cfg.data.render_unwalked = False
    only, gated, less = _thin_rows(mined, cfg)
    assert only and all(tuple(r["tiergate"]["nodes"]) in walked for r in only) and less["thin"] < info["thin"]
    # the simulator then drives only paths traffic walks: the model is taught no others
    assert 0 < len(gated) == less["gated"] < info["gated"] == info["total"]
    assert all(tuple(render_path(mined.flowchart, p, 0, 0)["tiergate"]["nodes"]) in walked for p in gated)
    cfg.data.thin_conversations = 0
    assert _thin_rows(mined, cfg)[0] == []
    # every captured conversation trains, each followed by its value-swapped copies
    rows, swapped = captured_rows(train[:5], mined, 2, 0)
    assert swapped == len(rows) - 5 and swapped <= 10
    assert [r["tiergate"]["conversation"] for r in rows if "variant" not in r["tiergate"]] == [t.id for t in train[:5]]


@pytest.mark.slow
def test_compile_from_traffic_refuses_an_undertrained_model_at_the_replay_gate(tmp_path: Path) -> None:
    """The real CLI, a scratch model trained 2 steps: mined chart, data and gate files; the replay gate
    fails and names its shortfall; no artifact."""
    records, _ = _app().run_app(16)
    traffic = tmp_path / "acme.jsonl"
    traffic.write_text("".join(json.dumps(r) + "\n" for r in records))
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "compile", "--from-traffic", str(traffic), "--out", str(out),
         "--base-model", "scratch:tiny", "--max-steps", "2", "--set", "data.max_eval_conversations=1",
         "--set", "gate.max_new_tokens=8", "--set", "train.eval_steps=2", "--set", "gate.min_node_accuracy=0",
         "--set", "gate.min_success_rate=0", "--set", "data.max_train_conversations=24"],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    assert "gate failed, no artifact written" in done.stderr and "Traceback" not in done.stderr
    assert not (out / "artifact").exists()
    report = json.loads((out / "mined" / "report.json").read_text())
    assert report["conversations"] == 16 and report["held_out"] == 3 and report["fitness"] >= 0.0
    check = subprocess.run([sys.executable, "-m", "gateway.cli", "flowchart", "check", str(out / "mined" / "chart.yaml")],
                           cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stderr
    meta = json.loads((out / "data" / "meta.json").read_text())
    assert meta["conversations"]["train_captured"] == 13 and meta["source"] == "traffic"
    compiled = json.loads((out / "compile.json").read_text())
    assert any(r.startswith("replay: turn accuracy") for r in compiled["reasons"]), compiled["reasons"]
    replay = compiled["metrics"]["replay"]
    assert replay["conversations"] == 3 and replay["turns"] > 0 and replay["per_node"]
    assert "## Replay gate" in (out / "gate-report.md").read_text()
    train = [json.loads(line) for line in (out / "data" / "train.jsonl").read_text().splitlines()]
    assert not any("Procedure:" in m["content"] for r in train for m in r["messages"] if m["role"] == "system")
