"""`tiergate demo`: the whole loop offline, in one command, against SIMULATED providers.

    tiergate demo                     # waits for you to approve the proposal at the dashboard URL it prints
    tiergate demo --yes --exit --conversations 60     # approves itself and stops at the end (CI)

What runs: two simulated OpenAI-compatible providers (`gateway.simulated`: a "gpt-4o" that follows the
travel-booking procedure and a "gpt-4o-mini" that slips now and then), both charging OpenAI's published
list prices through the config's `price:` override; the gateway with the loop wired in (SQLite, open
mode on loopback); and an app that replays synthetic travel-booking conversations the way an
orchestrator sends them (long procedure prompt, a generic toolbox, the whole history every turn).
Routing and trimming start saving at once; when the workflow passes its payback point the gateway
raises a proposal; approval compiles the workflow into a scratch model (`tiergate compile`), serves it
(`tiergate serve-model`), canaries it, promotes it, and the demo prints cost per conversation before
and after with the quality figures.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

WORKFLOW = "travel-booking"
FRONTIER, CHEAP, COMPILED = "gpt-4o", "gpt-4o-mini", "travel-booking-compiled"
# OpenAI's published list prices (USD per million tokens) for the models the simulations stand in for,
# and the self-hosted figure the payback uses for an 8B model on one A100.
LIST_PRICES = {FRONTIER: (2.50, 10.00), CHEAP: (0.15, 0.60), COMPILED: (0.05, 0.23)}
DEMO_COMPILE_COST = 1.00  # a scratch model trained on this machine's CPU; production default is $65
EXTRA_TOOLS = [  # what a generic orchestrator ships on every call though this workflow never uses it
    ("cancel_booking", "Cancel a booking by its reference and refund the card on file.",
     {"booking_ref": "Booking reference, e.g. BK4Q7Z", "reason": "Why the customer cancels"}),
    ("hotel_search", "Find hotels in a city for given dates, sorted by price.",
     {"city": "City name", "check_in": "Check-in date", "nights": "Number of nights", "guests": "Guests"}),
    ("loyalty_balance", "Look up the customer's loyalty points and tier status.",
     {"customer_id": "The customer's account id"}),
    ("weather_forecast", "Five-day weather forecast for a city.", {"city": "City name"}),
]


class DemoError(RuntimeError):
    """The demo cannot go on; the message says why and what to do. `code` is the exit status."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


