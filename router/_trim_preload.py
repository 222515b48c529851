"""Keeping large repeated blocks once: re-injected system text, a document pasted again.

Works on paragraphs (text split on blank lines): a run of consecutive paragraphs that already
appeared earlier in the conversation, and is at least `min_chars` long, is replaced by a short
marker. The first copy stays, so the cached prefix is unchanged; the last user turn is never touched.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["PreloadResult", "dedupe_preloads"]

_PARAGRAPH_BREAK = re.compile(r"(\n[ \t]*\n+)")


@dataclass(frozen=True)
class PreloadResult:
    """Messages after deduplication (same count and roles), blocks removed and characters saved."""

    messages: tuple[Mapping[str, Any], ...]
    removed_blocks: int
    removed_chars: int


def _key(paragraph: str) -> bytes:
    return hashlib.blake2b(" ".join(paragraph.split()).encode(), digest_size=16).digest()


def _dedupe_text(text: str, seen: dict[bytes, int], index: int, min_chars: int) -> tuple[str, int, int]:
    pieces = _PARAGRAPH_BREAK.split(text)  # paragraphs at even positions, separators at odd ones
    paragraphs = pieces[0::2]
    repeated = [bool(p.strip()) and _key(p) in seen for p in paragraphs]
    out: list[str] = []
    removed_blocks = removed_chars = 0
    i = 0
    while i < len(paragraphs):
        if not repeated[i]:
            out.append(paragraphs[i])
            if i < len(paragraphs) - 1:
                out.append(pieces[2 * i + 1])
            i += 1
            continue
        j = i
        while j + 1 < len(paragraphs) and (repeated[j + 1] or not paragraphs[j + 1].strip()):
            j += 1
        while not paragraphs[j].strip():  # do not swallow trailing blank paragraphs
            j -= 1
        run = "".join(pieces[2 * i : 2 * j + 1])
        first = seen.get(_key(paragraphs[i]), index)
        marker = f"[tiergate: {len(run)} repeated characters omitted; see message {first}]"
        if len(run) >= min_chars and len(run) > len(marker):  # a marker longer than the block saves nothing
            out.append(marker)
            removed_blocks += 1
            removed_chars += len(run)
        else:
            out.append(run)
        if j < len(paragraphs) - 1:
            out.append(pieces[2 * j + 1])
        i = j + 1
    for p in paragraphs:
        if p.strip():
            seen.setdefault(_key(p), index)
    return "".join(out), removed_blocks, removed_chars


def _text_len(content: Any) -> int:
    if isinstance(content, str):
        return len(content)
    if isinstance(content, Sequence):
        return sum(len(p["text"]) for p in content if isinstance(p, Mapping) and isinstance(p.get("text"), str))
    return 0


def dedupe_preloads(messages: Sequence[Mapping[str, Any]], min_chars: int = 1000) -> PreloadResult:
    """Replace later copies of large repeated blocks with a marker pointing at the first copy.

    Example::

        result = dedupe_preloads(body["messages"], min_chars=1000)
        body["messages"] = list(result.messages)

    Only string contents and `text` parts are edited; messages are never removed or reordered, and
    tool-call structure is left as it is.
    """
    last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=-1)
    # a block is removed from a message holding at least `min_chars` of text, after as much text in
    # earlier messages (the last user turn is neither): without such a message there is no work
    # (normalising and hashing every paragraph was ~200 µs of a short agent request's path)
    before = 0
    for i, m in enumerate(messages):
        if i == last_user:
            continue
        size = _text_len(m.get("content"))
        if size >= min_chars and before >= min_chars:
            break
        before += size
    else:
        return PreloadResult(tuple(messages), 0, 0)
    seen: dict[bytes, int] = {}
    result: list[Mapping[str, Any]] = []
    blocks = chars = 0
    for index, message in enumerate(messages):
        content = message.get("content")
        if index == last_user:
            # never edited, but its paragraphs still count as seen for nothing after it: it is last
            result.append(message)
            continue
        if isinstance(content, str):
            text, b, c = _dedupe_text(content, seen, index, min_chars)
            blocks, chars = blocks + b, chars + c
            result.append({**message, "content": text} if b else message)
        elif isinstance(content, Sequence) and content:
            parts: list[Any] = []
            changed = False
            for part in content:
                if (
                    isinstance(part, Mapping)
                    and part.get("type") == "text"
                    and isinstance(part.get("text"), str)
                ):
                    text, b, c = _dedupe_text(part["text"], seen, index, min_chars)
                    blocks, chars = blocks + b, chars + c
                    parts.append({**part, "text": text} if b else part)
                    changed = changed or bool(b)
                else:
                    parts.append(part)
            result.append({**message, "content": parts} if changed else message)
        else:
            result.append(message)
    return PreloadResult(tuple(result), blocks, chars)
