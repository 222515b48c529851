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


def _start(cmd: list[str], url: str, log: Path) -> subprocess.Popen[bytes]:
    with log.open("w") as fh:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT,
                                env=os.environ | {"OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, f"exited: {log.read_text()[-2000:]}"
        assert time.monotonic() < deadline, f"not up in 60 s: {log.read_text()[-2000:]}"
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)


def test_vllm_front_restores_what_the_gateway_strips(weather_compile: Any, tmp_path: Path) -> None:
    """The front `serve-model` puts before `vllm serve`, with a scripted OpenAI server standing in for vLLM
    (no GPU here): system prompt and tools come back from the manifest (vLLM parses calls only for requests
    with tools), temperature is pinned to 0, answers and errors pass through, streamed or not."""
    openai = pytest.importorskip("openai", reason="the official openai SDK drives the server")
    up_port, front_port = _free_port(), _free_port()
    upstream = f"http://127.0.0.1:{up_port}"
    procs = [_start([sys.executable, str(ROOT / "tests" / "fake_upstream.py"), "--port", str(up_port)],
                    f"{upstream}/v1/models", tmp_path / "vllm.log")]
    try:
        front = ("from compiler.serve import create_vllm_front; import uvicorn, sys; "
                 "uvicorn.run(create_vllm_front(sys.argv[1], sys.argv[2]), host='127.0.0.1', port=int(sys.argv[3]))")
        procs.append(_start([sys.executable, "-c", front, weather_compile.out_dir, upstream, str(front_port)],
                            f"http://127.0.0.1:{front_port}/v1/models", tmp_path / "front.log"))
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{front_port}/v1", api_key="unused", max_retries=0)
        httpx.post(f"{upstream}/_script", json={"steps": [
            {"tool_calls": [{"name": "get_weather", "arguments": {"city": "Oslo"}}]},
            {"tool_calls": [{"name": "get_weather", "arguments": {"city": "Oslo"}}]}]})
        history = [{"role": "user", "content": "hi"},
                   {"role": "assistant", "content": "Hello! Which city do you want the weather for?"},
                   {"role": "user", "content": "Oslo please"}]  # as the gateway sends it: no system, no tools
        resp = client.chat.completions.create(model="weather", messages=history, temperature=0.9, top_p=0.5)
        call = resp.choices[0].message.tool_calls[0]
        assert resp.choices[0].finish_reason == "tool_calls"
        assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Oslo"}
        calls: list[Any] = []
        for chunk in client.chat.completions.create(model="weather", messages=history, stream=True):
            if chunk.choices:
                calls += chunk.choices[0].delta.tool_calls or []
        assert calls[0].function.name == "get_weather"

        sent = [x["body"] for x in httpx.get(f"{upstream}/_log").json()]
        manifest = json.loads((Path(weather_compile.artifact) / "manifest.json").read_text())
        for body in sent:
            assert body["model"] == "weather" and body["temperature"] == 0.0 and "top_p" not in body
            assert body["messages"][0] == {"role": "system", "content": manifest["system_prompt"]}
            assert body["messages"][1:] == history
            assert body["tools"] == manifest["tools"] and body["tool_choice"] == "auto"

        httpx.post(f"{upstream}/_script", json={"steps": [{"status": 429}]})
        with pytest.raises(openai.RateLimitError):
            client.chat.completions.create(model="weather", messages=history)
        with pytest.raises(openai.NotFoundError, match="`gpt-nope` does not exist"):
            client.chat.completions.create(model="gpt-nope", messages=history)
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=10)
