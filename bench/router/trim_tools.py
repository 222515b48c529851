"""Trimming benchmark: a tool-heavy support workflow replayed through the pure trimming functions.

    python -m bench.router.trim_tools [--conversations 600] [--holdout 0.05] [--seed 0]

40 tool schemas are offered on every request (bench/router/tool_catalog.py); the workflow calls 6 of
them. Conversations are multi-turn, and the orchestrator re-injects its return-policy document every
turn. A scripted upstream calls tools as a model would: it calls the tool its scenario needs next if
that tool is offered, and otherwise falls back to `escalate_to_human` (marked `keep`). Halfway through,
a new scenario starts needing `cancel_order`, a tool the workflow had never called, to show that the
holdout notices it and trimming restores it. The gateway's part (counting calls, drawing the holdout
from the conversation id) is done here the way the gateway does it, with the router's pure helpers.
"""

from __future__ import annotations

import argparse
import json
import random
from dataclasses import dataclass, field
from typing import Any

from bench.router.tool_catalog import TOOLS, USED_TOOLS
from router import ToolUsage, count_prompt_tokens, dedupe_preloads, in_holdout, tools_called, trim_tools

MODEL = "gpt-4o"
KEEP = {"escalate_to_human"}
CATALOGUE = [t["function"]["name"] for t in TOOLS]
SYSTEM = (
    "You are Ava, the customer-support agent of Northwind Apparel. Follow the procedure: identify the "
    "customer with lookup_customer, check the order with get_order_status, then act within policy. "
    "Refunds over 200 EUR need a human. Never promise delivery dates the carrier did not give. "
    "Be concise and polite; write in the customer's language."
)
POLICY = "\n\n".join(
    [
        "RETURN AND REFUND POLICY (version 2026-03)",
        "Items may be returned within 30 days of delivery when unworn, with tags attached. Sale items are "
        "final unless faulty. Underwear and swimwear cannot be returned for hygiene reasons.",
        "Refunds go to the original payment method within 5 business days of the return scan. Shipping "
        "costs are refunded only when the item was faulty or the wrong item was sent.",
        "Address changes are possible until the order leaves the warehouse. After that, offer a redirect "
        "to a pickup point or a return after delivery.",
        "Damaged or lost parcels: open a carrier claim after 7 days without tracking updates, and offer a "
        "replacement or refund once the claim is filed. Escalate anything involving more than 200 EUR.",
        "Loyalty members of tier Gold and above get free return shipping and an extra 14 days.",
    ]
)

SCENARIOS: dict[str, list[str]] = {
    "status": ["lookup_customer", "get_order_status"],
    "refund": ["lookup_customer", "get_order_status", "issue_refund"],
    "address": ["get_order_status", "update_shipping_address"],
    "return": ["lookup_customer", "create_return_label"],
    "escalate": ["lookup_customer", "escalate_to_human"],
}
NEW_SCENARIO = ("cancel", ["lookup_customer", "get_order_status", "cancel_order"])
ARGS: dict[str, dict[str, Any]] = {
    "lookup_customer": {"email": "maria@example.com"},
    "get_order_status": {"order_id": "ORD-2026-118822"},
    "issue_refund": {"order_id": "ORD-2026-118822", "reason": "arrived torn"},
    "update_shipping_address": {
        "order_id": "ORD-2026-118822",
        "address": {
            "line1": "Keizersgracht 12",
            "city": "Amsterdam",
            "postal_code": "1015CJ",
            "country": "NL",
        },
    },
    "create_return_label": {
        "order_id": "ORD-2026-118822",
        "skus": ["SKU-44821-BLK-M"],
        "reason": "too_small",
    },
    "escalate_to_human": {"summary": "Customer needs help the agent cannot give.", "priority": "normal"},
    "cancel_order": {"order_id": "ORD-2026-118822", "reason": "ordered twice"},
}
USER_OPENERS = {
    "status": "Hi, where is my order ORD-2026-118822? It was due yesterday.",
    "refund": "My jacket from order ORD-2026-118822 arrived torn. I want my money back.",
    "address": "Can I still change the delivery address of ORD-2026-118822? I moved.",
    "return": "The boots are too small, how do I send them back?",
    "escalate": "I have been charged twice and nobody answers my emails!",
    "cancel": "I ordered the same coat twice by mistake, please cancel ORD-2026-118822.",
}


def _tool_names(tools: Any) -> set[str]:
    return {t["function"]["name"] for t in tools}


@dataclass
class Totals:
    requests: int = 0
    trimmed_requests: int = 0
    schema_before: int = 0
    schema_after: int = 0
    steady_before: int = 0  # requests after warm-up, holdout excluded
    steady_after: int = 0
    prompt_before: int = 0
    prompt_after: int = 0
    preload_blocks: int = 0
    holdout_conversations: int = 0
    holdout_missing: int = 0
    missing_after_restore: int = 0
    degraded_before_restore: int = 0
    first_new_call: int | None = None  # request number of the first `cancel_order` call on record
    restored_at: int | None = None
    conversations_needing_new: set[str] = field(default_factory=set)


