"""The loop closed for an app whose flowchart tiergate never sees: capture -> proposal -> approval ->
export -> mining -> replay gate -> the loop's own model server -> canary -> promotion.

The app is tests/compiler/test_mine_app.py's scripted orchestrated app (17 agent steps, five decision
hubs, two loops, tool arguments copied from the user, the whole procedure in one system message plus a
per-step one, no tiergate headers), here sending every turn through a real gateway with the official
`openai` client. The frontier follows the app's current step (tests/loop/step_frontier.py). The compile is
the real `tiergate compile --from-traffic`: it mines the export, trains a scratch model on the CPU
(configs/compile.yaml, with the two data settings an app that decides early and branches late needs,
docs/bench-traffic-compile.md, and twice the token budget for a margin over the simulator bar), and gates it on the simulator over the mined graph and on the replay of
held-out captured conversations. The loop then serves the artifact with the real `tiergate serve-model`
on a port it picks (no `loop.compiled_models`, no config change), canaries it on live traffic and
promotes it; the app's later conversations are answered by the compiled model, its copied order
numbers, emails and addresses decoded as copies (compiler/copying.py).

Minutes of CPU (the training); marked slow, run by CI.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import openai
import pytest
from loop_helpers import HERE, ROOT, Proc, compile_log_tail, free_port, stored_requests, wait_for

pytest_plugins = ["loop_fixtures"]


def _mine_app() -> Any:
    spec = importlib.util.spec_from_file_location("tiergate_mine_app", ROOT / "tests" / "compiler" / "test_mine_app.py")
    assert spec is not None and spec.loader is not None
    module = sys.modules.get(spec.name) or importlib.util.module_from_spec(spec)
    if spec.name not in sys.modules:
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    return module


M = _mine_app()
sys.path.insert(0, str(HERE))
from step_frontier import history_key  # noqa: E402


class LiveApp(M.App):  # type: ignore[misc,name-defined]
    """The scripted app, each turn a request through the gateway; the frontier's answer is scripted first."""

    def __init__(self, seed: int, client: openai.OpenAI, script: Path):
        super().__init__(seed)
        self.client, self.script = client, script
        self.conversation = ""
        self.tiers: list[str] = []
        self.off_script = 0  # turns where the answer was not what the frontier would have said
        self.turns = 0

    def _send(self, reply: dict[str, Any], said: set[str] | None = None) -> dict[str, Any]:
        """One turn; ``said``: the replies of this step the frontier chooses among (any of them agrees)."""
        (self.script / f"{history_key(self.messages)}.json").write_text(json.dumps(reply))
        raw = self.client.chat.completions.with_raw_response.create(
            model="gpt-4o", messages=self.messages, tools=M.TOOLS)
        self.conversation = raw.headers["x-tiergate-conversation"]
        msg = raw.parse().choices[0].message
        echoed: dict[str, Any] = {"role": "assistant", "content": msg.content or ""}
        if msg.tool_calls:
            echoed["tool_calls"] = [c.model_dump() for c in msg.tool_calls]
        got = [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in echoed.get("tool_calls", [])]
        want = [(c["name"], c["arguments"]) for c in reply.get("tool_calls", [])]
        self.turns += 1
        self.off_script += int(got != want or (not want and echoed["content"] not in (said or {reply.get("content")})))
        self.messages.append(echoed)
        return echoed

    def say(self, step: str) -> None:
        self._step(step)
        said = {t.format(**self.values) for t in M.REPLIES[step]}
        self._send({"content": self.rng.choice(M.REPLIES[step]).format(**self.values)}, said)

    def call(self, step: str, args: dict[str, str], result: dict[str, Any]) -> None:
        self._step(step)
        self.calls += 1
        echoed = self._send({"tool_calls": [{"name": step, "arguments": args}]})
        call_id = echoed["tool_calls"][0]["id"] if echoed.get("tool_calls") else f"call_{self.calls}"
        self.messages.append({"role": "tool", "tool_call_id": call_id, "content": json.dumps(result)})


