"""The JSON admin API under /api/: workflows read-back and virtual key management."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from gateway.errors import NotFound
from gateway.proxy.keys import KeyCreate, KeyCreated, KeyPublic, create_key, list_keys, revoke_key
from gateway.store.queries import conversations, workflow_exists, workflow_summaries
from gateway.store.transcripts import export_lines
from gateway.web.deps import Admin, State

router = APIRouter(prefix="/api", dependencies=[Admin])


@router.get("/workflows")
async def get_workflows(st: State) -> dict[str, Any]:
    return {"data": await asyncio.to_thread(workflow_summaries, st.engine)}


@router.get("/workflows/{workflow_id}/conversations")
async def get_conversations(
    workflow_id: str, st: State, limit: int = Query(100, ge=1, le=1000), offset: int = Query(0, ge=0)
) -> dict[str, Any]:
    rows = await asyncio.to_thread(conversations, st.engine, workflow_id, limit=limit, offset=offset)
    if not rows and not await asyncio.to_thread(workflow_exists, st.engine, workflow_id):
        raise NotFound(f"No workflow `{workflow_id}` in the ledger; list them with GET /api/workflows.")
    return {"workflow": workflow_id, "data": rows}


@router.get("/workflows/{workflow_id}/export")
async def export_workflow(
    workflow_id: str,
    st: State,
    since: float | None = Query(None, description="unix seconds: conversations started on or after"),
    limit: int | None = Query(None, ge=1),
) -> StreamingResponse:
    """The workflow's captured conversations as JSONL (OpenAI chat format), streamed one a line."""
    lines = export_lines(st.engine, workflow_id, since=since, limit=limit)

    async def body() -> AsyncIterator[bytes]:
        while True:  # each page of conversations is read in a worker thread, never on the event loop
            chunk = await asyncio.to_thread(_next_chunk, lines)
            if not chunk:
                return
            yield chunk

    name = quote(workflow_id, safe="")
    return StreamingResponse(
        body(),
        media_type="application/x-ndjson",
        headers={"Content-Disposition": f"attachment; filename*=UTF-8''{name}.jsonl"},
    )


def _next_chunk(lines: Iterator[bytes], size: int = 64) -> bytes:
    out = []
    for line in lines:
        out.append(line)
        if len(out) >= size:
            break
    return b"".join(out)


@router.post("/keys", status_code=201)
async def post_key(spec: KeyCreate, st: State) -> KeyCreated:
    return await asyncio.to_thread(create_key, st.engine, spec)


@router.get("/keys")
async def get_keys(st: State) -> dict[str, list[KeyPublic]]:
    return {"data": await asyncio.to_thread(list_keys, st.engine)}


@router.delete("/keys/{key_id}")
async def delete_key(key_id: str, st: State) -> dict[str, Any]:
    if not await asyncio.to_thread(revoke_key, st.engine, key_id):
        raise NotFound(f"No active key `{key_id}`; list keys with GET /api/keys.")
    st.keys.forget_all()
    return {"id": key_id, "revoked": True}
