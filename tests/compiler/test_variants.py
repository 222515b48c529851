"""Value-swapped copies of captured conversations (compiler/variants.py)."""

from __future__ import annotations

import json
import re

from compiler.variants import new_value, swap, value_variants

ROW = {
    "messages": [
        {"role": "system", "content": "You are Acme's assistant."},
        {"role": "system", "content": "Customer order on file: A12345."},  # the app's own line: left alone
        {"role": "user", "content": "My order is A12345, it came damaged."},
        {"role": "assistant", "content": "", "tool_calls": [{"id": "c1", "type": "function", "function": {
            "name": "create_return", "arguments": json.dumps({"order_id": "A12345", "reason": "damaged"})}}]},
        {"role": "tool", "tool_call_id": "c1", "content": json.dumps({"order_id": "A12345", "return_id": "R77"})},
        {"role": "user", "content": [{"type": "text", "text": "And order XA12345 is fine."}]},
        {"role": "assistant", "content": "Return for A12345 (damaged) registered."},
    ],
    "tools": [],
    "tiergate": {"conversation": "c"},
}
BINDING = {"order_id": ["A12345"], "reason": ["damaged"]}
POOLS = {"order_id": ["A12345", "A99999"], "reason": ["damaged", "too small", "wrong colour"]}


def test_each_variant_swaps_every_value_consistently_and_nothing_else() -> None:
    rows = value_variants(ROW, BINDING, POOLS, n=3, seed=0)
    assert len(rows) == 3 and [r["tiergate"]["variant"] for r in rows] == [1, 2, 3]
    orders = set()
    for r in rows:
        msgs = r["messages"]
        assert msgs[:2] == ROW["messages"][:2]  # system messages untouched
        args = json.loads(msgs[3]["tool_calls"][0]["function"]["arguments"])
        order, reason = args["order_id"], args["reason"]
        assert re.fullmatch(r"A\d{5}", order) and order != "A12345"  # same shape, new digits
        assert reason in ("too small", "wrong colour")  # another value the workflow really uses
        assert msgs[2]["content"] == f"My order is {order}, it came {reason}."
        assert json.loads(msgs[4]["content"]) == {"order_id": order, "return_id": "R77"}
        assert msgs[5]["content"][0]["text"] == "And order XA12345 is fine."  # whole words only
        assert msgs[6]["content"] == f"Return for {order} ({reason}) registered."
        orders.add(order)
    assert len(orders) == 3
    assert ROW["messages"][2]["content"] == "My order is A12345, it came damaged."  # the original is not changed
    assert value_variants(ROW, BINDING, POOLS, n=3, seed=0) == rows  # deterministic for a seed


def test_nothing_to_swap_gives_no_variants() -> None:
    assert value_variants(ROW, {}, POOLS, n=4, seed=0) == []
    assert value_variants(ROW, BINDING, POOLS, n=0, seed=0) == []
    # a word slot with one value in the whole workflow cannot be swapped
    assert value_variants(ROW, {"reason": ["damaged"]}, {"reason": ["damaged"]}, n=2, seed=0) == []


def test_swap_is_simultaneous_and_new_values_keep_their_shape() -> None:
    import random

    out = swap([{"role": "user", "content": "from Oslo to Rome"}], {"Oslo": "Rome", "Rome": "Oslo"})
    assert out[0]["content"] == "from Rome to Oslo"
    rng = random.Random(1)
    for value in ("ada12@example.com", "SK214", "2026-12-03"):
        got = new_value(value, [], rng)
        assert got != value and len(got) == len(value)
        assert [c.isdigit() for c in got] == [c.isdigit() for c in value]
        assert [c for c in got if not c.isdigit()] == [c for c in value if not c.isdigit()]
