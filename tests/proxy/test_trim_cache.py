"""Trimmed prompts stay cacheable, and the saving is counted at the price the cache would have charged.

The scripted upstream (tests/proxy/scripted_upstream.py) caches prompt prefixes as providers do and
reports `cached_tokens`; the workload is steady: every conversation looks the customer up, then answers.
"""

from __future__ import annotations

import json
import time

from trim_helpers import HELPER, NAMES, PRICE, TOOLS, ask, scripted, scripted_process, trim_gateway, warm_up

__all__ = ["scripted", "scripted_process"]  # fixtures, used by name

SYSTEM = "You are the shop's support agent. " + "Follow the procedure step by step and be brief. " * 40
PER_TOKEN = {k: v / 1e6 for k, v in PRICE.items()}


def conversation(gw, up, i: int, tag: str = "steady", **kw) -> None:
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": f"where is order {i}?"}]
    up.script({"call": "lookup", "args": {"id": str(i)}}, {"content": f"order {i} ships today"})
    msg = ask(gw, messages, f"{tag}-{i}", **kw).choices[0].message
    messages += [
        {"role": "assistant", "content": None, "tool_calls": [tc.model_dump() for tc in msg.tool_calls]},
        {"role": "tool", "tool_call_id": msg.tool_calls[0].id, "content": json.dumps({"status": "packed"})},
    ]
    ask(gw, messages, f"{tag}-{i}", **kw)


def hit_rates(rows: list[dict]) -> tuple[float, float]:
    """(share of requests served partly from cache, share of prompt tokens read from cache)."""
    return (
        sum(1 for r in rows if r["cached_tokens"]) / len(rows),
        sum(r["cached_tokens"] for r in rows) / sum(r["prompt_tokens"] for r in rows),
    )


def test_cache_hit_rate_with_trimming_is_no_lower_than_without(start_gateway, scripted):
    gw = trim_gateway(start_gateway, scripted, min_requests=3)
    warm_up(gw, scripted, 6)
    for i in range(3):  # the stage after the lookup gets its 3 requests too
        conversation(gw, scripted, 100 + i)
    runs = {}
    for trim in ("off", "on"):
        scripted.reset()
        scripted.config(min=256, block=32)
        for i in range(2):  # a steady workload: the provider's cache is warm when measuring starts
            conversation(gw, scripted, i, f"prime-{trim}", headers={"X-Tiergate-Trim": trim})
        for i in range(12):
            conversation(gw, scripted, i, trim, headers={"X-Tiergate-Trim": trim})
        deadline = time.monotonic() + 10
        while len(rows := [r for r in gw.records() if r["conversation"].startswith(f"{trim}-")]) < 24:
            assert time.monotonic() < deadline, "ledger rows"
            time.sleep(0.05)
        assert len(rows) == 24
        runs[trim] = rows
        sent = {tuple(t["function"]["name"] for t in e["body"]["tools"]) for e in scripted.log()}
        # one tool list for every request: untrimmed; trimmed, one per workflow once the upstream is seen
        # caching (`by_stage: auto`; before, the stage after the lookup went out with the helper alone)
        assert sent == ({tuple(NAMES)} if trim == "off" else {("lookup", HELPER)}), sent
    off, on = hit_rates(runs["off"]), hit_rates(runs["on"])
    assert on[0] >= off[0] and on[0] == 1.0, (on, off)
    assert all(r["tools_dropped"] for r in runs["on"])
    # and trimming never makes the prompt tokens billed at the full price, or the bill, grow
    full = {k: sum(r["prompt_tokens"] - r["cached_tokens"] for r in rows) for k, rows in runs.items()}
    cost = {k: sum(r["cost_usd"] for r in rows) for k, rows in runs.items()}
    assert full["on"] <= full["off"] and cost["on"] < cost["off"], (full, cost, on, off)


def test_the_saving_values_removed_tokens_at_the_cached_price_where_the_upstream_caches(start_gateway, scripted):
    gw = trim_gateway(start_gateway, scripted, min_requests=3)
    scripted.config(min=10**6)  # no caching yet: the removed tokens are worth the full input price
    warm_up(gw, scripted, 3)
    for i in range(2):
        conversation(gw, scripted, i)
    scripted.config(min=256, block=32)
    for i in range(2, 6):
        conversation(gw, scripted, i)
    gw.stop()
    rows = [r for r in gw.records() if r["conversation"].startswith("steady-") and r["tools_dropped"]]
    # opening turns are trimmed from the start; the turn after the lookup once its stage has 3 requests
    # of its own, or once the upstream is seen caching (one list per workflow then): timing decides which
    assert {"steady-0", "steady-1"} <= {r["conversation"] for r in rows}
    p = PER_TOKEN
    cached_rows = 0
    for r in rows:
        removed = r["prompt_tokens_before_trim"] - r["prompt_tokens"]
        assert removed > 0 and r["attempts"] == 1
        cost = (r["prompt_tokens"] - r["cached_tokens"]) * p["input_per_million"]
        cost += r["cached_tokens"] * p["cached_input_per_million"] + r["completion_tokens"] * p["output_per_million"]
        assert abs(r["cost_usd"] - cost) < 1e-12
        if r["cached_tokens"]:
            cached_rows += 1
            # untrimmed, the removed schemas would have been read from cache with the rest of the prefix
            uncached = r["prompt_tokens_before_trim"] - r["cached_tokens"] - removed
            base = uncached * p["input_per_million"] + (r["cached_tokens"] + removed) * p["cached_input_per_million"]
            saved = removed * p["cached_input_per_million"]
        elif r["conversation"] in ("steady-0", "steady-1"):
            base = (r["prompt_tokens_before_trim"] * p["input_per_million"])
            saved = removed * p["input_per_million"]
        else:
            continue  # a miss once the workflow is known to cache: valued at the cached price too
        base += r["completion_tokens"] * p["output_per_million"]
        assert abs(r["baseline_cost_usd"] - base) < 1e-12, r
        assert abs(r["trim_saved_usd"] - saved) < 1e-12, r
    assert cached_rows >= 3


def test_cache_control_markers_stay_valid_through_litellm(start_gateway, scripted):
    """The app marks its last tool as a cache breakpoint; trimming drops that tool, the marker moves."""
    gw = trim_gateway(start_gateway, scripted, anthropic=True, min_requests=3, by_stage=False)
    tools = [*TOOLS[:-1], {**TOOLS[-1], "cache_control": {"type": "ephemeral"}}]
    warm_up(gw, scripted, 3, tools=tools, max_tokens=50)
    scripted.reset()
    scripted.config(min=128)
    for i in range(3):
        ask(gw, [{"role": "system", "content": SYSTEM}, {"role": "user", "content": f"hi {i}"}], f"cc-{i}",
            tools=tools, max_tokens=50)
    sent = scripted.log()[-1]["body"]["tools"]
    assert [t["name"] for t in sent] == ["lookup", HELPER] and "cache_control" in sent[-1]
    gw.stop()
    rows = [r for r in gw.records() if r["conversation"].startswith("cc-")]
    assert [r["cached_tokens"] > 0 for r in rows] == [False, True, True]
