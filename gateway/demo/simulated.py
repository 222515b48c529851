"""A SIMULATED OpenAI-compatible provider for the offline demo: it replays scripted conversations.

    python -m gateway.demo.simulated --port 9101 --name gpt-4o --script convs.jsonl [--miss-share 0.05]

It is labelled a simulation everywhere: its log lines, its `/v1/models` entry (`owned_by:
"tiergate-simulation"`), a `X-Tiergate-Simulated: true` header on every answer. It answers a request with
the next assistant message of the scripted conversation whose history it extends (the conversations
the compiler renders from the workflow's flowchart), so the demo's frontier behaves like a frontier
model that follows the procedure. `--miss-share` makes a deterministic share of answers wrong, the way
a cheaper model slips. Usage is counted with tiktoken, so the gateway prices real token counts at the
config's list prices.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import time
import uuid
from pathlib import Path
from typing import Any

log = logging.getLogger("tiergate.simulated")
FALLBACK = "Sorry, I did not catch that. Could you say it again?"


def history_key(messages: list[dict[str, Any]]) -> str:
    """The conversation so far, system prompt and call ids left out (the app's prompt is not the script's)."""
    parts = []
    for m in messages:
        role = m.get("role")
        if role in ("system", "developer"):
            continue
        content = m.get("content")
        if isinstance(content, list):
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        calls = [(c.get("function") or {}).get("name", "") + " " + str((c.get("function") or {}).get("arguments", ""))
                 for c in m.get("tool_calls") or ()]
        parts.append([role, " ".join(str(content or "").split()), calls])
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def loose_key(messages: list[dict[str, Any]]) -> str:
    """Position and last message only: survives trimming rewriting earlier messages (preloads)."""
    rest = [m for m in messages if m.get("role") not in ("system", "developer")]
    last = rest[-1] if rest else {}
    return f"{len(rest)}|{' '.join(str(last.get('content') or '').split())}"


def build_index(conversations: list[dict[str, Any]]) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    exact: dict[str, dict[str, Any]] = {}
    loose: dict[str, dict[str, Any]] = {}
    for conv in conversations:
        msgs = conv["messages"]
        for i, m in enumerate(msgs):
            if m.get("role") == "assistant":
                reply = {k: v for k, v in m.items() if k in ("role", "content", "tool_calls")}
                exact.setdefault(history_key(msgs[:i]), reply)
                loose.setdefault(loose_key(msgs[:i]), reply)
    return exact, loose


def create_app(name: str, conversations: list[dict[str, Any]], miss_share: float = 0.0) -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    from gateway.proxy.tokens import count_prompt_tokens, count_text

    exact, loose = build_index(conversations)
    counter = {"requests": 0, "misses": 0}
    headers = {"X-Tiergate-Simulated": "true"}

    def missed(key: str) -> bool:
        return int(hashlib.sha256(f"{name}:{key}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF < miss_share

    async def chat(request: Request) -> Response:
        body = await request.json()
        messages = body.get("messages") or []
        counter["requests"] += 1
        key = history_key(messages)
        reply = exact.get(key) or loose.get(loose_key(messages))
        if reply is None or missed(key):
            counter["misses"] += 1
            reply = {"role": "assistant", "content": FALLBACK}
        reply = json.loads(json.dumps(reply))
        for call in reply.get("tool_calls") or ():
            call["id"] = call.get("id") or f"call_{uuid.uuid4().hex[:12]}"
            if not isinstance(call["function"].get("arguments"), str):
                call["function"]["arguments"] = json.dumps(call["function"]["arguments"])
        text = str(reply.get("content") or "") + "".join(c["function"]["arguments"] for c in reply.get("tool_calls") or ())
        prompt = count_prompt_tokens("openai/gpt-4o", messages, body.get("tools"))
        completion = max(1, count_text("openai/gpt-4o", text))
        out = {
            "id": f"chatcmpl-sim-{uuid.uuid4().hex[:16]}", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model") or name,
            "choices": [{"index": 0, "message": reply, "logprobs": None,
                         "finish_reason": "tool_calls" if reply.get("tool_calls") else "stop"}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
                      "prompt_tokens_details": {"cached_tokens": 0}},
        }
        if body.get("stream"):
            return JSONResponse({"error": {"message": f"SIMULATED provider `{name}` does not stream; "
                                                      "the demo sends non-streaming requests",
                                           "type": "invalid_request_error", "param": "stream", "code": None}},
                                status_code=400, headers=headers)
        return JSONResponse(out, headers=headers)

    async def models(_: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": name, "object": "model",
                                                          "owned_by": "tiergate-simulation"}]}, headers=headers)

    async def healthz(_: Request) -> Response:
        return JSONResponse({"ok": True, "simulated": True, **counter}, headers=headers)

    return Starlette(routes=[
        Route("/v1/chat/completions", chat, methods=["POST"]),
        Route("/v1/models", models),
        Route("/healthz", healthz),
    ])


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(prog="python -m gateway.demo.simulated", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", required=True, help="the model name it plays, e.g. gpt-4o")
    parser.add_argument("--script", required=True, help="JSONL of conversations (OpenAI chat format)")
    parser.add_argument("--miss-share", type=float, default=0.0, help="share of answers it gets wrong")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s SIMULATED {args.name}: %(message)s")
    convs = [json.loads(line) for line in Path(args.script).read_text().splitlines() if line.strip()]
    log.info("simulated provider `%s` on port %d: %d scripted conversations, miss share %.0f%% (not a real model)",
             args.name, args.port, len(convs), args.miss_share * 100)
    uvicorn.run(create_app(args.name, convs, args.miss_share), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
