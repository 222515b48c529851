"""Prompt token counts with tiktoken, for before/after trimming accounts.

Offline by design: tiktoken reads its BPE files from `TIKTOKEN_CACHE_DIR`, which we point at the
copies litellm ships (cl100k_base, o200k_base) unless the operator set it already.
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

from ._features import message_text

__all__ = ["count_prompt_tokens", "encoding_name_for"]

# OpenAI's published accounting for chat models: each message costs 3 tokens of framing, a name 1
# more, and the reply is primed with 3. Tool schemas are counted as their JSON; the provider's own
# rendering differs by a few percent, which cancels out in before/after comparisons.
_PER_MESSAGE = 3
_PER_NAME = 1
_REPLY_PRIMING = 3


def encoding_name_for(model: str) -> str:
    """tiktoken encoding for `model` (provider prefix ignored); cl100k_base for non-OpenAI models."""
    import tiktoken.model

    name = model.rsplit("/", 1)[-1]
    try:
        return tiktoken.model.encoding_name_for_model(name)
    except KeyError:
        return "cl100k_base"


@lru_cache(maxsize=4)
def _encoding(name: str) -> Any:
    if "TIKTOKEN_CACHE_DIR" not in os.environ:
        spec = importlib.util.find_spec("litellm")  # locate without importing: litellm's import is slow
        if spec and spec.submodule_search_locations:
            base = next(iter(spec.submodule_search_locations))
            os.environ["TIKTOKEN_CACHE_DIR"] = os.path.join(base, "litellm_core_utils", "tokenizers")
    import tiktoken

    return tiktoken.get_encoding(name)


def count_prompt_tokens(
    messages: Sequence[Mapping[str, Any]],
    tools: Sequence[Mapping[str, Any]] | None = None,
    model: str = "gpt-4o",
) -> int:
    """Tokens of a chat prompt (messages, tool calls in them, and tool schemas) for `model`.

    Example::

        before = count_prompt_tokens(body["messages"], body.get("tools"), "openai/gpt-4o")
    """
    encoding = _encoding(encoding_name_for(model))
    total = _REPLY_PRIMING
    for message in messages:
        total += _PER_MESSAGE
        total += len(encoding.encode(str(message.get("role", "")), disallowed_special=()))
        total += len(encoding.encode(message_text(message), disallowed_special=()))
        if message.get("name"):
            total += _PER_NAME + len(encoding.encode(str(message["name"]), disallowed_special=()))
        if message.get("tool_calls"):
            total += len(
                encoding.encode(
                    json.dumps(message["tool_calls"], separators=(",", ":")), disallowed_special=()
                )
            )
    if tools:
        total += len(encoding.encode(json.dumps(list(tools), separators=(",", ":")), disallowed_special=()))
    return total
