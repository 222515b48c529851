"""Serving logic for `POST /v1/chat/completions`, independent of the web framework.

    result = await service.create_chat_completion(raw_body, headers, key)
    # result.body (bytes) or result.stream (async iterator of SSE bytes), plus result.headers

The request body is validated only as far as the gateway needs it (`model`, `messages`, `stream`);
every other field passes through to the upstream untouched.
"""

from __future__ import annotations

import asyncio
import logging
import time
import os
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway.conversations import ConversationIndex
from gateway.errors import BudgetExceeded, GatewayError, InvalidRequest, ModelNotFound, RateLimited
from gateway.identity import (
    content_text,
    continuation_key,
    fingerprint_workflow,
    prefix_hashes,
    stitch_candidates,
)
from gateway.keys import KeyInfo
from gateway.ledger import LedgerWriter, Record
from gateway.metrics import Metrics
from gateway.pricing import PriceBook
from gateway.ratelimit import RateLimiter, SpendTracker
from gateway.settings import Settings
from gateway.tokens import count_prompt_tokens, count_text
from gateway.upstream import Upstreams

log = logging.getLogger("tiergate.chat")

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
TIERGATE_METADATA_KEYS = frozenset({"workflow", "conversation"})


@dataclass
class ChatResult:
    headers: dict[str, str]
    body: bytes | None = None
    stream: AsyncIterator[bytes] | None = None
    status: int = 200


@dataclass
class Identity:
    workflow: str
    workflow_source: str
    fingerprint: str
    conversation: str
    turn: int
    hashes: list[str] = field(default_factory=list)


