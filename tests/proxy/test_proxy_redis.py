"""Two gateway processes sharing the real Redis; and a Redis that goes away and comes back."""

from __future__ import annotations

import shutil
import subprocess
import time

import httpx
import openai
import pytest
from tg_testing import free_port, service_missing

ADMIN = "admin-key-redis-tests"
pytestmark = pytest.mark.redis


def test_two_gateways_stitch_one_conversation_and_share_one_rate_limit(start_gateway, redis_url, tmp_path):
    env = {"TIERGATE_ADMIN_KEY": ADMIN}
    cfg = {"storage": {"url": f"sqlite:///{tmp_path / 'shared.db'}", "redis_url": redis_url}}
    a = start_gateway(cfg, env=env, name="a")
    b = start_gateway(cfg, env=env, name="b")
    key = httpx.post(
        f"{a.url}/api/keys",
        json={"name": "shared", "rate_limit_rpm": 4},
        headers={"Authorization": f"Bearer {ADMIN}"},
    ).json()["key"]
    ca = openai.OpenAI(base_url=a.v1, api_key=key, max_retries=0)
    cb = openai.OpenAI(base_url=b.v1, api_key=key, max_retries=0)

    messages = [{"role": "system", "content": "Shared stitching."}]
    convs = []
    for turn, c in enumerate((ca, cb, ca)):
        messages.append({"role": "user", "content": f"turn {turn}"})
        raw = c.chat.completions.with_raw_response.create(model="gpt-4o", messages=messages)
        convs.append(raw.headers["x-tiergate-conversation"])
        messages.append({"role": "assistant", "content": raw.parse().choices[0].message.content})
    assert len(set(convs)) == 1, "a follow-up on the other process must join the same conversation"

    # 3 used; one more allowed across both processes, then both refuse
    cb.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "4th"}])
    for c in (ca, cb):
        with pytest.raises(openai.RateLimitError):
            c.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "over"}])
    a.stop()
    b.stop()
    rows = a.records()
    assert len(rows) == 4
    assert sorted(r["turn"] for r in rows if r["conversation"] == convs[0]) == [1, 2, 3]


def test_gateway_serves_on_when_redis_goes_away_and_recovers(start_gateway, tmp_path):
    server = shutil.which("redis-server")
    if server is None:
        service_missing("redis-server binary", "not on PATH")
    port = free_port()
    cmd = [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]

    def start_redis() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            try:
                import redis

                redis.Redis(port=port).ping()
                return proc
            except Exception:
                time.sleep(0.05)
        raise RuntimeError("private redis-server did not start")

    rproc = start_redis()
    try:
        gw = start_gateway(
            {"storage": {"url": f"sqlite:///{tmp_path / 'r.db'}", "redis_url": f"redis://127.0.0.1:{port}/0"}}
        )
        c = openai.OpenAI(base_url=gw.v1, api_key="x", max_retries=0)
        c.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "before"}])
        rproc.terminate()
        rproc.wait(5)
        for i in range(3):
            r = c.chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": f"during {i}"}]
            )
            assert r.choices[0].message.content == f"frontier: during {i}"
        assert httpx.get(f"{gw.url}/healthz").json()["redis"] == {"configured": True, "degraded": True}
        rproc = start_redis()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            c.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "after"}])
            if not httpx.get(f"{gw.url}/healthz").json()["redis"]["degraded"]:
                break
            time.sleep(0.3)
        assert httpx.get(f"{gw.url}/healthz").json()["redis"]["degraded"] is False
        gw.stop()
        log = gw.proc.text()
        assert "redis unreachable" in log and "redis is back" in log
    finally:
        rproc.terminate()
        rproc.wait(5)
