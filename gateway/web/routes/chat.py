"""OpenAI-compatible endpoints: chat completions and the model list."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.requests import ClientDisconnect

from gateway.errors import BodyTooLarge, ClientGone
from gateway.web.deps import client_key, state

router = APIRouter()


class RelayResponse(Response):
    """Server-sent events relayed as they come, for ASGI servers on spec 2.3 (uvicorn).

    Starlette's StreamingResponse runs each stream in an anyio task group with a second task listening
    for the disconnect; that cost ~0.5 ms per streamed request here (py-spy, bench/overhead). One
    future on `receive()` does the same job: once the client has gone, the next chunk is not sent and
    the relay is closed, which closes the upstream connection and stops the generation.
    """

    media_type = "text/event-stream"

    def __init__(self, chunks: AsyncIterator[bytes], headers: dict[str, str]):
        # no Response.__init__: it would add `content-length: 0` for the empty body
        self.status_code = 200
        self.background = None
        self.chunks = chunks
        self.raw_headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
        self.raw_headers.append((b"content-type", b"text/event-stream; charset=utf-8"))

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        task = asyncio.current_task()
        left = ending = False

        def on_gone(fut: asyncio.Future[Any]) -> None:
            # A client that leaves while the upstream is silent must not wait for the next chunk (or
            # the upstream's timeout): cancel this task at once; the relay's close drops the upstream.
            nonlocal left
            if not ending and not fut.cancelled() and task is not None:
                left = True
                task.cancel()

        gone = asyncio.ensure_future(receive())  # the body was read: this resolves only on disconnect
        gone.add_done_callback(on_gone)
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            async for chunk in self.chunks:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            ending = True
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if not left:
                raise
            if task is not None:
                task.uncancel()
        except OSError:  # the client's socket failed mid-write: the same as leaving
            pass
        finally:
            ending = True
            gone.remove_done_callback(on_gone)
            gone.cancel()
            await self.chunks.aclose()  # type: ignore[attr-defined]


async def read_body(request: Request, cap: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > cap:
        raise BodyTooLarge(
            f"The request body is {int(declared)} bytes; this gateway accepts at most {cap} bytes."
        )
    chunks = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > cap:
                raise BodyTooLarge(
                    f"The request body exceeds {cap} bytes, this gateway's limit (server.max_body_bytes)."
                )
            chunks.append(chunk)
    except ClientDisconnect:  # gone before its request was read: nothing was sent upstream, no record
        raise ClientGone("The client closed the connection before sending its whole request.") from None
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
        return RelayResponse(result.stream, headers)
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
