"""Serving logic for `POST /v1/chat/completions`, independent of the web framework.

    result = await service.create_chat_completion(raw_body, headers, key)
    # result.body (bytes) or result.stream (async iterator of SSE bytes), plus result.headers

The request body is validated only as far as the gateway needs it (`model`, `messages`, `stream`);
every other field passes through to the upstream untouched.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway import canary
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
from gateway.rungs import stage_of
from gateway.settings import Settings
from gateway.tokens import count_prompt_tokens, count_text
from gateway.upstream import Upstreams
from router import CascadeVerdict, check_cascade, compare_answers

log = logging.getLogger("tiergate.chat")

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
TIERGATE_METADATA_KEYS = frozenset({"workflow", "conversation"})


@dataclass
class ChatResult:
    headers: dict[str, str]
    body: bytes | None = None
    stream: AsyncIterator[bytes] | None = None
    status: int = 200


JUDGE_RUBRIC = """You grade whether answer B is as good as answer A for the user's request.
As good means: it reaches the same outcome, states no wrong facts, and needs no follow-up that A avoids.
Style and length do not matter. Reply with exactly one word: YES or NO.

Request:
{question}

Answer A:
{a}

Answer B:
{b}
"""


def word_overlap(a: str, b: str) -> float:
    """Word-set overlap of two answers, 0..1: the score when neither tool calls nor exact text decide."""
    wa, wb = set(a.lower().split()), set(b.lower().split())
    if not wa and not wb:
        return 1.0
    return len(wa & wb) / len(wa | wb)


@dataclass
class Plan:
    """What this request will send where, after trimming and routing."""

    model: str
    body: dict[str, Any]
    client_body: dict[str, Any]
    cascade: bool = False
    removed_tokens: int = 0
    runtime: Any = None


def sse_from_completion(parsed: Mapping[str, Any], include_usage: bool) -> list[bytes]:
    """A complete answer as OpenAI stream chunks: one delta per choice, then usage if asked, then [DONE]."""
    base = {
        "id": parsed.get("id"),
        "object": "chat.completion.chunk",
        "created": parsed.get("created"),
        "model": parsed.get("model"),
    }
    out = []
    for choice in parsed.get("choices") or ():
        msg = dict(choice.get("message") or {})
        delta: dict[str, Any] = {"role": "assistant", "content": msg.get("content")}
        if msg.get("tool_calls"):
            delta["tool_calls"] = [{**tc, "index": i} for i, tc in enumerate(msg["tool_calls"])]
        chunk = {
            **base,
            "choices": [{"index": choice.get("index", 0), "delta": delta, "finish_reason": None}],
        }
        out.append(b"data: " + orjson.dumps(chunk) + b"\n\n")
        end = {
            **base,
            "choices": [
                {
                    "index": choice.get("index", 0),
                    "delta": {},
                    "finish_reason": choice.get("finish_reason") or "stop",
                }
            ],
        }
        out.append(b"data: " + orjson.dumps(end) + b"\n\n")
    if include_usage and parsed.get("usage"):
        out.append(b"data: " + orjson.dumps({**base, "choices": [], "usage": parsed["usage"]}) + b"\n\n")
    out.append(b"data: [DONE]\n\n")
    return out


async def _replay(chunks: list[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


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
        raise InvalidRequest(
            "`messages` is required and must be a non-empty array of message objects.", param="messages"
        )
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise InvalidRequest(
                f"`messages[{i}]` must be an object with `role` and `content`.", param=f"messages[{i}]"
            )
        role = m.get("role")
        if role not in ROLES:
            raise InvalidRequest(
                f"`messages[{i}].role` is `{role}`; use one of {', '.join(sorted(ROLES))}.",
                param=f"messages[{i}].role",
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

    def reframe(self, lines: list[bytes]) -> bytes:
        """Complete SSE lines in, the bytes the client gets out: each event ends in a blank line."""
        out = bytearray()
        for line in lines:
            if line.startswith(b"data:"):
                if self.feed(line[5:].strip()):
                    out += line.rstrip(b"\r") + b"\n\n"
            elif line.strip():
                out += line.rstrip(b"\r") + b"\n"
        return bytes(out)

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
        rungs: Any = None,
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
        self.rungs = rungs  # gateway.rungs.Rungs, or None when no workflow has rung settings
        # gateway.loop.LoopHandle once the loop runs: the compiled-route table (read with no I/O) and
        # where canary comparisons go
        self.loop: Any = None
        self._shadows: set[asyncio.Task[None]] = set()

    async def drain(self) -> None:
        """Let shadow calls in flight finish, so their ledger records and labels are not lost."""
        if self._shadows:
            await asyncio.gather(*self._shadows, return_exceptions=True)

    # ------------------------------------------------------------------ identity

    async def identify(
        self, body: dict[str, Any], headers: Mapping[str, str], key: KeyInfo | None
    ) -> Identity:
        messages = body["messages"]
        auto_name, fingerprint = fingerprint_workflow(messages, body.get("tools"))
        metadata: dict[str, Any] = body["metadata"] if isinstance(body.get("metadata"), dict) else {}
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
        requested_cfg = self.settings.model(requested)
        if requested_cfg is None:
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
        plan = self._plan(body, headers, ident, record, requested_cfg.upstream)
        out_headers = {
            "X-Tiergate-Workflow": ident.workflow,
            "X-Tiergate-Conversation": ident.conversation,
            "X-Request-Id": record.id,
        }
        try:
            if plan.cascade:
                done = await self._cascade(plan, record)
                if done is None:  # escalated while streaming: the frontier streams
                    return await self._stream(plan, record, ident, out_headers, t0)
            elif record.stream:
                return await self._stream(plan, record, ident, out_headers, t0)
            else:
                done = await self.upstreams.complete(plan.model, plan.body)
        except GatewayError as exc:
            self._finish_error(record, exc, t0)
            raise
        record.served_model = done.model.name
        record.attempts += done.attempts - 1
        record.ttfb_ms = (time.perf_counter() - t0) * 1000
        reply = reply_message(done.parsed)
        self._account(record, plan, usage_of(done.parsed), reply)
        await self.conversations.remember(
            continuation_key(ident.hashes, reply), ident.conversation, ident.turn
        )
        self._after(plan, record, done.parsed, reply)
        self._finish(record, t0)
        out_headers["X-Tiergate-Model"] = done.model.name
        out_headers["X-Tiergate-Tier"] = record.tier
        if record.stream:  # a cascade's cheap answer passed its checks: replay it as a stream
            wants_usage = bool((plan.client_body.get("stream_options") or {}).get("include_usage"))
            return ChatResult(
                headers=out_headers, stream=_replay(sse_from_completion(done.parsed, wants_usage))
            )
        return ChatResult(headers=out_headers, body=done.body)

    # ------------------------------------------------------------------ rungs 1 and 2

    def _plan(
        self,
        body: dict[str, Any],
        headers: Mapping[str, str],
        ident: Identity,
        record: Record,
        count_model: str,
    ) -> Plan:
        """Compiled route, else trim then route: which model gets which body. Pure policy calls; no I/O."""
        choice = self.loop.route_for(ident.workflow, ident.conversation) if self.loop is not None else None
        if choice is not None and self.settings.model(choice.model) is not None:
            return self._compiled_plan(body, record, count_model, choice)
        plan = Plan(model=record.requested_model, body=body, client_body=body)
        rt = self.rungs.runtime(ident.workflow) if self.rungs is not None else None
        if rt is None:
            return plan
        plan.runtime = rt
        if rt.trim_config is not None:
            record.stage = stage_of(body["messages"])
        if headers.get("x-tiergate-trim", "").lower() != "off":
            trimmed = rt.trim(body, ident.conversation, count_model)
            plan.body = trimmed.body
            plan.removed_tokens = trimmed.removed_tokens
            if trimmed.dropped:
                record.tools_dropped = len(trimmed.dropped)
        decided = rt.decide(plan.body)
        if decided is None:
            return plan
        decision, features = decided
        record.route_reason = decision.reason[:200]
        if decision.tier == "routed" and self.settings.model(decision.model) is not None:
            plan.model = decision.model
            record.tier = "routed"
            plan.body, demos = rt.with_demonstrations(plan.body, features)
            if demos:
                record.route_reason = f"{decision.reason}; {demos} demonstrations"[:200]
            policy = rt.policy
            plan.cascade = decision.cascade or bool(policy and policy.demonstrations > 0 and policy.escalate)
        return plan

    def _compiled_plan(
        self, body: dict[str, Any], record: Record, count_model: str, choice: canary.RouteChoice
    ) -> Plan:
        """Rung 3: the compiled model gets the request without what its weights hold."""
        stripped = canary.strip_for_compiled(body, choice)
        full = count_prompt_tokens(count_model, body["messages"], body.get("tools"))
        kept = count_prompt_tokens(count_model, stripped["messages"], stripped.get("tools"))
        record.tier = "compiled"
        record.route_reason = f"{'canary' if choice.canary else 'compiled'}: {choice.model}"
        # removed_tokens keeps the baseline at the requested model on the full prompt, as for trimming
        return Plan(model=choice.model, body=stripped, client_body=body, removed_tokens=max(0, full - kept))

    async def _cascade(self, plan: Plan, record: Record) -> Any:
        """Cheap model first; its answer is checked and escalated to the requested model if it fails."""
        cheap_body = {k: v for k, v in plan.body.items() if k not in ("stream", "stream_options")}
        verdict: CascadeVerdict
        try:
            cheap = await self.upstreams.complete(plan.model, cheap_body)
            verdict = check_cascade(plan.body, cheap.parsed)
            record.attempts = cheap.attempts
        except GatewayError as exc:
            cheap, verdict = None, CascadeVerdict(False, "cheap_error", exc.message)
        if verdict.ok:
            return cheap
        if cheap is not None:  # the failed cheap answer was paid for; it counts in this request's cost
            usage = usage_of(cheap.parsed)
            if usage is None:
                usage = self._estimate(cheap.model.name, plan.body, reply_message(cheap.parsed))
            record.cost_usd += self.prices.cost(
                cheap.model.name, prompt=usage[0], completion=usage[1], cached=usage[2]
            )
        record.tier = "frontier"
        record.route_reason = f"cascade escalated: {verdict.failed_check} ({verdict.detail})"[:200]
        plan.model = record.requested_model
        plan.body = (
            {**plan.body, "messages": plan.client_body["messages"]} if plan.removed_tokens == 0 else plan.body
        )
        plan.cascade = False
        if record.stream:
            return None
        done = await self.upstreams.complete(plan.model, plan.body)
        done.attempts += record.attempts
        return done

    def _after(
        self, plan: Plan, record: Record, response: Mapping[str, Any], reply: Mapping[str, Any]
    ) -> None:
        """Learning from an answer: a sampled shadow call or canary comparison, a logged exchange."""
        if record.status >= 400:
            return
        if record.tier == "compiled":
            on_canary = (record.route_reason or "").startswith("canary")
            share = self.loop.compare_share(on_canary) if self.loop else 0.0
            # sampled by request id, so a replayed request is sampled the same way
            if share > 0 and int(record.id[:8], 16) / 0xFFFFFFFF < share:
                self._spawn(self._compare(plan, dict(response), record))
            return
        rt = plan.runtime
        if rt is None or record.tier != "frontier" or rt.policy is None:
            return
        if rt.keeps_exchanges:
            self.rungs.save_exchange(rt.name, record.id, plan.body, reply)
        if rt.learns and random.random() < rt.policy.shadow_share:
            self._spawn(self._shadow(rt, plan.body, dict(response), record))

    def _spawn(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._shadows.add(task)
        task.add_done_callback(self._shadows.discard)

    async def _side_call(
        self, model: str, body: Mapping[str, Any], parent: Record, reason: str
    ) -> dict[str, Any] | None:
        """A call no client asked for (shadow, canary comparison), recorded as tier `shadow`.

        Its baseline is 0: all of its cost is the price of learning or of checking.
        """
        t0 = time.perf_counter()
        rec = Record(
            id=os.urandom(16).hex(),
            ts=time.time(),
            workflow=parent.workflow,
            conversation=parent.conversation,
            turn=parent.turn,
            key_id=parent.key_id,
            requested_model=model,
            served_model=model,
            tier="shadow",
            stream=False,
            prompt_fingerprint=parent.prompt_fingerprint,
            config_hash=parent.config_hash,
            route_reason=reason[:200],
            workflow_source=parent.workflow_source,
        )
        sbody = {k: v for k, v in body.items() if k not in ("stream", "stream_options")}
        try:
            done = await self.upstreams.complete(model, sbody)
        except GatewayError as exc:
            self._finish_error(rec, exc, t0)
            return None
        rec.attempts = done.attempts
        rec.ttfb_ms = (time.perf_counter() - t0) * 1000
        self._account(
            rec, Plan(model=model, body=sbody, client_body=sbody), usage_of(done.parsed), reply_message(done.parsed)
        )
        rec.baseline_cost_usd = 0.0
        self._finish(rec, t0)
        return dict(done.parsed)

    async def _shadow(self, rt: Any, body: dict[str, Any], frontier: dict[str, Any], parent: Record) -> None:
        """The price of learning: the cheap model answers too, off the request path, and is labelled."""
        cheap = await self._side_call(rt.policy.cheap, body, parent, f"shadow of {parent.id}")
        if cheap is None:
            return
        label = compare_answers(frontier, cheap, body)
        good, how = label.good, label.how
        if good is None and rt.judge:
            good = await self._judge(rt.judge, body, frontier, cheap)
            how = f"judge {rt.judge}"
        if good is not None:
            self.rungs.save_label(rt.name, parent.id, body, good, how)

    async def _compare(self, plan: Plan, compiled: dict[str, Any], parent: Record) -> None:
        """The canary's sampled comparison: the requested model answers the same request, off the path."""
        frontier = await self._side_call(
            parent.requested_model, plan.client_body, parent, f"canary comparison of {parent.id}"
        )
        if frontier is None:
            return
        label = compare_answers(frontier, compiled, plan.client_body)
        if label.good is not None:
            score = 1.0 if label.good else 0.0
        else:
            score = word_overlap(
                content_text(reply_message(frontier).get("content")),
                content_text(reply_message(compiled).get("content")),
            )
        await asyncio.to_thread(self.loop.record_sample, parent.workflow, parent.conversation, score)

    async def _judge(
        self, judge: str, body: Mapping[str, Any], a: Mapping[str, Any], b: Mapping[str, Any]
    ) -> bool | None:
        question = next(
            (content_text(m.get("content")) for m in reversed(body["messages"]) if m.get("role") == "user"),
            "",
        )
        prompt = JUDGE_RUBRIC.format(
            question=question[:4000],
            a=content_text(reply_message(a).get("content"))[:4000],
            b=content_text(reply_message(b).get("content"))[:4000],
        )
        try:
            done = await self.upstreams.complete(
                judge,
                {
                    "model": judge,
                    "temperature": 0,
                    "max_tokens": 3,
                    "messages": [{"role": "user", "content": prompt}],
                },
            )
        except GatewayError as exc:
            log.warning("judge %s failed: %s; shadow sample dropped", judge, exc.message)
            return None
        verdict = content_text(reply_message(done.parsed).get("content")).strip().upper()
        return True if verdict.startswith("YES") else False if verdict.startswith("NO") else None

    async def _stream(
        self, plan: Plan, record: Record, ident: Identity, out_headers: dict[str, str], t0: float
    ) -> ChatResult:
        try:
            opened = await self.upstreams.open_stream(plan.model, plan.body)
        except GatewayError as exc:
            self._finish_error(record, exc, t0)
            raise
        record.served_model = opened.model.name
        record.attempts += opened.attempts - 1
        out_headers["X-Tiergate-Model"] = opened.model.name
        out_headers["X-Tiergate-Tier"] = record.tier
        wants_usage = bool((plan.client_body.get("stream_options") or {}).get("include_usage"))
        acc = StreamAccumulator(wants_usage)

        async def relay() -> AsyncIterator[bytes]:
            finished = False
            pending = b""
            try:
                async for block in opened.lines:
                    if record.ttfb_ms is None:
                        record.ttfb_ms = (time.perf_counter() - t0) * 1000
                    pending += block
                    if b"\n" not in pending:
                        continue
                    *complete, pending = pending.split(b"\n")
                    out = acc.reframe(complete)
                    if out:
                        yield out
                if pending.strip():
                    out = acc.reframe([pending])
                    if out:
                        yield out
                finished = True
            except GatewayError as exc:
                record.error_type = exc.error_type  # headers went out as 200: the client sees a cut stream
                log.warning("stream from %s broke: %s", opened.model.name, exc.message)
                yield b"data: " + exc.render() + b"\n\n"
            finally:
                if not finished and record.error_type is None:
                    record.error_type = "client_disconnected"
                if opened.close is not None and not finished:
                    opened.close()  # drop the upstream connection: stops the generation we won't read
                reply = acc.reply()
                self._account(record, plan, acc.usage, reply)
                if finished:
                    await self.conversations.remember(
                        continuation_key(ident.hashes, reply), ident.conversation, ident.turn
                    )
                    self._after(plan, record, {"choices": [{"index": 0, "message": reply}]}, reply)
                self._finish(record, t0)

        return ChatResult(headers=out_headers, stream=relay())

    # ------------------------------------------------------------------ accounting

    def _estimate(
        self, model_name: str, body: Mapping[str, Any], reply: Mapping[str, Any]
    ) -> tuple[int, int, int]:
        upstream = (self.settings.model(model_name) or self.settings.models[0]).upstream
        text = content_text(reply.get("content")) + "".join(
            (tc.get("function") or {}).get("arguments", "") for tc in reply.get("tool_calls") or ()
        )
        return (
            count_prompt_tokens(upstream, body["messages"], body.get("tools")),
            count_text(upstream, text),
            0,
        )

    def _account(
        self, record: Record, plan: Plan, usage: tuple[int, int, int] | None, reply: Mapping[str, Any]
    ) -> None:
        served = record.served_model or plan.model
        if usage is None:
            usage = self._estimate(served, plan.body, reply)
            record.tokens_estimated = True
        prompt, completion, cached = usage
        record.prompt_tokens, record.completion_tokens, record.cached_tokens = usage
        record.cost_usd += self.prices.cost(served, prompt=prompt, completion=completion, cached=cached)
        before = prompt + plan.removed_tokens
        # the baseline is what the client would have paid without tiergate: requested model, untrimmed prompt
        record.baseline_cost_usd = self.prices.cost(
            record.requested_model, prompt=before, completion=completion, cached=cached
        )
        if plan.removed_tokens:
            record.prompt_tokens_before_trim = before
            record.trim_saved_usd = plan.removed_tokens * self.prices.rate(served).input
        calls = reply.get("tool_calls") or ()
        if calls:
            names = [(c.get("function") or {}).get("name") or "" for c in calls]
            record.tools_called = ",".join(n for n in names if n)[:2000] or None

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
