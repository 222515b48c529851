"""Where the money went: one definition per rung (gateway/store/money.py), pinned on a known ledger.

The ledger is written by the store's own writer into a real SQLite file; the same figures must come
out of /api/workflows, the dashboard (overview and workflow page, before and after the hourly rollup
folds the old rows) and a real request that a fallback model answered.
"""

from __future__ import annotations

import asyncio
import html
import os
import re
import time
import uuid
from pathlib import Path
from typing import Any

import openai
import pytest
from loop_helpers import Upstream

from gateway.loop.rollup import HOUR, advance
from gateway.store.engine import make_engine, migrate
from gateway.store.ledger import LedgerWriter, Record
from gateway.store.money import RUNGS, usd
from gateway.store.queries import workflow_summaries
from gateway.web.routes.dashboard import overview_numbers

pytest_plugins = ["loop_fixtures"]

WF = "ledgerwf"
CHROMIUM = Path("/usr/bin/chromium")
# each kind of row, its count, and what it pins (USD)
EXPECTED = {
    # 2 trimmed frontier (0.005 each) + 10 routed (0.001 each) + 3 fallbacks (0.001 each); compiled rows'
    # shorter prompt is compile's, not trimming's
    "trimming": 0.01 + 0.01 + 0.003,
    # 10 routed: baseline 0.035 - cost 0.002 - trimming 0.001; 1 cascade escalation paid 0.002 extra
    "routing": 10 * (0.035 - 0.002 - 0.001) - 0.002,
    # 5 compiled: 0.03 - 0.0001 each, minus 2 canary comparisons at 0.03
    "compile": 5 * (0.03 - 0.0001) - 2 * 0.03,
    "shadow_labels": -4 * 0.001,
    # 3 routed requests a pricier fallback answered: 0.035 - 0.04 - 0.001 (trimming's) each
    "fallbacks": 3 * (0.035 - 0.04 - 0.001),
}


def record(ts: float, tier: str, cost: float, baseline: float, *, reason: str | None = None,
           trim: float | None = None, served: str = "gpt-4o", conv: str | None = None) -> Record:
    return Record(id=uuid.uuid4().hex, ts=ts, workflow=WF, conversation=conv or uuid.uuid4().hex[:12], turn=1,
                  key_id=None, requested_model="gpt-4o", served_model=served, tier=tier, stream=False,
                  prompt_tokens=1000, completion_tokens=100, cost_usd=cost, baseline_cost_usd=baseline,
                  latency_ms=10.0, route_reason=reason, trim_saved_usd=trim,
                  prompt_tokens_before_trim=1200 if trim else None, prompt_fingerprint="fp-l")


def known_ledger(now: float) -> list[Record]:
    old, new = now - 5 * HOUR, now - 60  # old rows fold into the rollup, new ones stay in the live tail
    rows = [record(old + i, "frontier", 0.03, 0.03) for i in range(10)]
    rows += [record(old + 20 + i, "frontier", 0.025, 0.03, trim=0.005) for i in range(2)]
    rows += [record(old + 40 + i, "routed", 0.002, 0.035, trim=0.001, reason="easy turn", served="gpt-4o-mini")
             for i in range(10)]
    rows.append(record(new, "frontier", 0.032, 0.03, reason="cascade escalated: json (not an object)"))
    compiled = [record(new + 1 + i, "compiled", 0.0001, 0.03, trim=0.02, reason="canary: house", served="house")
                for i in range(5)]
    rows += compiled
    rows += [record(new + 10 + i, "shadow", 0.03, 0.0, reason=f"canary comparison of {compiled[i].id}",
                    conv=compiled[i].conversation) for i in range(2)]
    rows += [record(old + 60 + i, "shadow", 0.001, 0.0, reason=f"shadow of {rows[i].id}",
                    served="gpt-4o-mini", conv=rows[i].conversation) for i in range(4)]
    rows += [record(new + 20 + i, "routed", 0.04, 0.035, trim=0.001, reason="fallback from gpt-4o-mini: easy turn")
             for i in range(3)]
    return rows


def write(db_url: str, rows: list[Record]) -> None:
    """Through the store's own batched writer, as the gateway writes them."""
    engine = make_engine(db_url)
    migrate(engine)

    async def go() -> None:
        writer = LedgerWriter(engine, flush_interval=0.01)
        await writer.start()
        for r in rows:
            writer.submit(r)
        await writer.stop()
        assert writer.written == len(rows)

    asyncio.run(go())
    engine.dispose()


def approx(d: dict[str, float]) -> Any:
    return pytest.approx(d, abs=1e-9)


