"""The ledger: one record per accepted request, priced, flushed on shutdown, in SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import signal
import sqlite3

import httpx
import openai
import pytest

from gateway.proxy.pricing import PriceBook, load_litellm_price_map
from gateway.proxy.tokens import count_prompt_tokens, count_text
from gateway.settings import parse_settings


def fire(gw, n: int, *, stream_every: int = 3) -> None:
    async def run() -> None:
        ac = openai.AsyncOpenAI(base_url=gw.v1, api_key="x", max_retries=0)
        sem = asyncio.Semaphore(16)

        async def one(i: int) -> None:
            async with sem:
                msgs = [{"role": "user", "content": f"request {i}"}]
                if i % stream_every == 0:
                    s = await ac.chat.completions.create(model="gpt-4o", messages=msgs, stream=True)
                    async for _ in s:
                        pass
                else:
                    await ac.chat.completions.create(model="gpt-4o", messages=msgs)

        try:
            await asyncio.gather(*[one(i) for i in range(n)])
        finally:
            await ac.close()

    asyncio.run(run())


def assert_graceful(gw) -> None:
    # uvicorn re-raises the SIGTERM it handled once shutdown completes, hence -15
    assert gw.stop() in (0, -signal.SIGTERM)
    assert "ledger flushed" in gw.proc.text()


def check_records(rows: list[dict], n: int) -> None:
    assert len(rows) == n
    assert len({r["id"] for r in rows}) == n
    price = load_litellm_price_map()["gpt-4o"]
    for r in rows:
        assert r["status"] == 200 and r["error_type"] is None
        assert r["requested_model"] == r["served_model"] == "gpt-4o" and r["tier"] == "frontier"
        assert r["prompt_tokens"] > 0 and r["completion_tokens"] > 0 and not r["tokens_estimated"]
        expected = (
            r["prompt_tokens"] * price["input_cost_per_token"]
            + r["completion_tokens"] * price["output_cost_per_token"]
        )
        assert r["cost_usd"] == pytest.approx(expected)
        assert r["baseline_cost_usd"] == pytest.approx(expected)
        assert r["latency_ms"] > 0 and r["ttfb_ms"] is not None and r["ttfb_ms"] <= r["latency_ms"]
        assert r["config_hash"] and r["prompt_fingerprint"]
    assert sum(r["stream"] for r in rows) == len(range(0, n, 3))


def test_exactly_n_records_after_graceful_stop_sqlite(start_gateway):
    gw = start_gateway(
        {"ledger": {"flush_interval_ms": 2000, "batch_size": 1000}}
    )  # nothing flushes before stop
    fire(gw, 120)
    assert_graceful(gw)
    check_records(gw.records(), 120)
    db = gw.db_url.removeprefix("sqlite:///")
    assert sqlite3.connect(db).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


@pytest.mark.postgres
def test_exactly_n_records_after_graceful_stop_postgres(start_gateway, pg_url):
    gw = start_gateway({"ledger": {"flush_interval_ms": 2000}}, db_url=pg_url)
    fire(gw, 60)
    assert_graceful(gw)
    check_records(gw.records(), 60)
    # read-back aggregates in PostgreSQL too
    from gateway.store.engine import make_engine
    from gateway.store.queries import workflow_summaries

    engine = make_engine(pg_url)
    (summary,) = workflow_summaries(engine)
    engine.dispose()
    assert summary["requests"] == 60 and summary["conversations"] == 60
    assert summary["p50_latency_ms"] <= summary["p95_latency_ms"]


def test_missing_usage_is_counted_with_tiktoken_and_flagged(start_gateway, upstreams):
    gw = start_gateway()
    upstreams["frontier"].script(
        {"no_usage": True, "content": "four words right here"},
        {"no_usage": True, "content": "streamed words"},
    )
    c = openai.OpenAI(base_url=gw.v1, api_key="x", max_retries=0)
    c.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "count this please"}])
    list(
        c.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "and this"}], stream=True
        )
    )
    rows = gw.wait_records(2)
    assert [r["tokens_estimated"] for r in rows] == [True, True]
    assert rows[0]["completion_tokens"] == 4
    assert rows[0]["prompt_tokens"] == count_prompt_tokens(
        "gpt-4o", [{"role": "user", "content": "count this please"}]
    )
    assert rows[1]["completion_tokens"] == count_text("gpt-4o", "streamed words")
    assert all(r["cost_usd"] > 0 for r in rows)


def test_config_price_override_wins(start_gateway):
    gw = start_gateway()
    c = openai.OpenAI(base_url=gw.v1, api_key="x", max_retries=0)
    c.chat.completions.create(model="house", messages=[{"role": "user", "content": "price me"}])
    row = gw.wait_records(1)[-1]
    assert row["cost_usd"] == pytest.approx(row["prompt_tokens"] * 1e-6 + row["completion_tokens"] * 2e-6)


def test_pricebook_uses_litellm_map_and_cached_rate():
    s = parse_settings(
        "models:\n  - {name: m, upstream: openai/gpt-4o}\n  - {name: z, upstream: openai/no-such}\n", "t"
    )
    book = PriceBook.from_settings(s)
    assert book.unpriced == ("z",)
    entry = load_litellm_price_map()["gpt-4o"]
    assert book.cost("m", prompt=1000, completion=0, cached=400) == pytest.approx(
        600 * entry["input_cost_per_token"] + 400 * entry["cache_read_input_token_cost"]
    )
    assert book.cost("z", prompt=10, completion=10) == 0.0


def test_workflows_api_and_conversations(start_gateway):
    gw = start_gateway()
    c = openai.OpenAI(base_url=gw.v1, api_key="x", max_retries=0)
    for i in range(3):
        c.chat.completions.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": f"q{i}"}],
            extra_headers={"X-Tiergate-Workflow": "support"},
        )
    c.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "other"}],
        extra_headers={"X-Tiergate-Workflow": "claims"},
    )
    gw.wait_records(4)
    data = httpx.get(f"{gw.url}/api/workflows").json()["data"]
    by = {d["workflow"]: d for d in data}
    assert by["support"]["requests"] == 3 and by["support"]["conversations"] == 3
    assert by["claims"]["requests"] == 1
    for key in (
        "prompt_tokens",
        "completion_tokens",
        "cost_usd",
        "baseline_cost_usd",
        "savings_usd",
        "p50_latency_ms",
        "p95_latency_ms",
        "first_seen",
        "last_seen",
    ):
        assert key in by["support"]
    convs = httpx.get(f"{gw.url}/api/workflows/support/conversations").json()["data"]
    assert len(convs) == 3 and all(cv["requests"] == 1 for cv in convs)
    missing = httpx.get(f"{gw.url}/api/workflows/nope/conversations")
    assert missing.status_code == 404 and "No workflow `nope`" in missing.json()["error"]["message"]
