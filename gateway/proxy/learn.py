"""Learning from answers, off the request path: shadow labels, canary comparisons, the judge.

    learner.after(plan, record, response, reply, routes)   # sample a shadow call or a comparison
    await learner.drain()                                   # at shutdown: let side calls in flight finish

A side call is a call no client asked for; it is recorded as tier `shadow` with a baseline of 0, so
all of its cost shows as the price of learning or of checking.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Mapping
from typing import Any

from gateway.errors import GatewayError
from gateway.proxy.account import Accounts
from gateway.proxy.identity import content_text
from gateway.proxy.plan import CompiledRoutes, Plan
from gateway.proxy.protocol import reply_message, usage_of
from gateway.proxy.rungs import Rungs
from gateway.proxy.upstream import Upstreams
from gateway.store.ledger import Record
from router import compare_answers

log = logging.getLogger("tiergate.chat")

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


def shadow_body(plan: Plan) -> dict[str, Any]:
    """What the cheap model is shadow-asked: the served body, but with the client's own tools in place of
    trimming's `tiergate_load_tools` helper, which only the request path can answer (a shadow answer that
    called it would be labelled bad for asking what served requests get resolved)."""
    if not plan.helper:
        return plan.body
    body = dict(plan.body)
    for key in ("tools", "tool_choice", "parallel_tool_calls"):
        if key in plan.client_body:
            body[key] = plan.client_body[key]
        else:
            body.pop(key, None)
    return body


class Learner:
    def __init__(self, upstreams: Upstreams, accounts: Accounts, rungs: Rungs | None):
        self.upstreams = upstreams
        self.accounts = accounts
        self.rungs = rungs
        self._shadows: set[asyncio.Task[None]] = set()

    async def drain(self) -> None:
        """Let shadow calls in flight finish, so their ledger records and labels are not lost."""
        if self._shadows:
            await asyncio.gather(*self._shadows, return_exceptions=True)

    def after(
        self,
        plan: Plan,
        record: Record,
        response: Mapping[str, Any],
        reply: Mapping[str, Any],
        routes: CompiledRoutes | None,
    ) -> None:
        """Learning from an answer: a sampled shadow call or canary comparison, a logged exchange."""
        if record.status >= 400:
            return
        if record.tier == "compiled":
            on_canary = (record.route_reason or "").startswith("canary")
            share = routes.compare_share(on_canary) if routes else 0.0
            # sampled by request id, so a replayed request is sampled the same way
            if routes is not None and share > 0 and int(record.id[:8], 16) / 0xFFFFFFFF < share:
                self._spawn(self._compare(plan, dict(response), record, routes))
            return
        rt = plan.runtime
        if rt is None or record.tier != "frontier" or rt.policy is None or self.rungs is None:
            return
        if rt.keeps_exchanges:
            self.rungs.save_exchange(rt.name, record.id, plan.body, reply)
        if rt.learns and random.random() < rt.policy.shadow_share:
            self._spawn(self._shadow(rt, shadow_body(plan), dict(response), record))

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
        rec = self.accounts.side_record(parent, model, reason)
        sbody = {k: v for k, v in body.items() if k not in ("stream", "stream_options")}
        try:
            done = await self.upstreams.complete(model, sbody)
        except GatewayError as exc:
            self.accounts.finish_error(rec, exc, t0)
            return None
        rec.attempts = done.attempts
        rec.ttfb_ms = (time.perf_counter() - t0) * 1000
        self.accounts.account(
            rec,
            Plan(model=model, body=sbody, client_body=sbody),
            usage_of(done.parsed),
            reply_message(done.parsed),
        )
        rec.baseline_cost_usd = 0.0
        self.accounts.finish(rec, t0)
        return dict(done.parsed)

    async def _shadow(self, rt: Any, body: dict[str, Any], frontier: dict[str, Any], parent: Record) -> None:
        """The price of learning: the cheap model answers too, off the request path, and is labelled."""
        cheap = await self._side_call(rt.policy.cheap, body, parent, f"shadow of {parent.id}")
        if cheap is None:
            return
        label = compare_answers(frontier, cheap, body)
        good, how = label.good, label.how
        if good is None and rt.judge:
            good = await self._judge(rt.judge, body, frontier, cheap, parent)
            how = f"judge {rt.judge}"
        if good is not None and self.rungs is not None:
            self.rungs.save_label(rt.name, parent.id, body, good, how)

    async def _compare(
        self, plan: Plan, compiled: dict[str, Any], parent: Record, routes: CompiledRoutes
    ) -> None:
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
            said = content_text(reply_message(frontier).get("content"))
            got = content_text(reply_message(compiled).get("content"))
            step = routes.reply_score(parent.workflow, said, got)  # same step of a model compiled from traffic
            score = step if step is not None else word_overlap(said, got)
        await asyncio.to_thread(routes.record_sample, parent.workflow, parent.conversation, score)

    async def _judge(
        self, judge: str, body: Mapping[str, Any], a: Mapping[str, Any], b: Mapping[str, Any], parent: Record
    ) -> bool | None:
        """Ask the judge model whether two answers agree; a paid call, so it leaves its own ledger row
        (tier `shadow`, counted with the shadow labels it serves)."""
        question = next(
            (content_text(m.get("content")) for m in reversed(body["messages"]) if m.get("role") == "user"),
            "",
        )
        prompt = JUDGE_RUBRIC.format(
            question=question[:4000],
            a=content_text(reply_message(a).get("content"))[:4000],
            b=content_text(reply_message(b).get("content"))[:4000],
        )
        judged = await self._side_call(
            judge,
            {"model": judge, "temperature": 0, "max_tokens": 3, "messages": [{"role": "user", "content": prompt}]},
            parent,
            f"shadow of {parent.id} (judge)",
        )
        if judged is None:
            log.warning("judge %s failed; shadow sample dropped", judge)
            return None
        verdict = content_text(reply_message(judged).get("content")).strip().upper()
        return True if verdict.startswith("YES") else False if verdict.startswith("NO") else None
