"""Upstream failures: retries with backoff, fallbacks, timeouts, broken streams, client disconnects."""

from __future__ import annotations

import time

import httpx
import openai
import pytest


def client(gw) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.v1, api_key="x", max_retries=0)


def test_429_and_500_are_retried_then_succeed(start_gateway, upstreams):
    gw = start_gateway()
    upstreams["frontier"].script({"status": 429, "retry_after": "0"}, {"status": 500})
    resp = client(gw).chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "persist"}]
    )
    assert resp.choices[0].message.content == "frontier: persist"
    assert upstreams["frontier"].stats()["requests"] == 3
    rows = gw.wait_records(1)
    assert rows[-1]["attempts"] == 3 and rows[-1]["status"] == 200 and rows[-1]["served_model"] == "gpt-4o"


def test_fallback_after_retries_are_exhausted(start_gateway, upstreams):
    gw = start_gateway()
    upstreams["frontier"].script({"status": 503}, {"status": 503}, {"status": 503})
    raw = client(gw).chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "user", "content": "save me"}]
    )
    assert raw.parse().choices[0].message.content == "cheap: save me"
    assert raw.headers["x-tiergate-model"] == "backup"
    row = gw.wait_records(1)[-1]
    assert (row["requested_model"], row["served_model"], row["attempts"]) == ("gpt-4o", "backup", 4)
    # baseline is the requested model's price for the same tokens; cost is the fallback's
    assert row["baseline_cost_usd"] > row["cost_usd"] > 0


def test_client_errors_are_not_retried_and_pass_through(start_gateway, upstreams):
    gw = start_gateway()
    upstreams["frontier"].script({"status": 400})
    with pytest.raises(openai.BadRequestError, match="scripted 400"):
        client(gw).chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "bad"}])
    assert upstreams["frontier"].stats()["requests"] == 1
    assert upstreams["cheap"].stats()["requests"] == 0
    row = gw.wait_records(1)[-1]
    assert row["status"] == 400 and row["error_type"] == "upstream_error"


def test_all_failing_gives_502_in_openai_shape(start_gateway, upstreams):
    gw = start_gateway()
    upstreams["frontier"].script(*[{"status": 500}] * 3)
    upstreams["cheap"].script({"status": 500})
    resp = httpx.post(
        f"{gw.v1}/chat/completions", json={"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]}
    )
    assert resp.status_code == 502
    assert "error" in resp.json()


def test_slow_upstream_times_out_per_model(start_gateway, upstreams):
    gw = start_gateway(
        {
            "models": [
                {
                    "name": "slow",
                    "upstream": "openai/slow",
                    "api_base": upstreams["frontier"].api_base,
                    "timeout": 0.5,
                    "max_retries": 0,
                },
            ]
        }
    )
    upstreams["frontier"].script({"delay": 3})
    t0 = time.monotonic()
    resp = httpx.post(
        f"{gw.v1}/chat/completions",
        json={"model": "slow", "messages": [{"role": "user", "content": "x"}]},
        timeout=10,
    )
    assert time.monotonic() - t0 < 2.5
    assert resp.status_code == 504
    assert resp.json()["error"]["code"] == "upstream_timeout"
    assert "timed out after 0.5s" in resp.json()["error"]["message"]


def test_upstream_breaking_mid_stream_ends_the_stream_with_an_error_event(start_gateway, upstreams):
    gw = start_gateway()
    upstreams["frontier"].script({"content": "a b c d e f", "chunks": 6, "disconnect_after": 2})
    with httpx.stream(
        "POST",
        f"{gw.v1}/chat/completions",
        json={"model": "gpt-4o", "stream": True, "messages": [{"role": "user", "content": "x"}]},
    ) as resp:
        body = b"".join(resp.iter_bytes())
    assert resp.status_code == 200
    assert b'"content":"a"' in body.replace(b" ", b"")
    assert b'"error"' in body
    row = gw.wait_records(1)[-1]
    assert row["error_type"] == "upstream_unavailable"


def test_client_disconnect_cancels_the_upstream_stream(start_gateway, upstreams):
    gw = start_gateway()
    words = " ".join(f"w{i}" for i in range(200))
    upstreams["frontier"].script({"content": words, "chunks": 200, "chunk_delay": 0.05})
    with httpx.stream(
        "POST",
        f"{gw.v1}/chat/completions",
        json={"model": "gpt-4o", "stream": True, "messages": [{"role": "user", "content": "x"}]},
    ) as resp:
        seen = 0
        for _ in resp.iter_raw():
            seen += 1
            if seen >= 3:
                break  # leave mid-stream; closing the response drops the connection
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and upstreams["frontier"].stats()["streams_cancelled"] == 0:
        time.sleep(0.05)
    stats = upstreams["frontier"].stats()
    assert stats["streams_cancelled"] == 1 and stats["streams_completed"] == 0
    row = gw.wait_records(1)[-1]
    assert row["error_type"] == "client_disconnected"
