"""Per-workflow routing policy, parsed once from the workflow's config section.

Parsing is strict (unknown keys are errors) because a typo in a routing rule silently sends
traffic to the wrong model, and that is the most expensive kind of bug this gateway can have.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["POLICY_KINDS", "PolicyConfigError", "RoutePolicy", "RouteRule"]

PolicyKind = Literal["frontier", "rules", "learned", "cascade"]
POLICY_KINDS: tuple[str, ...] = ("frontier", "rules", "learned", "cascade")
_ROUTES = ("cheap", "frontier")
_RULE_KEYS = (
    "min_prompt_tokens",
    "max_prompt_tokens",
    "min_turn",
    "max_turn",
    "tools_present",
    "last_user_pattern",
    "route",
)
_POLICY_KEYS = (
    "kind",
    "frontier",
    "cheap",
    "rules",
    "default",
    "target_retention",
    "confidence",
    "min_labels",
    "shadow_share",
    "demonstrations",
    "escalate",
)


class PolicyConfigError(ValueError):
    """A workflow's routing section is invalid; the message names the workflow and the key."""

    def __init__(self, workflow: str, key: str, problem: str) -> None:
        self.workflow = workflow
        self.key = key
        super().__init__(f"Workflow `{workflow}`, key `{key}`: {problem}")


@dataclass(frozen=True)
class RouteRule:
    """One condition on request features; all given bounds must hold for the rule to match.

    Example config entry::

        {"max_prompt_tokens": 2000, "tools_present": false, "last_user_pattern": "(?i)status", "route": "cheap"}
    """

    route: Literal["cheap", "frontier"]
    min_prompt_tokens: int | None = None
    max_prompt_tokens: int | None = None
    min_turn: int | None = None
    max_turn: int | None = None
    tools_present: bool | None = None
    last_user_pattern: re.Pattern[str] | None = None

    def describe(self) -> str:
        """Short text of the conditions, for the decision's `reason`."""
        parts = []
        for name in _RULE_KEYS[:-1]:
            value = getattr(self, name)
            if value is not None:
                parts.append(f"{name}={value.pattern if isinstance(value, re.Pattern) else value}")
        return ", ".join(parts) or "always"