def test_each_rung_on_a_known_ledger_api_and_dashboard(tmp_path: Path, start_gateway: Any) -> None:
    now = time.time()
    db_url = f"sqlite:///{tmp_path / 'money.db'}"
    write(db_url, known_ledger(now))
    engine = make_engine(db_url)
    savings = 0.995 - 0.5865  # baseline - spend, summed by hand
    assert sum(EXPECTED.values()) == pytest.approx(savings)

    [api_row] = workflow_summaries(engine)
    assert api_row["savings_by_rung"] == approx(EXPECTED)
    assert api_row["savings_usd"] == pytest.approx(savings)
    assert api_row["requests"] == 10 + 2 + 10 + 1 + 5 + 3  # side calls are spend, not requests
    for fold in (False, True):
        if fold:
            assert advance(engine, now=now) > 0  # the old hours now come from the rollup
        o = overview_numbers(engine)
        assert o["rungs"] == approx(EXPECTED) and o["savings"] == pytest.approx(savings)
        assert overview_numbers(engine, WF)["rungs"] == approx(EXPECTED)
    engine.dispose()

    gw = start_gateway(db_url=db_url)  # open mode: the dashboard needs no login
    import httpx

    [served] = [w for w in httpx.get(f"{gw.url}/api/workflows").json()["data"] if w["workflow"] == WF]
    assert served["savings_by_rung"] == approx(EXPECTED)
    assert served["routing_savings_usd"] == pytest.approx(EXPECTED["routing"])
    assert served["trim_savings_usd"] == pytest.approx(EXPECTED["trimming"])
    for page in ("/dashboard", f"/dashboard/workflows/{WF}"):
        text = httpx.get(f"{gw.url}{page}").text
        shown = dict(re.findall(r'<td data-rung="(\w+)" class="(neg|)">', text))
        figures = dict(re.findall(r'<td data-rung="(\w+)" class="(?:neg|)">([^<]*)</td>', text))
        assert set(figures) == set(RUNGS), page
        for key, value in EXPECTED.items():
            assert html.unescape(figures[key]) == usd(value), (page, key)
            assert (shown[key] == "neg") is (value < 0), (page, key)
        assert figures["fallbacks"].startswith("-$") and figures["shadow_labels"] == "-$0.004"
    wf_page = httpx.get(f"{gw.url}/dashboard/workflows/{WF}").text
    # route reasons: the side calls grouped by purpose, not one row per conversation
    assert re.search(r"<td>canary comparison \(checks the compiled model\)</td><td>gpt-4o</td><td>2</td>", wf_page)
    assert re.search(r"<td>shadow label \(learning to route\)</td><td>gpt-4o-mini</td><td>4</td>", wf_page)
    assert "canary comparison of" not in wf_page and "shadow of" not in wf_page


@pytest.mark.browser
# in CI (TIERGATE_REQUIRE_SERVICES=1) a missing Chromium fails the test instead of skipping it
@pytest.mark.skipif(
    not CHROMIUM.exists() and os.environ.get("TIERGATE_REQUIRE_SERVICES") != "1",
    reason="needs Debian's Chromium at /usr/bin/chromium (apt-get install chromium)",
)
def test_negative_amounts_hang_below_the_axis_in_red(tmp_path: Path, start_gateway: Any) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright Python package")
    db_url = f"sqlite:///{tmp_path / 'money.db'}"
    write(db_url, known_ledger(time.time()))
    gw = start_gateway(db_url=db_url)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"{gw.url}/dashboard")
            page.wait_for_selector("#money .chart svg rect.bar")
            axis = float(page.get_attribute("#money .chart svg line.axis", "y1") or "nan")
            bars = page.eval_on_selector_all("#money .chart svg rect.bar", """rs => rs.map(r => ({
                value: +r.getAttribute("data-value"), y: +r.getAttribute("y"), h: +r.getAttribute("height"),
                neg: r.classList.contains("neg"), fill: getComputedStyle(r).fill}))""")
            assert [b["value"] for b in bars] == pytest.approx([EXPECTED[k] for k in RUNGS])
            for b in bars:
                if b["value"] < 0:  # from the axis down, in the "bad" colour
                    assert b["neg"] and b["y"] == pytest.approx(axis) and b["fill"] == "rgb(180, 35, 24)"
                else:
                    assert not b["neg"] and b["y"] + b["h"] == pytest.approx(axis)
            labels = page.eval_on_selector_all("#money .chart svg text", "ts => ts.map(t => t.textContent)")
            assert "-$0.004" in labels and usd(EXPECTED["fallbacks"]) in labels
            assert errors == []
        finally:
            browser.close()


def test_each_rung_on_postgres(pg_url: str) -> None:
    """The same SQL (row kinds grouped in SELECT and GROUP BY) on PostgreSQL, live and folded."""
    now = time.time()
    write(pg_url, known_ledger(now))
    engine = make_engine(pg_url)
    try:
        assert workflow_summaries(engine)[0]["savings_by_rung"] == approx(EXPECTED)
        assert overview_numbers(engine)["rungs"] == approx(EXPECTED)
        assert advance(engine, now=now) > 0
        assert overview_numbers(engine, WF)["rungs"] == approx(EXPECTED)
    finally:
        engine.dispose()


def test_a_fallback_belongs_to_no_rung(start_gateway: Any, upstreams: dict[str, Upstream]) -> None:
    gw = start_gateway()
    upstreams["frontier"].script(*[{"status": 500}] * 3)  # gpt-4o fails its tries; `backup` answers
    client = openai.OpenAI(base_url=gw.v1, api_key="x", max_retries=0)
    reply = client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hi"}], extra_headers={"X-Tiergate-Workflow": "fb"})
    assert reply.headers["x-tiergate-model"] == "backup"
    [row] = [r for r in gw.wait_records(1) if r["workflow"] == "fb"]
    assert row["served_model"] == "backup" and row["route_reason"].startswith("fallback from gpt-4o")
    import httpx

    [wf] = [w for w in httpx.get(f"{gw.url}/api/workflows").json()["data"] if w["workflow"] == "fb"]
    rungs = wf["savings_by_rung"]
    assert rungs["fallbacks"] == pytest.approx(row["baseline_cost_usd"] - row["cost_usd"]) and rungs["fallbacks"] != 0
    assert rungs["routing"] == 0 and rungs["compile"] == 0 and rungs["trimming"] == 0


@pytest.mark.parametrize(("value", "text"), [
    (1234.5, "$1,234"), (12.345, "$12.35"), (0.5, "$0.50"), (0.00123, "$0.00123"), (0.0004, "$0.0004"),
    (-0.02, "-$0.02"), (-0.018, "-$0.018"), (1e-13, "$0.00"), (None, "-"), (0.0000123456, "$0.0000123"),
])
def test_money_prints_enough_digits_and_its_sign(value: float | None, text: str) -> None:
    assert usd(value) == text
