"""Liveness and Prometheus metrics.

`/healthz` answers 200 while the process serves; its `status` is `degraded` while the ledger is
refusing, losing or holding records (`ledger` says which), or for `ledger.degraded_seconds` after
capture dropped a conversation turn (`capture`: turns written, dropped, waiting; the requests
themselves were served and recorded). `/metrics` needs the admin key when
`metrics.require_admin_key` is set.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.web.deps import require_admin, state

router = APIRouter()


@router.get("/healthz")
async def healthz(request: Request) -> JSONResponse:
    st = state(request)
    ledger = st.ledger.health()
    capture = st.transcripts.health() if st.transcripts is not None else None
    bad = ledger["status"] != "ok" or (capture is not None and capture["status"] != "ok")
    return JSONResponse(
        {
            "status": "degraded" if bad else "ok",
            "ledger": ledger,
            "capture": capture,
            "ledger_pending": st.ledger.pending,
            "ledger_written": st.ledger.written,
            "redis": st.redis.status(),
            "models": len(st.settings.models),
        }
    )


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    st = state(request)
    if st.settings.metrics.require_admin_key:
        await require_admin(request)
    st.metrics.ledger_pending.set(st.ledger.pending)
    st.metrics.ledger_degraded.set(1 if st.ledger.degraded else 0)
    st.metrics.redis_degraded.set(1 if st.redis.degraded else 0)
    return Response(generate_latest(st.metrics.registry), media_type=CONTENT_TYPE_LATEST)
