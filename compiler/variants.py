"""Value-swapped copies of captured conversations: more copy lessons from the same traffic.

A compiled model must copy what the customer says (an order number, an email) into a tool call's
arguments. Trained on a few hundred captured conversations for many epochs, a small model memorises
each conversation's values instead: it reproduces the order numbers it saw and garbles new ones (the
replay gate then fails on every tool call while every text turn is right). With ``data.value_variants``
set (0 by default: see below), each captured conversation is also trained in ``n`` variants where
every slot value the miner traced (``compiler.mine``:
a value that travels from a user turn or a tool result into a tool call) is replaced, consistently in
every message, tool call and tool result of that conversation, by another value:

- a value with a digit in it (an order number, a booking reference, an email with a number) keeps its
  shape and gets new digits: ``A39793`` -> ``A80152``, ``ada12@example.com`` -> ``ada57@example.com``;
- any other value is swapped for another value of the same slot seen in the traffic (``damaged`` ->
  ``too small``), so every word stays one the workflow really uses.

The conversation's procedure, wording and order are the frontier's own; only the values change, so the
variant teaches the same step with a value the model cannot have memorised. Off by default: a value
with new digits can only be copied token by token, which the CPU scratch model does not learn within
its budget (travel-booking's traffic compile fails with 4 copies and passes with none,
docs/bench-traffic-compile.md); for a larger base or a GPU budget. Example::

    rows = value_variants(row, binding={"order_id": ["A39793"]}, pools={"order_id": [...]}, n=4, seed=0)
"""

from __future__ import annotations

import copy
import random
import re
from collections.abc import Mapping, Sequence
from typing import Any

Row = dict[str, Any]


def new_value(value: str, pool: Sequence[str], rng: random.Random) -> str:
    """Another value for a slot: fresh digits in the same shape, or another seen value of the slot."""
    if any(c.isdigit() for c in value):
        out = "".join(rng.choice("0123456789") if c.isdigit() else c for c in value)
        return out if out != value else new_value(value, pool, rng)
    others = [p for p in pool if p.lower() != value.lower() and not any(c.isdigit() for c in p)]
    return rng.choice(others) if others else value


def _replacer(mapping: Mapping[str, str]) -> re.Pattern[str] | None:
    keys = sorted((k for k in mapping if k), key=len, reverse=True)
    if not keys:
        return None
    # whole words only, all values at once (a swapped value is never swapped again)
    return re.compile(r"(?<![A-Za-z0-9])(" + "|".join(re.escape(k) for k in keys) + r")(?![A-Za-z0-9])")


def swap(messages: Sequence[Mapping[str, Any]], mapping: Mapping[str, str]) -> list[dict[str, Any]]:
    """``messages`` with every value in ``mapping`` replaced: contents, tool call arguments, tool results."""
    pattern = _replacer(mapping)
    out = [copy.deepcopy(dict(m)) for m in messages]
    if pattern is None:
        return out

    def sub(text: Any) -> Any:
        return pattern.sub(lambda m: mapping[m.group(1)], text) if isinstance(text, str) else text

    for m in out:
        if m.get("role") == "system":  # the app's own prompt: per-conversation lines are not slot values
            continue
        content = m.get("content")
        if isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and part.get("type") == "text":
                    part["text"] = sub(part.get("text"))
        else:
            m["content"] = sub(content)
        for call in m.get("tool_calls") or []:
            fn = call.get("function") if isinstance(call, dict) else None
            if isinstance(fn, dict):
                fn["arguments"] = sub(fn.get("arguments"))
    return out


def value_variants(row: Mapping[str, Any], binding: Mapping[str, Sequence[str]], pools: Mapping[str, Sequence[str]],
                   n: int, seed: int | str) -> list[Row]:
    """``n`` copies of a training row, each with this conversation's slot values swapped (see the module)."""
    values = [(slot, v) for slot, vs in binding.items() for v in vs if v and v.strip()]
    if n <= 0 or not values:
        return []
    rng = random.Random(f"variants|{seed}")
    out: list[Row] = []
    for k in range(n):
        mapping: dict[str, str] = {}
        for slot, v in values:
            if v not in mapping:
                mapping[v] = new_value(v, pools.get(slot, ()), rng)
        if all(a == b for a, b in mapping.items()):
            continue  # nothing to swap (one value seen in the whole workflow)
        tag = dict(row.get("tiergate") or {}) | {"variant": k + 1}
        out.append(dict(row) | {"messages": swap(row["messages"], mapping), "tiergate": tag})
    return out