def say(line: str = "") -> None:
    print(line, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def find_flowchart() -> Path:
    for base in (Path.cwd(), Path(__file__).resolve().parents[1]):
        p = base / "configs" / "workflows" / f"{WORKFLOW}.yaml"
        if p.is_file():
            return p
    raise DemoError(f"cannot find configs/workflows/{WORKFLOW}.yaml; run the demo from the tiergate repository root", 2)


def compiler_ready() -> str | None:
    """None when `tiergate compile` can run here, else why not."""
    if importlib.util.find_spec("compiler.cli") is None or importlib.util.find_spec("compiler.render") is None:
        return "the compiler package (compiler/) is not installed"
    for mod in ("torch", "transformers", "trl"):
        if importlib.util.find_spec(mod) is None:
            return f"`{mod}` is missing; install the compile extra: pip install -e '.[compile]'"
    return None


def render_traffic(flowchart: Path, n: int, seed: int = 7) -> tuple[list[dict[str, Any]], Any]:
    """`n` conversations rendered from the flowchart (another seed than the compiler's training data)."""
    if importlib.util.find_spec("compiler.render") is None:
        raise DemoError("the compiler package is not installed: it renders the demo's conversations", 2)
    from compiler.flowchart import check, load_flowchart
    from compiler.paths import enumerate_paths
    from compiler.render import render_offline

    fc = check(load_flowchart(flowchart))
    paths = enumerate_paths(fc, max_loops=1, budget=200, seed=seed).paths
    out: list[dict[str, Any]] = []
    variant = 0
    while len(out) < n:
        for p in paths:
            out.append(render_offline(fc, p, seed=seed, variant=variant))
            if len(out) == n:
                break
        variant += 1
    return out, fc


def toolbox(fc: Any) -> list[dict[str, Any]]:
    tools = [dict(t) for t in fc.tools]
    for name, desc, props in EXTRA_TOOLS:
        tools.append({"type": "function", "function": {
            "name": name, "description": desc,
            "parameters": {"type": "object", "properties": {k: {"type": "string", "description": v}
                                                            for k, v in props.items()},
                           "required": list(props)}}})
    return tools


def demo_config(work: Path, flowchart: Path, ports: dict[str, int], conversations: int,
                compile_args: list[str], compile_command: tuple[str, ...] = (),
                serve_command: tuple[str, ...] = (), compile_cost: float = DEMO_COMPILE_COST) -> dict[str, Any]:
    def model(name: str, port: int, upstream: str, simulated: bool) -> dict[str, Any]:
        inp, outp = LIST_PRICES[name]
        return {"name": name, "upstream": upstream, "api_base": f"http://127.0.0.1:{port}/v1", "max_retries": 1,
                "timeout": 120, "simulated": simulated,
                "price": {"input_per_million": inp, "output_per_million": outp}}

    return {
        "server": {"host": "127.0.0.1", "port": ports["gateway"], "log_level": "warning",
                   "state_refresh_seconds": 1.0},
        "storage": {"url": f"sqlite:///{work / 'tiergate.db'}"},
        "ledger": {"flush_interval_ms": 50},
        "models": [
            model(FRONTIER, ports["frontier"], "openai/gpt-4o", True),
            model(CHEAP, ports["cheap"], "openai/gpt-4o-mini", True),
            model(COMPILED, ports["compiled"], f"openai/{WORKFLOW}", False),
        ],
        "workflows": [{
            "name": WORKFLOW, "frontier": FRONTIER, "cheap": CHEAP, "flowchart": str(flowchart),
            # confirmations and goodbyes are easy turns: the cheap model takes them
            "route": {"kind": "rules", "default": "frontier", "rules": [
                {"last_user_pattern": r"(?i)^\s*(yes|no|sure|perfect|sounds good|thanks|thank you|ok)\b",
                 "route": "cheap"}]},
            "trim": {"tools": True, "min_requests": 30, "holdout": 0.0},
        }],
        "loop": {
            "jobs_dir": str(work / "jobs"),
            "compile_args": compile_args,
            "compile_command": list(compile_command),
            "serve_command": list(serve_command),
            "compile_cost_usd": compile_cost,
            "min_conversations": min(500, max(10, conversations // 2)),
            "stability_window_s": 0,  # the demo's traffic is minutes old; production waits a week
            "poll_interval_s": 0.5,
            "threshold_interval_s": 1.0,
            "compiled_models": {WORKFLOW: COMPILED},
            "canary_share": 0.5,
            "promote_after": 8,
            "min_samples": 4,
            "compare_share": 0.5,
            "compiled_compare_share": 0.05,
            "min_quality": 0.7,
            "max_error_rate": 0.2,
        },
    }


@dataclass
class TierStats:
    requests: int = 0
    score: float = 0.0

    @property
    def quality(self) -> float | None:
        return self.score / self.requests if self.requests else None


@dataclass
class Replay:
    """The demo's app: sends each conversation turn by turn, scores each answer against the script."""

    url: str
    system: str
    tools: list[dict[str, Any]]
    tiers: dict[str, TierStats] = field(default_factory=dict)

    def conversation(self, conv: dict[str, Any], conv_id: str, client: Any) -> None:
        from gateway.chat import word_overlap

        msgs = conv["messages"]
        for i, m in enumerate(msgs):
            if m.get("role") != "assistant":
                continue
            body = {"model": FRONTIER, "messages": [{"role": "system", "content": self.system}, *msgs[1:i]],
                    "tools": self.tools}
            r = client.post(f"{self.url}/v1/chat/completions", json=body,
                            headers={"X-Tiergate-Workflow": WORKFLOW, "X-Tiergate-Conversation": conv_id})
            tier = r.headers.get("x-tiergate-tier", "error")
            stats = self.tiers.setdefault(tier, TierStats())
            stats.requests += 1
            if r.status_code != 200:
                continue
            got = (r.json().get("choices") or [{}])[0].get("message") or {}
            if m.get("tool_calls"):
                want = sorted((c["function"]["name"], json.dumps(_args(c), sort_keys=True)) for c in m["tool_calls"])
                have = sorted((c["function"]["name"], json.dumps(_args(c), sort_keys=True))
                              for c in got.get("tool_calls") or ())
                stats.score += 1.0 if want == have else 0.0
            else:
                stats.score += word_overlap(str(m.get("content") or ""), str(got.get("content") or ""))
            # an orchestrator keeps its own script; the next turn goes on from the expected answer


def _args(call: dict[str, Any]) -> Any:
    raw = call["function"].get("arguments")
    try:
        return json.loads(raw) if isinstance(raw, str) else raw
    except ValueError:
        return raw


class Services:
    """Processes and threads the demo starts; `close()` ends them all, newest first."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        self.server: Any = None
        self.thread: threading.Thread | None = None

    def spawn(self, cmd: list[str], log: Path) -> subprocess.Popen[bytes]:
        with open(log, "ab") as fh:
            proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.procs.append(proc)
        return proc

    def start_gateway(self, settings: Any) -> Any:
        import uvicorn

        from gateway.app import create_app
        from gateway.loop import wire

        app = create_app(settings)
        wire(app)
        config = uvicorn.Config(app, host="127.0.0.1", port=settings.server.port, log_level="warning",
                                access_log=False, lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="tiergate-gateway", daemon=True)
        self.thread.start()
        return app

    def close(self) -> None:
        if self.server is not None:
            self.server.should_exit = True
            if self.thread is not None:
                self.thread.join(30)
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


def wait_until(what: str, fn: Callable[[], Any], timeout: float, interval: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(interval)
    raise DemoError(f"timed out after {timeout:.0f}s waiting for {what}")


def http_ok(url: str) -> bool:
    import httpx

    try:
        return httpx.get(url, timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def phase_numbers(engine: Any, since: float, until: float) -> dict[str, float]:
    """Cost per conversation in a window, from the ledger (comparison calls included: they are spend)."""
    from sqlalchemy import and_, case, func, select

    from gateway.schema import requests as R

    with engine.connect() as conn:
        row = conn.execute(select(
            func.coalesce(func.sum(R.c.cost_usd), 0.0),
            func.coalesce(func.sum(R.c.baseline_cost_usd), 0.0),
            func.coalesce(func.sum(case((and_(R.c.turn == 1, R.c.tier != "shadow"), 1), else_=0)), 0),
            func.coalesce(func.sum(case((R.c.tier == "shadow", R.c.cost_usd), else_=0.0)), 0.0),
        ).where(R.c.workflow == WORKFLOW, R.c.ts >= since, R.c.ts < until)).one()
    conv = max(1, int(row[2]))
    return {"cost": row[0] / conv, "baseline": row[1] / conv, "conversations": int(row[2]), "checks": row[3] / conv}


def replay(rep: Replay, convs: list[dict[str, Any]], prefix: str, label: str, stop: Callable[[], bool] | None = None) -> int:
    import httpx

    done = 0
    step = max(1, len(convs) // 5)
    with httpx.Client(timeout=300) as client:
        for i, conv in enumerate(convs):
            rep.conversation(conv, f"{prefix}-{i}", client)
            done += 1
            if done % step == 0 or done == len(convs):
                say(f"  {label}: {done}/{len(convs)} conversations")
            if stop is not None and stop():
                break
    return done


def run_demo(*, yes: bool, exit_after: bool, conversations: int, port: int = 8080, workdir: str | None = None,
             compile_steps: int | None = None, compile_sets: tuple[str, ...] = (),
             compile_command: tuple[str, ...] = (), serve_command: tuple[str, ...] = (),
             compile_cost: float = DEMO_COMPILE_COST) -> dict[str, Any]:
    """Run the demo; returns its summary. `compile_command` / `serve_command` replace `tiergate compile`
    and `tiergate serve-model` (same command lines; `{artifact}`, `{port}`, `{script}` are filled in)."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    work = Path(workdir or tempfile.mkdtemp(prefix="tiergate-demo-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    flowchart = find_flowchart()
    missing_compiler = compiler_ready()
    canary_n = max(24, conversations // 3)
    after_n = max(10, conversations // 6)
    pool = max(conversations + canary_n + after_n + 600, 1000)  # room to go on until the payback point
    convs, fc = render_traffic(flowchart, pool)
    script = work / "script.jsonl"
    script.write_text("".join(json.dumps(c) + "\n" for c in convs))
    ports = {"frontier": free_port(), "cheap": free_port(), "compiled": free_port(), "gateway": port or free_port()}
    # the compiler's own default step budget (configs/compile.yaml): fewer steps stop before the
    # scratch model learns to copy slot values into tool arguments (docs/bench-compile.md)
    compile_args = ["--base-model", "scratch:tiny"]
    if compile_steps is not None:
        compile_args += ["--max-steps", str(compile_steps)]
    for s in compile_sets:
        compile_args += ["--set", s]
    serve_command = tuple(c.replace("{script}", str(script)) for c in serve_command)
    cfg_dict = demo_config(work, flowchart, ports, conversations, compile_args, compile_command, serve_command,
                           compile_cost)
    cfg_path = work / "tiergate.yaml"
    cfg_path.write_text("# written by `tiergate demo`: SIMULATED providers, real list prices\n" + yaml.safe_dump(cfg_dict))

    from compiler.simulate import procedure_text
    from gateway.db import make_engine, migrate
    from gateway.settings import load_settings

    settings = load_settings(cfg_path)
    svc = Services()
    stop_now = threading.Event()

    def on_signal(_sig: int, _frame: Any) -> None:
        stop_now.set()
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_signal)
    engine = make_engine(settings.storage.url)
    try:
        migrate(engine)
        say("tiergate demo: SIMULATION. The providers below are simulated; they charge OpenAI's published "
            "list prices, no real model is called.")
        say(f"  work folder {work}   config {cfg_path}")
        for name, role, miss in ((FRONTIER, "frontier", 0.0), (CHEAP, "cheap", 0.08)):
            svc.spawn([sys.executable, "-m", "gateway.simulated", "--port", str(ports[role]), "--name", name,
                       "--script", str(script), "--miss-share", str(miss)], work / f"simulated-{role}.log")
            inp, outp = LIST_PRICES[name]
            say(f"  SIMULATED {name:<12} http://127.0.0.1:{ports[role]}/v1  ${inp:.2f} / ${outp:.2f} per M tokens")
        for role in ("frontier", "cheap"):
            health = f"http://127.0.0.1:{ports[role]}/healthz"
            wait_until(f"the simulated {role} provider", lambda h=health: http_ok(h), 60)  # type: ignore[misc]
        svc.start_gateway(settings)
        url = f"http://127.0.0.1:{ports['gateway']}"
        wait_until("the gateway", lambda: http_ok(f"{url}/healthz"), 60)
        say(f"  gateway   {url}/v1     dashboard {url}/dashboard")
        rep = Replay(url, procedure_text(fc), toolbox(fc))

        # ---- 1. traffic past the payback point: routing and trimming save from the first requests
        say(f"\n1. Replaying {conversations} travel-booking conversations (orchestrator style: procedure prompt, "
            f"{len(rep.tools)} tools, full history each turn)")
        from gateway.payback import LoopConfig
        from gateway.proposals import approve, get_proposal, list_proposals, workflow_statuses
        from gateway.routes.dashboard import overview_numbers

        cfg = LoopConfig.from_dict(settings.loop)

        def proposal() -> dict[str, Any] | None:
            return next((p for p in list_proposals(engine) if p["workflow"] == WORKFLOW), None)

        t_before = time.time()
        sent = replay(rep, convs[:conversations], "before", "traffic")
        time.sleep(0.5)  # let the ledger's batch writer flush
        o = overview_numbers(engine)
        say(f"   spend ${o['spend']:.4f} vs ${o['baseline']:.4f} at the requested model: saved ${o['savings']:.4f} "
            f"({o['ratio']:.0%}); routing ${o['rungs']['routing']:.4f}, trimming ${o['rungs']['trimming']:.4f}")
        prop = None
        limit = len(convs) - canary_n - after_n
        while True:
            try:
                prop = wait_until("the compile proposal", proposal, 5)
                break
            except DemoError:
                st = workflow_statuses(engine, cfg, settings, workflow=WORKFLOW)
                pb = st[0].payback if st else None
                if pb is None or pb.threshold_conversations is None or sent >= limit:
                    raise DemoError(f"no proposal after {sent} conversations; see {url}/dashboard") from None
                more = min(limit - sent, max(10, pb.threshold_conversations - pb.conversations + 2))
                say(f"   payback point: {pb.threshold_conversations} conversations ({pb.conversations} so far); "
                    f"replaying {more} more")
                replay(rep, convs[sent:sent + more], f"before-{sent}", "traffic")
                sent += more
        t_before_end = time.time()
        n = prop["numbers"]
        say(f"\n2. Proposal #{prop['id']}: compile `{WORKFLOW}`. ${n['cost_per_conversation']:.4f} per conversation "
            f"now, ${n['compiled_cost_per_conversation']:.6f} once compiled; the ${n['compile_cost_usd']:.2f} "
            f"compile pays back after {n['payback_conversations']} conversations "
            f"({n['conversations']} seen, minimum {cfg.min_conversations}).")
        if missing_compiler:
            raise DemoError(f"the demo stops at the proposal: {missing_compiler}. The dashboard shows it at "
                            f"{url}/dashboard")
        if yes:
            approve(engine, prop["id"], by="demo --yes", settings=settings, cfg=cfg)
            say("   approved by `demo --yes`")
        else:
            say(f"   Approve or reject it at {url}/dashboard/workflows/{WORKFLOW}")
            say(f"   (or: tiergate approve {prop['id']} --config {cfg_path}). Waiting...")
            decided = wait_until("your decision", lambda: get_proposal(engine, prop["id"])["status"] != "open" and
                                 get_proposal(engine, prop["id"]), 24 * 3600, interval=0.5)
            say(f"   {decided['status']} by {decided['decided_by']}")
            if decided["status"] == "rejected":
                return finish(svc, url, exit_after, stop_now, {"proposal": "rejected"})

        # ---- 3. the compile job, in a worker process
        from gateway.jobs import list_jobs

        budget = f"{compile_steps} steps" if compile_steps is not None else "the compiler's default steps"
        say(f"\n3. Compiling (scratch model, {budget}) in a worker process; progress from its files:")
        last = ""
        job: dict[str, Any] = {}
        while True:
            jobs_now = list_jobs(engine, WORKFLOW, limit=1)
            job = jobs_now[0] if jobs_now else {}
            train = (job.get("detail") or {}).get("train") or {}
            line = f"   {job.get('state', 'queued')} {job.get('progress', 0) * 100:3.0f}%" + (
                f"  step {train.get('step')}/{train.get('max_steps')}" if train.get("step") is not None else "")
            if line != last:
                say(line)
                last = line
            if job.get("state") in ("ready", "failed"):
                break
            time.sleep(1.0)
        if job["state"] == "failed":
            say(f"\n   The compile did not produce a model: {job['error']}")
            say("   Nothing was switched: the eval gate keeps an unready model away from users; the workflow stays "
                "on the frontier (with routing and trimming). Train longer with --compile-steps.")
            before = phase_numbers(engine, t_before, t_before_end)
            summary = {"before": before, "after": None, "job": job, "tiers": _tier_quality(rep)}
            print_summary(summary)
            return finish(svc, url, exit_after, stop_now, summary)

        # ---- 4. canary, promotion
        from gateway import canary as canary_mod

        manifest = json.loads((Path(job["artifact"]) / "manifest.json").read_text())
        ev = manifest.get("eval") or {}
        say(f"   ready: eval gate passed (node accuracy {ev.get('node_accuracy', 0):.3f}, "
            f"success rate {ev.get('success_rate', 0):.3f})")
        wait_until("the canary (the model server is loading)",
                   lambda: canary_mod.get_route(engine, WORKFLOW)["mode"] != "frontier", 300, interval=0.5)
        server = (" ".join(serve_command).replace("{port}", str(ports["compiled"])) if serve_command
                  else f"tiergate serve-model on port {ports['compiled']}")
        say(f"\n4. Canary: {cfg.canary_share:.0%} of new conversations on `{COMPILED}` ({server}), "
            "sampled comparisons against the frontier")
        t_canary = time.time()

        def settled() -> bool:
            return canary_mod.get_route(engine, WORKFLOW)["mode"] != "canary"

        replay(rep, convs[sent:sent + canary_n], "canary", "canary", stop=settled)
        try:
            wait_until("promotion", settled, 60, interval=0.5)
        except DemoError:
            pass
        route = canary_mod.get_route(engine, WORKFLOW)
        metrics = canary_mod.canary_metrics(engine, WORKFLOW, t_canary).as_dict()
        for s in reversed(route["switches"][:3]):
            say(f"   switch: {s['from_mode']} -> {s['to_mode']} ({s['actor']}): {s['reason']}")
        # ---- 5. after
        t_after = time.time()
        if route["mode"] == "compiled":
            say(f"\n5. Switched: all new `{WORKFLOW}` conversations go to the compiled model")
            replay(rep, convs[sent + canary_n:sent + canary_n + after_n], "after", "after the switch")
        else:
            say(f"\n5. Not switched (route: {route['mode']}); the frontier keeps the workflow")
        t_after_end = time.time()
        time.sleep(0.5)
        summary = {
            "before": phase_numbers(engine, t_before, t_before_end),
            "after": phase_numbers(engine, t_after, t_after_end) if route["mode"] == "compiled" else None,
            "mode": route["mode"], "canary": metrics, "eval": ev, "tiers": _tier_quality(rep),
        }
        print_summary(summary)
        return finish(svc, url, exit_after, stop_now, summary)
    except KeyboardInterrupt:
        say("\nstopped")
        return {"stopped": True}
    finally:
        signal.signal(signal.SIGTERM, previous)
        engine.dispose()
        svc.close()


def _tier_quality(rep: Replay) -> dict[str, dict[str, Any]]:
    return {t: {"requests": s.requests, "quality": s.quality} for t, s in sorted(rep.tiers.items())}


def print_summary(s: dict[str, Any]) -> None:
    before, after = s["before"], s.get("after")
    say("\nCost per conversation (SIMULATED providers at list prices; from the ledger)")
    say(f"   at the requested model : ${before['baseline']:.5f}")
    say(f"   before (routing+trim)  : ${before['cost']:.5f}   over {before['conversations']} conversations")
    if after:
        serving = after["cost"] - after["checks"]
        say(f"   after the switch       : ${serving:.6f}   over {after['conversations']} conversations, "
            f"+ ${after['checks']:.6f} of sampled frontier comparisons")
        if serving > 0:
            say(f"   -> serving is {before['baseline'] / serving:.0f}x cheaper than the requested model and "
                f"{before['cost'] / serving:.0f}x cheaper than routing + trimming; "
                f"{before['baseline'] / after['cost']:.1f}x with the comparisons")
    say("Quality (answers scored against the scripted procedure: tool calls exact, text overlap)")
    for tier, q in s["tiers"].items():
        say(f"   {tier:<9} {q['requests']:>5} requests  quality {q['quality']:.3f}" if q["quality"] is not None
            else f"   {tier:<9} {q['requests']:>5} requests")
    if s.get("canary"):
        c = s["canary"]
        mean = f"{c['mean_score']:.3f}" if c.get("mean_score") is not None else "-"
        say(f"   canary: {c['requests']} compiled requests, error rate {c['error_rate']:.1%}, sampled comparison "
            f"score {mean} over {c['scored']} samples")
    if s.get("eval"):
        say(f"   eval gate: node accuracy {s['eval'].get('node_accuracy', 0):.3f}, "
            f"success rate {s['eval'].get('success_rate', 0):.3f}")


def finish(svc: Services, url: str, exit_after: bool, stop_now: threading.Event, summary: dict[str, Any]) -> dict[str, Any]:
    if exit_after:
        return summary
    say(f"\nThe dashboard stays up at {url}/dashboard. Ctrl-C to stop.")
    try:
        while not stop_now.wait(1.0):
            pass
    except KeyboardInterrupt:
        pass
    return summary
