import math

import pytest

from router import LearnedRouter, PolicyConfigError, RequestFeatures, RoutePolicy, decide_route

BASE = {"frontier": "big", "cheap": "small"}


def policy(**section: object) -> RoutePolicy:
    return RoutePolicy.from_config("support", {**BASE, **section})


def features(text: str = "hello", turns: int = 1, tools: bool = False) -> RequestFeatures:
    messages = []
    for i in range(turns):
        messages += [
            {"role": "user", "content": text if i == turns - 1 else "earlier"},
            {"role": "assistant", "content": "ok"},
        ]
    body: dict = {"messages": messages[:-1]}
    if tools:
        body["tools"] = [{"type": "function", "function": {"name": "t"}}]
    return RequestFeatures.from_request(body)


@pytest.mark.parametrize(
    ("section", "key", "fragment"),
    [
        ({"kind": "fast"}, "route.kind", "`fast` is not a policy"),
        ({"frontier": None}, "route.frontier", "not a model name"),
        ({"kind": "rules", "cheap": None}, "route.cheap", "name it under `cheap`"),
        ({"cheap": ""}, "route.cheap", "not a model name"),
        ({"kind": "rules"}, "route.rules", "at least one rule"),
        ({"rules": "x"}, "route.rules", "not a list"),
        ({"rules": [3]}, "route.rules[0]", "not a mapping"),
        ({"rules": [{"route": "cheap", "max_tokens": 3}]}, "route.rules[0].max_tokens", "unknown condition"),
        ({"rules": [{"route": "medium"}]}, "route.rules[0].route", "not a route"),
        ({"rules": [{"route": "cheap", "min_turn": -1}]}, "route.rules[0].min_turn", "non-negative"),
        (
            {"rules": [{"route": "cheap", "tools_present": "yes"}]},
            "route.rules[0].tools_present",
            "true or false",
        ),
        (
            {"rules": [{"route": "cheap", "last_user_pattern": "("}]},
            "route.rules[0].last_user_pattern",
            "regular",
        ),
        ({"default": "maybe"}, "route.default", "not a route"),
        ({"target_retention": 1.5}, "route.target_retention", "not in (0, 1]"),
        ({"target_retention": True}, "route.target_retention", "not in (0, 1]"),
        ({"min_labels": 1}, "route.min_labels", "integer >= 2"),
        ({"confidence": 1.0}, "route.confidence", "not in [0.5, 1)"),
        ({"confidence": "high"}, "route.confidence", "not in [0.5, 1)"),
        ({"shadow_share": -0.1}, "route.shadow_share", "not in [0, 1]"),
        ({"demonstrations": 99}, "route.demonstrations", "[0, 32]"),
        ({"escalate": "no"}, "route.escalate", "true or false"),
        ({"treshold": 0.5}, "route.treshold", "unknown key"),
    ],
)
def test_config_errors_name_workflow_and_key(section: dict, key: str, fragment: str) -> None:
    with pytest.raises(PolicyConfigError) as caught:
        RoutePolicy.from_config("support", {**BASE, **section})
    assert caught.value.workflow == "support" and caught.value.key == key
    message = str(caught.value)
    assert message.startswith(f"Workflow `support`, key `{key}`:") and fragment in message


def test_config_must_be_mapping() -> None:
    with pytest.raises(PolicyConfigError, match="expected a mapping"):
        RoutePolicy.from_config("w", ["frontier"])  # type: ignore[arg-type]


def test_defaults() -> None:
    p = RoutePolicy.from_config("w", {"frontier": "big"})
    assert RoutePolicy.from_config("w", {"frontier": "big", "confidence": 0.9}).confidence == 0.9
    assert (p.kind, p.cheap, p.target_retention, p.min_labels, p.shadow_share, p.escalate) == (
        "frontier",
        None,
        0.95,
        200,
        0.05,
        True,
    )


RULES = [
    {"max_prompt_tokens": 20, "tools_present": False, "route": "cheap"},
    {"last_user_pattern": "(?i)refund", "route": "frontier"},
    {"min_turn": 2, "max_turn": 5, "route": "cheap"},
    {"min_prompt_tokens": 1000, "route": "frontier"},
]