def replay(conversations: int, holdout_share: float, seed: int, min_requests: int) -> Totals:
    rng = random.Random(seed)
    usage = ToolUsage()
    totals = Totals()
    empty_tools = count_prompt_tokens([], None, MODEL)
    for c in range(conversations):
        conv_id = f"conv-{seed}-{c}"
        if c >= conversations // 2 and rng.random() < 0.15:
            name, steps = NEW_SCENARIO
        else:
            name = rng.choice(list(SCENARIOS))
            steps = SCENARIOS[name]
        holdout = in_holdout(conv_id, holdout_share)
        totals.holdout_conversations += holdout
        messages: list[dict[str, Any]] = [{"role": "system", "content": SYSTEM}]
        turns = [USER_OPENERS[name]] + [
            "Thanks. One more thing: is the return policy the same for sale items?"
        ] * rng.randint(0, 3)
        for turn, user_text in enumerate(turns):
            # the orchestrator re-injects the policy document before every user turn
            messages.append({"role": "system", "content": POLICY})
            messages.append({"role": "user", "content": user_text})
            plan = list(steps) if turn == 0 else []
            while True:
                result = trim_tools(
                    TOOLS,
                    usage,
                    tools_called(messages),
                    keep=KEEP,
                    min_requests=min_requests,
                    holdout=holdout,
                )
                deduped = dedupe_preloads(messages, min_chars=400)
                totals.requests += 1
                totals.trimmed_requests += bool(result.dropped)
                before = count_prompt_tokens([], TOOLS, MODEL) - empty_tools
                after = count_prompt_tokens([], result.tools, MODEL) - empty_tools
                totals.schema_before += before
                totals.schema_after += after
                if not holdout and usage.requests_seen >= min_requests:
                    totals.steady_before += before
                    totals.steady_after += after
                totals.prompt_before += count_prompt_tokens(messages, TOOLS, MODEL)
                totals.prompt_after += count_prompt_tokens(deduped.messages, result.tools, MODEL)
                totals.preload_blocks += deduped.removed_blocks
                offered = _tool_names(result.tools)
                called: list[str] = []
                if plan:
                    wanted = plan.pop(0)
                    if wanted == "cancel_order":
                        totals.conversations_needing_new.add(conv_id)
                    if wanted in offered:
                        chosen = wanted
                        if wanted == "cancel_order" and totals.first_new_call is None:
                            totals.first_new_call = totals.requests
                    else:  # the needed tool was trimmed away: a model escalates instead
                        chosen = "escalate_to_human"
                        plan = []
                        if holdout:
                            totals.holdout_missing += 1
                        elif totals.first_new_call is not None:
                            totals.missing_after_restore += 1
                        else:
                            totals.degraded_before_restore += 1
                    called = [chosen]
                if (
                    totals.first_new_call is not None
                    and totals.restored_at is None
                    and not holdout
                    and "cancel_order" in offered
                ):
                    totals.restored_at = totals.requests
                usage = usage.record(CATALOGUE, called)  # what the client sent, before trimming
                if not called:
                    messages.append({"role": "assistant", "content": "Here is what I found, per our policy."})
                    break
                call_id = f"call_{totals.requests}"
                messages.append(
                    {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [
                            {
                                "id": call_id,
                                "type": "function",
                                "function": {"name": called[0], "arguments": json.dumps(ARGS[called[0]])},
                            }
                        ],
                    }
                )
                messages.append(
                    {"role": "tool", "tool_call_id": call_id, "content": json.dumps({"ok": True})}
                )
    return totals


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=600)
    parser.add_argument("--holdout", type=float, default=0.05, help="share of conversations sent untrimmed")
    parser.add_argument("--min-requests", type=int, default=50, help="requests seen before trimming starts")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = make_parser().parse_args(argv)
    t = replay(args.conversations, args.holdout, args.seed, args.min_requests)
    schema_cut = 1 - t.schema_after / t.schema_before
    empty = count_prompt_tokens([], None, MODEL)
    catalogue = count_prompt_tokens([], TOOLS, MODEL) - empty
    used = count_prompt_tokens([], [x for x in TOOLS if x["function"]["name"] in USED_TOOLS], MODEL) - empty
    prompt_cut = 1 - t.prompt_after / t.prompt_before
    rows = [
        ("conversations / requests", f"{args.conversations} / {t.requests}"),
        ("requests trimmed", f"{t.trimmed_requests} ({t.trimmed_requests / t.requests:.1%})"),
        ("tool-schema tokens before -> after", f"{t.schema_before:,} -> {t.schema_after:,}"),
        ("tool-schema tokens cut (target >= 80%)", f"{schema_cut:.1%}"),
        (
            "  of which trimmed traffic (after warm-up, no holdout)",
            f"{1 - t.steady_after / t.steady_before:.1%}",
        ),
        ("  ceiling: 1 - share of the 6 used tools in the catalogue", f"{1 - used / catalogue:.1%}"),
        ("total prompt tokens before -> after", f"{t.prompt_before:,} -> {t.prompt_after:,}"),
        ("total prompt tokens cut (tools + preloads)", f"{prompt_cut:.1%}"),
        ("repeated preload blocks removed", f"{t.preload_blocks:,}"),
        ("holdout conversations", f"{t.holdout_conversations}"),
        ("holdout turns missing a needed tool (target 0)", f"{t.holdout_missing}"),
        ("conversations needing new tool `cancel_order`", f"{len(t.conversations_needing_new)}"),
        ("first `cancel_order` call (holdout) at request", f"{t.first_new_call}"),
        ("`cancel_order` offered to trimmed traffic from request", f"{t.restored_at}"),
        ("turns missing a needed tool after restore (target 0)", f"{t.missing_after_restore}"),
        ("turns degraded before restore (escalated instead)", f"{t.degraded_before_restore}"),
    ]
    print("| measure | value |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")
    print(
        f"\ncommand: python -m bench.router.trim_tools --conversations {args.conversations} "
        f"--holdout {args.holdout} --min-requests {args.min_requests} --seed {args.seed}"
    )


if __name__ == "__main__":
    main()
