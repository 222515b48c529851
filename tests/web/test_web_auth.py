"""Admin key, virtual keys (hashed, bound, rate-limited, budgeted) and secrets kept out of logs and store."""

from __future__ import annotations

import sqlite3

import httpx
import openai
import pytest
from tg_testing import UPSTREAM_KEY

ADMIN = "admin-SECRET-key-for-tests-123"


def admin(gw, method: str, path: str, **kw) -> httpx.Response:
    return httpx.request(method, f"{gw.url}{path}", headers={"Authorization": f"Bearer {ADMIN}"}, **kw)


def test_admin_key_guards_the_api(start_gateway):
    gw = start_gateway(env={"TIERGATE_ADMIN_KEY": ADMIN})
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        r = httpx.get(f"{gw.url}/api/workflows", headers=headers)
        assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
        r = httpx.post(f"{gw.url}/api/keys", json={"name": "x"}, headers=headers)
        assert r.status_code == 401
    assert admin(gw, "GET", "/api/workflows").status_code == 200


def test_virtual_key_lifecycle_and_binding(start_gateway):
    gw = start_gateway(env={"TIERGATE_ADMIN_KEY": ADMIN})
    r = admin(gw, "POST", "/api/keys", json={"name": "support-bot", "workflow": "support"})
    assert r.status_code == 201
    created = r.json()
    key = created["key"]
    assert key.startswith("tg-") and len(key) > 40
    listed = admin(gw, "GET", "/api/keys").json()["data"]
    assert [k["name"] for k in listed] == ["support-bot"] and "key" not in listed[0]
    assert key not in admin(gw, "GET", "/api/keys").text

    # no key / a random key / the upstream-style key: refused in secured mode
    for bad in ("sk-not-ours", "tg-forged-key"):
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=gw.v1, api_key=bad, max_retries=0).chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": "x"}]
            )
    raw = openai.OpenAI(base_url=gw.v1, api_key=key, max_retries=0).chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "user", "content": "bound"}]
    )
    assert raw.headers["x-tiergate-workflow"] == "support"
    row = gw.wait_records(1)[-1]
    assert row["key_id"] == created["id"]

    assert admin(gw, "DELETE", f"/api/keys/{created['id']}").status_code == 200
    with pytest.raises(openai.AuthenticationError, match="revoked"):
        openai.OpenAI(base_url=gw.v1, api_key=key, max_retries=0).chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "x"}]
        )
    assert admin(gw, "DELETE", f"/api/keys/{created['id']}").status_code == 404

    bad = admin(gw, "POST", "/api/keys", json={"name": "x", "rate_limit_rpm": 0})
    assert bad.status_code == 400 and "rate_limit_rpm" in bad.json()["error"]["message"]


def test_rate_limit_per_key(start_gateway):
    gw = start_gateway(env={"TIERGATE_ADMIN_KEY": ADMIN})
    key = admin(gw, "POST", "/api/keys", json={"name": "limited", "rate_limit_rpm": 3}).json()["key"]
    c = openai.OpenAI(base_url=gw.v1, api_key=key, max_retries=0)
    for _ in range(3):
        c.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.RateLimitError, match="3 requests per minute") as info:
        c.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
    assert int(info.value.response.headers["retry-after"]) <= 60
    gw.stop()
    assert len(gw.records()) == 3  # the refused request is not a success record


def test_monthly_budget_per_key(start_gateway):
    gw = start_gateway(env={"TIERGATE_ADMIN_KEY": ADMIN})
    key = admin(gw, "POST", "/api/keys", json={"name": "thrifty", "monthly_budget_usd": 0.00001}).json()[
        "key"
    ]
    c = openai.OpenAI(base_url=gw.v1, api_key=key, max_retries=0)
    c.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "spend " * 20}])
    gw.wait_records(1)
    # small amounts print with enough digits to read: never "$0.00 of $0.00"
    with pytest.raises(openai.RateLimitError, match=r"monthly budget of \$0\.00001 is spent \(\$0\.0+[1-9]"):
        for _ in range(3):  # the spend lands right after the answer; allow it a moment
            c.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "more"}])


def test_open_mode_binds_loopback_only_and_says_so(start_gateway, tmp_path):
    import subprocess
    import sys

    from tg_testing import ROOT, free_port

    port = free_port()
    cfg = tmp_path / "open.yaml"
    cfg.write_text(f"storage: {{url: 'sqlite:///{tmp_path}/o.db'}}\nmodels: []\n")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gateway.cli",
            "serve",
            "--config",
            str(cfg),
            "--host",
            "0.0.0.0",
            "--port",
            str(port),
        ],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    try:
        line = proc.stderr.readline()
        assert "no admin key set" in line and "binding to 127.0.0.1 only" in line
    finally:
        proc.terminate()
        proc.wait(10)


def test_secrets_never_reach_logs_store_or_api(start_gateway, upstreams):
    gw = start_gateway(env={"TIERGATE_ADMIN_KEY": ADMIN})
    key = admin(gw, "POST", "/api/keys", json={"name": "k"}).json()["key"]
    c = openai.OpenAI(base_url=gw.v1, api_key=key, max_retries=0)
    upstreams["frontier"].script({"status": 500}, {"status": 500}, {"status": 500})
    upstreams["cheap"].script({"status": 401})
    with pytest.raises(openai.APIStatusError):
        c.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
    c.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "ok"}])
    api_text = admin(gw, "GET", "/api/workflows").text + admin(gw, "GET", "/api/keys").text
    metrics_text = httpx.get(f"{gw.url}/metrics").text
    gw.stop()
    db_path = gw.db_url.removeprefix("sqlite:///")
    con = sqlite3.connect(db_path)
    dump = "\n".join(con.iterdump())
    con.close()
    for secret in (key, ADMIN, UPSTREAM_KEY):
        for where, text in (
            ("log", gw.proc.text()),
            ("store", dump),
            ("api", api_text),
            ("metrics", metrics_text),
        ):
            assert secret not in text, f"secret leaked into the {where}"
