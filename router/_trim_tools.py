"""Dropping tool schemas a workflow never calls.

The gateway keeps the `ToolUsage` counts (per workflow, over its window) and decides the holdout;
this module only decides what to drop, deterministically, so the same inputs always give the same
tool list and provider prompt caches keyed on the prefix keep hitting.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._features import tool_names

__all__ = ["ToolUsage", "TrimResult", "in_holdout", "tools_called", "trim_tools"]


@dataclass(frozen=True)
class ToolUsage:
    """Per-workflow tool counts over the gateway's window: plain data, updated by copy.

    Example::

        usage = ToolUsage().record(offered=["search", "refund"], called=["search"])
        usage.calls["search"], usage.offers["refund"], usage.requests_seen   # 1, 1, 1

    Record what the client sent (`offered`, before trimming) and what the model called, from all
    traffic, holdout included: a call on record is how a tool that starts being needed stops being
    dropped, and the offer count is how a tool the client only just added is not dropped before it
    had a fair chance to be called. A tool with no offer count on record (counts kept before offers
    were) is taken to have been offered on every request.
    """

    requests_seen: int = 0
    calls: Mapping[str, int] = field(default_factory=dict)
    offers: Mapping[str, int] = field(default_factory=dict)

    def record(self, offered: Iterable[str], called: Iterable[str]) -> ToolUsage:
        """Counts after one more request that offered `offered` tools and called `called` ones."""
        calls = dict(self.calls)
        for name in called:
            calls[name] = calls.get(name, 0) + 1
        offers = dict(self.offers)
        for name in set(offered):
            offers[name] = offers.get(name, 0) + 1
        return ToolUsage(self.requests_seen + 1, calls, offers)

    def times_offered(self, name: str) -> int:
        return self.offers.get(name, self.requests_seen)

    def to_dict(self) -> dict[str, Any]:
        return {"requests_seen": self.requests_seen, "calls": dict(self.calls), "offers": dict(self.offers)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ToolUsage:
        return cls(
            int(data.get("requests_seen", 0)),
            {str(k): int(v) for k, v in dict(data.get("calls", {})).items()},
            {str(k): int(v) for k, v in dict(data.get("offers", {})).items()},
        )


@dataclass(frozen=True)
class TrimResult:
    """The tools to send (original order), the names dropped, and why."""

    tools: tuple[Mapping[str, Any], ...]
    dropped: tuple[str, ...]
    reason: str


def tools_called(messages: Sequence[Mapping[str, Any]]) -> frozenset[str]:
    """Names of the tools the assistant already called in this conversation."""
    names = set()
    for message in messages:
        if not isinstance(message, Mapping) or message.get("role") != "assistant":
            continue
        for call in message.get("tool_calls") or ():
            function = call.get("function") if isinstance(call, Mapping) else None
            if isinstance(function, Mapping) and isinstance(function.get("name"), str):
                names.add(function["name"])
        legacy = message.get("function_call")
        if isinstance(legacy, Mapping) and isinstance(legacy.get("name"), str):
            names.add(legacy["name"])
    return frozenset(names)


def in_holdout(key: str, share: float) -> bool:
    """Deterministic holdout draw for a conversation key: same key, same answer, on every host."""
    if share <= 0:
        return False
    digest = hashlib.sha256(key.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


def _forced_tool(tool_choice: Any) -> str | None:
    if isinstance(tool_choice, Mapping):
        function = tool_choice.get("function")
        if isinstance(function, Mapping) and isinstance(function.get("name"), str):
            return function["name"]
        if isinstance(tool_choice.get("name"), str):
            return tool_choice["name"]
    return None


def trim_tools(
    tools: Sequence[Mapping[str, Any]],
    usage: ToolUsage,
    called_in_conversation: Iterable[str] = (),
    keep: Iterable[str] = (),
    min_requests: int = 50,
    holdout: bool = False,
    tool_choice: Any = None,
    loaded: Iterable[str] = (),
) -> TrimResult:
    """Drop the tools with no call in `min_requests` or more requests that offered them.

    Example::

        result = trim_tools(body["tools"], usage, tools_called(body["messages"]), keep={"escalate"},
                            holdout=in_holdout(conversation_id, 0.05), tool_choice=body.get("tool_choice"))
        body["tools"] = list(result.tools)

    Never dropped: a tool already called in this conversation, one it `loaded` through the helper tool
    (`offer_tools`), one in `keep`, one forced by `tool_choice`. Holdout requests go untrimmed so new
    needs still show up in `usage`.
    """
    tools = tuple(tools)
    if holdout:
        return TrimResult(tools, (), "holdout: sent untrimmed")
    if usage.requests_seen < min_requests:
        return TrimResult(tools, (), f"warming up: {usage.requests_seen} of {min_requests} requests seen")
    protected = set(called_in_conversation) | set(keep) | set(loaded)
    forced = _forced_tool(tool_choice)
    if forced:
        protected.add(forced)
    kept, dropped = [], []
    for tool, name in zip(tools, _names_or_none(tools), strict=True):
        if (
            name is None
            or usage.calls.get(name, 0) > 0
            or name in protected
            or usage.times_offered(name) < min_requests  # too new to judge
        ):
            kept.append(tool)
        else:
            dropped.append(name)
    if not dropped:
        return TrimResult(
            tools, (), "nothing to drop: every tool has calls on record, is protected or is too new to judge"
        )
    return TrimResult(
        tuple(kept),
        tuple(dropped),
        f"dropped {len(dropped)} tools with no calls in {usage.requests_seen} requests",
    )


def _names_or_none(tools: Sequence[Mapping[str, Any]]) -> list[str | None]:
    # tools without a readable name (non-function tool types) are always kept
    result: list[str | None] = []
    for tool in tools:
        names = tool_names([tool])
        result.append(names[0] if names else None)
    return result
