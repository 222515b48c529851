"""The dashboard: login, pages over a seeded store, CSRF on every action, and a browser approving a proposal.

The browser test drives Debian's Chromium through Playwright (no browser download) and keeps a
screenshot under test-artifacts/.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from loop_helpers import ADMIN, ROOT, LoopGateway, ledger_rows, seed, wait_for

from gateway.loop.proposals import list_proposals
from gateway.store.engine import make_engine, migrate

pytest_plugins = ["loop_fixtures"]  # store, start_loop_gateway

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "test-artifacts"
LOOP = {"min_conversations": 20, "compile_cost_usd": 0.05, "serve_command": None,
        "compiled_models": {"travel-booking": "house"}}


def seeded(start_loop_gateway: Any, tmp_path: Path, env: dict[str, str] | None = None) -> LoopGateway:
    """Three hours of history in the store before the gateway starts (as after a week in production)."""
    db_url = f"sqlite:///{tmp_path / 'seeded.db'}"
    engine = make_engine(db_url)
    migrate(engine)
    t0 = time.time() - 3 * 3600
    rows = ledger_rows("travel-booking", 40, start=t0, spacing=200, first_prompt=800)
    for r in rows[::3]:  # a third routed to the cheap model, with trimmed prompts
        r.update(tier="routed", served_model="gpt-4o-mini", cost_usd=0.001, route_reason="easy turn",
                 prompt_tokens_before_trim=1400, trim_saved_usd=0.0006, tools_called="search_flights")
    for r in rows[1::3]:
        r.update(tools_called="search_flights,book_flight")
    seed(engine, rows)
    seed(engine, ledger_rows("support-bot", 8, start=t0, spacing=300, fingerprint="fp-s"))
    gw = start_loop_gateway(LOOP, env=env, db_url=db_url)
    assert wait_for(lambda: list_proposals(engine)), "the loop raised no proposal"
    engine.dispose()
    return gw


def login(gw: LoopGateway) -> httpx.Client:
    c = httpx.Client(base_url=gw.url, timeout=10)
    r = c.post("/dashboard/login", data={"key": ADMIN, "next": "/dashboard"})
    assert r.status_code == 303 and r.headers["location"] == "/dashboard"
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    assert ADMIN not in cookie
    return c


def test_pages_login_and_csrf(start_loop_gateway: Any, tmp_path: Path) -> None:
    gw = seeded(start_loop_gateway, tmp_path)
    anon = httpx.Client(base_url=gw.url, timeout=10)
    r = anon.get("/dashboard")
    assert r.status_code == 303 and r.headers["location"].startswith("/dashboard/login")
    r = anon.post("/dashboard/login", data={"key": "wrong"})
    assert r.status_code == 303 and "error=1" in r.headers["location"]

    c = login(gw)
    page = c.get("/dashboard")
    assert page.status_code == 200 and "default-src 'self'" in page.headers["content-security-policy"]
    html = page.text
    assert 'id="kpi-savings"' in html and "travel-booking" in html and "support-bot" in html
    assert "https://" not in html and "http://" not in html.replace("http://www.w3.org", "")  # nothing off-box
    assert "SIMULATION" not in html
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', html)
    pid = re.search(r'id="approve-(\d+)"', html)
    assert csrf and pid
    wf = c.get("/dashboard/workflows/travel-booking").text
    assert "Payback" in wf and 'id="trimmed">', wf
    assert re.search(r'id="trimmed">24,000<', wf) and "easy turn" in wf and 'id="tool-usage"' in wf
    assert "book_flight" in wf
    assert c.get("/dashboard/static/dashboard.js").status_code == 200

    url = f"/dashboard/proposals/{pid.group(1)}/reject"
    # no token, a wrong token, a foreign origin, no session: all refused, nothing decided
    assert c.post(url, data={}).status_code == 403
    assert c.post(url, data={"csrf": "0" * 64}).status_code == 403
    assert c.post(url, data={"csrf": csrf.group(1)}, headers={"Origin": "https://evil.example"}).status_code == 403
    assert anon.post(url, data={"csrf": csrf.group(1)}).status_code == 403
    engine = gw.engine()
    assert all(p["status"] == "open" for p in list_proposals(engine))
    ok = c.post(url, data={"csrf": csrf.group(1), "back": "/dashboard"}, headers={"Origin": gw.url})
    assert ok.status_code == 303
    assert {p["id"]: p for p in list_proposals(engine)}[int(pid.group(1))]["decided_by"].startswith("dashboard")
    engine.dispose()


@pytest.mark.browser
# in CI (TIERGATE_REQUIRE_SERVICES=1) a missing Chromium fails the test instead of skipping it
@pytest.mark.skipif(
    not CHROMIUM.exists() and os.environ.get("TIERGATE_REQUIRE_SERVICES") != "1",
    reason="needs Debian's Chromium at /usr/bin/chromium (apt-get install chromium)",
)
def test_browser_approves_a_proposal_and_sees_its_job(start_loop_gateway: Any, tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright Python package")
    gw = seeded(start_loop_gateway, tmp_path, env={"FAKE_COMPILE_STEPS": "60", "FAKE_COMPILE_STEP_S": "0.05"})
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.goto(f"{gw.url}/dashboard")
            assert "/dashboard/login" in page.url
            page.fill("#key", "not-the-key")
            page.click("#login")
            page.wait_for_selector("#login-error")
            page.fill("#key", ADMIN)
            page.click("#login")
            page.wait_for_selector("#kpi-savings")
            assert page.locator("#workflows tr[data-workflow]").count() == 2
            assert page.locator("#money .chart svg rect.bar").count() == 5  # where the money went, by our JS
            page.click("a[href='/dashboard/workflows/travel-booking']")
            page.wait_for_selector("#payback")
            assert page.locator(".chart svg path.line").count() == 4
            page.locator("button.approve").first.click()
            page.wait_for_selector(".job[data-job]")
            page.wait_for_function(
                "() => ['training', 'evaluating', 'ready'].includes("
                "document.querySelector('.job [data-field=state]').textContent)", timeout=20_000)
            assert page.locator(".proposal .status.approved").count() == 1
            page.screenshot(path=str(ARTIFACTS / "dashboard-workflow.png"), full_page=True)
            page.goto(f"{gw.url}/dashboard")
            page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
            assert errors == []
        finally:
            browser.close()
    assert (ARTIFACTS / "dashboard.png").stat().st_size > 10_000
