"""A fake teacher: an OpenAI-compatible chat server on a loopback port that answers like a compliant LLM.

    python tests/compiler/fake_teacher.py --port 9102

tests/fake_upstream.py answers `<name>: <last user text>` or scripted replies taken in arrival order;
neither stays on a flowchart node, and arrival order is not fixed when the teacher runs conversations
in parallel. This one reads the prompt instead, as a real teacher would: asked for a node's turn
(`Say essentially: "..."`) it paraphrases the template (sentences reversed, a lead-in added); asked to
play the customer (`A message like this would do: "..."`) it rewords the example. Usage is counted
from characters (4 per token).

Control (JSON to `POST /_control`, which also resets the counters):
    fail_from          requests numbered from this one on (1-based) answer 503: an outage
    off_node_first     the first N node-turn requests get an off-node reply ("I like turtles.")
    off_node_match     node-turn requests whose template contains this text always get the off-node reply
    delay              seconds each answer waits (to see concurrency)
    usage_scale        multiply reported usage (a teacher that costs more than estimated)
`GET /_stats`: requests, teacher_requests, simulator_requests, failed, max_in_flight.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import time
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

OFF_NODE = "I like turtles."
_TEMPLATE = re.compile(r'Say essentially: "(.*?)"\. ', re.S)
_EXAMPLE = re.compile(r'A message like this would do: "(.*?)"\. Output only', re.S)
_TASK = re.compile(r"Your next reply must do this: (.*?)\. Known values", re.S)


def paraphrase(template: str) -> str:
    """The template's sentences in reverse order after a lead-in: same content, other wording."""
    sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+", template.strip()) if s.strip()]
    return "Certainly. " + " ".join(reversed(sentences))


def build_app() -> Starlette:
    control: dict[str, Any] = {}
    stats = {"requests": 0, "teacher_requests": 0, "simulator_requests": 0, "failed": 0, "in_flight": 0,
             "max_in_flight": 0, "off_node": 0}

    def answer(body: dict[str, Any]) -> str:
        system = str((body.get("messages") or [{}])[0].get("content") or "")
        example = _EXAMPLE.search(system)
        if example:
            stats["simulator_requests"] += 1
            return "Well, " + example.group(1)
        stats["teacher_requests"] += 1
        template = _TEMPLATE.search(system)
        task = _TASK.search(system)
        text = template.group(1) if template else task.group(1) if task else system
        off = control.get("off_node_match")
        if (off and off in text) or stats["off_node"] < int(control.get("off_node_first") or 0):
            stats["off_node"] += 1
            return OFF_NODE
        return paraphrase(text)

    async def chat(request: Request) -> Response:
        body = await request.json()
        stats["requests"] += 1
        number = stats["requests"]
        stats["in_flight"] += 1
        stats["max_in_flight"] = max(stats["max_in_flight"], stats["in_flight"])
        try:
            if control.get("delay"):
                await asyncio.sleep(float(control["delay"]))
            fail_from = control.get("fail_from")
            if fail_from is not None and number >= int(fail_from):
                stats["failed"] += 1
                return JSONResponse(
                    {"error": {"message": "fake teacher: scripted outage", "type": "server_error", "param": None,
                               "code": "unavailable"}},
                    status_code=503,
                )
            reply = answer(body)
        finally:
            stats["in_flight"] -= 1
        scale = float(control.get("usage_scale") or 1)
        prompt = int(sum(len(str(m.get("content") or "")) for m in body.get("messages") or []) / 4 * scale)
        completion = int(max(1, len(reply) // 4) * scale)
        return JSONResponse({
            "id": f"chatcmpl-{number}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
        })

    async def set_control(request: Request) -> Response:
        control.clear()
        control.update(await request.json())
        for key in stats:
            stats[key] = 0
        return JSONResponse({"ok": True})

    async def get_stats(_: Request) -> Response:
        return JSONResponse(stats)

    async def models(_: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": "fake-teacher", "object": "model"}]})

    return Starlette(routes=[
        Route("/v1/chat/completions", chat, methods=["POST"]),
        Route("/chat/completions", chat, methods=["POST"]),
        Route("/_control", set_control, methods=["POST"]),
        Route("/_stats", get_stats),
        Route("/v1/models", models),
    ])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(build_app(), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
