"""The cascade: the cheap model answers first, its answer is checked, and a failure escalates.

    done = await cascade(upstreams, accounts, plan, record)
    # a Completion (the cheap answer that passed, or the requested model's), or None when the request
    # streams and escalated: the caller then streams the requested model with `plan` as updated here

The failed cheap answer was paid for, so its cost counts in this request's record.
"""

from __future__ import annotations

from gateway.errors import GatewayError
from gateway.proxy.account import Accounts
from gateway.proxy.plan import Plan
from gateway.proxy.protocol import reply_message, usage_of
from gateway.proxy.upstream import Completion, Upstreams
from gateway.store.ledger import Record
from router import CascadeVerdict, check_cascade


async def cascade(upstreams: Upstreams, accounts: Accounts, plan: Plan, record: Record) -> Completion | None:
    """Cheap model first; its answer is checked and escalated to the requested model if it fails."""
    cheap_body = {k: v for k, v in plan.body.items() if k not in ("stream", "stream_options")}
    verdict: CascadeVerdict
    try:
        cheap = await upstreams.complete(plan.model, cheap_body)
        verdict = check_cascade(plan.body, cheap.parsed)
        record.attempts = cheap.attempts
    except GatewayError as exc:
        cheap, verdict = None, CascadeVerdict(False, "cheap_error", exc.message)
    if verdict.ok:
        return cheap
    if cheap is not None:  # the failed cheap answer was paid for; it counts in this request's cost
        usage = usage_of(cheap.parsed)
        if usage is None:
            usage = accounts.estimate(cheap.model.name, plan.body, reply_message(cheap.parsed))
        record.cost_usd += accounts.prices.cost(
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
    done = await upstreams.complete(plan.model, plan.body)
    done.attempts += record.attempts
    return done
