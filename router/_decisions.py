"""The routing decision itself: features + policy (+ learned router) in, `RouteDecision` out.

Never raises on a policy that cannot decide: the frontier is always a safe answer, so the decision
falls back to it and says why in `reason`, which the gateway records.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ._features import RequestFeatures
from ._learned import LearnedRouter
from ._policy import RoutePolicy, RouteRule

__all__ = ["RouteDecision", "decide_route"]


@dataclass(frozen=True)
class RouteDecision:
    """Which model serves a request, and why.

    `tier` is `frontier` or `routed` (the cheap model). `score` is the learned router's P(cheap is
    good enough) when one was consulted. `cascade` tells the gateway to run `check_cascade` on the
    cheap answer and retry on `escalation_model` when it fails. `demonstrations` is how many logged
    frontier exchanges to attach (see `nearest_demonstrations`).
    """

    model: str
    tier: Literal["frontier", "routed"]
    reason: str
    score: float | None = None
    cascade: bool = False
    escalation_model: str | None = None
    demonstrations: int = 0


def _rule_matches(rule: RouteRule, features: RequestFeatures) -> bool:
    tokens, turn = features.prompt_tokens, features.turn_index
    if rule.min_prompt_tokens is not None and tokens < rule.min_prompt_tokens:
        return False
    if rule.max_prompt_tokens is not None and tokens > rule.max_prompt_tokens:
        return False
    if rule.min_turn is not None and turn < rule.min_turn:
        return False
    if rule.max_turn is not None and turn > rule.max_turn:
        return False
    if rule.tools_present is not None and features.tools_present != rule.tools_present:
        return False
    return not (
        rule.last_user_pattern is not None and not rule.last_user_pattern.search(features.last_user_message)
    )


def _frontier(policy: RoutePolicy, reason: str, score: float | None = None) -> RouteDecision:
    return RouteDecision(model=policy.frontier, tier="frontier", reason=reason, score=score)


def _cheap(
    policy: RoutePolicy, reason: str, score: float | None = None, cascade: bool = False
) -> RouteDecision:
    assert policy.cheap is not None  # from_config guarantees it for every non-frontier kind
    escalate = cascade or policy.escalate
    return RouteDecision(
        model=policy.cheap,
        tier="routed",
        reason=reason,
        score=score,
        cascade=escalate,
        escalation_model=policy.frontier if escalate else None,
        demonstrations=policy.demonstrations,
    )


def decide_route(
    features: RequestFeatures, policy: RoutePolicy, learned: LearnedRouter | None = None
) -> RouteDecision:
    """Pick the model for one request.

    Example::

        decision = decide_route(RequestFeatures.from_request(body), policy, learned=router_or_none)
        body["model"] = decision.model
    """
    if policy.kind == "frontier" or policy.cheap is None:
        return _frontier(policy, "policy frontier")
    if policy.kind == "cascade":
        return _cheap(
            policy, "policy cascade: cheap model first, frontier if its answer fails checks", cascade=True
        )
    if policy.kind == "rules":
        for i, rule in enumerate(policy.rules):
            if _rule_matches(rule, features):
                reason = f"rule {i} matched ({rule.describe()})"
                return _cheap(policy, reason) if rule.route == "cheap" else _frontier(policy, reason)
        reason = f"no rule matched; default {policy.default}"
        return _cheap(policy, reason) if policy.default == "cheap" else _frontier(policy, reason)
    # learned
    if learned is None:
        return _frontier(policy, "fallback: learned router not trained yet")
    if learned.n_labels < policy.min_labels:
        return _frontier(
            policy,
            f"fallback: learned router has {learned.n_labels} labels, policy needs {policy.min_labels}",
        )
    if learned.threshold is None:
        return _frontier(policy, "fallback: learned router not calibrated yet")
    score = learned.score(features)
    if score >= learned.threshold:
        return _cheap(policy, f"learned score {score:.3f} >= threshold {learned.threshold:.3f}", score)
    return _frontier(policy, f"learned score {score:.3f} < threshold {learned.threshold:.3f}", score)