def parse_body(raw: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(
            f"The request body is not valid JSON ({exc.args[0] if exc.args else exc}); send a JSON object."
        ) from None
    if not isinstance(body, dict):
        raise InvalidRequest(f"The request body must be a JSON object, not {type(body).__name__}.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("`model` is required and must be a non-empty string.", param="model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("`messages` is required and must be a non-empty array of message objects.", param="messages")
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise InvalidRequest(f"`messages[{i}]` must be an object with `role` and `content`.", param=f"messages[{i}]")
        role = m.get("role")
        if role not in ROLES:
            raise InvalidRequest(
                f"`messages[{i}].role` is `{role}`; use one of {', '.join(sorted(ROLES))}.", param=f"messages[{i}].role"
            )
    if "stream" in body and body["stream"] is not None and not isinstance(body["stream"], bool):
        raise InvalidRequest("`stream` must be a boolean.", param="stream")
    tools = body.get("tools")
    if tools is not None and not isinstance(tools, list):
        raise InvalidRequest("`tools` must be an array of tool objects.", param="tools")
    return body


def usage_of(parsed: Mapping[str, Any]) -> tuple[int, int, int] | None:
    usage = parsed.get("usage")
    if not isinstance(usage, dict) or "prompt_tokens" not in usage:
        return None
    details = usage.get("prompt_tokens_details") or {}
    cached = details.get("cached_tokens") if isinstance(details, dict) else 0
    return int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0), int(cached or 0)


def reply_message(parsed: Mapping[str, Any]) -> dict[str, Any]:
    choices = parsed.get("choices") or []
    if choices and isinstance(choices[0], dict):
        msg = choices[0].get("message")
        if isinstance(msg, dict):
            return msg
    return {"role": "assistant", "content": ""}


class StreamAccumulator:
    """Follows an SSE stream: usage, the first choice's reply (for stitching), and whether to hide a chunk."""

    def __init__(self, client_wants_usage: bool):
        self.client_wants_usage = client_wants_usage
        self.usage: tuple[int, int, int] | None = None
        self.content: list[str] = []
        self.tool_calls: dict[int, dict[str, Any]] = {}
        self.done = False

    def feed(self, data: bytes) -> bool:
        """Take one `data:` payload; return False when the client must not see it."""
        if data.strip() == b"[DONE]":
            self.done = True
            return True
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            return True
        if not isinstance(chunk, dict):
            return True
        usage = usage_of(chunk)
        if usage is not None:
            self.usage = usage
        choices = chunk.get("choices") or []
        for choice in choices:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            if delta.get("content"):
                self.content.append(delta["content"])
            for tc in delta.get("tool_calls") or ():
                slot = self.tool_calls.setdefault(int(tc.get("index", 0)), {"name": "", "arguments": ""})
                fn = tc.get("function") or {}
                if fn.get("name"):
                    slot["name"] += fn["name"]
                if fn.get("arguments"):
                    slot["arguments"] += fn["arguments"]
        if usage is not None and not choices and not self.client_wants_usage:
            return False
        if usage is not None and not self.client_wants_usage:
            # usage riding on a content chunk (some servers do that): keep the chunk, drop the usage
            return True
        return True

    def reply(self) -> dict[str, Any]:
        msg: dict[str, Any] = {"role": "assistant", "content": "".join(self.content)}
        if self.tool_calls:
            msg["tool_calls"] = [
                {"type": "function", "function": {"name": v["name"], "arguments": v["arguments"]}}
                for _, v in sorted(self.tool_calls.items())
            ]
        return msg


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
        spend_seed: Any,
    ):
        self.settings = settings
        self.upstreams = upstreams
        self.ledger = ledger
        self.prices = prices
        self.conversations = conversations
        self.limiter = limiter
        self.spend = spend
        self.metrics = metrics
        self._spend_seed = spend_seed  # callable(key_id) -> month-to-date USD from the ledger

    # ------------------------------------------------------------------ identity

    async def identify(self, body: dict[str, Any], headers: Mapping[str, str], key: KeyInfo | None) -> Identity:
        messages = body["messages"]
        auto_name, fingerprint = fingerprint_workflow(messages, body.get("tools"))
        metadata = body.get("metadata") if isinstance(body.get("metadata"), dict) else {}
        workflow, source = auto_name, "fingerprint"
        if headers.get("x-tiergate-workflow"):
            workflow, source = headers["x-tiergate-workflow"][:200], "header"
        elif isinstance(metadata.get("workflow"), str) and metadata["workflow"]:
            workflow, source = metadata["workflow"][:200], "metadata"
        elif key is not None and key.workflow:
            workflow, source = key.workflow, "key"
        hashes = prefix_hashes(messages)
        earlier = await self.conversations.lookup(stitch_candidates(messages, hashes))
        explicit = headers.get("x-tiergate-conversation") or (
            metadata.get("conversation") if isinstance(metadata.get("conversation"), str) else None
        )
        if explicit:
            conversation = explicit[:64]
            turn = earlier[1] + 1 if earlier else 1 + sum(1 for m in messages if m.get("role") == "assistant")
        elif earlier:
            conversation, turn = earlier[0], earlier[1] + 1
        else:
            conversation, turn = os.urandom(16).hex(), 1
        return Identity(workflow, source, fingerprint, conversation, turn, hashes)

    # ------------------------------------------------------------------ limits

    async def check_limits(self, key: KeyInfo | None) -> None:
        if key is None:
            return
        if key.rate_limit_rpm:
            allowed, reset = await self.limiter.hit(key.id, key.rate_limit_rpm)
            if not allowed:
                self.metrics.rejected.labels("rate_limit").inc()
                raise RateLimited(
                    f"Rate limit of {key.rate_limit_rpm} requests per minute reached for this key; retry in {reset}s.",
                    headers={"Retry-After": str(reset)},
                )
        if key.monthly_budget_usd:
            spent = await self.spend.spent(key.id, self._spend_seed(key.id))
            if spent >= key.monthly_budget_usd:
                self.metrics.rejected.labels("budget").inc()
                raise BudgetExceeded(
                    f"This key's monthly budget of ${key.monthly_budget_usd:.2f} is spent (${spent:.2f}); "
                    "raise the budget or wait for next month."
                )

    # ------------------------------------------------------------------ the call

    async def create_chat_completion(
        self, raw: bytes, headers: Mapping[str, str], key: KeyInfo | None
    ) -> ChatResult:
        t0 = time.perf_counter()
        ts = time.time()
        body = parse_body(raw)
        requested = body["model"]
        if self.settings.model(requested) is None:
            names = ", ".join(m.name for m in self.settings.models) or "none"
            raise ModelNotFound(
                f"The model `{requested}` does not exist in this gateway's config; configured models: {names}.",
                param="model",
            )
        await self.check_limits(key)
        ident = await self.identify(body, headers, key)
        metadata = body.get("metadata")
        if isinstance(metadata, dict) and metadata and set(metadata) <= TIERGATE_METADATA_KEYS:
            body = {k: v for k, v in body.items() if k != "metadata"}  # ours, not the provider's
        record = Record(
            id=os.urandom(16).hex(),
            ts=ts,
            workflow=ident.workflow,
            conversation=ident.conversation,
            turn=ident.turn,
            key_id=key.id if key else None,
            requested_model=requested,
            served_model=None,
            tier="frontier",
            stream=bool(body.get("stream")),
            prompt_fingerprint=ident.fingerprint,
            config_hash=self.settings.digest or None,
            workflow_source=ident.workflow_source,
        )
        out_headers = {
            "X-Tiergate-Workflow": ident.workflow,
            "X-Tiergate-Conversation": ident.conversation,
            "X-Tiergate-Tier": record.tier,
            "X-Request-Id": record.id,
        }
        if record.stream:
            return await self._stream(body, record, ident, out_headers, t0)
        try:
            done = await self.upstreams.complete(requested, body)
        except GatewayError as exc:
            self._finish_error(record, exc, t0)
            raise
        record.served_model = done.model.name
        record.attempts = done.attempts
        record.ttfb_ms = (time.perf_counter() - t0) * 1000
        reply = reply_message(done.parsed)
        self._account(record, body, usage_of(done.parsed), lambda: content_text(reply.get("content")))
        await self.conversations.remember(continuation_key(ident.hashes, reply), ident.conversation, ident.turn)
        self._finish(record, t0)
        out_headers["X-Tiergate-Model"] = done.model.name
        return ChatResult(headers=out_headers, body=done.body)

    async def _stream(
        self, body: dict[str, Any], record: Record, ident: Identity, out_headers: dict[str, str], t0: float
    ) -> ChatResult:
        try:
            opened = await self.upstreams.open_stream(record.requested_model, body)
        except GatewayError as exc:
            self._finish_error(record, exc, t0)
            raise
        record.served_model = opened.model.name
        record.attempts = opened.attempts
        out_headers["X-Tiergate-Model"] = opened.model.name
        wants_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        acc = StreamAccumulator(wants_usage)

        async def relay() -> AsyncIterator[bytes]:
            finished = False
            try:
                async for line in opened.lines:
                    if record.ttfb_ms is None:
                        record.ttfb_ms = (time.perf_counter() - t0) * 1000
                    if line.startswith(b"data:"):
                        if not acc.feed(line[5:].strip()):
                            continue
                        yield line.rstrip(b"\r\n") + b"\n\n"
                    elif line.strip():
                        yield line
                finished = True
            except GatewayError as exc:
                record.status = 200  # headers were sent: the client saw a 200 and a cut stream
                record.error_type = exc.error_type
                log.warning("stream from %s broke: %s", opened.model.name, exc.message)
                yield b"data: " + exc.render() + b"\n\n"
            finally:
                if not finished and record.error_type is None:
                    record.error_type = "client_disconnected"
                if opened.close is not None and not finished:
                    opened.close()  # drop the upstream connection: stops the generation we won't read
                reply = acc.reply()
                self._account(record, body, acc.usage, lambda: content_text(reply.get("content")) + "".join(
                    tc["function"]["arguments"] for tc in reply.get("tool_calls", ())
                ))
                if finished:
                    await self.conversations.remember(
                        continuation_key(ident.hashes, reply), ident.conversation, ident.turn
                    )
                self._finish(record, t0)

        return ChatResult(headers=out_headers, stream=relay())

    # ------------------------------------------------------------------ accounting

    def _account(self, record: Record, body: dict[str, Any], usage: tuple[int, int, int] | None, reply_text: Any) -> None:
        if usage is None:
            model_for_count = (self.settings.model(record.served_model or record.requested_model) or self.settings.models[0]).upstream
            prompt = count_prompt_tokens(model_for_count, body["messages"], body.get("tools"))
            completion = count_text(model_for_count, reply_text())
            usage = (prompt, completion, 0)
            record.tokens_estimated = True
        record.prompt_tokens, record.completion_tokens, record.cached_tokens = usage
        served = record.served_model or record.requested_model
        kw = {"prompt": usage[0], "completion": usage[1], "cached": usage[2]}
        record.cost_usd = self.prices.cost(served, **kw)
        record.baseline_cost_usd = self.prices.cost(record.requested_model, **kw)

    def _finish_error(self, record: Record, exc: GatewayError, t0: float) -> None:
        record.status = exc.status
        record.error_type = exc.error_type
        record.attempts = getattr(exc, "attempts", record.attempts)
        self._finish(record, t0)

    def _finish(self, record: Record, t0: float) -> None:
        record.latency_ms = (time.perf_counter() - t0) * 1000
        self.ledger.submit(record)
        m = self.metrics
        labels = (record.workflow, record.served_model or record.requested_model, record.tier)
        m.requests.labels(*labels, str(record.status)).inc()
        m.latency.labels(*labels).observe(record.latency_ms / 1000)
        if record.ttfb_ms is not None:
            m.ttfb.labels(*labels).observe(record.ttfb_ms / 1000)
        if record.prompt_tokens:
            m.tokens.labels(*labels, "prompt").inc(record.prompt_tokens)
        if record.completion_tokens:
            m.tokens.labels(*labels, "completion").inc(record.completion_tokens)
        if record.cached_tokens:
            m.tokens.labels(*labels, "cached").inc(record.cached_tokens)
        if record.cost_usd:
            m.cost.labels(*labels).inc(record.cost_usd)
        if record.baseline_cost_usd:
            m.baseline_cost.labels(*labels).inc(record.baseline_cost_usd)
        if record.key_id and record.cost_usd:
            asyncio.get_running_loop().create_task(self.spend.add(record.key_id, record.cost_usd))
