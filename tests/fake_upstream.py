"""A scriptable fake OpenAI-compatible upstream, run by the tests as a real process on a loopback port.

    python tests/fake_upstream.py --port 9101 [--name frontier]

By default it answers deterministically (`<name>: <last user text>`, usage from word counts). A test
queues behaviours for the next requests with `POST /_script {"steps": [...]}`; each request takes the
next step. Step keys (all optional):
    status, retry_after       answer with this HTTP error (OpenAI error shape)
    delay                     seconds to wait before answering
    content                   reply text
    tool_calls                [{"name": ..., "arguments": {...}}]
    no_usage                  omit `usage` (and the usage chunk when streaming)
    chunks, chunk_delay       stream the reply in this many chunks, sleeping between them
    disconnect_after          streaming: drop the connection after this many chunks
    raw                       answer 200 with exactly this body (garbage, JSON that is not an object)
    truncate                  non-streaming: send this many bytes of the reply, then drop the connection
    no_done                   streaming: end the stream cleanly but without `data: [DONE]`
    error_after               streaming: after this many chunks send an OpenAI error event and end
    silent_after              streaming: after this many chunks send nothing more (until cancelled)
`POST /_chaos {"steps": [...], "seed": 1}`: once the script is empty, each request takes one of these
steps at random (the soak test's mix of faults). `GET /_log` returns the requests received (body and
headers); `GET /_stats` counts streams started, completed and cancelled by the client; `POST /_reset`
clears script, chaos, log and stats.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from collections import deque
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route


def build_app(name: str) -> Starlette:
    script: deque[dict[str, Any]] = deque()
    chaos: dict[str, Any] = {"steps": [], "rng": random.Random(0)}
    log: list[dict[str, Any]] = []
    stats = {"requests": 0, "streams_started": 0, "streams_completed": 0, "streams_cancelled": 0}

    def last_user_text(body: dict[str, Any]) -> str:
        for m in reversed(body.get("messages") or []):
            if m.get("role") == "user":
                c = m.get("content")
                if isinstance(c, list):
                    return " ".join(p.get("text", "") for p in c if isinstance(p, dict))
                return str(c or "")
        return ""

    def usage_for(body: dict[str, Any], reply: str) -> dict[str, Any]:
        prompt = sum(len(str(m.get("content") or "").split()) + 4 for m in body.get("messages") or [])
        prompt += len(json.dumps(body.get("tools"))) // 4 if body.get("tools") else 0
        completion = max(1, len(reply.split()))
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": 0},
        }

    def next_step() -> dict[str, Any]:
        if script:
            return script.popleft()
        if chaos["steps"]:
            return dict(chaos["rng"].choice(chaos["steps"]))
        return {}

    async def chat(request: Request) -> Response:
        body = await request.json()
        stats["requests"] += 1
        log.append({"body": body, "headers": dict(request.headers), "t": time.time()})
        step = next_step()
        if step.get("delay"):
            await asyncio.sleep(step["delay"])
        if "raw" in step:
            return Response(step["raw"], media_type="application/json")
        if step.get("status"):
            headers = {"Retry-After": str(step["retry_after"])} if "retry_after" in step else {}
            return JSONResponse(
                {
                    "error": {
                        "message": f"{name}: scripted {step['status']}",
                        "type": "fake_error",
                        "param": None,
                        "code": "scripted",
                    }
                },
                status_code=step["status"],
                headers=headers,
            )
        content = step.get("content", f"{name}: {last_user_text(body)}")
        calls = [
            {
                "id": f"call_{i}",
                "type": "function",
                "function": {
                    "name": c["name"],
                    "arguments": json.dumps(c.get("arguments", {}), sort_keys=True),
                },
            }
            for i, c in enumerate(step.get("tool_calls") or [])
        ]
        if calls:
            content = step.get("content")
        rid = f"chatcmpl-{stats['requests']}"
        usage = usage_for(body, content or json.dumps([c["function"] for c in calls]))
        model = body.get("model")
        if not body.get("stream"):
            msg: dict[str, Any] = {"role": "assistant", "content": content}
            logprobs = None
            if step.get("logprobs") is not None:
                logprobs = {
                    "content": [
                        {"token": f"t{i}", "logprob": lp, "bytes": None, "top_logprobs": []}
                        for i, lp in enumerate(step["logprobs"])
                    ]
                }
            if calls:
                msg["tool_calls"] = calls
            n = int(body.get("n") or 1)
            out: dict[str, Any] = {
                "id": rid,
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [
                    {
                        "index": i,
                        "message": msg,
                        "finish_reason": "tool_calls" if calls else "stop",
                        "logprobs": logprobs,
                    }
                    for i in range(n)
                ],
            }
            if not step.get("no_usage"):
                out["usage"] = usage
            if step.get("truncate") is not None:
                whole = json.dumps(out).encode()[: int(step["truncate"])]

                async def cut():  # type: ignore[no-untyped-def]
                    yield whole
                    raise ConnectionAbortedError("scripted truncation")

                return StreamingResponse(cut(), media_type="application/json")
            return JSONResponse(out)

        n_chunks = int(step.get("chunks", 3))
        delay = float(step.get("chunk_delay", 0))
        cut = step.get("disconnect_after")
        error_after = step.get("error_after")
        silent_after = step.get("silent_after")
        include_usage = bool((body.get("stream_options") or {}).get("include_usage")) and not step.get(
            "no_usage"
        )

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            data = {
                "id": rid,
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            return b"data: " + json.dumps(data).encode() + b"\n\n"

        async def gen():  # type: ignore[no-untyped-def]
            stats["streams_started"] += 1
            try:
                yield chunk({"role": "assistant", "content": ""})
                if calls:
                    for i, c in enumerate(calls):
                        yield chunk(
                            {
                                "tool_calls": [
                                    {
                                        "index": i,
                                        "id": c["id"],
                                        "type": "function",
                                        "function": {"name": c["function"]["name"], "arguments": ""},
                                    }
                                ]
                            }
                        )
                        yield chunk(
                            {
                                "tool_calls": [
                                    {"index": i, "function": {"arguments": c["function"]["arguments"]}}
                                ]
                            }
                        )
                else:
                    words = (content or "").split(" ")
                    per = max(1, -(-len(words) // n_chunks))
                    pieces = [" ".join(words[i : i + per]) for i in range(0, len(words), per)]
                    for k, piece in enumerate(
                        pieces if n_chunks <= len(words) else pieces + [""] * (n_chunks - len(pieces))
                    ):
                        if cut is not None and k >= cut:
                            raise ConnectionAbortedError("scripted disconnect")
                        if error_after is not None and k >= error_after:
                            err = {
                                "message": f"{name}: scripted overload",
                                "type": "server_error",
                                "code": "overloaded",
                            }
                            yield b"data: " + json.dumps({"error": err}).encode() + b"\n\n"
                            stats["streams_completed"] += 1
                            return
                        if silent_after is not None and k >= silent_after:
                            await asyncio.sleep(3600)
                        text = piece if k == 0 else (" " + piece if piece else "")
                        yield chunk({"content": text})
                        if delay:
                            await asyncio.sleep(delay)
                yield chunk({}, "tool_calls" if calls else "stop")
                if include_usage:
                    data = {
                        "id": rid,
                        "object": "chat.completion.chunk",
                        "created": int(time.time()),
                        "model": model,
                        "choices": [],
                        "usage": usage,
                    }
                    yield b"data: " + json.dumps(data).encode() + b"\n\n"
                if not step.get("no_done"):
                    yield b"data: [DONE]\n\n"
                stats["streams_completed"] += 1
            except (asyncio.CancelledError, GeneratorExit):
                stats["streams_cancelled"] += 1
                raise

        return StreamingResponse(gen(), media_type="text/event-stream")

    async def anthropic_messages(request: Request) -> Response:
        """Just enough of Anthropic's Messages API for litellm's translation to be exercised for real."""
        body = await request.json()
        stats["requests"] += 1
        log.append({"body": body, "headers": dict(request.headers), "t": time.time(), "api": "anthropic"})
        step = next_step()
        if step.get("delay"):
            await asyncio.sleep(step["delay"])
        if step.get("status"):  # Anthropic's error shape, as litellm expects to translate it
            err = {"type": "api_error", "message": f"{name}: scripted {step['status']}"}
            headers = {"retry-after": str(step["retry_after"])} if "retry_after" in step else {}
            return JSONResponse({"type": "error", "error": err}, status_code=step["status"], headers=headers)
        text = ""
        for m in reversed(body.get("messages") or []):
            if m.get("role") == "user":
                c = m.get("content")
                text = (
                    c if isinstance(c, str) else " ".join(p.get("text", "") for p in c if isinstance(p, dict))
                )
                break
        reply = f"{name}: {text}"
        usage = {"input_tokens": 11, "output_tokens": len(reply.split())}
        if not body.get("stream"):
            return JSONResponse(
                {
                    "id": "msg_1",
                    "type": "message",
                    "role": "assistant",
                    "model": body.get("model"),
                    "content": [{"type": "text", "text": reply}],
                    "stop_reason": "end_turn",
                    "stop_sequence": None,
                    "usage": usage,
                }
            )

        def event(kind: str, data: dict[str, Any]) -> bytes:
            return f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n".encode()

        pause = float(step.get("chunk_delay", 0))

        async def gen():  # type: ignore[no-untyped-def]
            stats["streams_started"] += 1
            try:
                async for part in anthropic_events():
                    yield part
                stats["streams_completed"] += 1
            except (asyncio.CancelledError, GeneratorExit):
                stats["streams_cancelled"] += 1
                raise

        async def anthropic_events():  # type: ignore[no-untyped-def]
            yield event(
                "message_start",
                {
                    "message": {
                        "id": "msg_1",
                        "type": "message",
                        "role": "assistant",
                        "model": body.get("model"),
                        "content": [],
                        "stop_reason": None,
                        "usage": {"input_tokens": 11, "output_tokens": 0},
                    }
                },
            )
            yield event("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}})
            for i, word in enumerate(reply.split(" ")):
                yield event(
                    "content_block_delta",
                    {"index": 0, "delta": {"type": "text_delta", "text": word if i == 0 else " " + word}},
                )
                if pause:
                    await asyncio.sleep(pause)
            yield event("content_block_stop", {"index": 0})
            yield event(
                "message_delta",
                {
                    "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                    "usage": {"output_tokens": usage["output_tokens"]},
                },
            )
            yield event("message_stop", {})

        return StreamingResponse(gen(), media_type="text/event-stream")

    async def models(_: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": name, "object": "model", "owned_by": "fake"}]})

    async def push_script(request: Request) -> Response:
        script.extend((await request.json())["steps"])
        return JSONResponse({"queued": len(script)})

    async def push_chaos(request: Request) -> Response:
        spec = await request.json()
        chaos["steps"] = list(spec["steps"])
        chaos["rng"] = random.Random(spec.get("seed", 0))
        return JSONResponse({"steps": len(chaos["steps"])})

    async def reset(_: Request) -> Response:
        script.clear()
        chaos["steps"] = []
        log.clear()
        for k in stats:
            stats[k] = 0
        return JSONResponse({"ok": True})

    async def get_log(_: Request) -> Response:
        return JSONResponse(log)

    async def get_stats(_: Request) -> Response:
        return JSONResponse(stats)

    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/v1/messages", anthropic_messages, methods=["POST"]),
            Route("/v1/models", models),
            Route("/_script", push_script, methods=["POST"]),
            Route("/_chaos", push_chaos, methods=["POST"]),
            Route("/_reset", reset, methods=["POST"]),
            Route("/_log", get_log),
            Route("/_stats", get_stats),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", default="fake")
    args = parser.parse_args()
    uvicorn.run(build_app(args.name), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
