"""Rung 2 on one request: what to leave out of the body, and what each conversation loaded back.

    out = trim_request(cfg, usage, body, conversation, "openai/gpt-4o", loaded=memory.get(conversation))
    out.body, out.dropped, out.helper, out.removed_tokens

The policy is router/'s (`trim_tools`, `offer_tools`, `dedupe_preloads`); this module feeds it the
gateway's state. What it sends is a pure function of the workflow's counts (rebuilt at refreshes, not
per request), the conversation's own calls and loads, and the client's tools in the client's order:
requests of one stage share one tools prefix, so provider prompt caches keep hitting.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.proxy.identity import content_text
from gateway.proxy.policy import TrimConfig
from gateway.proxy.tokens import count_text
from router import (
    LOAD_TOOLS,
    ToolUsage,
    dedupe_preloads,
    in_holdout,
    offer_tools,
    tools_called,
    trim_tools,
)
from router._features import tool_names


@dataclass
class TrimOutcome:
    body: dict[str, Any]
    dropped: tuple[str, ...] = ()
    removed_blocks: int = 0
    removed_tokens: int = 0
    reason: str = ""
    helper: bool = False  # the body carries `tiergate_load_tools`, which the gateway must answer itself


class LoadedTools:
    """Per conversation, the tool names it loaded through the helper: kept on its later turns.

    In-process and bounded (least recently used out first): a conversation served by another process
    loads its tool once more there, and a loaded tool used often enough stops being trimmed anyway,
    since loads count as calls in the ledger the counts are rebuilt from.
    """

    def __init__(self, limit: int = 100_000):
        self._limit = limit
        self._names: OrderedDict[str, frozenset[str]] = OrderedDict()

    def get(self, conversation: str) -> frozenset[str]:
        names = self._names.get(conversation)
        if names is None:
            return frozenset()
        self._names.move_to_end(conversation)
        return names

    def add(self, conversation: str, names: Iterable[str]) -> None:
        self._names[conversation] = self.get(conversation) | frozenset(names)
        self._names.move_to_end(conversation)
        while len(self._names) > self._limit:
            self._names.popitem(last=False)


def per_stage(cfg: TrimConfig, caches: bool) -> bool:
    return not caches if cfg.by_stage == "auto" else bool(cfg.by_stage)


def offers_helper(tool_choice: Any) -> bool:
    """Whether the model could call the helper: not with `tool_choice` "none" or naming a tool."""
    return tool_choice != "none" and not isinstance(tool_choice, Mapping)


def trim_request(
    cfg: TrimConfig,
    usage: Mapping[str, ToolUsage],
    body: dict[str, Any],
    conversation: str,
    count_model: str,
    loaded: Iterable[str] = (),
    caches: bool = False,
) -> TrimOutcome:
    """`usage` holds counts per stage and under "all"; `caches`: the upstream caches this workflow's
    prompts, which makes `by_stage: auto` send one list per workflow."""
    out = dict(body)
    dropped: tuple[str, ...] = ()
    reason = ""
    helper = False
    tools = body.get("tools")
    # an app tool that already bears the helper's name: the helper could not be told apart, so no trim
    if cfg.tools and isinstance(tools, list) and tools and LOAD_TOOLS not in tool_names(tools):
        helper = offers_helper(body.get("tool_choice"))
        result = trim_tools(
            tools,
            usage.get(stage_of(body["messages"]) if per_stage(cfg, caches) else "all", ToolUsage()),
            # with the helper, a tool called earlier in the conversation stays loadable rather than sent:
            # the stage's tool list is then the same for every conversation (one cached prefix per stage)
            () if helper else tools_called(body["messages"]),
            keep=cfg.keep,
            min_requests=cfg.min_requests,
            holdout=in_holdout(conversation, cfg.holdout),
            tool_choice=body.get("tool_choice"),
            loaded=loaded,
        )
        dropped, reason = result.dropped, result.reason
        helper = helper and bool(dropped)
        if dropped:
            sent = offer_tools(tools, set(tool_names(result.tools)), helper=helper)
            if sent:
                out["tools"] = sent
            else:  # nothing left to offer: a tool_choice without tools is an error upstream
                for key in ("tools", "tool_choice", "parallel_tool_calls"):
                    out.pop(key, None)
    blocks = 0
    if cfg.preloads:
        pre = dedupe_preloads(body["messages"], min_chars=cfg.min_chars)
        if pre.removed_blocks:
            out["messages"] = list(pre.messages)
            blocks = pre.removed_blocks
    if not dropped and not blocks:
        return TrimOutcome(body, reason=reason)
    return TrimOutcome(out, dropped, blocks, removed_tokens(body, out, count_model), reason, helper)


@functools.lru_cache(maxsize=8192)
def _tokens(model: str, text: str) -> int:
    return count_text(model, text)


def tools_tokens(tools: Any, model: str) -> int:
    """Tokens of a tool list's schemas, cached per schema (agents re-send the same ones every turn)."""
    return sum(_tokens(model, orjson.dumps(t).decode()) for t in tools or ())


def removed_tokens(before: Mapping[str, Any], after: Mapping[str, Any], model: str) -> int:
    """Tokens trimming took out, net of the helper tool it added: schemas plus what changed in the messages.

    Counting only the difference, with a cache per schema and per text, instead of re-encoding the whole
    prompt twice: that cost ~3 ms of CPU per trimmed request on a 40-tool prompt.
    """
    removed = tools_tokens(before.get("tools"), model) - tools_tokens(after.get("tools"), model)
    old, new = before["messages"], after["messages"]
    if old is not new:
        removed += sum(_tokens(model, content_text(m.get("content"))) for m in old)
        removed -= sum(_tokens(model, content_text(m.get("content"))) for m in new)
    return removed


def stage_of(messages: Any) -> str:
    """Where a request stands in its conversation: opening or later user turn, and tool calls since it.

    Procedures call their tools in a stable order (look the customer up, then the order, then act), so
    counting calls per stage lets a request carry only the tools ever called at that point. A stage
    with too few requests is not trimmed, and holdout traffic restores a tool a stage starts to need.
    The stages are a small fixed family (12), so the tools prefixes a workflow sends are too.
    """
    users = 0
    calls = 0
    for m in messages:
        role = m.get("role")
        if role == "user":
            users += 1
            calls = 0
        elif role == "assistant":
            calls += len(m.get("tool_calls") or ())
    return f"{'first' if users <= 1 else 'later'}:{min(calls, 5)}"
