"""What the router knows about a request before any model answers it.

The gateway hands over the raw OpenAI request body; everything a policy or the learned router may
look at is extracted here once, into a frozen value, so policies stay pure and cheap.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["RequestFeatures", "message_text", "text_stats", "tool_names"]

# ~4 characters a token for English prose: good enough for routing rules, 100x cheaper than tiktoken.
# Exact counts for trimming accounts come from `count_prompt_tokens`.
_CHARS_PER_TOKEN = 4
_NUMBER = re.compile(r"\d[\d,]*(?:\.\d+)?")
_OPERATION_WORDS = re.compile(
    r"\b(?:half|twice|double|triple|third|quarter|percent|each|per|every|more|less|fewer|than|times|total)\b",
    re.IGNORECASE,
)
_UNIT_WORDS = re.compile(r"\b(?:second|minute|hour|day|week|month|year)s?\b", re.IGNORECASE)


def message_text(message: Mapping[str, Any]) -> str:
    """Text of one chat message, whether `content` is a string, a list of parts or absent."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        parts = []
        for part in content:
            if isinstance(part, Mapping) and isinstance(part.get("text"), str):
                parts.append(part["text"])
        return "\n".join(parts)
    return ""


def tool_names(tools: Sequence[Mapping[str, Any]] | None) -> tuple[str, ...]:
    """Names of the tools offered, from `tools` (function tools) or the legacy `functions` list."""
    names = []
    for tool in tools or ():
        if not isinstance(tool, Mapping):
            continue
        function = tool.get("function")
        name = function.get("name") if isinstance(function, Mapping) else tool.get("name")
        if isinstance(name, str):
            names.append(name)
    return tuple(names)


def text_stats(text: str) -> dict[str, float]:
    """Cheap surface signals of difficulty: length, how many numbers, how many operations.

    On GSM8K these carry most of what a prompt-only router can learn (see docs/bench-router.md).
    """
    numbers = _NUMBER.findall(text)
    largest = max((float(n.replace(",", "") or 0) for n in numbers), default=0.0)
    return {
        "log_chars": math.log1p(len(text)),
        "log_words": math.log1p(len(text.split())),
        "numbers": float(len(numbers)),
        "sentences": float(text.count(".") + text.count("?") + text.count("!")),
        "percent_signs": float(text.count("%")),
        "fractions": float(len(re.findall(r"\d/\d", text))),
        "decimals": float(len(re.findall(r"\d\.\d", text))),
        "money": float(text.count("$")),
        "log_largest_number": math.log1p(min(largest, 1e15)),
        "operation_words": float(len(_OPERATION_WORDS.findall(text))),
        "unit_words": float(len(_UNIT_WORDS.findall(text))),
        "questions": float(text.count("?")),
    }


@dataclass(frozen=True)
class RequestFeatures:
    """Request features a routing policy may condition on.

    Example::

        features = RequestFeatures.from_request({"messages": [{"role": "user", "content": "Hi"}]})
        features.prompt_tokens, features.turn_index, features.last_user_message

    `turn_index` counts earlier user turns (0 on the first), `tool_calls_so_far` the tool calls the
    assistant already made in this conversation, `recent_text` joins the last `recent_turns` messages.
    """

    recent_text: str
    last_user_message: str
    prompt_tokens: int
    turn_index: int
    tools_present: bool
    tool_names: tuple[str, ...] = ()
    tool_calls_so_far: int = 0
    message_count: int = 0

    @classmethod
    def from_request(cls, body: Mapping[str, Any], recent_turns: int = 4) -> RequestFeatures:
        """Extract the features from an OpenAI chat-completions request body."""
        messages = body.get("messages")
        if not isinstance(messages, Sequence) or isinstance(messages, str | bytes):
            raise ValueError(
                f"The request has `messages` of type `{type(messages).__name__}`; "
                "send a list of chat messages as in the OpenAI chat-completions API."
            )
        texts = [message_text(m) if isinstance(m, Mapping) else "" for m in messages]
        roles = [m.get("role") if isinstance(m, Mapping) else None for m in messages]
        user_turns = [i for i, role in enumerate(roles) if role == "user"]
        last_user = texts[user_turns[-1]] if user_turns else ""
        tool_calls = 0
        for message in messages:
            if isinstance(message, Mapping) and message.get("role") == "assistant":
                calls = message.get("tool_calls")
                tool_calls += len(calls) if isinstance(calls, Sequence) else 0
                tool_calls += 1 if message.get("function_call") else 0
        names = tool_names(body.get("tools") or body.get("functions"))
        total_chars = sum(len(t) for t in texts)
        return cls(
            recent_text="\n".join(t for t in texts[-recent_turns:] if t),
            last_user_message=last_user,
            prompt_tokens=total_chars // _CHARS_PER_TOKEN + 1,
            turn_index=max(len(user_turns) - 1, 0),
            tools_present=bool(names),
            tool_names=names,
            tool_calls_so_far=tool_calls,
            message_count=len(messages),
        )

    @classmethod
    def from_prompt(cls, prompt: str) -> RequestFeatures:
        """Features of a single-turn request holding only `prompt`; how offline datasets are fed."""
        return cls.from_request({"messages": [{"role": "user", "content": prompt}]})

    def numeric(self) -> dict[str, float]:
        """Numeric view for the learned router; keys are stable so stored models keep working."""
        values = {
            "log_prompt_tokens": math.log1p(self.prompt_tokens),
            "turn_index": float(self.turn_index),
            "tools_present": float(self.tools_present),
            "tool_calls_so_far": float(self.tool_calls_so_far),
        }
        values.update({f"last_user_{k}": v for k, v in text_stats(self.last_user_message).items()})
        return values
