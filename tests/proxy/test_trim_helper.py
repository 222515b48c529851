"""Trimmed tools stay reachable: the helper tool through the real gateway, against a scripted model that
calls a step's tool only if its schema was sent (tests/proxy/scripted_upstream.py)."""

from __future__ import annotations

import json
import time

import httpx
import openai
from trim_helpers import HELPER, NAMES, PRICE, TOOLS, ask, scripted, scripted_process, trim_gateway, warm_up

__all__ = ["scripted", "scripted_process"]  # fixtures, used by name

LEFT_OUT = [n for n in NAMES if n != "lookup"]


def first_usage_tokens(body: dict) -> int:
    """The scripted upstream's prompt count: 4 bytes a token of the tools, then the messages."""
    return sum(len(json.dumps(x)) for x in body["tools"] + body["messages"]) // 4


def names(calls) -> list[str]:
    return [c.function.name for c in calls or ()]


def test_a_trimmed_tool_is_loaded_on_request_and_the_helper_never_reaches_the_client(start_gateway, scripted):
    gw = trim_gateway(start_gateway, scripted, min_requests=3, window=4, by_stage=False)
    warm_up(gw, scripted, 3)
    before = len(scripted.log())
    scripted.script({"call": "refund", "args": {"id": "A1"}})
    reply = ask(gw, "refund order A1", "conv-1")
    msg = reply.choices[0].message
    assert names(msg.tool_calls) == ["refund"] and json.loads(msg.tool_calls[0].function.arguments) == {"id": "A1"}
    first, second = scripted.log()[before:]
    # the trimmed request: the used tool, then the helper naming exactly the tools left out
    assert [t["function"]["name"] for t in first["body"]["tools"]] == ["lookup", HELPER]
    helper = first["body"]["tools"][-1]["function"]["description"]
    assert helper.split(": ", 1)[1].split(". ")[0].split(", ") == LEFT_OUT
    # the re-sent request: the loaded schema in the client's order, the helper naming the rest
    assert [t["function"]["name"] for t in second["body"]["tools"]] == ["lookup", "refund", HELPER]
    assert second["body"]["tools"][1] == TOOLS[1] and second["body"]["messages"] == first["body"]["messages"]
    # the load counts as a call, so `refund` is sent to everyone until it leaves the 4-request window
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        scripted.script({"call": "lookup"})
        ask(gw, "look me up", "conv-2")
        if scripted.sent() == ["lookup", HELPER]:
            break
        time.sleep(0.1)
    assert scripted.sent() == ["lookup", HELPER]
    # the conversation that loaded it keeps it on later turns, without a lookup
    scripted.script({"content": "done"})
    ask(gw, "anything else?", "conv-1")
    assert scripted.sent() == ["lookup", "refund", HELPER]
    gw.stop()
    row = [r for r in gw.records() if r["conversation"] == "conv-1"][0]
    assert row["attempts"] == 2 and row["tools_called"] == "refund"
    # both round trips were paid for (the lookup: the first request's prompt, 10 completion tokens) ...
    lookup_prompt = first_usage_tokens(first["body"])
    lookup_cost = (lookup_prompt * PRICE["input_per_million"] + 10 * PRICE["output_per_million"]) / 1e6
    final_cost = (row["prompt_tokens"] * PRICE["input_per_million"] + 10 * PRICE["output_per_million"]) / 1e6
    assert abs(row["cost_usd"] - (lookup_cost + final_cost)) < 1e-12
    # ... and the trimming saving is net of the lookup
    removed = row["prompt_tokens_before_trim"] - row["prompt_tokens"]
    assert removed > 0
    assert abs(row["trim_saved_usd"] - (removed * PRICE["input_per_million"] / 1e6 - lookup_cost)) < 1e-9


def test_a_reply_mixing_the_helper_and_a_real_call_is_resolved_first(start_gateway, scripted):
    gw = trim_gateway(start_gateway, scripted, min_requests=3, by_stage=False)
    warm_up(gw, scripted, 3)
    before = len(scripted.log())
    scripted.script({"call": "track", "also": "lookup"})
    msg = ask(gw, "where is it", "conv-m").choices[0].message
    assert names(msg.tool_calls) == ["track", "lookup"]
    first, second = scripted.log()[before:]
    assert [t["function"]["name"] for t in second["body"]["tools"]] == ["lookup", "track", HELPER]


def test_streaming_resolves_the_helper_before_any_tool_call_chunk(start_gateway, scripted):
    gw = trim_gateway(start_gateway, scripted, min_requests=3, by_stage=False)
    warm_up(gw, scripted, 3)
    scripted.script({"call": "cancel", "args": {"id": "B2"}})
    body = {
        "model": "gpt-4o",
        "stream": True,
        "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": "cancel B2"}],
        "tools": TOOLS,
    }
    headers = {"X-Tiergate-Workflow": "shop", "X-Tiergate-Conversation": "conv-s"}
    raw = httpx.post(f"{gw.v1}/chat/completions", json=body, headers=headers, timeout=30).text
    assert HELPER not in raw
    events = [json.loads(line[6:]) for line in raw.splitlines() if line.startswith("data: {")]
    calls = [tc for e in events for c in e["choices"] for tc in c["delta"].get("tool_calls") or ()]
    assert [c["function"]["name"] for c in calls if c["function"].get("name")] == ["cancel"]
    assert "".join(c["function"].get("arguments") or "" for c in calls) == '{"id": "B2"}'
    assert sum(1 for e in events if e.get("usage")) == 1 and raw.rstrip().endswith("data: [DONE]")
    # the SDK sees one clean tool call too, with a text preamble streamed live before the lookup
    scripted.script({"call": "invoice", "preamble": "One moment."})
    chunks = list(ask(gw, "invoice please", "conv-s2", stream=True))
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    got = [tc.function.name for ch in chunks if ch.choices for tc in ch.choices[0].delta.tool_calls or ()]
    assert text == "One moment." and [n for n in got if n] == ["invoice"]
    gw.stop()
    rows = [r for r in gw.records() if r["conversation"] in ("conv-s", "conv-s2")]
    assert [r["attempts"] for r in rows] == [2, 2] and all(r["status"] == 200 for r in rows)
    assert [r["tools_called"] for r in rows] == ["cancel", "invoice"]