@pytest.mark.slow
@pytest.mark.timeout(2400)  # a CPU training inside: minutes on a quiet machine, more on a loaded one
def test_an_app_without_a_flowchart_is_mined_compiled_served_and_promoted(start_loop_gateway, tmp_path: Path) -> None:
    from compiler.mine.fitness import step_recovery
    from compiler.mine.miner import holdout_split, mine
    from compiler.mine.traces import read_traces

    script = tmp_path / "script"
    script.mkdir()
    port = free_port()
    frontier = Proc([sys.executable, str(HERE / "step_frontier.py"), "--port", str(port), "--script-dir", str(script)],
                    tmp_path / "frontier.log").start()
    frontier.wait_http(f"http://127.0.0.1:{port}/healthz")
    try:
        _run(start_loop_gateway, tmp_path, script, port, step_recovery, holdout_split, mine, read_traces)
    finally:
        frontier.stop()


def _run(start_loop_gateway: Any, tmp_path: Path, script: Path, port: int, step_recovery: Any, holdout_split: Any,
         mine: Any, read_traces: Any) -> None:
    gw = start_loop_gateway(
        {
            "compile_command": [],  # the real `tiergate compile`
            "traffic_compile_args": ["--config", str(ROOT / "configs" / "compile.yaml"),
                                     "--set", "data.render_unwalked=false", "--set", "data.value_variants=4",
                                     "--set", "train.max_tokens=2400000"],
            "min_conversations": 250, "min_captured_conversations": 200, "compile_cost_usd": 0.001,
            "canary_share": 0.5, "promote_after": 5, "min_samples": 3, "compare_share": 1.0,
        },
        admin=None,  # open mode (loopback only): the app needs no tiergate key, the API no admin key
        extra={
            # the frontier only; the app's workflow is found on the fly and has no entry, so no flowchart
            "models": [{"name": "gpt-4o", "upstream": "openai/gpt-4o", "api_base": f"http://127.0.0.1:{port}/v1",
                        "max_retries": 0, "timeout": 20}],
            "workflows": [],
        },
    )

    def api(method: str, path: str, **kw: Any) -> Any:
        return gw.api(method, path, key=None, **kw)

    client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key="unused", max_retries=0, timeout=30)
    apps: list[LiveApp] = []
    truth: list[list[str]] = []

    def run_one() -> LiveApp:
        app = LiveApp(len(apps), client, script)
        _record, steps = app.run()
        apps.append(app)
        truth.append(steps)
        return app

    def proposals() -> list[dict[str, Any]]:
        return list(api("GET", "/api/proposals?status=open").json()["data"])

    # the app runs until the payback point raises a proposal
    while not proposals():
        run_one()
        assert len(apps) <= 300, "no proposal after 300 conversations"
    prop = proposals()[0]
    workflow = prop["workflow"]
    before = len(apps)

    # before anyone approves, the loop mines what will be compiled; the page shows it, drawn on the server
    mined_now = wait_for(lambda: api("GET", f"/api/workflows/{workflow}/mined").json().get("report"), timeout=60)
    assert mined_now and mined_now["conversations"] >= 200 and mined_now["fitness"] >= 0.9, mined_now
    import httpx

    http = httpx.Client(timeout=120)  # the machine is shared and slow: a chart check runs `tiergate` as a process
    page = http.get(f"{gw.url}/dashboard/workflows/{workflow}").text
    assert 'id="mined-graph"' in page and 'id="mined-fitness"' in page and "mined.yaml" in page
    assert f"{mined_now['mined']} mined, {mined_now['held_out']} held out" in page
    svg = http.get(f"{gw.url}/dashboard/workflows/{workflow}/mined.svg")
    assert svg.headers["content-type"].startswith("image/svg+xml") and 'data-node="lookup_order"' in svg.text
    assert "<script" not in svg.text and "http" not in svg.text.replace("http://www.w3.org/2000/svg", "")
    chart_yaml = http.get(f"{gw.url}/dashboard/workflows/{workflow}/mined.yaml").text
    assert chart_yaml.startswith(f"name: {workflow}")
    r = api("POST", f"/api/proposals/{prop['id']}/approve", json={"by": "ana"})
    assert r.status_code == 200, r.text
    job = r.json()["job"]
    assert job["flowchart"] == "" and job["detail"]["source"] == "traffic"

    # the app keeps running (gently: the compile has the CPU); the job exports, mines, trains, gates; the
    # loop serves the artifact, starts the canary and promotes the route
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
    assert route()["model"] == f"compiled/{workflow}"  # the loop's own model, named by no config
    served_from = len(apps)
    for _ in range(12):
        run_one()

    out = Path(api("GET", f"/api/jobs/{job['id']}").json()["out_dir"])
    # the mined graph: at least 90% of the app's agent steps as nodes, at most 10% extra
    traces = read_traces(out / "traffic.jsonl")
    by_id = {t.id: truth[int(t.id.rsplit(" ", 1)[1]) - 1] for t in traces}
    mined_set, _held = holdout_split(traces, 0.2, 0)
    mined = mine(mined_set, name=workflow)
    # a conversation still running when the export was taken is in it up to its last captured turn
    whole = [i for i, t in enumerate(mined_set) if len(t.turns) == len(by_id[t.id])]
    assert len(whole) >= len(mined_set) - 1
    rec = step_recovery([mined.turn_nodes[i] for i in whole], [by_id[mined_set[i].id] for i in whole])
    assert rec.true_steps == 17 and rec.recovered >= 0.9 * 17 and rec.extra <= 0.1 * 17, rec
    report = json.loads((out / "mined" / "report.json").read_text())
    assert report["nodes"] == len(mined.flowchart.nodes) and report["fitness"] >= 0.9
    compiled = json.loads((out / "compile.json").read_text())
    assert compiled["passed"], compiled["reasons"]
    gate = compiled["metrics"]["replay"]
    assert gate["passed"] and gate["accuracy"] >= 0.9 and gate["turns"] >= 200, gate
    assert compiled["train"]["steps"] > 50 and compiled["train"]["tokens_per_s"] > 0
    manifest = json.loads((out / "artifact" / "manifest.json").read_text())
    assert manifest["data"]["source"] == "traffic"
    # the arguments the app copies from its customer are decoded as copies wherever the model serves
    copying = json.loads((out / "artifact" / "copying.json").read_text())["copy_arguments"]
    assert copying["lookup_order"]["order_id"]["from"] == ["user"] and "A9" in copying["lookup_order"]["order_id"]["shapes"]
    assert {"email", "order_id"} <= set(copying["verify_customer"])
    serve = json.loads((out / "serve.json").read_text())
    assert serve["port"] and serve["artifact"].endswith("artifact")

    # the job compiled the export the approver saw
    assert json.loads((out / "mined" / "report.json").read_text())["conversations"] == mined_now["conversations"]

    # attach the (reviewed) chart as the workflow's flowchart: the next approval compiles from it
    page = http.get(f"{gw.url}/dashboard/workflows/{workflow}").text
    csrf = re.search(r'name="csrf" value="([^"]+)"', page)
    assert csrf
    bad = http.post(f"{gw.url}/dashboard/workflows/{workflow}/flowchart", data={"csrf": csrf[1], "chart": "nodes: 3"},
                     headers={"Origin": gw.url}, follow_redirects=True)
    assert "does not pass `tiergate flowchart check`" in bad.text
    good = http.post(f"{gw.url}/dashboard/workflows/{workflow}/flowchart", data={"csrf": csrf[1], "chart": chart_yaml},
                      headers={"Origin": gw.url})
    assert good.status_code == 303
    assert api("GET", f"/api/workflows/{workflow}/mined").json()["attached"] is True

    gw.stop()
    rows = [r for r in stored_requests(gw.db_url) if r["workflow"] == workflow]
    late = {a.conversation for a in apps[served_from:]}
    tiers = [r["tier"] for r in rows if r["conversation"] in late]
    turns = sum(a.turns for a in apps[served_from:])
    assert tiers.count("compiled") >= turns and set(tiers) <= {"compiled", "shadow"}, tiers  # shadow: sampled checks
    assert all(a.off_script == 0 for a in apps[:before])  # the frontier said what the script says
    agreed = turns - sum(a.off_script for a in apps[served_from:])
    assert agreed >= 0.9 * turns, f"the compiled model agreed with the frontier on {agreed} of {turns} live turns"
    cost: dict[str, list[float]] = defaultdict(list)
    per_conv: dict[str, float] = defaultdict(float)
    for r in rows:
        if r["tier"] != "shadow":
            per_conv[r["conversation"]] += r["cost_usd"] or 0.0
    for a in apps[:before]:
        cost["frontier"].append(per_conv[a.conversation])
    for a in apps[served_from:]:
        cost["compiled"].append(per_conv[a.conversation])
    f = sum(cost["frontier"]) / len(cost["frontier"])
    c = sum(cost["compiled"]) / len(cost["compiled"])
    print(f"\nconversations to the proposal {before}, to promotion {served_from}; mined {rec.recovered}/17 steps "
          f"+{rec.extra}; replay {gate['accuracy']:.3f} over {gate['turns']} turns; simulator "
          f"{compiled['metrics']['node_accuracy']:.3f} / {compiled['metrics']['success_rate']:.3f}; train "
          f"{compiled['train']['steps']} steps at {compiled['train']['tokens_per_s']:.0f} tokens/s, compile wall "
          f"{compiled['stages'].get('wall')} s; live agreement {agreed}/{turns}; cost per conversation: "
          f"frontier ${f:.6f}, compiled ${c:.6f} ({f / c:.0f}x)")
    assert 0 < c < f / 10


