"""Rung sections of a workflow's config (`route`, `trim`, `judge`), parsed where the request path uses them.

    policy, trim = policy_for(settings.workflow("support"))   # RoutePolicy | None, TrimConfig | None
    check_rungs(settings)                                      # ConfigError naming the workflow and key

`gateway.settings` keeps these sections as plain data and does not import this module; the CLI runs
`check_rungs` right after loading a config, so a mistake still stops `tiergate serve` with one line.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.settings import ConfigError, Settings, WorkflowConfig
from router import PolicyConfigError, RoutePolicy

TRIM_KEYS = frozenset(
    {"tools", "min_requests", "window", "holdout", "keep", "preloads", "min_chars", "by_stage"}
)


@dataclass(frozen=True)
class TrimConfig:
    tools: bool = True
    min_requests: int = 50
    window: int = 2000
    holdout: float = 0.05
    keep: frozenset[str] = frozenset()
    preloads: bool = True
    min_chars: int = 1000
    # count tool calls per conversation stage (see stage_of) or per workflow; "auto": per stage until the
    # upstream is seen caching this workflow's prompts, then one tool list for every request, since a
    # list that changes between a conversation's requests misses the provider's prompt cache
    # (docs/trimming.md has the figures)
    by_stage: bool | str = "auto"

    @classmethod
    def from_config(cls, workflow: str, section: Any) -> TrimConfig:
        if not isinstance(section, Mapping):
            raise PolicyConfigError(workflow, "trim", f"expected a mapping, got `{section!r}`.")
        for key in section:
            if key not in TRIM_KEYS:
                raise PolicyConfigError(
                    workflow,
                    f"trim.{key}",
                    f"unknown key `{key}`; use one of {', '.join(sorted(TRIM_KEYS))}.",
                )
        holdout = section.get("holdout", 0.05)
        if isinstance(holdout, bool) or not isinstance(holdout, int | float) or not 0 <= holdout <= 1:
            raise PolicyConfigError(
                workflow, "trim.holdout", f"`{holdout!r}` is not in [0, 1]; use a share such as 0.05."
            )
        for key in ("min_requests", "window", "min_chars"):
            val = section.get(key, getattr(cls, key))
            if isinstance(val, bool) or not isinstance(val, int) or val < 1:
                raise PolicyConfigError(workflow, f"trim.{key}", f"`{val!r}` is not a positive integer.")
        keep = section.get("keep", [])
        if not isinstance(keep, list) or not all(isinstance(k, str) for k in keep):
            raise PolicyConfigError(workflow, "trim.keep", f"`{keep!r}` is not a list of tool names.")
        return cls(
            tools=bool(section.get("tools", True)),
            min_requests=int(section.get("min_requests", 50)),
            window=int(section.get("window", 2000)),
            holdout=float(holdout),
            keep=frozenset(keep),
            preloads=bool(section.get("preloads", True)),
            min_chars=int(section.get("min_chars", 1000)),
            by_stage=_by_stage(workflow, section.get("by_stage", "auto")),
        )


def _by_stage(workflow: str, value: Any) -> bool | str:
    if isinstance(value, bool) or value == "auto":
        return value
    raise PolicyConfigError(workflow, "trim.by_stage", f"`{value!r}` is not true, false or `auto`.")


def policy_for(workflow: WorkflowConfig) -> tuple[RoutePolicy | None, TrimConfig | None]:
    """Parse a workflow's `route` and `trim` sections; PolicyConfigError names the workflow and key."""
    extra = workflow.model_extra or {}
    policy = None
    if "route" in extra and extra["route"] is not False:
        section = dict(extra["route"] or {}) if isinstance(extra["route"], Mapping) else extra["route"]
        if isinstance(section, dict):
            section.setdefault("frontier", workflow.frontier)
            if workflow.cheap is not None:
                section.setdefault("cheap", workflow.cheap)
        policy = RoutePolicy.from_config(workflow.name, section)
    trim = (
        TrimConfig.from_config(workflow.name, extra["trim"])
        if "trim" in extra and extra["trim"] is not False
        else None
    )
    for key in extra:
        if key not in ("route", "trim", "judge", "capture", "propose"):
            raise PolicyConfigError(
                workflow.name, key, "unknown key; use `route`, `trim`, `judge`, `capture`, `propose` or `flowchart`."
            )
    return policy, trim


def check_rungs(settings: Settings) -> None:
    """Parse every workflow's rung sections; ConfigError names the config file, workflow and key."""
    known = {m.name for m in settings.models}
    for i, w in enumerate(settings.workflows):
        if not w.model_extra:
            continue
        try:
            policy, _ = policy_for(w)
        except PolicyConfigError as exc:
            raise ConfigError(f"{settings.source}: workflows[{i}]: {exc}") from None
        for key in ("frontier", "cheap"):
            val = getattr(policy, key, None) if policy else None
            if val is not None and val not in known:
                raise ConfigError(
                    f"{settings.source}: workflows[{i}] (`{w.name}`).route.{key}: unknown model `{val}`; "
                    "list a configured model name"
                )
