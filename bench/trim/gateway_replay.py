"""Trimming through the real gateway: a tool-heavy workflow replayed against a tool-calling upstream.

    python bench/trim/gateway_replay.py [--conversations 400] [--holdout 0.05] [--min-requests 50]
        [--cache on] [--trim off] [--by-stage auto|true|false]

The workflow offers 40 tool schemas on every request and calls 6 of them (bench/router/tool_catalog.py);
its orchestrator re-injects a policy document before every user turn. A tiergate process (trim on,
SQLite ledger) sits in front of a local upstream that calls tools as a model would: on a scenario's
opening turn it calls the next tool the scenario needs if that tool is offered; if not, but trimming's
helper tool names it, it calls the helper to load it (the gateway answers that itself); otherwise it
falls back to `escalate_to_human` (marked `keep`). Halfway through, a new scenario starts needing
`cancel_order`, which the workflow never called before: the first conversation that needs it loads it
through the helper, and the load counts as a call. With `--cache on` the upstream caches prompt
prefixes as OpenAI does and reports `cached_tokens`. Prints tool-schema tokens and bytes before and
after trimming (helper and lookups included), lookups and their cost, helper calls the client saw,
cache hits, cost and baseline from the ledger, and every conversation that needed a tool it did not
get. Loopback only; bounded.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT))

from bench.router.tool_catalog import TOOLS  # noqa: E402
from bench.router.trim_tools import (  # noqa: E402
    ARGS,
    KEEP,
    NEW_SCENARIO,
    POLICY,
    SCENARIOS,
    SYSTEM,
    USER_OPENERS,
)

MODEL = "gpt-4o"
HELPER = "tiergate_load_tools"
WORKFLOW = "support-trim-bench"
OPENER_SCENARIO = {text: name for name, text in USER_OPENERS.items()}
ALL_STEPS = {**SCENARIOS, NEW_SCENARIO[0]: NEW_SCENARIO[1]}


def serve_upstream(port: int, cache: bool) -> None:
    """The tool-calling upstream (runs in its own process)."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from router import count_prompt_tokens

    offered_log: list[list[str]] = []
    sent_log: list[dict[str, Any]] = []
    seen_prefixes: set[bytes] = set()

    def cached_share(body: dict[str, Any]) -> float:
        """A provider's prefix cache, OpenAI's way: tools then messages, cached from 1,024 tokens on in
        blocks of 128 (4 bytes a token here); the share of the prompt an earlier request already had."""
        import hashlib

        data = b"".join(json.dumps(x).encode() for x in (body.get("tools") or []) + body["messages"])
        h, done, hit = hashlib.sha256(), 0, 0
        for point in range(512, len(data) + 1, 512):
            h.update(data[done:point])
            done = point
            if point >= 4096:
                digest = h.digest()
                if digest in seen_prefixes:
                    hit = point
                seen_prefixes.add(digest)
        return hit / max(1, len(data)) if cache else 0.0

    async def chat(request: Request) -> JSONResponse:
        body = await request.json()
        messages = body["messages"]
        offered = [t["function"]["name"] for t in body.get("tools") or []]
        offered_log.append(offered)
        users = [m for m in messages if m["role"] == "user"]
        scenario = OPENER_SCENARIO.get(users[0]["content"], "status")
        steps = ALL_STEPS[scenario]
        done = sum(len(m.get("tool_calls") or []) for m in messages if m["role"] == "assistant")
        escalated = any(
            (tc["function"]["name"] == "escalate_to_human")
            for m in messages
            for tc in m.get("tool_calls") or []
        )
        message: dict[str, Any]
        helper = next((t["function"]["description"] for t in body.get("tools") or [] if t["function"]["name"] == HELPER), "")
        asked_helper = False
        if len(users) == 1 and done < len(steps) and not escalated:
            wanted = steps[done]
            if wanted in offered:
                chosen, args = wanted, ARGS[wanted]
            elif wanted in helper:  # the schema is not here, but the helper tool names it: load it
                chosen, args, asked_helper = HELPER, {"names": [wanted]}, True
            else:
                chosen, args = "escalate_to_human", ARGS["escalate_to_human"]
            message = {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": f"call_{len(offered_log)}",
                        "type": "function",
                        "function": {"name": chosen, "arguments": json.dumps(args)},
                    }
                ],
            }
        else:
            message = {"role": "assistant", "content": "Here is what I found, per our policy."}
        prompt = count_prompt_tokens(messages, body.get("tools"), MODEL)
        tools = body.get("tools")
        sent_log.append(
            {"bytes": len(json.dumps(tools)) if tools else 0,
             "tokens": count_prompt_tokens([], tools, MODEL) - count_prompt_tokens([], None, MODEL) if tools else 0,
             "helper_call": asked_helper, "prompt": prompt, "loaded": wanted if asked_helper else None}
        )
        return JSONResponse(
            {
                "id": f"chatcmpl-{len(offered_log)}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body["model"],
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                "usage": {
                    "prompt_tokens": prompt,
                    "completion_tokens": 20,
                    "total_tokens": prompt + 20,
                    "prompt_tokens_details": {"cached_tokens": int(prompt * cached_share(body))},
                },
            }
        )

    async def log(_: Request) -> JSONResponse:
        return JSONResponse(offered_log)

    async def sent(_: Request) -> JSONResponse:
        return JSONResponse(sent_log)

    app = Starlette(
        routes=[Route("/v1/chat/completions", chat, methods=["POST"]), Route("/log", log), Route("/sent", sent)]
    )
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"process for {url} exited with {proc.returncode}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise SystemExit(f"{url} not ready in {timeout}s")


