"""The loop closed with a really trained model and no flowchart: travel-booking, its chart withheld.

An orchestrated travel-booking app (bench/compile/traffic.py: the whole procedure as the system
message, every tool schema on every turn, no tiergate headers, no flowchart anywhere in the gateway's
config) sends its conversations through a real gateway with the official `openai` client; the
frontier answers what the app's script says it would (tests/loop/step_frontier.py). The app runs until
a proposal appears; it is approved through the API; the loop exports the captured conversations, and
the real `tiergate compile --from-traffic` mines them, trains a scratch model on the CPU
(configs/compile.yaml as shipped), and gates it on the simulator over the mined graph and on the
replay of held-out captured conversations; the loop then serves the artifact with the real
`tiergate serve-model` on a port it picks (no `loop.compiled_models`), canaries it on live traffic and
promotes it. The app keeps running: its conversations are answered by the compiled model, and the
ledger gives the cost per conversation before and after.

Minutes of CPU (the training); marked slow, run by CI.
"""

from __future__ import annotations

import json
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, cast

import openai
import pytest
from loop_helpers import HERE, ROOT, Proc, compile_log_tail, free_port, stored_requests

pytest_plugins = ["loop_fixtures"]

sys.path.insert(0, str(HERE))
from step_frontier import history_key  # noqa: E402

sys.path.insert(0, str(ROOT))
from bench.compile.traffic import orchestrated_traffic  # noqa: E402


def _expected(m: dict[str, Any]) -> dict[str, Any]:
    if m.get("tool_calls"):
        return {"tool_calls": [{"name": c["function"]["name"], "arguments": json.loads(c["function"]["arguments"])}
                               for c in m["tool_calls"]]}
    return {"content": m.get("content") or ""}


class TravelApp:
    """Replays one scripted conversation turn by turn through the gateway, as its orchestrator would.

    Before each agent turn the app writes what the frontier answers at that point; the gateway (or the
    compiled model behind it) answers; the app appends the answer it got. A conversation whose answer
    leaves the script ends there (the customer gives up), counted in ``left``.
    """

    def __init__(self, ref: dict[str, Any], client: openai.OpenAI, script: Path) -> None:
        self.ref, self.client, self.script = ref, client, script
        self.conversation = ""
        self.turns = 0
        self.agreed = 0
        self.left = False

    def run(self) -> TravelApp:
        msgs: list[dict[str, Any]] = []
        call_ids: list[str] = []
        for m in self.ref["messages"]:
            if m["role"] != "assistant":
                sent = dict(m)
                if sent["role"] == "tool" and call_ids:
                    sent["tool_call_id"] = call_ids.pop(0)
                msgs.append(sent)
                continue
            want = _expected(m)
            (self.script / f"{history_key(msgs)}.json").write_text(json.dumps(want))
            raw = self.client.chat.completions.with_raw_response.create(
                model="gpt-4o", messages=cast(Any, msgs), tools=cast(Any, self.ref["tools"]))
            self.conversation = raw.headers["x-tiergate-conversation"]
            msg = raw.parse().choices[0].message
            got: dict[str, Any] = {"role": "assistant", "content": msg.content or ""}
            if msg.tool_calls:
                got["tool_calls"] = [c.model_dump() for c in msg.tool_calls]
            self.turns += 1
            if _expected(got) != want:
                self.left = True
                return self
            self.agreed += 1
            msgs.append(got)
            call_ids = [c["id"] for c in got.get("tool_calls", [])]
        return self


@pytest.mark.slow
@pytest.mark.timeout(2400)  # a CPU training inside: minutes on a quiet machine, more on a loaded one
def test_travel_booking_without_its_chart_is_compiled_for_real_served_and_promoted(
    start_loop_gateway: Any, tmp_path: Path,
) -> None:
    script = tmp_path / "script"
    script.mkdir()
    port = free_port()
    frontier = Proc([sys.executable, str(HERE / "step_frontier.py"), "--port", str(port), "--script-dir", str(script)],
                    tmp_path / "frontier.log").start()
    frontier.wait_http(f"http://127.0.0.1:{port}/healthz")
    try:
        _run(start_loop_gateway, tmp_path, script, port)
    finally:
        frontier.stop()


