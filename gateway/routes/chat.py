"""OpenAI-compatible endpoints: chat completions and the model list."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from gateway.deps import client_key, state
from gateway.errors import BodyTooLarge

router = APIRouter()


async def read_body(request: Request, cap: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > cap:
        raise BodyTooLarge(
            f"The request body is {int(declared)} bytes; this gateway accepts at most {cap} bytes."
        )
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > cap:
            raise BodyTooLarge(
                f"The request body exceeds {cap} bytes, this gateway's limit (server.max_body_bytes)."
            )
        chunks.append(chunk)
    return b"".join(chunks)


@router.post("/v1/chat/completions")
@router.post("/chat/completions", include_in_schema=False)
async def create_chat_completion(request: Request) -> Response:
    st = state(request)
    key = await client_key(request)
    raw = await read_body(request, st.settings.server.max_body_bytes)
    result = await st.chat.create_chat_completion(raw, request.headers, key)
    if result.stream is not None:
        headers = {**result.headers, "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return StreamingResponse(result.stream, media_type="text/event-stream", headers=headers)
    return Response(result.body, media_type="application/json", headers=result.headers)


@router.get("/v1/models")
@router.get("/models", include_in_schema=False)
async def list_models(request: Request) -> Response:
    st = state(request)
    await client_key(request)
    created = int(time.time())
    data = [
        {"id": m.name, "object": "model", "created": created, "owned_by": m.provider, "upstream": m.upstream}
        for m in st.settings.models
    ]
    import orjson

    return Response(orjson.dumps({"object": "list", "data": data}), media_type="application/json")
