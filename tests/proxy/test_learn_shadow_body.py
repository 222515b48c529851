"""The shadow call asks the cheap model what the client sent, never trimming's internal helper tool."""

from __future__ import annotations

from gateway.proxy.learn import shadow_body
from gateway.proxy.plan import Plan
from router import LOAD_TOOLS


def _tool(name: str) -> dict:
    return {"type": "function", "function": {"name": name, "parameters": {"type": "object", "properties": {}}}}


def test_a_trimmed_request_is_shadowed_with_the_clients_tools_not_the_helper() -> None:
    client = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}],
              "tools": [_tool("a"), _tool("b"), _tool("c")]}
    served = {**client, "tools": [_tool("a"), _tool(LOAD_TOOLS)]}
    body = shadow_body(Plan(model="gpt-4o", body=served, client_body=client, helper=True))
    assert [t["function"]["name"] for t in body["tools"]] == ["a", "b", "c"]
    assert body["messages"] == served["messages"]
    assert served["tools"][1]["function"]["name"] == LOAD_TOOLS  # the served body is left as it was


def test_an_untrimmed_request_is_shadowed_as_served() -> None:
    client = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "tools": [_tool("a")]}
    plan = Plan(model="gpt-4o", body=client, client_body=client)
    assert shadow_body(plan) is client
