"""The app factory: `create_app(settings)` wires middleware, lifespan and routers; nothing runs at import.

app = create_app(load_settings("configs/tiergate.yaml"))
uvicorn.run(app, host="127.0.0.1", port=8080)
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from gateway.errors import GatewayError, InternalError, InvalidRequest
from gateway.metrics import Metrics
from gateway.proxy.identity import ConversationIndex
from gateway.proxy.keys import KeyCache
from gateway.proxy.limits import RateLimiter, SpendTracker
from gateway.proxy.pricing import PriceBook
from gateway.proxy.service import ChatService
from gateway.settings import Settings
from gateway.store.engine import make_engine, migrate
from gateway.store.ledger import LedgerWriter
from gateway.store.queries import month_spend
from gateway.store.redis_link import RedisLink
from gateway.web.state import AppState

log = logging.getLogger("tiergate")


def _error_response(exc: GatewayError) -> Response:
    return Response(exc.render(), status_code=exc.status, media_type="application/json", headers=exc.headers)


def create_app(settings: Settings) -> FastAPI:
    from gateway.web.routes import admin, chat, health

    metrics = Metrics.create(settings.metrics.max_workflows)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = make_engine(settings.storage.url)
        migrate(engine)
        prices = PriceBook.from_settings(settings)
        if prices.unpriced:
            log.warning(
                "no price known for %s; their cost is recorded as 0. Add `price:` to these models in %s",
                ", ".join(f"`{n}`" for n in prices.unpriced),
                settings.source,
            )
        ledger = LedgerWriter(
            engine,
            batch_size=settings.ledger.batch_size,
            flush_interval=settings.ledger.flush_interval_ms / 1000,
            queue_max=settings.ledger.queue_max,
            degraded_seconds=settings.ledger.degraded_seconds,
            dead_letter_file=settings.ledger.dead_letter_file,
            on_problem=metrics.ledger_problem,
        )
        await ledger.start()
        from gateway.proxy.transcribe import Capture, known_secrets
        from gateway.store.transcripts import TranscriptWriter

        transcripts = TranscriptWriter(engine, degraded_seconds=settings.ledger.degraded_seconds,
                                       on_drop=metrics.capture_drop)
        await transcripts.start()
        link = RedisLink(settings.storage.redis_url)
        from gateway.proxy.upstream import Upstreams

        upstreams = Upstreams(settings)
        await upstreams.start()
        from gateway.proxy.rungs import Rungs

        rungs = Rungs.from_settings(settings, engine, prices)
        await rungs.start(settings.server.state_refresh_seconds)
        service = ChatService(
            settings,
            upstreams,
            ledger,
            prices,
            ConversationIndex(link),
            RateLimiter(link),
            SpendTracker(link),
            metrics,
            spend_seed=lambda key_id: month_spend(engine, key_id),
            rungs=rungs,
        )
        service.capture = Capture(settings, transcripts, known_secrets(settings))
        app.state.tg = AppState(
            settings=settings,
            engine=engine,
            ledger=ledger,
            chat=service,
            keys=KeyCache(engine, settings.auth.key_cache_seconds),
            redis=link,
            metrics=metrics,
            prices=prices,
            transcripts=transcripts,
        )
        try:
            yield
        finally:
            await service.drain()
            await rungs.stop()
            await ledger.stop()
            await transcripts.stop()  # after the drain: every accepted turn is written
            log.info("ledger flushed: %d records written this run", ledger.written)
            await upstreams.close()
            await link.close()
            engine.dispose()

    guarded = settings.metrics.require_admin_key  # /metrics, /docs, /openapi.json behind the admin key
    app = FastAPI(
        title="tiergate",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None if guarded else "/docs",
        openapi_url=None if guarded else "/openapi.json",
        redoc_url=None,
        strict_content_type=False,  # a body with no Content-Type is read as JSON; a wrong one is a 415 (guard.py)
    )
    if guarded:
        _guarded_docs(app)
    from gateway.web.guard import Guard

    # open mode answers this machine only; JSON endpoints refuse bodies declared as something else
    app.add_middleware(Guard, open_mode=settings.admin_key is None, bound_host=settings.server.host)

    @app.exception_handler(GatewayError)
    async def _gateway_error(_request: Request, exc: GatewayError) -> Response:
        if exc.log_level >= logging.WARNING:
            log.log(exc.log_level, "%s: %s", type(exc).__name__, exc.message)
        return _error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> Response:
        err = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        return _error_response(InvalidRequest(f"`{loc or 'body'}`: {err.get('msg')}", param=loc or None))

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> Response:
        # a bug of ours still answers in the OpenAI shape; the traceback goes to the log, not the client
        log.error("unhandled %s", type(exc).__name__, exc_info=exc)
        return _error_response(InternalError("The gateway failed on this request; see its log."))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> Response:
        err = InvalidRequest(str(exc.detail))
        err.status = exc.status_code  # type: ignore[misc]
        return _error_response(err)

    app.include_router(chat.router)
    app.include_router(health.router)
    app.include_router(admin.router)
    wire(app)  # payback, proposals, compile jobs, canary and the dashboard (gateway/loop/)
    return app


def _guarded_docs(app: FastAPI) -> None:
    """/openapi.json and /docs behind the admin key (`metrics.require_admin_key`).

    The Swagger page fetches /openapi.json itself, without the key: open it through a proxy that adds
    the header, or read /openapi.json with the key directly.
    """
    from fastapi.openapi.docs import get_swagger_ui_html

    from gateway.web.deps import Admin

    @app.get("/openapi.json", include_in_schema=False, dependencies=[Admin])
    async def openapi() -> Response:
        import orjson

        return Response(orjson.dumps(app.openapi()), media_type="application/json")

    @app.get("/docs", include_in_schema=False, dependencies=[Admin])
    async def docs() -> Response:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="tiergate")


def wire(app: Any) -> None:
    """Add the loop to an app from `create_app`: its API, dashboard, static files and task.

    Idempotent, so the demo and the tests can call it whether or not the factory already did. The
    loop's handle is handed to the chat service here: the request path reads the compiled-route
    table through `gateway.proxy.plan.CompiledRoutes` and never imports the loop.
    """
    from fastapi.staticfiles import StaticFiles

    from gateway.loop.runner import start_loop
    from gateway.web.routes import dashboard
    from gateway.web.routes import loop as loop_routes

    if getattr(app.state, "loop_wired", False) or any(
        getattr(r, "path", None) == "/api/proposals" for r in app.router.routes
    ):
        return
    app.state.loop_wired = True
    app.include_router(loop_routes.router)
    app.include_router(dashboard.router)
    from gateway.web.routes import mined

    app.include_router(mined.router)  # the mined graph of a workflow without a flowchart
    app.include_router(mined.api)
    app.mount("/dashboard/static", StaticFiles(packages=[("gateway.web", "static")]), name="dashboard-static")
    inner = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(a: Any) -> AsyncIterator[Any]:
        async with inner(a) as maybe_state:
            a.state.loop = await start_loop(a.state.tg)
            a.state.tg.chat.loop = a.state.loop  # the compiled-route table, read with no I/O
            try:
                yield maybe_state
            finally:
                await a.state.loop.stop()

    app.router.lifespan_context = lifespan
