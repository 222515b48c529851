"""A frontier that follows the app's current step, and the compiled model's stand-in, as real processes.

    python tests/loop/step_frontier.py --port 9100 --script-dir DIR [--name frontier]
    python tests/loop/step_frontier.py --port 9200 --script-dir DIR --artifact ART --name compiled

The scripted app decides each turn (its orchestrator walks the procedure) and writes the answer the
frontier gives at that point to ``DIR/<key>.json`` before it sends the request; ``key`` is a hash of
the conversation's non-system messages (roles, words, tool calls), so the same point of the same
conversation gets the same answer whoever asks: the app's request, the gateway's sampled comparison,
or the compiled model's stand-in, which sees the same history under a reduced prompt. Nothing is
consumed, so a comparison off the request path can never steal another request's answer.

With ``--artifact`` it plays the compiled model that `tiergate serve-model ART` would be: it reads
``ART/prompt.json`` and records, per request, whether the prompt came reduced as the model was trained
(the persona first, no static line of the procedure, no tool schemas). ``GET /_log`` returns the records.
Usage is counted in words, like tests/fake_upstream.py.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

UNSCRIPTED = "I am not sure what to say here."


def history_key(messages: list[dict[str, Any]]) -> str:
    """The point of the conversation: every non-system message's role, words and tool calls."""
    parts = []
    for m in messages:
        if m.get("role") in ("system", "developer"):
            continue
        calls = [((c.get("function") or {}).get("name"), json.loads((c.get("function") or {}).get("arguments") or "{}"))
                 for c in m.get("tool_calls") or []]
        parts.append([m.get("role"), m.get("content") or "", calls])
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


def _words(messages: list[dict[str, Any]]) -> int:
    return sum(len(str(m.get("content") or "").split()) + 4 for m in messages)


def build(name: str, script_dir: Path, artifact: Path | None) -> Starlette:
    log: list[dict[str, Any]] = []
    prompt = json.loads((artifact / "prompt.json").read_text()) if artifact else None

    async def chat(request: Request) -> JSONResponse:
        body = await request.json()
        messages = body.get("messages") or []
        key = history_key(messages)
        path = script_dir / f"{key}.json"
        reply = json.loads(path.read_text()) if path.is_file() else {"content": UNSCRIPTED}
        entry: dict[str, Any] = {"key": key, "scripted": path.is_file(), "tools": len(body.get("tools") or [])}
        if prompt is not None:
            systems = [str(m.get("content")) for m in messages if m.get("role") == "system"]
            static = set(prompt["static_lines"])
            entry["reduced"] = (
                bool(messages) and messages[0].get("role") == "system" and messages[0].get("content") == prompt["persona"]
                and not any(ln.strip() in static for s in systems[1:] for ln in s.splitlines())
                and not body.get("tools")
            )
            entry["steps"] = [s for s in systems if s.startswith("Current step:")]
        log.append(entry)
        msg: dict[str, Any] = {"role": "assistant", "content": reply.get("content") or ""}
        if reply.get("tool_calls"):
            msg["tool_calls"] = [
                {"id": f"call_{key[:8]}_{i}", "type": "function",
                 "function": {"name": c["name"], "arguments": json.dumps(c["arguments"])}}
                for i, c in enumerate(reply["tool_calls"])
            ]
        out_words = len(str(msg["content"]).split()) + 10 * len(msg.get("tool_calls") or [])
        prompt_words = _words(messages) + 50 * len(body.get("tools") or [])
        return JSONResponse({
            "id": f"chatcmpl-{len(log)}", "object": "chat.completion", "created": 0, "model": body.get("model", name),
            "choices": [{"index": 0, "message": msg, "finish_reason": "tool_calls" if msg.get("tool_calls") else "stop"}],
            "usage": {"prompt_tokens": prompt_words, "completion_tokens": out_words,
                      "total_tokens": prompt_words + out_words},
        }, headers={"x-served-by": name})

    async def models(request: Request) -> JSONResponse:
        return JSONResponse({"object": "list", "data": [{"id": name, "object": "model"}]})

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    async def get_log(request: Request) -> JSONResponse:
        return JSONResponse(log)

    return Starlette(routes=[
        Route("/v1/chat/completions", chat, methods=["POST"]),
        Route("/v1/models", models), Route("/healthz", healthz), Route("/_log", get_log),
    ])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--script-dir", required=True)
    parser.add_argument("--name", default="frontier")
    parser.add_argument("--artifact", default=None)
    args = parser.parse_args()
    app = build(args.name, Path(args.script_dir), Path(args.artifact) if args.artifact else None)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
