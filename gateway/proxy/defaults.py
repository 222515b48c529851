"""Rung settings for every workflow, listed or found: shipped defaults < `defaults:` < the workflow's entry.

    rs = resolve(settings, "support-acme-shop-4a3d2d")   # works for a workflow nobody listed
    rs.trim, rs.policy, rs.capture, rs.propose           # what applies to it
    rs.why["trim"]                                       # "default", "configured", "off in config", ...

Each layer overrides the one below per key; a mapping (`trim`, `route`, `capture`) merges one level
deep, so `trim: {min_requests: 20}` in a workflow's entry keeps the defaults' other trim keys, and
`trim: false` turns trimming off. Routing needs a cheap model: a workflow with none named (in its
entry or in `defaults:`) is not routed, whatever `route:` says, and `why` says so.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.proxy.capture import CaptureConfig
from gateway.proxy.policy import TrimConfig
from gateway.settings import SHIPPED_DEFAULTS, WORKFLOW_RUNG_KEYS, ConfigError, Settings
from router import PolicyConfigError, RoutePolicy

RUNGS = ("route", "trim", "capture", "propose")


@dataclass(frozen=True)
class WorkflowRungs:
    name: str
    listed: bool
    frontier: str | None
    cheap: str | None
    policy: RoutePolicy | None
    trim: TrimConfig | None
    capture: CaptureConfig
    propose: bool
    judge: str | None = None
    why: dict[str, str] = field(default_factory=dict)  # rung -> default | configured | off: reason

    @property
    def active(self) -> bool:
        """Whether the request path has anything to do for this workflow beyond the plain proxy."""
        return self.policy is not None or self.trim is not None


def _layer(base: dict[str, Any], over: Mapping[str, Any]) -> tuple[dict[str, Any], set[str]]:
    out = dict(base)
    touched = set()
    for key, value in over.items():
        if key not in WORKFLOW_RUNG_KEYS:
            continue
        touched.add(key)
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = {**out[key], **value}
        else:
            out[key] = dict(value) if isinstance(value, Mapping) else value
    return out, touched


def merged(settings: Settings, name: str) -> tuple[dict[str, Any], dict[str, str], bool]:
    """The effective rung keys of `name`, where each came from (shipped, defaults, workflow), and listed."""
    values, _ = _layer({}, SHIPPED_DEFAULTS)
    origin = dict.fromkeys(values, "default")
    values, touched = _layer(values, settings.defaults)
    origin.update(dict.fromkeys(touched, "default"))
    entry = settings.workflow(name)
    if entry is not None:
        own = {"frontier": entry.frontier, "cheap": entry.cheap, **(entry.model_extra or {})}
        values, touched = _layer(values, {k: v for k, v in own.items() if v is not None})
        origin.update(dict.fromkeys(touched, "configured"))
    return values, origin, entry is not None


def _off(value: Any) -> bool:
    return value is False or value is None or (isinstance(value, Mapping) and value.get("enabled") is False)


def resolve(settings: Settings, name: str) -> WorkflowRungs:
    """What applies to workflow `name`; PolicyConfigError names the workflow and the key."""
    values, origin, listed = merged(settings, name)
    why: dict[str, str] = {}
    frontier, cheap = values.get("frontier"), values.get("cheap")

    route = values.get("route")
    policy = None
    if _off(route):
        why["route"] = "off in config"
    elif cheap is None and (not isinstance(route, Mapping) or route.get("cheap") is None):
        why["route"] = "off: no cheap model named"
    else:
        section: Any = dict(route) if isinstance(route, Mapping) else ({} if route is True else route)
        if isinstance(section, dict):
            if cheap is not None:
                section.setdefault("cheap", cheap)
            if frontier is not None:
                section.setdefault("frontier", frontier)
            if section.get("frontier") is None:
                raise PolicyConfigError(
                    name, "route.frontier", "a cheap model is named but no frontier; name `frontier` too."
                )
        policy = RoutePolicy.from_config(name, section)
        mine = "configured" in (origin.get("route"), origin.get("cheap"))
        why["route"] = "configured" if mine else "default"

    trim_section = values.get("trim")
    trim = None
    if _off(trim_section):
        why["trim"] = "off in config"
    else:
        trim = TrimConfig.from_config(name, {} if trim_section is True else trim_section)
        why["trim"] = origin.get("trim", "default")

    capture = CaptureConfig.from_config(name, values.get("capture", False))
    why["capture"] = origin.get("capture", "default") if capture.enabled else "off in config"
    propose = values.get("propose", True)
    if not isinstance(propose, bool):
        raise PolicyConfigError(name, "propose", f"`{propose!r}` is not true or false.")
    why["propose"] = origin.get("propose", "default") if propose else "off in config"
    judge = values.get("judge")
    return WorkflowRungs(name, listed, frontier, cheap, policy, trim, capture, propose, judge, why)


def check_workflow_settings(settings: Settings) -> None:
    """Resolve `defaults:` and every listed workflow once; ConfigError names the file, workflow and key."""
    known = {m.name for m in settings.models}
    targets = [("defaults", "<defaults>")] + [(f"workflows[{i}]", w.name) for i, w in enumerate(settings.workflows)]
    for where, name in targets:
        try:
            rs = resolve(settings, name)
        except PolicyConfigError as exc:
            raise ConfigError(f"{settings.source}: {where}: {exc}") from None
        for key in ("frontier", "cheap"):
            val = getattr(rs.policy, key, None) if rs.policy else None
            if val is not None and val not in known:
                raise ConfigError(
                    f"{settings.source}: {where} (`{name}`).route.{key}: unknown model `{val}`; "
                    "list a configured model name"
                )
