"""Latency of each per-request decision in `router/` (the budget is well under 1 ms each).

    python -m bench.router.decision_latency [--repeats 2000]

Times the pure functions the gateway calls on the request path, on realistic inputs: a 12-message
support conversation with 40 tool schemas, a learned router trained on 600 synthetic labelled
requests, a demonstration bank of 500 exchanges. Prints median and p99 in microseconds.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from collections.abc import Callable
from typing import Any

from bench.router.tool_catalog import TOOLS, USED_TOOLS
from router import (
    DemonstrationBank,
    LearnedRouter,
    RequestFeatures,
    RoutePolicy,
    ToolUsage,
    check_cascade,
    count_prompt_tokens,
    decide_route,
    dedupe_preloads,
    in_holdout,
    nearest_demonstrations,
    tools_called,
    trim_tools,
)

POLICY_DOC = "\n\n".join(
    f"Policy clause {i}: " + "returns accepted within thirty days when unworn. " * 8 for i in range(6)
)


def conversation() -> dict[str, Any]:
    messages: list[dict[str, Any]] = [{"role": "system", "content": "You are the support agent. " * 40}]
    for turn in range(4):
        messages.append({"role": "system", "content": POLICY_DOC})
        messages.append(
            {"role": "user", "content": f"Turn {turn}: my order ORD-{turn} is late, can I get 20 EUR back?"}
        )
        messages.append(
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": f"c{turn}",
                        "type": "function",
                        "function": {"name": "get_order_status", "arguments": "{}"},
                    }
                ],
            }
        )
    messages.append({"role": "user", "content": "So what now?"})
    return {"model": "gpt-4o", "messages": messages, "tools": TOOLS}


def training_set(n: int) -> tuple[list[RequestFeatures], list[bool]]:
    rng = random.Random(0)
    words = "order refund late broken address return size invoice cancel parcel store voucher".split()
    feats, labels = [], []
    for _ in range(n):
        text = " ".join(rng.choice(words) for _ in range(rng.randint(5, 40)))
        feats.append(RequestFeatures.from_prompt(text))
        labels.append(rng.random() < (0.8 if len(text) < 120 else 0.3))
    return feats, labels


def timed(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    for _ in range(min(50, repeats)):
        fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter_ns()
        fn()
        samples.append((time.perf_counter_ns() - start) / 1000)
    samples.sort()
    return statistics.median(samples), samples[int(0.99 * (len(samples) - 1))]


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2000)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = make_parser().parse_args(argv)
    body = conversation()
    features = RequestFeatures.from_request(body)
    feats, labels = training_set(600)
    learned = LearnedRouter.fit(feats, labels).with_threshold(0.5)
    base = {"frontier": "gpt-4o", "cheap": "gpt-4o-mini", "min_labels": 100}
    rules = RoutePolicy.from_config(
        "w",
        {
            **base,
            "kind": "rules",
            "rules": [
                {"min_prompt_tokens": 50_000, "route": "frontier"},
                {"last_user_pattern": "(?i)refund|cancel", "route": "frontier"},
                {"max_turn": 6, "tools_present": True, "route": "cheap"},
            ],
        },
    )
    learned_policy = RoutePolicy.from_config("w", {**base, "kind": "learned"})
    usage = ToolUsage(500, {name: 10 for name in USED_TOOLS})
    bank = DemonstrationBank.build(
        [
            {"messages": [{"role": "user", "content": " ".join(f.recent_text.split()[:30])}]}
            for f in feats[:500]
        ]
    )
    args_ok = json.dumps({"order_id": "ORD-1", "reason": "late"})
    cheap_answer = {
        "choices": [
            {
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "x",
                            "type": "function",
                            "function": {"name": "issue_refund", "arguments": args_ok},
                        }
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ]
    }
    cases: list[tuple[str, Callable[[], object]]] = [
        ("RequestFeatures.from_request (13 messages, 40 tools)", lambda: RequestFeatures.from_request(body)),
        ("decide_route rules", lambda: decide_route(features, rules)),
        (
            "decide_route learned (TF-IDF + 16 numeric)",
            lambda: decide_route(features, learned_policy, learned),
        ),
        (
            "features + decide_route learned",
            lambda: decide_route(RequestFeatures.from_request(body), learned_policy, learned),
        ),
        ("check_cascade (tool call, jsonschema)", lambda: check_cascade(body, cheap_answer)),
        (
            "trim_tools (40 tools)",
            lambda: trim_tools(
                body["tools"], usage, tools_called(body["messages"]), keep={"escalate_to_human"}
            ),
        ),
        ("in_holdout", lambda: in_holdout("conversation-123", 0.05)),
        ("dedupe_preloads (13 messages, 4 copies)", lambda: dedupe_preloads(body["messages"], min_chars=400)),
        ("nearest_demonstrations (bank of 500, k=3)", lambda: nearest_demonstrations(features, bank, 3)),
        (
            "count_prompt_tokens (accounting, not a decision)",
            lambda: count_prompt_tokens(body["messages"], TOOLS),
        ),
    ]
    print("| decision | median µs | p99 µs |\n|---|---|---|")
    for name, fn in cases:
        median, p99 = timed(fn, args.repeats)
        print(f"| {name} | {median:.1f} | {p99:.1f} |")
    print(f"\ncommand: python -m bench.router.decision_latency --repeats {args.repeats}")


if __name__ == "__main__":
    main()
