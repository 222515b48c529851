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

from gateway.demo.scene import (
    CHEAP,
    COMPILED,
    DEMO_COMPILE_COST,
    FRONTIER,
    LIST_PRICES,
    WORKFLOW,
    DemoError,
    Replay,
    Services,
    compiler_ready,
    demo_config,
    find_flowchart,
    free_port,
    http_ok,
    phase_numbers,
    render_traffic,
    replay,
    say,
    toolbox,
    wait_until,
)


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
        wait_until("the gateway", lambda: http_ok(f"{url}/healthz"), 60)
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

        # ---- 3. the compile job, in a worker process
        from gateway.loop.jobs import list_jobs

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
        from gateway.loop import canary as canary_mod

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
