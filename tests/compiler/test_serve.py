"""serve-model's CPU server as a real process on a loopback port, driven by the official openai SDK."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
SYSTEM = {"role": "system", "content": "You are a weather assistant."}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(weather_compile: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = _free_port()
    log = tmp_path_factory.mktemp("serve") / "server.log"
    with log.open("w") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "compiler.serve", weather_compile.out_dir, "--port", str(port),
             "--backend", "cpu"],
            cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, env=os.environ | {"OMP_NUM_THREADS": "1"},
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, f"server exited: {log.read_text()[-2000:]}"
            assert time.monotonic() < deadline, f"server not healthy in 120 s: {log.read_text()[-2000:]}"
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture()
def client(server: str) -> Any:
    openai = pytest.importorskip("openai", reason="the official openai SDK drives the server")
    return openai.OpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0, timeout=60)


def test_models_and_health(server: str, client: Any) -> None:
    assert httpx.get(f"{server}/healthz").json()["status"] == "ok"
    assert [m.id for m in client.models.list().data] == ["weather"]


def test_chat_text_reply(client: Any) -> None:
    resp = client.chat.completions.create(model="weather", messages=[SYSTEM, {"role": "user", "content": "hello"}])
    choice = resp.choices[0]
    assert choice.finish_reason == "stop"
    assert choice.message.content == "Hello! Which city do you want the weather for?"
    assert resp.usage.prompt_tokens > 0 and resp.usage.completion_tokens > 0


def _to_call(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [*messages, {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "Hello! Which city do you want the weather for?"},
            {"role": "user", "content": "the weather in Oslo"}]


def test_chat_tool_call_non_stream(client: Any) -> None:
    resp = client.chat.completions.create(model="weather", messages=_to_call([SYSTEM]))
    choice = resp.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Oslo"}


def test_stream_text_and_tool_call(client: Any) -> None:
    text, reasons = "", []
    for chunk in client.chat.completions.create(model="weather", stream=True,
                                                messages=[{"role": "user", "content": "hey there"}]):
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            reasons.append(chunk.choices[0].finish_reason)
    assert text == "Hello! Which city do you want the weather for?"  # system prompt came from the manifest
    assert reasons[-1] == "stop"

    calls: list[Any] = []
    finish = None
    stream = client.chat.completions.create(model="weather", stream=True, messages=_to_call([SYSTEM]),
                                            stream_options={"include_usage": True})
    usage = None
    for chunk in stream:
        usage = chunk.usage or usage
        if chunk.choices:
            calls += chunk.choices[0].delta.tool_calls or []
            finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls" and usage is not None and usage.completion_tokens > 0
    assert calls[0].function.name == "get_weather" and json.loads(calls[0].function.arguments) == {"city": "Oslo"}


def test_unknown_model_is_an_openai_error(client: Any) -> None:
    import openai

    with pytest.raises(openai.NotFoundError, match="`gpt-nope` does not exist"):
        client.chat.completions.create(model="gpt-nope", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.BadRequestError, match="messages"):
        client.chat.completions.create(model="weather", messages=[])


def test_vllm_command_for_the_artifact(weather_compile: Any) -> None:
    from transformers import AutoTokenizer

    from compiler.artifact import check_tool_roundtrip
    from compiler.serve import vllm_command

    art = Path(weather_compile.artifact)
    manifest = json.loads((art / "manifest.json").read_text())
    cmd = vllm_command(art, "0.0.0.0", 8100, manifest["workflow"], manifest)

    def opt(flag: str) -> str:
        return cmd[cmd.index(flag) + 1]

    assert cmd[:3] == ["vllm", "serve", str(art)] and opt("--port") == "8100"
    assert opt("--served-model-name") == "weather"
    # without these vLLM answers 400 to requests with tools; the parser is the one the round trip checked
    assert "--enable-auto-tool-choice" in cmd and opt("--tool-call-parser") == "hermes"
    assert check_tool_roundtrip(art) == manifest["tool_call_parser"] == "hermes"
    # greedy by default, as the gate measured, with the artifact's own stop ids
    assert opt("--generation-config") == "auto" and json.loads(opt("--override-generation-config")) == {
        "temperature": 0.0}
    assert opt("--dtype") == "bfloat16"
    gen = json.loads((art / "generation_config.json").read_text())
    assert gen["do_sample"] is False and "temperature" not in gen
    assert gen["eos_token_id"] == AutoTokenizer.from_pretrained(art).convert_tokens_to_ids("<|end|>")
    assert "--tool-call-parser" not in vllm_command(art, "h", 1, "x", {"tool_call_parser": None})