@dataclass(frozen=True)
class RoutePolicy:
    """How one workflow picks its model; built with `RoutePolicy.from_config`.

    Example::

        policy = RoutePolicy.from_config("support", {
            "kind": "learned", "frontier": "gpt-4o", "cheap": "gpt-4o-mini", "target_retention": 0.95,
        })

    Fields: `kind` (frontier | rules | learned | cascade), the two model names, `rules` (first match
    wins, `default` when none matches), `target_retention` (quality share of the frontier to keep;
    the learned threshold is calibrated to it), `min_labels` (shadow labels needed before the learned
    router is trusted), `shadow_share` (share of frontier requests also sent to the cheap model to
    learn), `demonstrations` (k logged frontier exchanges to attach to routed requests; 0 is off),
    `escalate` (run the cascade checks on routed answers and retry on the frontier when they fail),
    `confidence` (None: calibrate on the retention's point estimate; a level such as 0.9: on its
    one-sided lower bound, which meets the target more reliably at some cost; see docs/bench-router.md).
    """

    workflow: str
    kind: PolicyKind
    frontier: str
    cheap: str | None = None
    rules: tuple[RouteRule, ...] = ()
    default: Literal["cheap", "frontier"] = "frontier"
    target_retention: float = 0.95
    confidence: float | None = None
    min_labels: int = 200
    shadow_share: float = 0.05
    demonstrations: int = 0
    escalate: bool = True

    @classmethod
    def from_config(cls, workflow: str, section: Mapping[str, Any], prefix: str = "route") -> RoutePolicy:
        """Parse `section`; errors name `workflow` and the key path under `prefix`."""

        def fail(key: str, problem: str) -> PolicyConfigError:
            return PolicyConfigError(workflow, f"{prefix}.{key}" if prefix else key, problem)

        if not isinstance(section, Mapping):
            raise PolicyConfigError(workflow, prefix, f"expected a mapping, got `{section!r}`.")
        for key in section:
            if key not in _POLICY_KEYS:
                raise fail(str(key), f"unknown key `{key}`; use one of {', '.join(_POLICY_KEYS)}.")
        kind = section.get("kind", "frontier")
        if kind not in POLICY_KINDS:
            raise fail("kind", f"`{kind}` is not a policy; use one of {', '.join(POLICY_KINDS)}.")
        frontier = section.get("frontier")
        if not isinstance(frontier, str) or not frontier:
            raise fail("frontier", f"`{frontier!r}` is not a model name; name the frontier model.")
        cheap = section.get("cheap")
        if cheap is not None and (not isinstance(cheap, str) or not cheap):
            raise fail("cheap", f"`{cheap!r}` is not a model name; name the cheap model or leave it out.")
        if kind != "frontier" and cheap is None:
            raise fail("cheap", f"policy `{kind}` routes to a cheap model; name it under `cheap`.")
        rules_raw = section.get("rules", [])
        if kind == "rules" and not rules_raw:
            raise fail("rules", "policy `rules` needs at least one rule; add a list under `rules`.")
        if not isinstance(rules_raw, Sequence) or isinstance(rules_raw, str):
            raise fail("rules", f"`{rules_raw!r}` is not a list; give a list of rule mappings.")
        rules = tuple(_parse_rule(rule, f"rules[{i}]", fail) for i, rule in enumerate(rules_raw))
        default = section.get("default", "frontier")
        if default not in _ROUTES:
            raise fail("default", f"`{default}` is not a route; use `cheap` or `frontier`.")
        target = section.get("target_retention", 0.95)
        if isinstance(target, bool) or not isinstance(target, int | float) or not 0 < target <= 1:
            raise fail("target_retention", f"`{target!r}` is not in (0, 1]; use a share such as 0.95.")
        confidence = section.get("confidence")
        if confidence is not None and (
            isinstance(confidence, bool)
            or not isinstance(confidence, int | float)
            or not 0.5 <= confidence < 1
        ):
            raise fail(
                "confidence",
                f"`{confidence!r}` is not in [0.5, 1); use a level such as 0.9, or leave it out.",
            )
        min_labels = section.get("min_labels", 200)
        if isinstance(min_labels, bool) or not isinstance(min_labels, int) or min_labels < 2:
            raise fail("min_labels", f"`{min_labels!r}` is not an integer >= 2; use a count such as 200.")
        shadow = section.get("shadow_share", 0.05)
        if isinstance(shadow, bool) or not isinstance(shadow, int | float) or not 0 <= shadow <= 1:
            raise fail("shadow_share", f"`{shadow!r}` is not in [0, 1]; use a share such as 0.05.")
        demos = section.get("demonstrations", 0)
        if isinstance(demos, bool) or not isinstance(demos, int) or not 0 <= demos <= 32:
            raise fail("demonstrations", f"`{demos!r}` is not an integer in [0, 32]; use 0 to turn it off.")
        escalate = section.get("escalate", True)
        if not isinstance(escalate, bool):
            raise fail("escalate", f"`{escalate!r}` is not true or false.")
        return cls(
            workflow=workflow,
            kind=kind,
            frontier=frontier,
            cheap=cheap,
            rules=rules,
            default=default,
            target_retention=float(target),
            confidence=None if confidence is None else float(confidence),
            min_labels=min_labels,
            shadow_share=float(shadow),
            demonstrations=demos,
            escalate=escalate,
        )


def _parse_rule(raw: Any, key: str, fail: Any) -> RouteRule:
    if not isinstance(raw, Mapping):
        raise fail(key, f"`{raw!r}` is not a mapping; write a rule as conditions plus `route`.")
    for name in raw:
        if name not in _RULE_KEYS:
            raise fail(f"{key}.{name}", f"unknown condition `{name}`; use one of {', '.join(_RULE_KEYS)}.")
    route = raw.get("route")
    if route not in _ROUTES:
        raise fail(f"{key}.route", f"`{route!r}` is not a route; use `cheap` or `frontier`.")
    values: dict[str, Any] = {"route": route}
    for name in ("min_prompt_tokens", "max_prompt_tokens", "min_turn", "max_turn"):
        if name in raw:
            value = raw[name]
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise fail(f"{key}.{name}", f"`{value!r}` is not a non-negative integer.")
            values[name] = value
    if "tools_present" in raw:
        if not isinstance(raw["tools_present"], bool):
            raise fail(f"{key}.tools_present", f"`{raw['tools_present']!r}` is not true or false.")
        values["tools_present"] = raw["tools_present"]
    if "last_user_pattern" in raw:
        pattern = raw["last_user_pattern"]
        try:
            values["last_user_pattern"] = re.compile(pattern)
        except (re.error, TypeError) as exc:
            raise fail(
                f"{key}.last_user_pattern", f"`{pattern!r}` is not a valid regular expression ({exc})."
            ) from exc
    return RouteRule(**values)
