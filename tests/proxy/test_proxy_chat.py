"""The proxy end to end: official openai SDK -> gateway process -> fake upstream process."""

from __future__ import annotations

import asyncio
import json

import openai
import pytest
from tg_testing import UPSTREAM_KEY

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "search_flights",
            "description": "Find flights",
            "parameters": {"type": "object", "properties": {"to": {"type": "string"}}, "required": ["to"]},
        },
    },
    {
        "type": "function",
        "function": {"name": "book", "description": "Book", "parameters": {"type": "object"}},
    },
]
SYSTEM = {"role": "system", "content": "You are a travel booking agent. Today is 2026-11-22."}


def client(gw, key: str = "anything") -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.v1, api_key=key, max_retries=0)


def test_non_stream_round_trip_with_headers(start_gateway, upstreams):
    gw = start_gateway()
    raw = client(gw).chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[SYSTEM, {"role": "user", "content": "hello there"}]
    )
    resp = raw.parse()
    assert resp.choices[0].message.content == "frontier: hello there"
    assert resp.usage is not None and resp.usage.prompt_tokens > 0
    assert raw.headers["x-tiergate-tier"] == "frontier"
    assert raw.headers["x-tiergate-model"] == "gpt-4o"
    assert raw.headers["x-tiergate-workflow"].startswith("travel-booking")
    sent = upstreams["frontier"].log()[-1]
    assert sent["body"]["model"] == "gpt-4o"  # upstream model name, not the gateway's alias
    # the upstream gets the configured provider key, never the client's key
    assert sent["headers"]["authorization"] == f"Bearer {UPSTREAM_KEY}"


def test_every_field_passes_through_untouched(start_gateway, upstreams):
    gw = start_gateway()
    upstreams["frontier"].script({"tool_calls": [{"name": "search_flights", "arguments": {"to": "Lisbon"}}]})
    resp = client(gw).chat.completions.create(
        model="gpt-4o",
        messages=[SYSTEM, {"role": "user", "content": "flights to Lisbon"}],
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "search_flights"}},
        response_format={"type": "text"},
        n=1,
        seed=7,
        logprobs=True,
        top_logprobs=2,
        temperature=0.3,
        user="u-1",
        extra_body={"vendor_extension": {"x": 1}},
    )
    call = resp.choices[0].message.tool_calls[0]
    assert call.function.name == "search_flights"
    assert json.loads(call.function.arguments) == {"to": "Lisbon"}
    body = upstreams["frontier"].log()[-1]["body"]
    assert body["tools"] == TOOLS
    assert body["tool_choice"] == {"type": "function", "function": {"name": "search_flights"}}
    assert body["response_format"] == {"type": "text"}
    assert (body["n"], body["seed"], body["logprobs"], body["top_logprobs"]) == (1, 7, True, 2)
    assert body["temperature"] == 0.3 and body["user"] == "u-1"
    assert body["vendor_extension"] == {"x": 1}


def test_stream_passes_chunks_and_hides_usage_unless_asked(start_gateway, upstreams):
    gw = start_gateway()
    c = client(gw)
    chunks = list(
        c.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "one two three four five six"}], stream=True
        )
    )
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == "frontier: one two three four five six"
    assert all(ch.usage is None for ch in chunks), "usage chunk leaked to a client that did not ask"
    # the gateway asked the upstream for usage anyway
    assert upstreams["frontier"].log()[-1]["body"]["stream_options"] == {"include_usage": True}

    chunks = list(
        c.chat.completions.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": "count me"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3


def test_stream_with_tool_calls(start_gateway, upstreams):
    gw = start_gateway()
    upstreams["frontier"].script({"tool_calls": [{"name": "book", "arguments": {"flight": "TP123"}}]})
    stream = client(gw).chat.completions.create(
        model="gpt-4o", messages=[SYSTEM, {"role": "user", "content": "book it"}], tools=TOOLS, stream=True
    )
    name, args = "", ""
    for ch in stream:
        for tc in (ch.choices[0].delta.tool_calls or []) if ch.choices else []:
            name += tc.function.name or ""
            args += tc.function.arguments or ""
    assert name == "book" and json.loads(args) == {"flight": "TP123"}


def test_async_client_concurrent_requests(start_gateway, upstreams):
    gw = start_gateway()

    async def run() -> list[str]:
        ac = openai.AsyncOpenAI(base_url=gw.v1, api_key="x", max_retries=0)
        try:

            async def one(i: int) -> str:
                r = await ac.chat.completions.create(
                    model="gpt-4o-mini", messages=[{"role": "user", "content": f"q{i}"}]
                )
                return r.choices[0].message.content or ""

            async def one_stream(i: int) -> str:
                s = await ac.chat.completions.create(
                    model="gpt-4o-mini", messages=[{"role": "user", "content": f"s{i}"}], stream=True
                )
                return "".join([c.choices[0].delta.content or "" async for c in s if c.choices])

            return await asyncio.gather(*[one(i) for i in range(10)], *[one_stream(i) for i in range(10)])
        finally:
            await ac.close()

    out = asyncio.run(run())
    assert out[:10] == [f"cheap: q{i}" for i in range(10)]
    assert out[10:] == [f"cheap: s{i}" for i in range(10)]


def test_models_list(start_gateway):
    gw = start_gateway()
    ids = [m.id for m in client(gw).models.list()]
    assert ids == ["gpt-4o", "gpt-4o-mini", "backup", "house"]


@pytest.mark.parametrize("path", ["/healthz", "/metrics"])
def test_health_and_metrics_endpoints(start_gateway, path):
    import httpx

    gw = start_gateway()
    client(gw).chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    r = httpx.get(gw.url + path)
    assert r.status_code == 200
    if path == "/metrics":
        assert 'tiergate_requests_total{model="gpt-4o",status="200",tier="frontier",workflow="chat-' in r.text
        assert "tiergate_request_duration_seconds_bucket" in r.text
        assert "tiergate_tokens_total" in r.text and "tiergate_cost_usd_total" in r.text