@pytest.mark.parametrize(
    ("section", "feats", "model", "tier", "reason"),
    [
        ({"kind": "frontier"}, features(), "big", "frontier", "policy frontier"),
        ({"kind": "cascade"}, features(), "small", "routed", "policy cascade"),
        (
            {"kind": "rules", "rules": RULES},
            features("hi"),
            "small",
            "routed",
            "rule 0 matched (max_prompt_tokens=20",
        ),
        ({"kind": "rules", "rules": RULES}, features("hi", tools=True), "big", "frontier", "no rule matched"),
        (
            {"kind": "rules", "rules": RULES},
            features("x" * 200 + " refund"),
            "big",
            "frontier",
            "rule 1 matched",
        ),
        (
            {"kind": "rules", "rules": RULES},
            features("x" * 200, turns=3),
            "small",
            "routed",
            "rule 2 matched",
        ),
        (
            {"kind": "rules", "rules": RULES},
            features("x" * 200, turns=7),
            "big",
            "frontier",
            "no rule matched",
        ),
        (
            {"kind": "rules", "rules": RULES, "default": "cheap"},
            features("x" * 200),
            "small",
            "routed",
            "no rule matched; default cheap",
        ),
        ({"kind": "rules", "rules": RULES[3:]}, features("x" * 5000), "big", "frontier", "rule 0 matched"),
        ({"kind": "learned"}, features(), "big", "frontier", "fallback: learned router not trained yet"),
    ],
)
def test_decide_route_table(
    section: dict, feats: RequestFeatures, model: str, tier: str, reason: str
) -> None:
    decision = decide_route(feats, policy(**section), learned=None)
    assert (decision.model, decision.tier) == (model, tier)
    assert decision.reason.startswith(reason), decision.reason
    assert decision.cascade == (tier == "routed")
    assert decision.escalation_model == ("big" if tier == "routed" else None)


def test_cascade_always_escalates_and_demonstrations_pass_through() -> None:
    decision = decide_route(features(), policy(kind="cascade", escalate=False, demonstrations=3))
    assert decision.cascade and decision.escalation_model == "big" and decision.demonstrations == 3
    rules = decide_route(features("hi"), policy(kind="rules", rules=RULES, escalate=False))
    assert rules.tier == "routed" and not rules.cascade and rules.escalation_model is None


def test_frontier_policy_without_cheap_model() -> None:
    p = RoutePolicy.from_config("w", {"frontier": "big"})
    assert decide_route(features(), p).model == "big"


def _trained(n: int) -> LearnedRouter:
    easy = [RequestFeatures.from_prompt(f"What is {i} plus one?") for i in range(n // 2)]
    hard = [
        RequestFeatures.from_prompt(f"Prove theorem {i} about manifolds in detail with lemmas")
        for i in range(n // 2)
    ]
    return LearnedRouter.fit(easy + hard, [True] * len(easy) + [False] * len(hard))


def test_learned_policy_fallbacks_and_decisions() -> None:
    p = policy(kind="learned", min_labels=40)
    few = _trained(20).with_threshold(0.5)
    assert (
        decide_route(features(), p, few).reason == "fallback: learned router has 20 labels, policy needs 40"
    )
    router = _trained(60)
    assert decide_route(features(), p, router).reason == "fallback: learned router not calibrated yet"
    router = router.with_threshold(0.5)
    easy = decide_route(RequestFeatures.from_prompt("What is 7 plus one?"), p, router)
    assert easy.tier == "routed" and easy.score is not None and easy.score >= 0.5
    assert easy.reason.startswith("learned score") and ">= threshold 0.500" in easy.reason
    hard = decide_route(RequestFeatures.from_prompt("Prove theorem 9 about manifolds in detail"), p, router)
    assert hard.tier == "frontier" and hard.score is not None and hard.score < 0.5
    never = decide_route(
        RequestFeatures.from_prompt("What is 7 plus one?"), p, router.with_threshold(math.inf)
    )
    assert never.tier == "frontier"
