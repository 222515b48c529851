"""A scripted tool-calling model with a prompt-prefix cache, run by the trimming tests as a real process.

    python tests/proxy/scripted_upstream.py --port 9201

Speaks OpenAI's chat completions and Anthropic's Messages API (for litellm's translation), stream
and not. A test queues steps with `POST /_script {"steps": [...]}`; each request reads
the step at the head of the queue:
    {"call": "refund", "args": {...}}   call `refund` if its schema was sent; else, if trimming's helper
                                        tool was sent and names it, call the helper asking for it (the
                                        step then stays queued for the re-sent request); else answer
                                        "I cannot do that here." -- what a model does without the tool
    {"also": "lookup"}                  with `call`: in the same reply, also call this tool if sent (a
                                        reply mixing the helper with a real call)
    {"preamble": "Let me see."}         streaming: text streamed before the tool call
    {"ask": ["a", "b"]}                 call the helper asking for these names (if it was sent)
    {"content": "..."}                  a text answer
With no step queued it answers `ok: <last user text>`. Usage counts 4 bytes of the request as a token.

Prefix cache, as providers do it: the request is laid out as tools then messages (in order); a prefix
is cached in blocks of `block` tokens once it is at least `min` tokens long (`POST /_config {"min":
1024, "block": 128}`, OpenAI's sizes by default), and a request reports in
`usage.prompt_tokens_details.cached_tokens` the longest block-aligned prefix an earlier request had.
Anthropic requests cache only up to their `cache_control` breakpoints and report
`cache_read_input_tokens`. `GET /_log` returns the request bodies; `POST /_reset` clears everything.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from collections import deque
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

HELPER = "tiergate_load_tools"


def build_app() -> Starlette:
    script: deque[dict[str, Any]] = deque()
    log: list[dict[str, Any]] = []
    seen: set[bytes] = set()
    config = {"min": 1024, "block": 128}

    def cached_tokens(pieces: list[tuple[bytes, bool]], anthropic: bool) -> tuple[int, int]:
        """(prompt tokens, cached tokens); `pieces` are serialized blocks, flagged where a breakpoint ends one."""
        data = b"".join(d for d, _ in pieces)
        ends, at = [], 0
        for d, breakpoint in pieces:
            at += len(d)
            if breakpoint:
                ends.append(at)
        step, least = config["block"] * 4, config["min"] * 4
        points = ends if anthropic else list(range(step, len(data) + 1, step))
        h, done = hashlib.sha256(), 0
        cuts: list[tuple[int, bytes]] = []
        for point in points:
            h.update(data[done:point])
            done = point
            if point >= least:
                cuts.append((point, h.copy().digest()))
        size = len(data)
        hit = max((n for n, d in cuts if d in seen), default=0)
        seen.update(d for _, d in cuts)
        return size // 4, hit // 4

    def decide(sent: list[str], helper_text: str) -> tuple[list[tuple[str, dict[str, Any]]], str | None]:
        """The calls and text of the reply to the step at the head of the script."""
        step = script[0] if script else {}
        if "ask" in step and HELPER in sent:  # the helper asked for these names, whatever they are
            script.popleft()
            return [(HELPER, {"names": step["ask"]})], None
        if "call" not in step:
            if script:
                script.popleft()
            return [], step.get("content")
        want = step["call"]
        calls: list[tuple[str, dict[str, Any]]] = []
        if want in sent:
            calls.append((want, step.get("args", {})))
        elif HELPER in sent and want in helper_text:
            calls.append((HELPER, {"names": [want]}))
        if step.get("also") in sent:
            calls.append((step["also"], {}))
        if not calls or calls[0][0] != HELPER:
            script.popleft()
        if not calls:
            return [], "I cannot do that here."
        return calls, None

    def last_user(messages: list[dict[str, Any]]) -> str:
        for m in reversed(messages):
            if m.get("role") == "user":
                c = m.get("content")
                return c if isinstance(c, str) else " ".join(p.get("text", "") for p in c or [] if isinstance(p, dict))
        return ""

    async def chat(request: Request) -> Response:
        body = await request.json()
        log.append({"api": "openai", "body": body})
        tools = body.get("tools") or []
        sent = [t["function"]["name"] for t in tools]
        helper_text = next((t["function"]["description"] for t in tools if t["function"]["name"] == HELPER), "")
        pieces = [(json.dumps(t).encode(), False) for t in tools]
        pieces += [(json.dumps(m).encode(), False) for m in body["messages"]]
        prompt, cached = cached_tokens(pieces, anthropic=False)
        step = dict(script[0]) if script else {}
        calls, text = decide(sent, helper_text)
        if not calls and text is None:
            text = f"ok: {last_user(body['messages'])}"
        tool_calls = [
            {"id": f"call_{len(log)}_{i}", "type": "function", "function": {"name": n, "arguments": json.dumps(a)}}
            for i, (n, a) in enumerate(calls)
        ]
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": 10,
            "total_tokens": prompt + 10,
            "prompt_tokens_details": {"cached_tokens": cached},
        }
        rid, model, now = f"chatcmpl-{len(log)}", body.get("model"), int(time.time())
        finish = "tool_calls" if tool_calls else "stop"
        if not body.get("stream"):
            message: dict[str, Any] = {"role": "assistant", "content": text}
            if tool_calls:
                message["tool_calls"] = tool_calls
            return JSONResponse(
                {
                    "id": rid,
                    "object": "chat.completion",
                    "created": now,
                    "model": model,
                    "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                    "usage": usage,
                }
            )

        def chunk(delta: dict[str, Any] | None, finish_reason: str | None = None, **extra: Any) -> bytes:
            choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish_reason}]
            data = {"id": rid, "object": "chat.completion.chunk", "created": now, "model": model, "choices": choices}
            return b"data: " + json.dumps({**data, **extra}).encode() + b"\n\n"

        async def gen():  # type: ignore[no-untyped-def]
            yield chunk({"role": "assistant", "content": ""})
            if step.get("preamble") and tool_calls:
                yield chunk({"content": step["preamble"]})
            for word in (text or "").split(" ") if text else []:
                yield chunk({"content": word + " "})
            for i, tc in enumerate(tool_calls):
                head = {**tc, "index": i, "function": {"name": tc["function"]["name"], "arguments": ""}}
                yield chunk({"tool_calls": [head]})
                yield chunk({"tool_calls": [{"index": i, "function": {"arguments": tc["function"]["arguments"]}}]})
            yield chunk({}, finish)
            if (body.get("stream_options") or {}).get("include_usage"):
                yield chunk(None, usage=usage)
            yield b"data: [DONE]\n\n"

        return StreamingResponse(gen(), media_type="text/event-stream")

    async def messages(request: Request) -> Response:
        body = await request.json()
        log.append({"api": "anthropic", "body": body})
        tools = body.get("tools") or []
        sent = [t["name"] for t in tools]
        helper_text = next((t.get("description", "") for t in tools if t["name"] == HELPER), "")
        system = body.get("system") or []
        system = [{"type": "text", "text": system}] if isinstance(system, str) else system
        pieces = [(json.dumps(t).encode(), "cache_control" in t) for t in tools]
        pieces += [(json.dumps(b).encode(), "cache_control" in b) for b in system]
        pieces += [(json.dumps(m).encode(), False) for m in body.get("messages") or []]
        prompt, cached = cached_tokens(pieces, anthropic=True)
        calls, text = decide(sent, helper_text)
        content: list[dict[str, Any]] = [
            {"type": "tool_use", "id": f"toolu_{len(log)}_{i}", "name": n, "input": a} for i, (n, a) in enumerate(calls)
        ]
        if not calls:
            text = text if text is not None else "ok"
            content = [{"type": "text", "text": text}]
        usage = {"input_tokens": prompt - cached, "output_tokens": 10, "cache_read_input_tokens": cached}
        if body.get("stream"):
            return StreamingResponse(anthropic_events(body, content, usage), media_type="text/event-stream")
        return JSONResponse(
            {
                "id": f"msg_{len(log)}",
                "type": "message",
                "role": "assistant",
                "model": body.get("model"),
                "content": content,
                "stop_reason": "tool_use" if calls else "end_turn",
                "stop_sequence": None,
                "usage": {
                    "input_tokens": prompt - cached,
                    "output_tokens": 10,
                    "cache_read_input_tokens": cached,
                    "cache_creation_input_tokens": 0,
                },
            }
        )

    async def anthropic_events(body: dict[str, Any], content: list[dict[str, Any]], usage: dict[str, int]):  # type: ignore[no-untyped-def]
        def event(kind: str, data: dict[str, Any]) -> bytes:
            return f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n".encode()

        start = {"input_tokens": usage["input_tokens"], "output_tokens": 0,
                 "cache_read_input_tokens": usage["cache_read_input_tokens"]}
        message = {"id": f"msg_{len(log)}", "type": "message", "role": "assistant", "model": body.get("model"),
                   "content": [], "stop_reason": None, "usage": start}
        yield event("message_start", {"message": message})
        for i, block in enumerate(content):
            if block["type"] == "text":
                yield event("content_block_start", {"index": i, "content_block": {"type": "text", "text": ""}})
                yield event("content_block_delta", {"index": i, "delta": {"type": "text_delta", "text": block["text"]}})
            else:
                head = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
                yield event("content_block_start", {"index": i, "content_block": head})
                delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
                yield event("content_block_delta", {"index": i, "delta": delta})
            yield event("content_block_stop", {"index": i})
        stop = "tool_use" if content and content[0]["type"] == "tool_use" else "end_turn"
        yield event("message_delta", {"delta": {"stop_reason": stop, "stop_sequence": None},
                                      "usage": {"output_tokens": usage["output_tokens"]}})
        yield event("message_stop", {})

    async def push_script(request: Request) -> Response:
        script.extend((await request.json())["steps"])
        return JSONResponse({"queued": len(script)})

    async def set_config(request: Request) -> Response:
        config.update({k: int(v) for k, v in (await request.json()).items()})
        return JSONResponse(config)

    async def reset(_: Request) -> Response:
        script.clear()
        log.clear()
        seen.clear()
        config.update({"min": 1024, "block": 128})
        return JSONResponse({"ok": True})

    async def get_log(_: Request) -> Response:
        return JSONResponse(log)

    async def models(_: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": "scripted", "object": "model"}]})

    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/v1/messages", messages, methods=["POST"]),
            Route("/v1/models", models),
            Route("/_script", push_script, methods=["POST"]),
            Route("/_config", set_config, methods=["POST"]),
            Route("/_reset", reset, methods=["POST"]),
            Route("/_log", get_log),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(build_app(), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
