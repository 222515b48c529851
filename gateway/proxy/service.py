"""Serving logic for `POST /v1/chat/completions`, independent of the web framework.

    result = await service.create_chat_completion(raw_body, headers, key)
    # result.body (bytes) or result.stream (async iterator of SSE bytes), plus result.headers

The request path in stages, each in its own module (docs/architecture.md): `protocol` parses,
`limits` refuses, `identity` names the workflow and conversation, `account` opens the ledger record,
`plan` picks model and body, `cascade` / `upstream` / `relay` get the answer, `account` prices and
finishes it, `learn` samples side calls. This class only runs them in order.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from gateway.errors import GatewayError, InternalError, ModelNotFound
from gateway.metrics import Metrics
from gateway.proxy.account import Accounts
from gateway.proxy.cascade import cascade
from gateway.proxy.identity import ConversationIndex, Identity, continuation_key, header_value, identify
from gateway.proxy.keys import KeyInfo
from gateway.proxy.learn import Learner
from gateway.proxy.limits import RateLimiter, SpendTracker, check_limits
from gateway.proxy.plan import CompiledRoutes, Plan, make_plan
from gateway.proxy.pricing import PriceBook
from gateway.proxy.protocol import (
    TIERGATE_METADATA_KEYS,
    ChatResult,
    check_fields,
    parse_body,
    replay,
    reply_message,
    sse_from_completion,
    usage_of,
)
from gateway.proxy.relay import stream
from gateway.proxy.rungs import Rungs
from gateway.proxy.toolload import ToolLoader
from gateway.proxy.transcribe import Capture
from gateway.proxy.upstream import Upstreams
from gateway.settings import Settings
from gateway.store.ledger import LedgerWriter, Record

log = logging.getLogger("tiergate.chat")


class ChatService:
    def __init__(
        self,
        settings: Settings,
        upstreams: Upstreams,
        ledger: LedgerWriter,
        prices: PriceBook,
        conversations: ConversationIndex,
        limiter: RateLimiter,
        spend: SpendTracker,
        metrics: Metrics,
        spend_seed: Callable[[str], float],
        rungs: Rungs | None = None,
    ):
        self.settings = settings
        self.upstreams = upstreams
        self.conversations = conversations
        self.limiter = limiter
        self.spend = spend
        self.metrics = metrics
        self._spend_seed = spend_seed  # callable(key_id) -> month-to-date USD from the ledger
        self.rungs = rungs  # None when no workflow has rung settings
        self.accounts = Accounts(settings, prices, ledger, metrics, spend)
        self.learner = Learner(upstreams, self.accounts, rungs)
        # the loop's compiled-route table once the loop runs (handed in by gateway.web.app.wire)
        self.loop: CompiledRoutes | None = None
        # transcript capture (gateway/proxy/transcribe.py), handed in by the app factory
        self.capture: Capture | None = None

    async def drain(self) -> None:
        """Let shadow calls in flight finish, so their ledger records and labels are not lost."""
        await self.learner.drain()

    async def create_chat_completion(
        self, raw: bytes, headers: Mapping[str, str], key: KeyInfo | None
    ) -> ChatResult:
        t0 = time.perf_counter()
        ts = time.time()
        body = parse_body(raw)
        requested = body["model"]
        requested_cfg = self.settings.model(requested)
        if requested_cfg is None:
            names = ", ".join(m.name for m in self.settings.models) or "none"
            raise ModelNotFound(
                f"The model `{requested}` does not exist in this gateway's config; configured models: {names}.",
                param="model",
            )
        await check_limits(self.limiter, self.spend, self.metrics, key, self._spend_seed)
        try:
            check_fields(raw, body)
            ident = await identify(self.conversations, body, headers, key)
        except GatewayError as exc:  # refused before any upstream call, and recorded (status 4xx)
            self.accounts.reject(body, headers, key, requested, ts, exc, t0)
            raise
        metadata = body.get("metadata")
        if isinstance(metadata, dict) and metadata and set(metadata) <= TIERGATE_METADATA_KEYS:
            body = {k: v for k, v in body.items() if k != "metadata"}  # ours, not the provider's
        record = self.accounts.open_record(ident, key, body, requested, ts)
        try:
            return await self._serve(body, headers, ident, record, requested_cfg.upstream, t0)
        except Exception as exc:  # whatever happens, the request keeps its one record
            err = exc if isinstance(exc, GatewayError) else InternalError(
                "The gateway failed on this request; see its log for the request id."
            )
            if err is not exc:
                log.exception("request %s failed", record.id)
            self.accounts.finish_error(record, err, t0)  # ignored if the record is already finished
            err.headers.setdefault("X-Request-Id", record.id)
            if err is exc:
                raise
            raise err from exc
        except asyncio.CancelledError:  # the server gave up on the request: still one record
            record.error_type = record.error_type or "client_disconnected"
            self.accounts.finish(record, t0)
            raise

    async def _serve(
        self,
        body: dict[str, Any],
        headers: Mapping[str, str],
        ident: Identity,
        record: Record,
        upstream: str,
        t0: float,
    ) -> ChatResult:
        plan = make_plan(self.settings, self.loop, self.rungs, body, headers, ident, record, upstream)
        out_headers = {
            "X-Tiergate-Workflow": header_value(ident.workflow),
            "X-Tiergate-Conversation": header_value(ident.conversation),
            "X-Request-Id": record.id,
        }
        if plan.cascade:
            done = await cascade(self._upstreams(plan, record), self.accounts, plan, record)
            if done is None:  # escalated while streaming: the frontier streams
                return await self._stream(plan, record, ident, out_headers, t0)
        elif record.stream:
            return await self._stream(plan, record, ident, out_headers, t0)
        else:
            done = await self._upstreams(plan, record).complete(plan.model, plan.body)
        record.served_model = done.model.name
        record.attempts += done.attempts - 1
        record.ttfb_ms = (time.perf_counter() - t0) * 1000
        reply = reply_message(done.parsed)
        self.accounts.account(record, plan, usage_of(done.parsed), reply)
        if self.capture is not None:
            self.capture.after(ident, plan.client_body, reply)
        await self.conversations.remember(
            continuation_key(ident.hashes, reply), ident.conversation, ident.turn, ident.workflow
        )
        self.learner.after(plan, record, done.parsed, reply, self.loop)
        self.accounts.finish(record, t0)
        out_headers["X-Tiergate-Model"] = done.model.name
        out_headers["X-Tiergate-Tier"] = record.tier
        if record.stream:  # a cascade's cheap answer passed its checks: replay it as a stream
            wants_usage = bool((plan.client_body.get("stream_options") or {}).get("include_usage"))
            return ChatResult(
                headers=out_headers, stream=replay(sse_from_completion(done.parsed, wants_usage))
            )
        return ChatResult(headers=out_headers, body=done.body)

    async def _stream(
        self, plan: Plan, record: Record, ident: Identity, out_headers: dict[str, str], t0: float
    ) -> ChatResult:
        async def on_answer(reply: dict[str, Any]) -> None:
            if self.capture is not None:
                self.capture.after(ident, plan.client_body, reply)
            await self.conversations.remember(
                continuation_key(ident.hashes, reply), ident.conversation, ident.turn, ident.workflow
            )
            self.learner.after(plan, record, {"choices": [{"index": 0, "message": reply}]}, reply, self.loop)

        ups = self._upstreams(plan, record)
        return await stream(ups, self.accounts, plan, record, out_headers, t0, on_answer)

    def _upstreams(self, plan: Plan, record: Record) -> Upstreams:
        """The upstreams, answering trimming's helper tool when the body carries it (toolload.py)."""
        return ToolLoader(self.upstreams, self.accounts, plan, record) if plan.helper else self.upstreams
