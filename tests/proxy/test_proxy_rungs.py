"""Rungs 1 and 2 through the real gateway: a fake frontier and a fake cheap upstream that answer differently."""

from __future__ import annotations

import json
import time

import httpx
import openai
import pytest

from router import LOAD_TOOLS, in_holdout

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": name,
            "description": f"{name.replace('_', ' ')} for the customer. " * 6,
            "parameters": {
                "type": "object",
                "properties": {"id": {"type": "string"}, "note": {"type": "string"}},
                "required": ["id"],
                "additionalProperties": False,
            },
        },
    }
    for name in ("lookup_order", "refund", "escalate", "track_parcel", "change_address", "cancel_order")
]


def workflow(name: str, **sections) -> dict:
    return {
        "workflows": [{"name": name, "frontier": "gpt-4o", "cheap": "gpt-4o-mini", **sections}],
        "server": {"state_refresh_seconds": 0.3},
    }


def client(gw) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.v1, api_key="x", max_retries=0)


def ask(gw, wf: str, text: str, **kw):
    return client(gw).chat.completions.with_raw_response.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": text}],
        extra_headers={"X-Tiergate-Workflow": wf, **kw.pop("headers", {})},
        **kw,
    )


def test_rules_route_short_prompts_to_the_cheap_model(start_gateway, upstreams):
    gw = start_gateway(
        workflow("faq", route={"kind": "rules", "rules": [{"max_prompt_tokens": 20, "route": "cheap"}]})
    )
    short = ask(gw, "faq", "opening hours?")
    assert short.parse().choices[0].message.content == "cheap: opening hours?"
    assert (short.headers["x-tiergate-tier"], short.headers["x-tiergate-model"]) == ("routed", "gpt-4o-mini")
    long = ask(gw, "faq", "please explain in detail " * 20)
    assert long.headers["x-tiergate-tier"] == "frontier" and long.headers["x-tiergate-model"] == "gpt-4o"
    rows = gw.wait_records(2)
    assert rows[0]["tier"] == "routed" and rows[0]["route_reason"].startswith("rule 0 matched")
    assert rows[0]["baseline_cost_usd"] > rows[0]["cost_usd"] > 0
    assert rows[1]["route_reason"].startswith("no rule matched")
    summary = {d["workflow"]: d for d in httpx.get(f"{gw.url}/api/workflows").json()["data"]}["faq"]
    assert (
        summary["routed_requests"] == 1
        and summary["routing_savings_usd"] > 0
        and summary["trim_savings_usd"] == 0
    )


CASCADE_CASES = [
    # (cheap step, request extras, expected failed check or None when the cheap answer is kept)
    ({"content": "Sure: the answer is 4."}, {}, None),
    ({"content": ""}, {}, "empty"),
    ({"content": "I'm sorry, but I can't help with that request."}, {}, "refusal"),
    (
        {"content": "not json at all"},
        {"response_format": {"type": "json_object"}},
        "response_format (the answer is not JSON",
    ),
    (
        {"content": '{"total": "four"}'},
        {
            "response_format": {
                "type": "json_schema",
                "json_schema": {
                    "name": "r",
                    "schema": {
                        "type": "object",
                        "properties": {"total": {"type": "integer"}},
                        "required": ["total"],
                    },
                },
            }
        },
        "does not match the schema",
    ),
    ({"tool_calls": [{"name": "launch_rocket", "arguments": {}}]}, {"tools": TOOLS}, "unknown_tool"),
    ({"tool_calls": [{"name": "refund", "arguments": {"amount": 5}}]}, {"tools": TOOLS}, "tool_arguments"),
    ({"content": "maybe four", "logprobs": [-2.5, -3.0, -1.9]}, {"logprobs": True}, "low_confidence"),
]