def test_approving_without_a_flowchart_needs_captured_conversations_then_queues_a_traffic_compile(
    store: Any, tmp_path: Path,
) -> None:
    """No flowchart: refused (400) while capture holds too few conversations, naming both ways out; with
    enough, the job is a traffic compile whose command exports and mines instead of reading a chart."""
    import time

    from loop_helpers import ledger_rows, seed
    from sqlalchemy import insert

    from gateway.errors import InvalidRequest
    from gateway.loop.jobs import JobRunner, export_traffic
    from gateway.loop.payback import LoopConfig
    from gateway.loop.proposals import approve, list_proposals, raise_due
    from gateway.settings import parse_settings
    from gateway.store.schema import transcripts

    cfg = LoopConfig(compile_cost_usd=0.5, min_conversations=10, stability_window_s=3600, min_captured_conversations=3,
                     jobs_dir=str(tmp_path / "jobs"), traffic_compile_args=("--replay-min-accuracy", "0.95"))
    seed(store, ledger_rows("acme", 20, first_prompt=800, start=time.time() - 7200))
    [pid] = raise_due(store, cfg)
    bare = parse_settings("{}", "<test>")
    with pytest.raises(InvalidRequest, match="has no flowchart in <test> and 0 captured conversations") as err:
        approve(store, pid, by="ana", settings=bare, cfg=cfg)
    assert "loop.min_captured_conversations" in str(err.value) and "flowchart: PATH" in str(err.value)
    assert list_proposals(store)[0]["status"] == "open"

    now = time.time()
    with store.begin() as conn:
        conn.execute(insert(transcripts), [{"id": f"t{i}", "workflow": "acme", "conversation": f"c{i}", "started": now + i,
                                            "updated": now + i, "turns": 1, "messages": 0, "tools": None}
                                           for i in range(3)])
    prop, job = approve(store, pid, by="ana", settings=bare, cfg=cfg)
    assert prop["status"] == "approved"
    assert job["flowchart"] == "" and job["detail"] == {"source": "traffic"}
    cmd = JobRunner(store, cfg).command(job["flowchart"], job["out_dir"])
    assert "--from-traffic" in cmd and cmd[cmd.index("--out") + 1] == job["out_dir"]
    assert cmd[cmd.index("--from-traffic") + 1] == f"{job['out_dir']}/traffic.jsonl"
    assert cmd[-2:] == ["--replay-min-accuracy", "0.95"]
    out = tmp_path / "export.jsonl"
    assert export_traffic(store, "acme", out) == 3
    assert [json.loads(line)["tiergate"]["conversation"] for line in out.read_text().splitlines()] == ["c0", "c1", "c2"]