def replay(base: str, conversations: int, holdout_share: float, seed: int, trim: str = "on") -> dict[str, Any]:
    import httpx

    from router import in_holdout

    rng = random.Random(seed)
    out: dict[str, Any] = {
        "requests": 0,
        "needed_missing": [],
        "holdout_conversations": 0,
        "new_tool_first_call": None,
        "new_tool_conversations": 0,
        "helper_leaks": 0,
    }
    with httpx.Client(base_url=base, timeout=30) as http:
        for c in range(conversations):
            conv = f"conv-{seed}-{c}"
            if c >= conversations // 2 and rng.random() < 0.15:
                name, steps = NEW_SCENARIO
                out["new_tool_conversations"] += 1
            else:
                name = rng.choice(list(SCENARIOS))
                steps = SCENARIOS[name]
            holdout = in_holdout(conv, holdout_share)
            out["holdout_conversations"] += holdout
            messages: list[dict[str, Any]] = [{"role": "system", "content": SYSTEM}]
            turns = [USER_OPENERS[name]] + [
                "Thanks. Is the return policy the same for sale items?"
            ] * rng.randint(0, 3)
            for turn, text in enumerate(turns):
                messages.append({"role": "system", "content": POLICY})
                messages.append({"role": "user", "content": text})
                for _ in range(len(steps) + 1):
                    resp = http.post(
                        "/v1/chat/completions",
                        json={"model": MODEL, "messages": messages, "tools": TOOLS},
                        headers={
                            "X-Tiergate-Workflow": WORKFLOW,
                            "X-Tiergate-Conversation": conv,
                            "X-Tiergate-Trim": trim,
                        },
                    )
                    resp.raise_for_status()
                    out["requests"] += 1
                    msg = resp.json()["choices"][0]["message"]
                    if HELPER in resp.text:
                        out["helper_leaks"] += 1
                    messages.append({k: v for k, v in msg.items() if v is not None or k == "content"})
                    calls = msg.get("tool_calls") or []
                    if not calls:
                        break
                    called = calls[0]["function"]["name"]
                    done = sum(
                        len(m.get("tool_calls") or []) for m in messages[:-1] if m["role"] == "assistant"
                    )
                    if turn == 0 and done < len(steps) and called != steps[done]:
                        out["needed_missing"].append(
                            {
                                "conversation": conv,
                                "holdout": holdout,
                                "needed": steps[done],
                                "request": out["requests"],
                            }
                        )
                    if called == "cancel_order" and out["new_tool_first_call"] is None:
                        out["new_tool_first_call"] = out["requests"]
                    messages.append(
                        {"role": "tool", "tool_call_id": calls[0]["id"], "content": json.dumps({"ok": True})}
                    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=400)
    parser.add_argument("--holdout", type=float, default=0.05)
    parser.add_argument("--min-requests", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--trim", choices=("on", "off"), default="on", help="off: X-Tiergate-Trim: off on every request")
    parser.add_argument(
        "--by-stage", choices=("auto", "true", "false"), default="auto", help="the workflow's trim.by_stage"
    )
    parser.add_argument(
        "--cache", choices=("on", "off"), default="off", help="on: the upstream caches prompt prefixes (OpenAI's rules)"
    )
    parser.add_argument("--serve-upstream", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_upstream:
        serve_upstream(args.serve_upstream, args.cache == "on")
        return

    import httpx
    import sqlalchemy as sa
    import yaml

    from router import count_prompt_tokens

    tmp = Path(tempfile.mkdtemp(prefix="tiergate-trim-"))
    up_port, gw_port = free_port(), free_port()
    config = {
        "storage": {"url": f"sqlite:///{tmp / 'ledger.db'}"},
        "server": {"log_level": "warning", "state_refresh_seconds": 1.0},
        "models": [
            {"name": MODEL, "upstream": "openai/gpt-4o", "api_base": f"http://127.0.0.1:{up_port}/v1"}
        ],
        "workflows": [
            {
                "name": WORKFLOW,
                "frontier": MODEL,
                "trim": {
                    "min_requests": args.min_requests,
                    "holdout": args.holdout,
                    "keep": sorted(KEEP),
                    "min_chars": 400,
                    "by_stage": {"true": True, "false": False}.get(args.by_stage, "auto"),
                },
            }
        ],
    }
    (tmp / "tiergate.yaml").write_text(yaml.safe_dump(config))
    procs = []
    try:
        up = subprocess.Popen([sys.executable, __file__, "--serve-upstream", str(up_port), "--cache", args.cache])
        procs.append(up)
        gw = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gateway.cli",
                "serve",
                "--config",
                str(tmp / "tiergate.yaml"),
                "--port",
                str(gw_port),
            ],
            cwd=ROOT,
            env={**os.environ, "TIERGATE_ADMIN_KEY": ""},
            stderr=open(tmp / "gateway.log", "wb"),
        )
        procs.append(gw)
        wait_http(f"http://127.0.0.1:{up_port}/log", up)
        wait_http(f"http://127.0.0.1:{gw_port}/healthz", gw)
        t0 = time.perf_counter()
        result = replay(f"http://127.0.0.1:{gw_port}", args.conversations, args.holdout, args.seed, args.trim)
        wall = time.perf_counter() - t0
        sent = httpx.get(f"http://127.0.0.1:{up_port}/sent").json()
        gw.send_signal(signal.SIGTERM)
        gw.wait(60)
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                p.wait(10)

    empty = count_prompt_tokens([], None, MODEL)
    full_schema = count_prompt_tokens([], TOOLS, MODEL) - empty
    schema_after = sum(e["tokens"] for e in sent)  # lookups' round trips and the helper tool included
    schema_before = full_schema * result["requests"]
    engine = sa.create_engine(f"sqlite:///{tmp / 'ledger.db'}")
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT count(*), sum(prompt_tokens), sum(coalesce(prompt_tokens_before_trim, prompt_tokens)), "
                "sum(coalesce(trim_saved_usd, 0)), sum(cost_usd), sum(CASE WHEN tools_dropped > 0 THEN 1 ELSE 0 END) "
                "FROM requests"
            )
        ).one()
        cache = conn.execute(
            sa.text(
                "SELECT sum(CASE WHEN cached_tokens > 0 THEN 1 ELSE 0 END), sum(cached_tokens), "
                "sum(baseline_cost_usd) FROM requests"
            )
        ).one()
    n, prompt_after, prompt_before, saved_usd, cost_usd, trimmed = rows
    hits, cached_sum, baseline_usd = cache
    missing = result["needed_missing"]
    holdout_missing = [m for m in missing if m["holdout"]]
    after_restore = [
        m
        for m in missing
        if not m["holdout"]
        and result["new_tool_first_call"] is not None
        and m["request"] > result["new_tool_first_call"] + 20 * max(1, int(1 / max(args.holdout, 1e-3)))
    ]
    steady = sent[args.min_requests + 10 :]
    steady_after = sum(e["tokens"] for e in steady)
    steady_requests = sum(1 for e in steady if not e["helper_call"])
    print(
        f"\nTrimming through the gateway: {args.conversations} conversations, {n} requests "
        f"({trimmed} trimmed), 40 tools offered, holdout {args.holdout:.0%}, {wall:.1f}s\n"
    )
    print("| measure | before | after | cut |")
    print("|---|---|---|---|")
    print(
        f"| tool-schema tokens, all requests | {schema_before:,} | {schema_after:,} | "
        f"{1 - schema_after / schema_before:.1%} |"
    )
    print(
        f"| tool-schema tokens, after warm-up (request {args.min_requests + 10}+) | {full_schema * steady_requests:,} | "
        f"{steady_after:,} | {1 - steady_after / max(1, full_schema * steady_requests):.1%} |"
    )
    print(
        f"| prompt tokens (ledger), all requests | {prompt_before:,} | {prompt_after:,} | "
        f"{1 - prompt_after / prompt_before:.1%} |"
    )
    print(
        f"\ninput cost saved by trimming (ledger, gpt-4o list price): ${saved_usd:.4f} of ${cost_usd + saved_usd:.4f}"
    )
    print(
        f"conversations needing the new tool `cancel_order`: {result['new_tool_conversations']}, first call on "
        f"request {result['new_tool_first_call']}"
    )
    print(
        f"held-out conversations: {result['holdout_conversations']}; of them left without a needed tool: "
        f"{len(holdout_missing)}"
    )
    print(
        f"regular conversations left without a needed tool: {len(missing) - len(holdout_missing)} "
        f"(before the holdout noticed the new tool: {len(missing) - len(holdout_missing) - len(after_restore)}; "
        f"after: {len(after_restore)})"
    )
    full_bytes = len(json.dumps(TOOLS))
    half = sent[len(sent) // 2 :]
    answers = sum(1 for e in half if not e["helper_call"])  # one final upstream call per client request
    lookups = [e for e in sent if e["helper_call"]]
    from gateway.proxy.pricing import load_litellm_price_map

    price = load_litellm_price_map()["gpt-4o"]
    lookup_usd = sum(
        e["prompt"] * price["input_cost_per_token"] + 20 * price["output_cost_per_token"] for e in lookups
    )
    print(
        f"\ntool-schema bytes reaching the upstream (helper tool and lookup round trips included): all requests "
        f"{sum(e['bytes'] for e in sent):,} of {full_bytes * result['requests']:,} untrimmed "
        f"({sum(e['bytes'] for e in sent) / (full_bytes * result['requests']):.1%}); second half "
        f"{sum(e['bytes'] for e in half):,} of {full_bytes * answers:,} "
        f"({sum(e['bytes'] for e in half) / (full_bytes * answers):.1%})"
    )
    loaded: dict[str, int] = {}
    for e in lookups:
        loaded[e["loaded"]] = loaded.get(e["loaded"], 0) + 1
    print(
        f"lookups through the helper tool: {len(lookups)} ({', '.join(f'{k} x{v}' for k, v in sorted(loaded.items()))}), "
        f"their cost ${lookup_usd:.4f} (gpt-4o list price; the ledger's trimming saving is net of it); "
        f"helper calls seen by the client: {result['helper_leaks']}"
    )
    print(
        f"prompt tokens removed by trimming (ledger): {prompt_before - prompt_after:,}; "
        f"saving net of lookups (ledger): ${saved_usd:.4f}"
    )
    print(
        f"provider prefix cache (simulated, OpenAI's rules): {hits / n:.1%} of requests hit, "
        f"{cached_sum / prompt_after:.1%} of prompt tokens read from cache, {prompt_after - cached_sum:,} prompt "
        f"tokens at the full price; cost ${cost_usd:.4f}, baseline ${baseline_usd:.4f} (removed tokens valued at "
        "the cached price where the upstream caches, docs/ledger.md)"
    )
    p_in, p_out = price["input_cost_per_token"], price["output_cost_per_token"]
    tenth = (prompt_after - cached_sum) * p_in + cached_sum * p_in / 10 + 20 * n * p_out
    print(
        f"the same tokens where cached input costs a tenth of input (Anthropic, GPT-5): ${tenth:.4f} "
        "(final calls; lookups as above)"
    )
    print(
        f"\ncommand: python bench/trim/gateway_replay.py --conversations {args.conversations} --holdout {args.holdout} "
        f"--min-requests {args.min_requests} --seed {args.seed} --trim {args.trim} --by-stage {args.by_stage} "
        f"--cache {args.cache}"
    )


if __name__ == "__main__":
    main()
