"""Token counts for when an upstream reports no usage (flagged as estimated in the ledger).

    count_prompt_tokens("gpt-4o", [{"role": "user", "content": "hi"}])  # -> 8

tiktoken downloads its encodings on first use, which fails offline. litellm ships the cl100k_base and
o200k_base files in its package, so we point tiktoken's cache at them before the first use.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable, Mapping
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import tiktoken

# Per-message framing tokens in OpenAI's chat format (see OpenAI's cookbook "How to count tokens").
_PER_MESSAGE = 3
_REPLY_PRIMER = 3


def _point_tiktoken_at_bundled_files() -> None:
    if os.environ.get("TIKTOKEN_CACHE_DIR") or os.environ.get("DATA_GYM_CACHE_DIR"):
        return
    spec = find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        return
    bundled = Path(next(iter(spec.submodule_search_locations))) / "litellm_core_utils" / "tokenizers"
    if bundled.is_dir():
        os.environ["TIKTOKEN_CACHE_DIR"] = str(bundled)


@functools.lru_cache(maxsize=64)
def encoding_for(model: str) -> tiktoken.Encoding:
    """The model's encoding; o200k_base for unknown models (today's most common), cl100k_base if absent."""
    _point_tiktoken_at_bundled_files()
    name = model.split("/", 1)[-1]
    try:
        return tiktoken.encoding_for_model(name)
    except KeyError:
        pass
    try:
        return tiktoken.get_encoding("o200k_base")
    except Exception:  # encoding file missing and no network: fall back to the smaller bundled one
        return tiktoken.get_encoding("cl100k_base")


def _text_of(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, Mapping))
    return str(content)


def count_text(model: str, text: str) -> int:
    return len(encoding_for(model).encode(text, disallowed_special=()))


def count_prompt_tokens(
    model: str, messages: Iterable[Mapping[str, Any]], tools: Iterable[Mapping[str, Any]] | None = None
) -> int:
    """Approximate prompt tokens the way OpenAI bills them (messages, tool calls and tool schemas)."""
    import orjson

    enc = encoding_for(model)
    total = _REPLY_PRIMER
    for msg in messages:
        total += _PER_MESSAGE
        total += len(enc.encode(_text_of(msg.get("content")), disallowed_special=()))
        for call in msg.get("tool_calls") or ():
            fn = call.get("function") or {}
            total += 3 + len(
                enc.encode(f"{fn.get('name', '')}{fn.get('arguments', '')}", disallowed_special=())
            )
    if tools:
        total += len(enc.encode(orjson.dumps(list(tools)).decode(), disallowed_special=()))
    return total
