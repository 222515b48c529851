"""Rungs 1 and 2 on the request path: per-workflow routing and trimming state, fed to router/'s pure policies.

    rungs = Rungs.from_settings(settings, engine)
    rt = rungs.runtime("support")            # None for a workflow with no rung settings: plain proxy
    trimmed = rt.trim(body, conversation)     # TrimOutcome: body to send, what was dropped
    decision = rt.decide(body)                # router.RouteDecision

Per workflow in the config:

    workflows:
      - name: support
        frontier: gpt-4o
        cheap: gpt-4o-mini
        route: {kind: learned, target_retention: 0.95, shadow_share: 0.1, demonstrations: 3}
        trim: {tools: true, min_requests: 50, window: 2000, holdout: 0.05, keep: [handoff],
               preloads: true, min_chars: 1000}
        judge: gpt-4o            # optional: decides shadow labels the exact comparison cannot

The state behind the policies (tool-call counts, the learned router, the demonstration bank) is
rebuilt from the shared store in the background (`refresh`), so every gateway process sharing the
store converges on the same decisions and the request path does no I/O for them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy import Engine, func, insert, select

from gateway.proxy.defaults import resolve
from gateway.proxy.policy import TrimConfig
from gateway.proxy.trimming import LoadedTools, TrimOutcome, trim_request
from gateway.settings import Settings
from gateway.store.schema import exchanges, route_labels
from gateway.store.schema import requests as R
from router import (
    DemonstrationBank,
    LearnedRouter,
    RequestFeatures,
    RouteCosts,
    RouteDecision,
    RoutePolicy,
    ToolUsage,
    calibrate_threshold,
    decide_route,
    nearest_demonstrations,
    out_of_fold_scores,
)

log = logging.getLogger("tiergate.rungs")
IDLE_S = 600.0  # a workflow with no request this long keeps its state without refreshes
MAX_WORKFLOWS = 2000  # workflows with rung state in one process; more are served as a plain proxy
RECENT = 6  # messages kept with a label or an exchange: what RequestFeatures looks at, with margin


@dataclass
class WorkflowRuntime:
    name: str
    policy: RoutePolicy | None
    trim_config: TrimConfig | None
    judge: str | None = None
    # tool calls counted per conversation stage: an agent that calls tools on the opening turn and
    # none on follow-ups can send follow-ups without the schemas (bench/trim: 75% -> 8x% cut)
    usage: dict[str, ToolUsage] = field(default_factory=dict)
    loaded: LoadedTools = field(default_factory=LoadedTools)  # per conversation, through the helper tool
    caches: bool = False  # the upstream reported cached prompt tokens for this workflow in the window
    learned: LearnedRouter | None = None
    bank: DemonstrationBank | None = None
    labels_fitted: int = 0
    used: float = 0.0  # time.monotonic() of the last request; idle workflows are not refreshed

    @property
    def learns(self) -> bool:
        return self.policy is not None and self.policy.kind == "learned" and self.policy.cheap is not None

    @property
    def keeps_exchanges(self) -> bool:
        return self.policy is not None and self.policy.demonstrations > 0

    def trim(self, body: dict[str, Any], conversation: str, count_model: str) -> TrimOutcome:
        if self.trim_config is None:
            return TrimOutcome(body)
        loaded = self.loaded.get(conversation)
        return trim_request(self.trim_config, self.usage, body, conversation, count_model, loaded, self.caches)

    def decide(self, body: Mapping[str, Any]) -> tuple[RouteDecision, RequestFeatures] | None:
        if self.policy is None:
            return None
        features = RequestFeatures.from_request(body)
        return decide_route(features, self.policy, self.learned), features

    def with_demonstrations(
        self, body: dict[str, Any], features: RequestFeatures
    ) -> tuple[dict[str, Any], int]:
        """Inference-time distillation: the k nearest logged frontier exchanges, as worked examples."""
        if self.policy is None or self.policy.demonstrations <= 0 or self.bank is None:
            return body, 0
        demos = nearest_demonstrations(features, self.bank, self.policy.demonstrations)
        if not demos:
            return body, 0
        lines = ["Worked examples of this workflow, answered by a stronger model:"]
        for i, d in enumerate(demos, 1):
            msgs = d.exchange.get("messages") or []
            user = next((m.get("content") for m in reversed(msgs) if m.get("role") == "user"), "")
            reply = d.exchange.get("response") or {}
            answer = reply.get("content") or ""
            if reply.get("tool_calls"):
                answer += (
                    " "
                    + orjson.dumps(
                        [
                            {"tool": c["function"]["name"], "arguments": c["function"]["arguments"]}
                            for c in reply["tool_calls"]
                        ]
                    ).decode()
                )
            lines.append(f"Example {i}. User: {user}\nAssistant: {answer.strip()}")
        note = {"role": "system", "content": "\n\n".join(lines)}
        messages = list(body["messages"])
        at = 0
        while at < len(messages) and messages[at].get("role") in ("system", "developer"):
            at += 1
        messages.insert(at, note)
        return {**body, "messages": messages}, len(demos)


def recent_request(body: Mapping[str, Any]) -> str:
    """What a label or an exchange keeps of a request: the recent messages and the tool names."""
    tools = [{"type": "function", "function": {"name": n}} for n in sorted(_tool_names(body))]
    return orjson.dumps({"messages": body["messages"][-RECENT:], "tools": tools}).decode()


def _tool_names(body: Mapping[str, Any]) -> set[str]:
    return {
        t["function"]["name"]
        for t in body.get("tools") or ()
        if isinstance(t, Mapping) and isinstance(t.get("function"), Mapping) and "name" in t["function"]
    }


class Rungs:
    def __init__(self, engine: Engine, runtimes: dict[str, WorkflowRuntime], prices: Any, settings: Settings):
        self._engine = engine
        self._runtimes = runtimes
        self._prices = prices
        self._settings = settings
        self._task: asyncio.Task[None] | None = None
        self._side: set[asyncio.Task[Any]] = set()
        self._plain: set[str] = set()  # workflows whose settings leave no rung to apply

    @classmethod
    def from_settings(cls, settings: Settings, engine: Engine, prices: Any) -> Rungs:
        runtimes = {}
        for wf in settings.workflows:
            rs = resolve(settings, wf.name)  # shipped defaults < `defaults:` < the entry, per key
            if rs.active:
                runtimes[wf.name] = WorkflowRuntime(wf.name, rs.policy, rs.trim, judge=rs.judge)
        return cls(engine, runtimes, prices, settings)

    def runtime(self, workflow: str) -> WorkflowRuntime | None:
        """The workflow's rung state; a workflow found on the fly gets `defaults:` (bounded in number)."""
        rt = self._runtimes.get(workflow)
        if rt is not None:
            rt.used = time.monotonic()
            return rt
        if workflow in self._plain:
            return None
        if len(self._runtimes) + len(self._plain) >= MAX_WORKFLOWS:
            return None  # names invented without end must not grow state (and refresh queries) forever
        rs = resolve(self._settings, workflow)
        if not rs.active:
            self._plain.add(workflow)
            return None
        rt = self._runtimes[workflow] = WorkflowRuntime(workflow, rs.policy, rs.trim, judge=rs.judge)
        rt.used = time.monotonic()
        return rt

    # ------------------------------------------------------------------ background state

    async def start(self, interval: float = 2.0) -> None:
        if any(rt.learns for rt in self._runtimes.values()):
            # scikit-learn takes seconds to import on a busy host; pay that before serving, not mid-refresh
            import importlib

            await asyncio.to_thread(importlib.import_module, "sklearn.linear_model")
        if self._runtimes or resolve(self._settings, "").active:  # found workflows get `defaults:`
            await asyncio.to_thread(self.refresh_sync)
            self._task = asyncio.create_task(self._loop(interval), name="rungs-refresh")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        if self._side:
            await asyncio.gather(*self._side, return_exceptions=True)

    async def _loop(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await asyncio.to_thread(self.refresh_sync)
            except Exception:  # the store may be briefly away; state stays as it was
                log.exception("refreshing routing and trimming state failed; keeping the previous state")

    def refresh_sync(self) -> None:
        idle = time.monotonic() - IDLE_S
        for rt in list(self._runtimes.values()):  # the request path adds found workflows meanwhile
            if rt.used < idle and rt.usage:
                continue  # no request for a while: its state waits (one query each, for thousands of names)
            if rt.trim_config is not None and rt.trim_config.tools:
                rt.usage, rt.caches = self._tool_usage(rt.name, rt.trim_config.window)
            if rt.learns:
                self._refit(rt)
            if rt.keeps_exchanges:
                self._reload_bank(rt)

    def _tool_usage(self, workflow: str, window: int) -> tuple[dict[str, ToolUsage], bool]:
        """Calls per tool, per stage and under "all", over the workflow's last `window` answered requests
        (no shadow calls), and whether the upstream reported cached prompt tokens on any of them."""
        with self._engine.connect() as conn:
            rows = conn.execute(
                select(R.c.stage, R.c.tools_called, R.c.cached_tokens)
                .where(R.c.workflow == workflow, R.c.tier != "shadow", R.c.status < 400)
                .order_by(R.c.ts.desc())
                .limit(window)
            ).all()
        seen: Counter[str] = Counter()
        calls: dict[str, Counter[str]] = {}
        for stage, called, _ in rows:
            for key in (stage or "first:0", "all"):
                seen[key] += 1
                if called:
                    calls.setdefault(key, Counter()).update(called.split(","))
        usage = {s: ToolUsage(requests_seen=seen[s], calls=dict(calls.get(s, {}))) for s in seen}
        return usage, any(cached for _, _, cached in rows)

    def _refit(self, rt: WorkflowRuntime) -> None:
        assert rt.policy is not None
        with self._engine.connect() as conn:
            n = conn.execute(select(func.count()).where(route_labels.c.workflow == rt.name)).scalar_one()
            if n < max(rt.policy.min_labels, 10) or n < rt.labels_fitted * 1.1 + 5:
                return
            rows = conn.execute(
                select(route_labels.c.request, route_labels.c.good)
                .where(route_labels.c.workflow == rt.name)
                .order_by(route_labels.c.ts.desc())
                .limit(20_000)
            ).all()
        feats = [RequestFeatures.from_request(orjson.loads(r[0])) for r in rows]
        labels = [bool(r[1]) for r in rows]
        if len(set(labels)) < 2:
            log.info(
                "workflow %s: %d shadow labels, all %s; not fitting yet", rt.name, len(labels), labels[0]
            )
            return
        cheap_rate = self._prices.rate(rt.policy.cheap)
        frontier_rate = self._prices.rate(rt.policy.frontier)
        costs = RouteCosts(
            cheap=cheap_rate.input + cheap_rate.output or 1.0,
            frontier=frontier_rate.input + frontier_rate.output or 10.0,
        )
        scores = out_of_fold_scores(
            feats, labels, folds=min(5, max(2, min(labels.count(True), labels.count(False))))
        )
        cal = calibrate_threshold(
            scores,
            [1.0 if x else 0.0 for x in labels],
            rt.policy.target_retention,
            costs,
            confidence=rt.policy.confidence,
        )
        rt.learned = LearnedRouter.fit(feats, labels).with_threshold(cal.threshold)
        rt.labels_fitted = len(labels)
        log.info(
            "workflow %s: learned router refit on %d labels; threshold %.3f, expected retention %.3f, cheap share %.2f",
            rt.name,
            len(labels),
            cal.threshold,
            cal.expected_retention,
            cal.cheap_share,
        )

    def _reload_bank(self, rt: WorkflowRuntime) -> None:
        with self._engine.connect() as conn:
            rows = conn.execute(
                select(exchanges.c.request, exchanges.c.response)
                .where(exchanges.c.workflow == rt.name)
                .order_by(exchanges.c.ts.desc())
                .limit(5000)
            ).all()
        if rows and (rt.bank is None or len(rt.bank.exchanges) != len(rows)):
            items = [{**orjson.loads(req), "response": orjson.loads(resp)} for req, resp in rows]
            rt.bank = DemonstrationBank.build(items)

    # ------------------------------------------------------------------ side writes

    def _spawn(self, fn: Any, *args: Any) -> None:
        task = asyncio.get_running_loop().create_task(asyncio.to_thread(fn, *args))
        self._side.add(task)
        task.add_done_callback(self._side.discard)

    def save_label(
        self, workflow: str, request_id: str, body: Mapping[str, Any], good: bool, how: str
    ) -> None:
        row = {
            "id": request_id,
            "ts": time.time(),
            "workflow": workflow,
            "request_id": request_id,
            "request": recent_request(body),
            "good": good,
            "how": how[:200],
        }
        self._spawn(self._insert, route_labels, row)

    def save_exchange(
        self, workflow: str, request_id: str, body: Mapping[str, Any], reply: Mapping[str, Any]
    ) -> None:
        row = {
            "id": request_id,
            "ts": time.time(),
            "workflow": workflow,
            "request": recent_request(body),
            "response": orjson.dumps(dict(reply)).decode(),
        }
        self._spawn(self._insert, exchanges, row)

    def _insert(self, table: Any, row: dict[str, Any]) -> None:
        with self._engine.begin() as conn:
            conn.execute(insert(table), [row])
