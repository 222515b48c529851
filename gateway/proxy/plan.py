"""Which model gets which body: the compiled route, else trimming then routing. Pure; no I/O.

    plan = make_plan(settings, routes, rungs, body, headers, ident, record, count_model)
    plan.model, plan.body, plan.cascade    # where to send, what to send, cheap-first with escalation

The loop's route table reaches this module only through `CompiledRoutes`, which the app factory
hands to the chat service (`gateway.web.app.wire`): the request path never imports the loop.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from gateway.proxy.identity import Identity
from gateway.proxy.rungs import Rungs
from gateway.proxy.tokens import count_prompt_tokens
from gateway.proxy.trimming import stage_of
from gateway.settings import Settings
from gateway.store.ledger import Record


@dataclass(frozen=True)
class RouteChoice:
    """What the request path does with a request routed to the compiled model.

    `strip_system` / `strip_tools`: the compiled model holds the procedure and the tool schemas, so the
    system message and `tools` are dropped before the call (`tiergate serve-model` adds its own back).
    """

    model: str
    tier: str = "compiled"
    canary: bool = False
    strip_system: bool = True
    strip_tools: bool = True
    # a model compiled from traffic (`artifact/prompt.json`): its persona replaces the static system lines,
    # the transient ones (step, date, user) stay where the app sent them (compiler/traffic_compile.py)
    persona: str = ""
    static_lines: frozenset[str] = frozenset()


class CompiledRoutes(Protocol):
    """The loop's side of the request path (`gateway.loop.runner.LoopHandle` implements it)."""

    def route_for(self, workflow: str, conversation: str) -> RouteChoice | None:
        """The compiled route of this conversation, or None; reads an in-memory table, no I/O."""
        ...

    def compare_share(self, on_canary: bool) -> float:
        """Share of compiled-side requests the frontier answers too."""
        ...

    def record_sample(self, workflow: str, conversation: str, score: float) -> None:
        """Blocking store write of one canary comparison (called in a worker thread)."""
        ...

    def reply_score(self, workflow: str, frontier: str, compiled: str) -> float | None:
        """How far two replies to one request agree by the compiled model's own steps (1.0: the same step),
        or None where the artifact names none (the comparison then scores word overlap)."""
        ...


@dataclass
class Plan:
    """What this request will send where, after trimming and routing.

    `helper`: the body carries trimming's `tiergate_load_tools`, answered by `gateway.proxy.toolload`,
    which adds each lookup to `lookups`, `lookup_cost_usd` and `loaded`. `prefix_cached`: the upstream
    caches this workflow's prompt prefix, so the tokens trimming removed are valued at the cached price.
    """

    model: str
    body: dict[str, Any]
    client_body: dict[str, Any]
    cascade: bool = False
    removed_tokens: int = 0
    runtime: Any = None
    count_model: str = ""
    helper: bool = False
    prefix_cached: bool = False
    lookups: int = 0
    lookup_cost_usd: float = 0.0
    loaded: list[str] = field(default_factory=list)


def strip_for_compiled(body: dict[str, Any], choice: RouteChoice) -> dict[str, Any]:
    """The request body the compiled model gets: its model name, without what its weights hold."""
    out = dict(body)
    out["model"] = choice.model
    if choice.persona:
        out["messages"] = served_messages(body.get("messages", []), choice)
    elif choice.strip_system:
        out["messages"] = [
            m for m in body.get("messages", []) if m.get("role") not in ("system", "developer")
        ]
    if choice.strip_tools:
        out.pop("tools", None)
        out.pop("tool_choice", None)
    return out


def served_messages(messages: list[dict[str, Any]], choice: RouteChoice) -> list[dict[str, Any]]:
    """The persona, then the messages as sent with each system message cut to its transient lines."""
    out: list[dict[str, Any]] = [{"role": "system", "content": choice.persona}]
    for m in messages:
        if m.get("role") not in ("system", "developer"):
            out.append(m)
            continue
        content = m.get("content")
        text = content if isinstance(content, str) else "\n".join(
            str(p.get("text", "")) for p in content or () if isinstance(p, dict))
        kept = [ln.strip() for ln in text.splitlines() if ln.strip() and ln.strip() not in choice.static_lines]
        if kept:
            out.append({"role": "system", "content": "\n".join(kept)})
    return out


def make_plan(
    settings: Settings,
    routes: CompiledRoutes | None,
    rungs: Rungs | None,
    body: dict[str, Any],
    headers: Mapping[str, str],
    ident: Identity,
    record: Record,
    count_model: str,
) -> Plan:
    """Compiled route, else trim then route: which model gets which body. Pure policy calls; no I/O."""
    choice = routes.route_for(ident.workflow, ident.conversation) if routes is not None else None
    if choice is not None and settings.model(choice.model) is not None:
        return compiled_plan(body, record, count_model, choice)
    plan = Plan(model=record.requested_model, body=body, client_body=body)
    rt = rungs.runtime(ident.workflow) if rungs is not None else None
    if rt is None:
        return plan
    plan.runtime = rt
    if rt.trim_config is not None:
        record.stage = stage_of(body["messages"])
    if headers.get("x-tiergate-trim", "").lower() != "off":
        trimmed = rt.trim(body, ident.conversation, count_model)
        plan.body = trimmed.body
        plan.removed_tokens = trimmed.removed_tokens
        plan.helper, plan.count_model, plan.prefix_cached = trimmed.helper, count_model, rt.caches
        if trimmed.dropped:
            record.tools_dropped = len(trimmed.dropped)
    decided = rt.decide(plan.body)
    if decided is None:
        return plan
    decision, features = decided
    record.route_reason = decision.reason[:200]
    if decision.tier == "routed" and settings.model(decision.model) is not None:
        plan.model = decision.model
        record.tier = "routed"
        plan.body, demos = rt.with_demonstrations(plan.body, features)
        if demos:
            record.route_reason = f"{decision.reason}; {demos} demonstrations"[:200]
        policy = rt.policy
        plan.cascade = decision.cascade or bool(policy and policy.demonstrations > 0 and policy.escalate)
    return plan


def compiled_plan(body: dict[str, Any], record: Record, count_model: str, choice: RouteChoice) -> Plan:
    """Rung 3: the compiled model gets the request without what its weights hold."""
    stripped = strip_for_compiled(body, choice)
    full = count_prompt_tokens(count_model, body["messages"], body.get("tools"))
    kept = count_prompt_tokens(count_model, stripped["messages"], stripped.get("tools"))
    record.tier = "compiled"
    record.route_reason = f"{'canary' if choice.canary else 'compiled'}: {choice.model}"
    # removed_tokens keeps the baseline at the requested model on the full prompt, as for trimming
    return Plan(model=choice.model, body=stripped, client_body=body, removed_tokens=max(0, full - kept))