def test_trim_off_and_a_forced_tool_behave_as_before(start_gateway, scripted):
    gw = trim_gateway(start_gateway, scripted, min_requests=3, by_stage=False)
    warm_up(gw, scripted, 3)
    ask(gw, "plain", "conv-o", headers={"X-Tiergate-Trim": "off"})
    assert scripted.sent() == list(NAMES)
    scripted.script({"call": "refund"})
    forced = {"type": "function", "function": {"name": "refund"}}
    msg = ask(gw, "refund", "conv-f", tool_choice=forced).choices[0].message
    assert names(msg.tool_calls) == ["refund"] and scripted.sent() == ["lookup", "refund"]


def test_a_loaded_tool_counts_as_used_and_stops_being_trimmed(start_gateway, scripted):
    gw = trim_gateway(start_gateway, scripted, min_requests=3, by_stage=False)
    warm_up(gw, scripted, 3)
    scripted.script({"call": "reorder"})
    assert names(ask(gw, "same again please", "conv-r").choices[0].message.tool_calls) == ["reorder"]
    deadline = time.monotonic() + 20
    while "reorder" not in scripted.sent() and time.monotonic() < deadline:
        time.sleep(0.3)
        ask(gw, "hello", "conv-other")
    assert scripted.sent() == ["lookup", "reorder", HELPER]


def test_the_helper_through_litellm_to_an_anthropic_model(start_gateway, scripted):
    gw = trim_gateway(start_gateway, scripted, anthropic=True, min_requests=3, by_stage=False)
    warm_up(gw, scripted, 3, max_tokens=50)
    before = len(scripted.log())
    scripted.script({"call": "escalate", "args": {"id": "C3"}})
    msg = ask(gw, "I want a human", "conv-a", max_tokens=50).choices[0].message
    assert names(msg.tool_calls) == ["escalate"]
    first, second = scripted.log()[before:]
    assert first["api"] == "anthropic" and [t["name"] for t in first["body"]["tools"]] == ["lookup", HELPER]
    assert [t["name"] for t in second["body"]["tools"]] == ["lookup", "escalate", HELPER]
    # streamed through litellm's translation of Anthropic's events: the helper is resolved all the same
    scripted.script({"call": "track", "args": {"id": "C4"}})
    chunks = list(ask(gw, "where is my parcel", "conv-as", max_tokens=50, stream=True))
    got = [tc.function.name for ch in chunks if ch.choices for tc in ch.choices[0].delta.tool_calls or ()]
    assert [n for n in got if n] == ["track"]
    resent = [t["name"] for t in scripted.log()[-1]["body"]["tools"]]  # `escalate` too once its load is counted
    assert resent[0] == "lookup" and resent[-2:] == ["track", HELPER]
    gw.stop()
    rows = {r["conversation"]: r for r in gw.records() if r["conversation"] in ("conv-a", "conv-as")}
    assert [(rows[c]["attempts"], rows[c]["tools_called"]) for c in ("conv-a", "conv-as")] == [
        (2, "escalate"),
        (2, "track"),
    ]


def test_a_cascade_keeps_a_cheap_answer_that_loaded_its_tool(start_gateway, scripted):
    """The loaded schema joins the plan's tools, so the cascade's check knows the tool the answer calls."""
    gw = trim_gateway(start_gateway, scripted, route={"kind": "cascade"}, min_requests=3, by_stage=False)
    warm_up(gw, scripted, 3)
    scripted.script({"call": "refund", "args": {"id": "D4"}})
    c = openai.OpenAI(base_url=gw.v1, api_key="x", max_retries=0)
    raw = c.chat.completions.with_raw_response.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "refund D4"}],
        tools=TOOLS,
        extra_headers={"X-Tiergate-Workflow": "shop", "X-Tiergate-Conversation": "conv-c"},
    )
    assert names(raw.parse().choices[0].message.tool_calls) == ["refund"]
    assert raw.headers["x-tiergate-tier"] == "routed"
    assert [e["body"]["model"] for e in scripted.log()[-2:]] == ["gpt-4o-mini", "gpt-4o-mini"]


def test_names_the_gateway_cannot_find_get_every_tool_and_no_helper(start_gateway, scripted):
    gw = trim_gateway(start_gateway, scripted, min_requests=3, by_stage=False)
    warm_up(gw, scripted, 3)
    before = len(scripted.log())
    scripted.script({"ask": ["refund_v2"]}, {"content": "done without it"})
    assert ask(gw, "refund", "conv-u").choices[0].message.content == "done without it"
    first, second = scripted.log()[before:]
    assert [t["function"]["name"] for t in second["body"]["tools"]] == list(NAMES)
    # lookups are bounded: a second lookup in one request also gets every tool, and no helper
    scripted.script({"ask": ["refund"]}, {"ask": ["track"]}, {"content": "ok"})
    before = len(scripted.log())
    assert ask(gw, "refund and track", "conv-v").choices[0].message.content == "ok"
    sent = [[t["function"]["name"] for t in e["body"]["tools"]] for e in scripted.log()[before:]]
    assert sent == [["lookup", HELPER], ["lookup", "refund", HELPER], list(NAMES)]
