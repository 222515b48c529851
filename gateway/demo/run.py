"""`tiergate demo`: the whole loop offline, in one command, against SIMULATED providers.

    tiergate demo                     # waits for you to approve the proposal at the dashboard URL it prints
    tiergate demo --yes --exit --conversations 60     # approves itself and stops at the end (CI)

What runs: two simulated OpenAI-compatible providers (`gateway.demo.simulated`: a "gpt-4o" that follows the
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

import json
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import yaml

from gateway.demo.progress import expected_compile, progress_line, train_threads, what_to_try
from gateway.demo.scene import (
    CHEAP,
    COMPILED,
    DEMO_COMPILE_COST,
    FRONTIER,
    LIST_PRICES,
    WORKFLOW,
    DemoError,
    LiveTraffic,
    Replay,
    Services,
    compiler_ready,
    demo_config,
    find_flowchart,
    free_port,
    http_ok,
    own_gateway_up,
    phase_numbers,
    port_free,
    render_traffic,
    replay,
    say,
    toolbox,
    wait_until,
)

LIVE_PAUSE_S = 2.0  # between live conversations while the model trains: the CPU is the training's


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
    after_n = max(10, conversations // 12)  # enough for the cost per conversation after the switch
    # room to go on until the payback point, and for the live traffic while the model compiles
    pool = max(conversations + canary_n + after_n + 1200, 1600)
    convs, fc = render_traffic(flowchart, pool)
    script = work / "script.jsonl"
    script.write_text("".join(json.dumps(c) + "\n" for c in convs))
    if port and not port_free(port):
        # never replay into whatever answers there: it could be a gateway with real upstreams behind it
        raise DemoError(f"Port {port} on 127.0.0.1 is taken by another program; the demo starts its own gateway. "
                        "Stop that program, or pass `--port 0` (any free port) or another `--port N`.", code=2)
    ports = {"frontier": free_port(), "cheap": free_port(), "compiled": free_port(), "gateway": port or free_port()}
    # the compiler's own token budget and early stop (configs/compile.yaml): the scratch model passes the
    # gate on every seed tried (docs/bench-compile.md); `--compile-steps` trains a fixed number of steps
    compile_args = ["--base-model", "scratch:tiny", "--set", f"train.threads={train_threads()}"]
    if compile_steps is not None:
        compile_args += ["--max-steps", str(compile_steps), "--set", "train.max_tokens=0"]
    for s in compile_sets:
        compile_args += ["--set", s]
    serve_command = tuple(c.replace("{script}", str(script)) for c in serve_command)
    cfg_dict = demo_config(work, flowchart, ports, conversations, compile_args, compile_command, serve_command,
                           compile_cost)
    cfg_path = work / "tiergate.yaml"
    cfg_path.write_text("# written by `tiergate demo`: SIMULATED providers, real list prices\n" + yaml.safe_dump(cfg_dict))

    from compiler.simulate import procedure_text
    from gateway.settings import load_settings
    from gateway.store.engine import make_engine, migrate

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
            svc.spawn([sys.executable, "-m", "gateway.demo.simulated", "--port", str(ports[role]), "--name", name,
                       "--script", str(script), "--miss-share", str(miss)], work / f"simulated-{role}.log")
            inp, outp = LIST_PRICES[name]
            say(f"  SIMULATED {name:<12} http://127.0.0.1:{ports[role]}/v1  ${inp:.2f} / ${outp:.2f} per M tokens")
        for role in ("frontier", "cheap"):
            health = f"http://127.0.0.1:{ports[role]}/healthz"
            wait_until(f"the simulated {role} provider", lambda h=health: http_ok(h), 60)  # type: ignore[misc]
        svc.start_gateway(settings)
        url = f"http://127.0.0.1:{ports['gateway']}"
        # the gateway this demo started, not another server that took the port meanwhile
        wait_until("the gateway", lambda: own_gateway_up(svc, url), 60)
        say(f"  gateway   {url}/v1     dashboard {url}/dashboard")
        rep = Replay(url, procedure_text(fc), toolbox(fc))

        # ---- 1. traffic past the payback point: routing and trimming save from the first requests
        say(f"\n1. Replaying {conversations} travel-booking conversations (orchestrator style: procedure prompt, "
            f"{len(rep.tools)} tools, full history each turn)")
        from gateway.loop.payback import LoopConfig
        from gateway.loop.proposals import approve, get_proposal, list_proposals, workflow_statuses
        from gateway.web.routes.dashboard import overview_numbers

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

        # ---- 3. the compile job, in a worker process, while the app's traffic goes on
        from gateway.loop.jobs import list_jobs

        if compile_steps is not None:
            budget = f"{compile_steps} steps"
        else:
            budget = "the compiler's token budget"
            if not compile_command:
                budget = expected_compile(compile_sets) or budget
        say(f"\n3. Compiling (scratch model, {budget}) in a worker process; traffic goes on meanwhile. "
            "Progress from its files:")
        t_compile = time.time()
        live = LiveTraffic(rep, convs, start=sent, prefix="live", pause_s=LIVE_PAUSE_S).start()
        last = ""
        last_train: dict[str, Any] = {}
        job: dict[str, Any] = {}
        while True:
            jobs_now = list_jobs(engine, WORKFLOW, limit=1)
            job = jobs_now[0] if jobs_now else {}
            line = progress_line(job)
            last_train = (job.get("detail") or {}).get("train") or last_train
            if line != last:
                say(line)
                last = line
            if job.get("state") in ("ready", "failed"):
                break
            time.sleep(1.0)
        compile_s = time.time() - t_compile
        if job["state"] == "failed":
            sent = live.stop()
            say(f"\n   The compile did not produce a model after {compile_s / 60:.1f} min: {job['error']}")
            say("   Nothing was switched: the eval gate keeps an unready model away from users; the workflow stays "
                "on the frontier (with routing and trimming).")
            say(f"   What to try: {what_to_try(job)}")
            before = phase_numbers(engine, t_before, t_before_end)
            summary = {"before": before, "after": None, "job": job, "tiers": _tier_quality(rep), "url": url,
                       "compile_s": compile_s, "passed": False, "train": last_train}
            print_summary(summary)
            if exit_after:
                raise DemoError("the demo ended without a switch: the compiled model did not pass the eval gate", 1)
            return finish(svc, url, exit_after, stop_now, summary)

        # ---- 4. canary, promotion
        from gateway.loop import canary as canary_mod

        manifest = json.loads((Path(job["artifact"]) / "manifest.json").read_text())
        ev = manifest.get("eval") or {}
        say(f"   ready after {compile_s / 60:.1f} min: eval gate passed (node accuracy "
            f"{ev.get('node_accuracy', 0):.3f}, success rate {ev.get('success_rate', 0):.3f}); "
            f"{live.sent} conversations of live traffic meanwhile")
        live.go_faster()
        wait_until("the canary (the model server is loading)",
                   lambda: canary_mod.get_route(engine, WORKFLOW)["mode"] != "frontier", 300, interval=0.5)
        server = (" ".join(serve_command).replace("{port}", str(ports["compiled"])) if serve_command
                  else f"tiergate serve-model on port {ports['compiled']}")
        say(f"\n4. Canary: {cfg.canary_share:.0%} of new conversations on `{COMPILED}` ({server}), "
            "sampled comparisons against the frontier, on the live traffic")
        t_canary = time.time()

        def settled() -> bool:
            return canary_mod.get_route(engine, WORKFLOW)["mode"] != "canary"

        canary_start = live.sent
        try:
            wait_until("promotion", lambda: settled() or live.sent - canary_start >= canary_n or
                       live.next >= len(convs), 600, interval=0.5)
            wait_until("promotion", settled, 30, interval=0.5)
        except DemoError:
            pass
        sent = live.stop()
        say(f"   {live.sent - canary_start} conversations during the canary")
        route = canary_mod.get_route(engine, WORKFLOW)
        metrics = canary_mod.canary_metrics(engine, WORKFLOW, t_canary).as_dict()
        for s in reversed(route["switches"][:3]):
            say(f"   switch: {s['from_mode']} -> {s['to_mode']} ({s['actor']}): {s['reason']}")
        # ---- 5. after
        t_after = time.time()
        if route["mode"] == "compiled":
            say(f"\n5. Switched: all new `{WORKFLOW}` conversations go to the compiled model")
            replay(rep, convs[sent:sent + after_n], "after", "after the switch")
        else:
            say(f"\n5. Not switched (route: {route['mode']}); the frontier keeps the workflow")
        t_after_end = time.time()
        time.sleep(0.5)
        summary = {
            "before": phase_numbers(engine, t_before, t_before_end),
            "after": phase_numbers(engine, t_after, t_after_end) if route["mode"] == "compiled" else None,
            "mode": route["mode"], "canary": metrics, "eval": ev, "tiers": _tier_quality(rep), "url": url,
            "compile_s": compile_s, "passed": True, "train": last_train,
        }
        print_summary(summary)
        if exit_after and route["mode"] != "compiled":
            raise DemoError(f"the demo ended without a switch (route: {route['mode']}); see {url}/dashboard", 1)
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
    """The details (quality by tier, canary, gate), then the headline a newcomer came for, last."""
    say("\nQuality (answers scored against the scripted procedure: tool calls exact, text overlap)")
    for tier, q in s["tiers"].items():
        say(f"   {tier:<9} {q['requests']:>5} requests  quality {q['quality']:.3f}" if q["quality"] is not None
            else f"   {tier:<9} {q['requests']:>5} requests")
    if s.get("canary"):
        c = s["canary"]
        mean = f"{c['mean_score']:.3f}" if c.get("mean_score") is not None else "-"
        say(f"   canary: {c['requests']} compiled requests, error rate {c['error_rate']:.1%}, sampled comparison "
            f"score {mean} over {c['scored']} samples")
    if s.get("eval"):
        say(f"   eval gate on held-out paths: node accuracy {s['eval'].get('node_accuracy', 0):.3f}, "
            f"success rate {s['eval'].get('success_rate', 0):.3f}")
    train = s.get("train") or {}
    if s.get("compile_s") is not None and train.get("tokens_per_s"):
        say(f"   compile: {s['compile_s'] / 60:.1f} min in all; {train.get('tokens_seen', 0):,} tokens trained in "
            f"{train.get('step')} steps at {train['tokens_per_s']:,.0f} tokens/s")
    for line in headline(s):
        say(line)


def headline(s: dict[str, Any]) -> list[str]:
    """Cost per conversation at each rung with the ratios, the quality figures and the dashboard URL."""
    before, after = s["before"], s.get("after")
    tiers = s.get("tiers") or {}

    def quality(tier: str) -> str:
        q = (tiers.get(tier) or {}).get("quality")
        return f"quality {q:.2f}" if q is not None else "quality -"

    lines = ["", "Cost per conversation (SIMULATED providers at list prices; from the ledger):",
             f"   at the requested model ({FRONTIER})  ${before['baseline']:.5f}   {quality('frontier')}",
             f"   with routing and trimming   ${before['cost']:.5f}   "
             f"{before['baseline'] / before['cost']:.1f}x cheaper, routed answers {quality('routed')}"
             if before["cost"] > 0 else "   with routing and trimming   -"]
    if after:
        serving = after["cost"] - after["checks"]
        if serving > 0:
            lines.append(
                f"   compiled ({COMPILED})  ${serving:.6f}   {before['baseline'] / serving:.0f}x cheaper than the "
                f"requested model, {before['cost'] / serving:.0f}x cheaper than routing + trimming, "
                f"{quality('compiled')}")
            lines.append(f"      (+ ${after['checks']:.6f} per conversation of sampled frontier comparisons: "
                         f"{before['baseline'] / after['cost']:.0f}x cheaper with them)")
    else:
        lines.append(f"   compiled ({COMPILED})  not switched: the workflow stays on routing and trimming")
    if s.get("url"):
        lines.append(f"Dashboard: {s['url']}/dashboard/workflows/{WORKFLOW}")
    return lines


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
