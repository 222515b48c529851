"""Shared by the trimming tests: the scripted tool-calling upstream as a process, and a trimming gateway."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest
from tg_testing import ROOT, UPSTREAM_KEY_ENV, Proc, free_port

HELPER = "tiergate_load_tools"
NAMES = ("lookup", "refund", "escalate", "track", "change_address", "cancel", "reorder", "invoice")
PRICE = {"input_per_million": 2.0, "output_per_million": 8.0, "cached_input_per_million": 0.5}


def tool(name: str) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": f"{name.replace('_', ' ')} for the customer; " * 8,
            "parameters": {
                "type": "object",
                "properties": {"id": {"type": "string"}, "note": {"type": "string"}},
                "required": ["id"],
            },
        },
    }


TOOLS = [tool(n) for n in NAMES]


class Scripted:
    def __init__(self, base: str):
        self.base = base
        self.api_base = f"{base}/v1"

    def script(self, *steps: dict[str, Any]) -> None:
        httpx.post(f"{self.base}/_script", json={"steps": list(steps)}).raise_for_status()

    def config(self, **values: int) -> None:
        httpx.post(f"{self.base}/_config", json=values).raise_for_status()

    def log(self) -> list[dict[str, Any]]:
        return httpx.get(f"{self.base}/_log").json()  # type: ignore[no-any-return]

    def sent(self, i: int = -1) -> list[str]:
        """Tool names the i-th request carried (OpenAI or Anthropic shape)."""
        tools = self.log()[i]["body"].get("tools") or []
        return [t["function"]["name"] if "function" in t else t["name"] for t in tools]

    def reset(self) -> None:
        httpx.post(f"{self.base}/_reset").raise_for_status()


@pytest.fixture(scope="module")
def scripted_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scripted]:
    port = free_port()
    path = tmp_path_factory.mktemp("scripted") / "scripted.log"
    proc = Proc([sys.executable, str(ROOT / "tests" / "proxy" / "scripted_upstream.py"), "--port", str(port)], path)
    proc.start().wait_http(f"http://127.0.0.1:{port}/v1/models")
    yield Scripted(f"http://127.0.0.1:{port}")
    proc.stop()


@pytest.fixture
def scripted(scripted_process: Scripted) -> Scripted:
    scripted_process.reset()
    return scripted_process


def trim_gateway(
    start_gateway: Callable[..., Any], up: Scripted, anthropic: bool = False, route: Any = None, **trim: Any
) -> Any:
    model = {"name": "gpt-4o", "upstream": "openai/gpt-4o", "api_base": up.api_base, "price": PRICE}
    if anthropic:
        model = {
            "name": "gpt-4o",
            "upstream": "anthropic/claude-sonnet-4-5",
            "api_base": up.base,
            "api_key_env": UPSTREAM_KEY_ENV,
            "price": PRICE,
        }
    workflow: dict[str, Any] = {"name": "shop", "frontier": "gpt-4o", "trim": {"holdout": 0.0, **trim}}
    models = [model]
    if route is not None:  # a cheap model on the same scripted upstream
        models.append({**model, "name": "gpt-4o-mini", "upstream": "openai/gpt-4o-mini"})
        workflow.update(cheap="gpt-4o-mini", route=route)
    return start_gateway(
        {
            "models": models,
            "workflows": [workflow],
            "server": {"state_refresh_seconds": 0.3},
        }
    )


def ask(gw: Any, messages: list[dict[str, Any]] | str, conversation: str, **kw: Any) -> Any:
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    c = openai.OpenAI(base_url=gw.v1, api_key="x", max_retries=0)
    headers = {"X-Tiergate-Workflow": "shop", "X-Tiergate-Conversation": conversation, **kw.pop("headers", {})}
    return c.chat.completions.create(
        model="gpt-4o", messages=messages, tools=kw.pop("tools", TOOLS), extra_headers=headers, **kw
    )


def warm_up(gw: Any, up: Scripted, n: int, call: str = "lookup", **kw: Any) -> None:
    """`n` requests that call `call`, then wait until trimming leaves the other tools out."""
    for i in range(n):
        up.script({"call": call})
        ask(gw, f"warm-up {i}", f"warm-{i}", **kw)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        up.script({"content": "probe"})
        ask(gw, "probe", "probe", **kw)
        if HELPER in up.sent():
            return
        time.sleep(0.2)
    raise AssertionError("trimming did not start")