def test_cascade_escalates_on_each_failed_check(start_gateway, upstreams):
    gw = start_gateway(workflow("calc", route={"kind": "cascade"}))
    for i, (step, extra, failed) in enumerate(CASCADE_CASES):
        upstreams["cheap"].script(step)
        if step.get("tool_calls") or "json" in str(extra):
            upstreams["frontier"].script({"content": '{"total": 4}'})
        raw = ask(gw, "calc", f"what is 2+2 (case {i})", **extra)
        tier = raw.headers["x-tiergate-tier"]
        assert tier == ("routed" if failed is None else "frontier"), (i, step, raw.parse())
    rows = gw.wait_records(len(CASCADE_CASES))
    for row, (_, _, failed) in zip(rows, CASCADE_CASES, strict=True):
        if failed is None:
            assert row["tier"] == "routed" and row["served_model"] == "gpt-4o-mini"
        else:
            assert row["tier"] == "frontier" and row["route_reason"].startswith("cascade escalated:")
            assert failed in row["route_reason"], row["route_reason"]
            # the failed cheap call was paid for: cost = cheap call + frontier call
            frontier_only = row["baseline_cost_usd"]
            assert row["cost_usd"] > frontier_only


def test_cascade_with_streaming_clients(start_gateway, upstreams):
    gw = start_gateway(workflow("calc", route={"kind": "cascade"}))
    c = client(gw)
    upstreams["cheap"].script({"content": "four, from the cheap model"})
    chunks = list(
        c.chat.completions.create(
            model="gpt-4o",
            stream=True,
            stream_options={"include_usage": True},
            messages=[{"role": "user", "content": "2+2?"}],
            extra_headers={"X-Tiergate-Workflow": "calc"},
        )
    )
    assert (
        "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
        == "four, from the cheap model"
    )
    assert chunks[-1].usage is not None
    upstreams["cheap"].script({"content": ""})
    chunks = list(
        c.chat.completions.create(
            model="gpt-4o",
            stream=True,
            messages=[{"role": "user", "content": "3+3?"}],
            extra_headers={"X-Tiergate-Workflow": "calc"},
        )
    )
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == "frontier: 3+3?"
    rows = gw.wait_records(2)
    assert [r["tier"] for r in rows] == ["routed", "frontier"]


