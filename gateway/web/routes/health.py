"""Liveness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.web.deps import state

router = APIRouter()


@router.get("/healthz")
async def healthz(request: Request) -> JSONResponse:
    st = state(request)
    return JSONResponse(
        {
            "status": "ok",
            "ledger_pending": st.ledger.pending,
            "ledger_written": st.ledger.written,
            "redis": st.redis.status(),
            "models": len(st.settings.models),
        }
    )


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    st = state(request)
    st.metrics.ledger_pending.set(st.ledger.pending)
    st.metrics.redis_degraded.set(1 if st.redis.degraded else 0)
    return Response(generate_latest(st.metrics.registry), media_type=CONTENT_TYPE_LATEST)