def _run(start_loop_gateway: Any, tmp_path: Path, script: Path, port: int) -> None:
    gw = start_loop_gateway(
        {
            "compile_command": [],  # the real `tiergate compile`
            "traffic_compile_args": ["--config", str(ROOT / "configs" / "compile.yaml")],
            "min_conversations": 200, "min_captured_conversations": 150, "compile_cost_usd": 0.001,
            "canary_share": 0.5, "promote_after": 5, "min_samples": 3, "compare_share": 1.0,
        },
        admin=None,  # open mode (loopback only): no tiergate key for the app, no admin key for the API
        extra={
            "models": [{"name": "gpt-4o", "upstream": "openai/gpt-4o", "api_base": f"http://127.0.0.1:{port}/v1",
                        "max_retries": 0, "timeout": 20}],
            "workflows": [],  # no entry, so no flowchart: the workflow is found from its traffic
        },
    )

    def api(method: str, path: str, **kw: Any) -> Any:
        return gw.api(method, path, key=None, **kw)

    client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key="unused", max_retries=0, timeout=60)
    refs = orchestrated_traffic(2000, seed=7)
    apps: list[TravelApp] = []

    def run_one() -> TravelApp:
        app = TravelApp(refs[len(apps)], client, script).run()
        apps.append(app)
        return app

    def proposals() -> list[dict[str, Any]]:
        return list(api("GET", "/api/proposals?status=open").json()["data"])

    while not proposals():
        run_one()
        assert len(apps) <= 260, "no proposal after 260 conversations"
    prop = proposals()[0]
    workflow = prop["workflow"]
    before = len(apps)
    r = api("POST", f"/api/proposals/{prop['id']}/approve", json={"by": "ana"})
    assert r.status_code == 200, r.text
    job = r.json()["job"]
    assert job["flowchart"] == "" and job["detail"]["source"] == "traffic"

    # the app keeps running (gently: the compile has the CPU) until the loop has promoted the compiled model
    def route() -> dict[str, Any]:
        return dict(api("GET", f"/api/workflows/{workflow}/route").json())

    deadline = time.monotonic() + 1800
    while route()["mode"] != "compiled":
        state = api("GET", f"/api/jobs/{job['id']}").json()
        assert state["state"] != "failed", (state.get("error"), compile_log_tail(state["out_dir"]))
        assert time.monotonic() < deadline, (route(), state)
        run_one()
        if route()["mode"] == "frontier":
            time.sleep(1.0)
    switches = [(s["from_mode"], s["to_mode"]) for s in route()["switches"]]
    assert ("frontier", "canary") in switches and ("canary", "compiled") in switches
    assert route()["model"] == f"compiled/{workflow}"  # the loop's own model server, named by no config
    served_from = len(apps)
    for _ in range(12):
        run_one()

    out = Path(api("GET", f"/api/jobs/{job['id']}").json()["out_dir"])
    compiled = json.loads((out / "compile.json").read_text())
    assert compiled["passed"], compiled["reasons"]
    replay, mined = compiled["metrics"]["replay"], compiled["data"]["mined"]
    assert replay["passed"] and replay["accuracy"] >= 0.9 and replay["turns"] >= 100, replay
    assert mined["fitness"] >= 0.95 and mined["nodes"] >= 9, mined
    assert compiled["train"]["steps"] > 50 and compiled["train"]["tokens_per_s"] > 0
    manifest = json.loads((out / "artifact" / "manifest.json").read_text())
    assert manifest["data"]["source"] == "traffic"
    serve = json.loads((out / "serve.json").read_text())
    assert serve["port"] and serve["artifact"].endswith("artifact")

    gw.stop()
    rows = [r for r in stored_requests(gw.db_url) if r["workflow"] == workflow]
    late = apps[served_from:]
    tiers = [r["tier"] for r in rows if r["conversation"] in {a.conversation for a in late}]
    assert tiers.count("compiled") >= sum(a.turns for a in late) and set(tiers) <= {"compiled", "shadow"}, tiers
    turns, agreed = sum(a.turns for a in late), sum(a.agreed for a in late)
    assert agreed >= 0.9 * turns, f"the compiled model agreed with the frontier on {agreed} of {turns} live turns"
    per_conv: dict[str, float] = defaultdict(float)
    for r in rows:
        if r["tier"] != "shadow":
            per_conv[r["conversation"]] += r["cost_usd"] or 0.0
    f = sum(per_conv[a.conversation] for a in apps[:before]) / before
    c = sum(per_conv[a.conversation] for a in late) / len(late)
    print(f"\nconversations to the proposal {before}, to promotion {served_from}; mined {mined['nodes']} nodes, "
          f"fitness {mined['fitness']}; replay {replay['accuracy']:.3f} over {replay['turns']} turns; simulator "
          f"{compiled['metrics']['node_accuracy']:.3f} / {compiled['metrics']['success_rate']:.3f}; "
          f"train {compiled['train']['steps']} steps at {compiled['train']['tokens_per_s']:.0f} tokens/s, "
          f"compile wall {compiled['stages'].get('wall')} s; live agreement {agreed}/{turns}; cost per "
          f"conversation: frontier ${f:.6f}, compiled ${c:.6f} ({f / c:.0f}x)")
    assert 0 < c < f / 10