def wait_for(predicate, timeout: float = 30.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def label_rows(gw) -> list[dict]:
    from sqlalchemy import select

    from gateway.store.engine import make_engine
    from gateway.store.schema import route_labels

    engine = make_engine(gw.db_url)
    try:
        with engine.connect() as conn:
            return [
                dict(r) for r in conn.execute(select(route_labels).order_by(route_labels.c.ts)).mappings()
            ]
    finally:
        engine.dispose()


def test_shadow_labels_train_the_learned_router(start_gateway, upstreams):
    gw = start_gateway(
        workflow(
            "support",
            route={"kind": "learned", "shadow_share": 1.0, "min_labels": 14, "target_retention": 0.9},
        )
    )
    topics = {
        "easy": "where is my parcel tracking number please",
        "hard": "dispute a chargeback under consumer law",
    }
    n = 0
    for round_ in range(7):
        for kind, text in topics.items():
            # the frontier looks the order up; the cheap model does the same on easy requests only
            upstreams["frontier"].script(
                {"tool_calls": [{"name": "lookup_order", "arguments": {"id": "A1"}}]}
            )
            cheap_call = "lookup_order" if kind == "easy" else "escalate"
            upstreams["cheap"].script({"tool_calls": [{"name": cheap_call, "arguments": {"id": "A1"}}]})
            raw = ask(gw, "support", f"{text} (round {round_})", tools=TOOLS)
            assert raw.headers["x-tiergate-tier"] == "frontier"
            n += 1
            wait_for(lambda n=n: len(label_rows(gw)) >= n, what=f"{n} shadow labels")
    labels = label_rows(gw)
    assert [lab["good"] for lab in labels] == [True, False] * 7
    assert {lab["how"] for lab in labels} >= {"same_tool_calls"}
    def all_shadows_recorded() -> list[dict] | None:
        rows = gw.records()
        return rows if sum(r["tier"] == "shadow" for r in rows) >= 14 else None

    rows = wait_for(all_shadows_recorded, what="14 shadow records")
    shadows = [r for r in rows if r["tier"] == "shadow"]
    assert len(shadows) == 14 and all(r["cost_usd"] > 0 and r["baseline_cost_usd"] == 0 for r in shadows)
    first = [r for r in rows if r["tier"] == "frontier"][0]
    assert first["route_reason"].startswith("fallback: learned router")

    # once refit on the labels, an easy request goes to the cheap model and a hard one stays on the frontier
    def routed_easy():
        upstreams["cheap"].reset()
        raw = ask(gw, "support", topics["easy"] + " (round 9)", tools=TOOLS)
        return raw if raw.headers["x-tiergate-tier"] == "routed" else None

    raw = wait_for(routed_easy, what="the learned router to route an easy request")
    assert raw.headers["x-tiergate-model"] == "gpt-4o-mini"
    hard = ask(gw, "support", topics["hard"] + " (round 9)", tools=TOOLS)
    assert hard.headers["x-tiergate-tier"] == "frontier"
    # the hard request's record says the learned score fell under the calibrated threshold
    kept = wait_for(
        lambda: [r for r in gw.records() if r["tier"] == "frontier" and "<" in (r["route_reason"] or "")],
        what="the hard request's record",
    )
    assert kept[-1]["route_reason"].startswith("learned score")
    summary = {d["workflow"]: d for d in httpx.get(f"{gw.url}/api/workflows").json()["data"]}["support"]
    assert summary["shadow_cost_usd"] > 0 and summary["routed_requests"] >= 1


def test_trimming_drops_unused_tools_keeps_needed_ones_and_restores_a_new_one(start_gateway, upstreams):
    gw = start_gateway(
        workflow("shop", trim={"min_requests": 4, "holdout": 0.5, "keep": ["escalate"], "by_stage": False})
    )
    holdout = [f"conv-h{i}" for i in range(50) if in_holdout(f"conv-h{i}", 0.5)]
    regular = [f"conv-r{i}" for i in range(50) if not in_holdout(f"conv-r{i}", 0.5)]
    for i in range(4):
        upstreams["frontier"].script({"tool_calls": [{"name": "lookup_order", "arguments": {"id": str(i)}}]})
        ask(gw, "shop", f"where is order {i}", tools=TOOLS, headers={"X-Tiergate-Conversation": regular[i]})

    def sent_tools() -> list[str]:
        """The app's tools sent (trimming's helper tool, which names the rest, is left out here)."""
        tools = upstreams["frontier"].log()[-1]["body"].get("tools", [])
        return [t["function"]["name"] for t in tools if t["function"]["name"] != LOAD_TOOLS]

    def trimmed_now() -> list[str] | None:
        ask(gw, "shop", "another order", tools=TOOLS, headers={"X-Tiergate-Conversation": regular[5]})
        return sent_tools() if len(sent_tools()) < 6 else None

    # original order kept; `keep` honoured; the helper tool comes last and names what was left out
    assert wait_for(trimmed_now, what="trimming to start") == ["lookup_order", "escalate"]
    helper = upstreams["frontier"].log()[-1]["body"]["tools"][-1]["function"]
    assert helper["name"] == LOAD_TOOLS
    assert "refund, track_parcel, change_address, cancel_order." in helper["description"]
    # a conversation that already called `refund` can load it again through the helper tool, which
    # keeps one tool list per stage for every conversation; without the helper (`tool_choice` "none")
    # it keeps `refund`
    messages = [
        {"role": "user", "content": "refund me"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "refund", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "{}"},
        {"role": "user", "content": "thanks"},
    ]
    client(gw).chat.completions.create(
        model="gpt-4o",
        messages=messages,
        tools=TOOLS,
        extra_headers={"X-Tiergate-Workflow": "shop", "X-Tiergate-Conversation": regular[6]},
    )
    assert sent_tools() == ["lookup_order", "escalate"]
    assert "refund" in upstreams["frontier"].log()[-1]["body"]["tools"][-1]["function"]["description"]
    client(gw).chat.completions.create(
        model="gpt-4o",
        messages=messages,
        tools=TOOLS,
        tool_choice="none",
        extra_headers={"X-Tiergate-Workflow": "shop", "X-Tiergate-Conversation": regular[6]},
    )
    assert sent_tools() == ["lookup_order", "refund", "escalate"]
    assert upstreams["frontier"].log()[-1]["body"]["tools"][-1]["function"]["name"] == "escalate"
    # the client can opt out
    ask(
        gw,
        "shop",
        "untouched",
        tools=TOOLS,
        headers={"X-Tiergate-Conversation": regular[7], "X-Tiergate-Trim": "off"},
    )
    assert len(sent_tools()) == 6
    # holdout traffic stays untrimmed; when it starts needing `track_parcel`, trimming gives it back
    upstreams["frontier"].script({"tool_calls": [{"name": "track_parcel", "arguments": {"id": "P"}}]})
    ask(gw, "shop", "track my parcel", tools=TOOLS, headers={"X-Tiergate-Conversation": holdout[0]})
    assert len(sent_tools()) == 6

    def restored() -> list[str] | None:
        ask(gw, "shop", "track it too", tools=TOOLS, headers={"X-Tiergate-Conversation": regular[8]})
        return sent_tools() if "track_parcel" in sent_tools() else None

    # restored in the tools' original order, which provider prompt caches key on
    assert wait_for(restored, what="track_parcel to be restored") == [
        "lookup_order",
        "escalate",
        "track_parcel",
    ]
    rows = gw.records()
    trimmed = [r for r in rows if r["tools_dropped"]]
    assert trimmed and all(
        r["prompt_tokens_before_trim"] > r["prompt_tokens"] and r["trim_saved_usd"] > 0 for r in trimmed
    )
    assert trimmed[0]["tools_dropped"] == 4
    summary = {d["workflow"]: d for d in httpx.get(f"{gw.url}/api/workflows").json()["data"]}["shop"]
    assert summary["trim_savings_usd"] > 0 and summary["trimmed_prompt_tokens"] > 0


def test_trimming_by_stage_sends_follow_up_turns_fewer_tools(start_gateway, upstreams):
    """Tools are called on the opening turn only: follow-up turns go out with none but the kept ones."""
    gw = start_gateway(workflow("stages", trim={"min_requests": 3, "holdout": 0.0, "keep": ["escalate"]}))

    def conversation(i: int) -> list[list[str]]:
        tool = "lookup_order" if i % 2 == 0 else "track_parcel"
        upstreams["frontier"].script({"tool_calls": [{"name": tool, "arguments": {"id": str(i)}}]}, {}, {})
        messages = [{"role": "user", "content": f"where is order {i}"}]
        offered = []
        for follow_up in (None, None, "thanks, and the refund policy?"):
            if follow_up:
                messages.append({"role": "user", "content": follow_up})
            raw = client(gw).chat.completions.with_raw_response.create(
                model="gpt-4o",
                messages=messages,
                tools=TOOLS,
                extra_headers={"X-Tiergate-Workflow": "stages"},
            )
            offered.append(
                [
                    t["function"]["name"]
                    for t in upstreams["frontier"].log()[-1]["body"].get("tools", [])
                    if t["function"]["name"] != LOAD_TOOLS
                ]
            )
            msg = raw.parse().choices[0].message
            if msg.tool_calls:
                messages.append(
                    {
                        "role": "assistant",
                        "content": "",
                        "tool_calls": [tc.model_dump() for tc in msg.tool_calls],
                    }
                )
                messages.append({"role": "tool", "tool_call_id": msg.tool_calls[0].id, "content": "{}"})
            else:
                messages.append({"role": "assistant", "content": msg.content})
        return offered

    for i in range(3):
        assert all(len(o) == 6 for o in conversation(i))  # warming up: every stage untrimmed
    time.sleep(1.0)
    offered = wait_for(
        lambda: (lambda o: o if len(o[-1]) < 6 else None)(conversation(10)), what="stage trimming"
    )
    # the opening turn keeps every tool some conversation opened with; after it, no stage calls a tool,
    # so only the kept one goes out (the one this conversation called stays loadable through the helper)
    assert offered == [["lookup_order", "escalate", "track_parcel"], ["escalate"], ["escalate"]]
    # the clients' own requests: the shipped default routing's shadow calls interleave by time
    stages = [r["stage"] for r in gw.records() if r["tier"] != "shadow"][:3]
    assert stages == ["first:0", "first:1", "later:0"]


def test_repeated_preloads_are_sent_once(start_gateway, upstreams):
    gw = start_gateway(workflow("docs", trim={"min_chars": 200}))
    doc = "POLICY: " + " ".join(f"Clause {i} says refunds within {i} days are allowed." for i in range(40))
    messages = [
        {"role": "system", "content": "You answer from the policy.\n\n" + doc},
        {"role": "user", "content": "can I get a refund?"},
        {"role": "assistant", "content": "Yes, within the period."},
        {"role": "user", "content": "Here is the policy again:\n\n" + doc + "\n\nand after 10 days?"},
    ]
    client(gw).chat.completions.create(
        model="gpt-4o", messages=messages, extra_headers={"X-Tiergate-Workflow": "docs"}
    )
    sent = upstreams["frontier"].log()[-1]["body"]["messages"]
    assert sent[-1] == messages[-1]  # the last user turn is never touched, even though it repeats the policy
    assert sum(json.dumps(m).count("Clause 39 says") for m in sent) == 2
    assert sent[0] == messages[0] and sent[2] == messages[2]
    # the same document pasted into two earlier turns is kept once
    messages2 = messages[:3] + [
        {"role": "user", "content": "Policy again:\n\n" + doc},
        {"role": "assistant", "content": "Noted."},
        {"role": "user", "content": "so?"},
    ]
    client(gw).chat.completions.create(
        model="gpt-4o", messages=messages2, extra_headers={"X-Tiergate-Workflow": "docs"}
    )
    sent = upstreams["frontier"].log()[-1]["body"]["messages"]
    assert sum(json.dumps(m).count("Clause 39 says") for m in sent) == 1
    assert sent[-1] == messages2[-1]
    row = gw.wait_records(2)[-1]
    assert row["prompt_tokens_before_trim"] > row["prompt_tokens"]


def test_distillation_attaches_nearest_frontier_exchanges(start_gateway, upstreams):
    gw = start_gateway(
        workflow(
            "kb",
            route={
                "kind": "rules",
                "demonstrations": 2,
                "rules": [{"last_user_pattern": "^quick", "route": "cheap"}],
            },
        )
    )
    for q in ("how do I reset my router password", "how do I change the wifi channel"):
        ask(gw, "kb", q)  # frontier answers; exchanges are logged

    def note_sent():
        raw = ask(gw, "kb", "quick: how do I reset my router password now")
        assert raw.headers["x-tiergate-tier"] == "routed"
        sent = upstreams["cheap"].log()[-1]["body"]["messages"]
        note = [m for m in sent if m["role"] == "system"]
        # exchanges are saved off the request path: wait until both have landed
        return note if note and "wifi channel" in note[0]["content"] else None

    note = wait_for(note_sent, what="demonstrations from both logged exchanges")
    assert "Worked examples" in note[0]["content"] and "reset my router password" in note[0]["content"]
    assert "2 demonstrations" in gw.wait_records(3)[-1]["route_reason"]
    # and a cheap answer that fails the checks escalates
    upstreams["cheap"].script({"content": ""})
    raw = ask(gw, "kb", "quick: and the admin page?")
    assert raw.headers["x-tiergate-tier"] == "frontier"


@pytest.mark.parametrize(
    ("section", "expect"),
    [
        ({"route": {"kind": "smart"}}, "key `route.kind`: `smart` is not a policy"),
        ({"trim": {"holdout": 2}}, "key `trim.holdout`"),
        ({"trim": {"by_stage": "sometimes"}}, "key `trim.by_stage`"),
        ({"route": {"kind": "cascade", "cheap": "ghost"}}, "route.cheap: unknown model `ghost`"),
        ({"routing": {}}, "key `routing`: unknown key"),
    ],
)
def test_rung_config_errors_name_workflow_and_key(tmp_path, section, expect):
    import subprocess
    import sys

    import yaml
    from tg_testing import ROOT

    cfg = {
        "models": [
            {"name": "gpt-4o", "upstream": "openai/gpt-4o"},
            {"name": "gpt-4o-mini", "upstream": "openai/m"},
        ],
        "workflows": [{"name": "wf1", "frontier": "gpt-4o", "cheap": "gpt-4o-mini", **section}],
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "serve", "--config", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert len(out.stderr.strip().splitlines()) == 1 and "wf1" in out.stderr and expect in out.stderr, (
        out.stderr
    )


def test_free_text_shadow_answers_are_labelled_by_the_configured_judge(start_gateway, upstreams):
    gw = start_gateway(
        workflow("chatty", route={"kind": "learned", "shadow_share": 1.0, "min_labels": 50}, judge="gpt-4o")
    )
    # frontier answers the client, then (as the judge) grades the cheap shadow answer
    upstreams["frontier"].script({"content": "Paris is the capital."}, {"content": "YES"},
                                 {"content": "It is Canberra."}, {"content": "NO"})
    upstreams["cheap"].script({"content": "The capital is Paris."}, {"content": "Sydney, I think."})
    ask(gw, "chatty", "capital of France?")
    wait_for(lambda: len(label_rows(gw)) >= 1, what="the first judged label")
    ask(gw, "chatty", "capital of Australia?")
    labels = wait_for(lambda: (lambda rows: rows if len(rows) >= 2 else None)(label_rows(gw)), what="two labels")
    assert [(lab["good"], lab["how"]) for lab in labels] == [(True, "judge gpt-4o"), (False, "judge gpt-4o")]
    judge_prompt = upstreams["frontier"].log()[1]["body"]["messages"][0]["content"]
    assert "Reply with exactly one word: YES or NO" in judge_prompt and "The capital is Paris." in judge_prompt


def test_every_judge_call_leaves_a_shadow_ledger_row(start_gateway, upstreams):
    from sqlalchemy import select

    from gateway.store.engine import make_engine
    from gateway.store.schema import requests as ledger

    gw = start_gateway(
        workflow("chatty", route={"kind": "learned", "shadow_share": 1.0, "min_labels": 50}, judge="gpt-4o")
    )
    upstreams["frontier"].script({"content": "Paris is the capital."}, {"content": "YES"})
    upstreams["cheap"].script({"content": "The capital is Paris."})
    ask(gw, "chatty", "capital of France?")
    wait_for(lambda: len(label_rows(gw)) >= 1, what="the judged label")

    def rows() -> list[dict]:
        engine = make_engine(gw.db_url)
        try:
            with engine.connect() as conn:
                return [dict(r) for r in conn.execute(select(ledger)).mappings()]
        finally:
            engine.dispose()

    found = wait_for(lambda: (lambda rs: rs if len(rs) >= 3 else None)(rows()), what="three ledger rows")
    assert len(found) == 3  # the client's request, the cheap shadow answer and the judge's verdict
    judged = [r for r in found if (r["route_reason"] or "").endswith("(judge)")]
    assert len(judged) == 1 and judged[0]["tier"] == "shadow" and judged[0]["served_model"] == "gpt-4o"
    assert judged[0]["baseline_cost_usd"] == 0.0 and judged[0]["status"] == 200
