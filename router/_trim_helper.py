"""The tool a trimmed request carries instead of the schemas it left out, so no capability is hidden.

A trimmed request offers the tools it keeps (in the client's order) and one small tool of tiergate's,
`tiergate_load_tools`, whose description names every tool left out. A model that needs one calls the
helper; the gateway answers that call itself by re-sending the request with the named schemas added
(`gateway/proxy/toolload.py`), so the client never sees it.

Everything here is deterministic in its inputs: the same kept set gives the same bytes, in the same
order, so a provider's prompt cache keyed on the tools prefix keeps hitting.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from ._features import tool_names

__all__ = ["LOAD_TOOLS", "helper_requests", "load_tools_helper", "offer_tools"]

LOAD_TOOLS = "tiergate_load_tools"


def load_tools_helper(left_out: Sequence[str]) -> dict[str, Any]:
    """The helper tool naming the tools `left_out`, in the order given.

    Example::

        load_tools_helper(["refund", "cancel_order"])["function"]["description"]
        # 'Tools you can use whose schemas are not shown yet: refund, cancel_order. Call this ...'
    """
    return {
        "type": "function",
        "function": {
            "name": LOAD_TOOLS,
            "description": (
                f"Tools you can use whose schemas are not shown yet: {', '.join(left_out)}. "
                "Call this with the names you need; they are then added and you can call them."
            ),
            "parameters": {
                "type": "object",
                "properties": {"names": {"type": "array", "items": {"type": "string"}}},
                "required": ["names"],
            },
        },
    }


def _marker(tool: Mapping[str, Any]) -> Any:
    function = tool.get("function")
    inner = function.get("cache_control") if isinstance(function, Mapping) else None
    return tool.get("cache_control") or inner


def _with_marker(tool: Mapping[str, Any], marker: Any) -> dict[str, Any]:
    return {**tool, "cache_control": marker}


def offer_tools(
    tools: Sequence[Mapping[str, Any]], keep: Collection[str], helper: bool = True
) -> list[dict[str, Any]]:
    """The tools a trimmed request sends: those named in `keep` in their original order, then the helper.

    Example::

        offer_tools(body["tools"], {"lookup_order", "escalate"})
        # [lookup_order, escalate, tiergate_load_tools naming every other tool]

    Tools without a readable name are always kept. A provider cache marker (`cache_control`, Anthropic's
    breakpoint) on a tool left out moves to the nearest tool sent before it, or to the last tool sent
    when it marked the end of the list (the helper then sits inside the cached prefix): the app's
    breakpoints stay valid and their number never grows. With nothing left out, `tools` comes back as is.
    """
    names = [n[0] if n else None for n in (tool_names([t]) for t in tools)]
    sent: list[dict[str, Any]] = []
    left_out: list[str] = []
    moved: dict[int, Any] = {}  # position in `sent` (-1: the end of the list) -> marker to move there
    for tool, name in zip(tools, names, strict=True):
        if name is None or name in keep:
            sent.append(dict(tool))
            continue
        left_out.append(name)
        marker = _marker(tool)
        if marker is not None:
            moved[len(sent) - 1 if sent else 0] = marker
    if not left_out:
        return [dict(t) for t in tools]
    last_kept = len(sent) - 1
    if helper:
        sent.append(load_tools_helper(left_out))
    for at, marker in moved.items():
        # a marker after the last kept tool covered the whole list: it moves to the list's end
        target = len(sent) - 1 if at >= last_kept else at
        if target >= 0 and _marker(sent[target]) is None:
            sent[target] = _with_marker(sent[target], marker)
    return sent


def helper_requests(message: Mapping[str, Any]) -> tuple[str, ...] | None:
    """Tool names a reply asked the helper for; None when it did not call the helper.

    Example::

        helper_requests({"tool_calls": [{"function": {"name": "tiergate_load_tools",
                                                      "arguments": '{"names": ["refund"]}'}}]})   # ("refund",)

    An empty tuple means the helper was called without names the gateway can read (arguments not
    JSON, or no `names`): the caller should then load every tool left out.
    """
    asked: list[str] = []
    called = False
    for call in message.get("tool_calls") or ():
        function = call.get("function") if isinstance(call, Mapping) else None
        if not isinstance(function, Mapping) or function.get("name") != LOAD_TOOLS:
            continue
        called = True
        try:
            args = json.loads(function.get("arguments") or "{}")
        except (TypeError, ValueError):
            continue
        found = args.get("names", args.get("name")) if isinstance(args, Mapping) else None
        if isinstance(found, str):
            found = [found]
        if isinstance(found, list):
            asked.extend(n for n in found if isinstance(n, str) and n not in asked)
    return tuple(asked) if called else None
