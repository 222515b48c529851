"""Bad input: the OpenAI error shape, the right status, the offending field named, and no success record."""

from __future__ import annotations

import subprocess
import sys

import httpx
import openai
import pytest
from tg_testing import ROOT


def post(gw, body: bytes | str, headers: dict[str, str] | None = None) -> httpx.Response:
    data = body.encode() if isinstance(body, str) else body
    return httpx.post(
        f"{gw.v1}/chat/completions",
        content=data,
        headers={"Content-Type": "application/json", **(headers or {})},
    )


def assert_error(resp: httpx.Response, status: int, *, contains: str, param: str | None = None) -> None:
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert contains in err["message"]
    if param is not None:
        assert err["param"] == param


BAD_REQUESTS = [
    ("{not json", 400, "not valid JSON", None),
    ("[1, 2]", 400, "must be a JSON object", None),
    ('{"messages": [{"role": "user", "content": "x"}]}', 400, "`model` is required", "model"),
    ('{"model": "gpt-4o"}', 400, "`messages` is required", "messages"),
    ('{"model": "gpt-4o", "messages": "hello"}', 400, "`messages` is required", "messages"),
    ('{"model": "gpt-4o", "messages": []}', 400, "non-empty array", "messages"),
    ('{"model": "gpt-4o", "messages": ["hi"]}', 400, "`messages[0]` must be an object", "messages[0]"),
    (
        '{"model": "gpt-4o", "messages": [{"role": "robot", "content": "x"}]}',
        400,
        "`messages[0].role` is `robot`",
        "messages[0].role",
    ),
    (
        '{"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}',
        400,
        "`stream` must be a boolean",
        "stream",
    ),
    (
        '{"model": "gpt-5-imaginary", "messages": [{"role": "user", "content": "x"}]}',
        404,
        "The model `gpt-5-imaginary` does not exist",
        "model",
    ),
]


def test_bad_requests_are_rejected_clearly(start_gateway, upstreams):
    gw = start_gateway()
    for body, status, contains, param in BAD_REQUESTS:
        assert_error(post(gw, body), status, contains=contains, param=param)
    assert upstreams["frontier"].log() == []
    gw.stop()
    assert gw.records() == []


def test_body_over_cap_is_413_and_nothing_is_recorded(start_gateway, upstreams):
    gw = start_gateway({"server": {"max_body_bytes": 2048}})
    big = '{"model": "gpt-4o", "messages": [{"role": "user", "content": "' + "x" * 5000 + '"}]}'
    assert_error(post(gw, big), 413, contains="at most 2048 bytes")
    # the SDK surfaces it as an APIStatusError with our message
    c = openai.OpenAI(base_url=gw.v1, api_key="x", max_retries=0)
    with pytest.raises(openai.APIStatusError) as info:
        c.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "y" * 5000}])
    assert info.value.status_code == 413
    # a good request still works after the bad ones
    ok = c.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "small"}])
    assert ok.choices[0].message.content == "frontier: small"
    gw.stop()
    assert len(gw.records()) == 1


def test_sdk_sees_unknown_model_as_not_found(start_gateway):
    gw = start_gateway()
    c = openai.OpenAI(base_url=gw.v1, api_key="x", max_retries=0)
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        c.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])


def test_unknown_route_uses_openai_error_shape(start_gateway):
    gw = start_gateway()
    resp = httpx.get(f"{gw.v1}/nothing-here")
    assert resp.status_code == 404 and "error" in resp.json()


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=60,
    )


@pytest.mark.parametrize(
    ("text", "expect"),
    [
        ("models:\n  - name: a\n", "models[0].upstream: required key is missing"),
        (
            "models:\n  - name: a\n    upstream: gpt-4o\n",
            "models[0].upstream: `gpt-4o` has no provider prefix",
        ),
        ("serverr:\n  port: 1\n", "serverr: unknown key"),
        ("server:\n  port: -5\n", "server.port: Input should be greater than or equal to 0"),
        ("models: [\n", "line 2"),
        (
            "models:\n  - {name: a, upstream: openai/a, fallbacks: [zz]}\n",
            "models[0].fallbacks: unknown model `zz`",
        ),
        (
            "workflows:\n  - {name: w, frontier: ghost}\n",
            "workflows[0] (`w`).frontier: unknown model `ghost`",
        ),
        (
            "auth:\n  admin_key: ${TG_SURELY_UNSET_VAR}\n",
            "auth.admin_key: environment variable `TG_SURELY_UNSET_VAR`",
        ),
    ],
)
def test_invalid_config_is_one_line_exit_2(tmp_path, text, expect):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    proc = run_cli("serve", "--config", str(path))
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert str(path) in lines[0] and expect in lines[0]
    assert "Traceback" not in proc.stderr + proc.stdout


def test_missing_config_file_is_one_line(tmp_path):
    proc = run_cli("serve", "--config", str(tmp_path / "missing.yaml"))
    assert proc.returncode == 2
    assert proc.stderr.strip().endswith(
        "file not found; pass an existing file with --config or TIERGATE_CONFIG"
    )
