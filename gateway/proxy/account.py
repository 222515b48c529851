"""What a call cost and what it would have cost without tiergate: the ledger record, metrics, spend.

    accounts = Accounts(settings, prices, ledger, metrics, spend)
    record = accounts.open_record(ident, key, body, requested="gpt-4o", ts=time.time())
    accounts.account(record, plan, usage_of(parsed), reply)   # tokens (estimated if absent), cost, baseline
    accounts.finish(record, t0)                                # latency, ledger, metrics, the key's spend

The baseline is what the client would have paid without tiergate: the requested model on the
untrimmed prompt. Side calls (shadow, canary comparison) have a baseline of 0.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Mapping
from typing import Any

from gateway.errors import GatewayError
from gateway.metrics import Metrics
from gateway.proxy.identity import Identity, content_text
from gateway.proxy.keys import KeyInfo
from gateway.proxy.limits import SpendTracker
from gateway.proxy.plan import Plan
from gateway.proxy.pricing import PriceBook
from gateway.proxy.tokens import count_prompt_tokens, count_text
from gateway.settings import Settings
from gateway.store.ledger import LedgerWriter, Record
from gateway.store.money import FALLBACK

log = logging.getLogger("tiergate.chat")


class Accounts:
    def __init__(
        self,
        settings: Settings,
        prices: PriceBook,
        ledger: LedgerWriter,
        metrics: Metrics,
        spend: SpendTracker,
    ):
        self.settings = settings
        self.prices = prices
        self.ledger = ledger
        self.metrics = metrics
        self.spend = spend

    def open_record(
        self, ident: Identity, key: KeyInfo | None, body: Mapping[str, Any], requested: str, ts: float
    ) -> Record:
        """The ledger record of a client's request, before anything is decided: tier `frontier`."""
        return Record(
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

    def reject(
        self,
        body: Mapping[str, Any],
        headers: Mapping[str, str],
        key: KeyInfo | None,
        requested: str,
        ts: float,
        exc: GatewayError,
        t0: float,
    ) -> None:
        """Record a request refused for its content before any upstream call (status 4xx, cost 0).

        Its identity could not be computed from a body that failed its checks, so the workflow is the
        key's, else a printable name the client gave, else `unidentified`.
        """
        metadata = body.get("metadata")
        named = headers.get("x-tiergate-workflow") or (
            metadata.get("workflow") if isinstance(metadata, dict) else None
        )
        workflow = key.workflow if key is not None and key.workflow else None
        if workflow is None and isinstance(named, str) and 0 < len(named) <= 200 and named.isprintable():
            workflow = named
        ident = Identity(workflow or "unidentified", "rejected", "", os.urandom(16).hex(), 1)
        record = self.open_record(ident, key, body, requested, ts)
        record.prompt_fingerprint = None
        self.finish_error(record, exc, t0)
        exc.headers.setdefault("X-Request-Id", record.id)

    def side_record(self, parent: Record, model: str, reason: str) -> Record:
        """The record of a call no client asked for (shadow, canary comparison): tier `shadow`."""
        return Record(
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

    def estimate(
        self, model_name: str, body: Mapping[str, Any], reply: Mapping[str, Any]
    ) -> tuple[int, int, int]:
        """Token counts when the upstream reported no usage: counted locally with the model's tokenizer."""
        upstream = (self.settings.model(model_name) or self.settings.models[0]).upstream
        text = content_text(reply.get("content")) + "".join(
            (tc.get("function") or {}).get("arguments", "") for tc in reply.get("tool_calls") or ()
        )
        return (
            count_prompt_tokens(upstream, body["messages"], body.get("tools")),
            count_text(upstream, text),
            0,
        )

    def account(
        self, record: Record, plan: Plan, usage: tuple[int, int, int] | None, reply: Mapping[str, Any]
    ) -> None:
        served = record.served_model or plan.model
        if record.tier != "shadow" and served != plan.model:
            # a fallback answered: its price difference belongs to no rung (gateway/store/money.py)
            record.route_reason = f"{FALLBACK}{plan.model}: {record.route_reason or 'planned'}"[:200]
        if usage is None:
            usage = self.estimate(served, plan.body, reply)
            record.tokens_estimated = True
        prompt, completion, cached = usage
        record.prompt_tokens, record.completion_tokens, record.cached_tokens = usage
        record.cost_usd += self.prices.cost(served, prompt=prompt, completion=completion, cached=cached)
        before = prompt + plan.removed_tokens
        # what trimming removed sits at the start of the prompt (tool schemas): where the upstream caches
        # this workflow's prefix, the untrimmed prompt would have read it from cache (docs/ledger.md)
        from_cache = plan.removed_tokens if plan.removed_tokens > 0 and (cached or plan.prefix_cached) else 0
        # the baseline is what the client would have paid without tiergate: requested model, untrimmed prompt
        record.baseline_cost_usd = self.prices.cost(
            record.requested_model, prompt=before, completion=completion, cached=cached + from_cache
        )
        if plan.removed_tokens or plan.lookups:
            rate = self.prices.rate(served)
            record.prompt_tokens_before_trim = before
            # net of the helper tool's lookups (gateway/proxy/toolload.py), which were paid for
            record.trim_saved_usd = (
                plan.removed_tokens * (rate.cached_input if from_cache else rate.input) - plan.lookup_cost_usd
            )
        calls = reply.get("tool_calls") or ()
        names = [(c.get("function") or {}).get("name") or "" for c in calls]
        names += [n for n in plan.loaded if n not in names]  # a tool loaded through the helper counts as used
        if names:
            record.tools_called = ",".join(n for n in names if n)[:2000] or None

    def finish_error(self, record: Record, exc: GatewayError, t0: float) -> None:
        record.status = exc.status
        record.error_type = exc.error_type
        record.attempts = getattr(exc, "attempts", record.attempts)
        self.finish(record, t0)

    def finish(self, record: Record, t0: float) -> None:
        if record.finished:  # one record per request: a second finish is a bug, never a second row
            log.error("record %s finished twice; the second finish is ignored", record.id)
            return
        record.finished = True
        record.latency_ms = (time.perf_counter() - t0) * 1000
        self.ledger.submit(record)
        m = self.metrics
        labels = (m.workflow(record.workflow), record.served_model or record.requested_model, record.tier)
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
