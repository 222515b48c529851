"""A proposal only for a workflow that can be compiled; one that cannot says why, and a failed action
shows its error where it was clicked (the proposal's box, or the page when the button is gone)."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import httpx
from loop_helpers import LoopGateway, ledger_rows, seed, wait_for
from sqlalchemy import insert

from gateway.loop.payback import LoopConfig, WorkflowUsage, payback
from gateway.loop.proposals import list_proposals
from gateway.store.engine import make_engine, migrate
from gateway.store.loop_schema import proposals

pytest_plugins = ["loop_fixtures"]  # store, start_loop_gateway

LOOP = {"min_conversations": 20, "compile_cost_usd": 0.05, "serve_command": None}


def started(start_loop_gateway: Any, tmp_path: Path) -> tuple[LoopGateway, int]:
    """travel-booking has a flowchart; support-bot has neither a flowchart nor captured conversations."""
    db_url = f"sqlite:///{tmp_path / 'cc.db'}"
    engine = make_engine(db_url)
    migrate(engine)
    t0 = time.time() - 3 * 3600
    seed(engine, ledger_rows("travel-booking", 40, start=t0, spacing=200, first_prompt=800))
    seed(engine, ledger_rows("support-bot", 40, start=t0, spacing=200, fingerprint="fp-s"))
    # a proposal raised before its flowchart was removed from the config: approving it must fail, visibly
    with engine.begin() as conn:
        stale = conn.execute(insert(proposals).values(
            workflow="support-bot", fingerprint="fp-old", kind="compile", status="open", created=t0,
            numbers=json.dumps(payback(WorkflowUsage(40, 120, 1.2, 120_000, 12_000, 800, 0.1), LoopConfig(
                compile_cost_usd=0.05)).as_dict()))).inserted_primary_key[0]
    gw = start_loop_gateway(LOOP, admin=None, db_url=db_url)
    assert wait_for(lambda: any(p["workflow"] == "travel-booking" for p in list_proposals(engine)))
    time.sleep(0.5)  # a few more threshold passes: none may raise one for support-bot
    assert [p["workflow"] for p in list_proposals(engine)].count("support-bot") == 1  # only the stale one
    engine.dispose()
    return gw, int(stale)


def test_no_proposal_without_a_source_and_the_pages_say_why(start_loop_gateway: Any, tmp_path: Path) -> None:
    gw, stale = started(start_loop_gateway, tmp_path)
    statuses = {s["workflow"]: s for s in [gw.api("GET", "/api/workflows/support-bot/payback", key=None).json(),
                                           gw.api("GET", "/api/workflows/travel-booking/payback", key=None).json()]}
    why = statuses["support-bot"]["cannot_compile"]
    assert "no flowchart" in why and "0 captured conversations" in why
    assert statuses["travel-booking"]["cannot_compile"] is None

    overview = httpx.get(f"{gw.url}/dashboard").text
    row = re.search(r'<tr data-workflow="support-bot">.*?</tr>', overview, re.S)
    assert row and "cannot compile: Workflow `support-bot` has no flowchart" in row.group(0)
    assert "cannot compile" not in re.search(r'<tr data-workflow="travel-booking">.*?</tr>', overview, re.S).group(0)
    page = httpx.get(f"{gw.url}/dashboard/workflows/support-bot").text
    assert re.search(r'id="cannot-compile"><b>No compile proposal:</b> Workflow `support-bot` has no flowchart', page)

    # 2.2 hours of traffic: payback is counted in conversations, not yet extrapolated into days
    tb = httpx.get(f"{gw.url}/dashboard/workflows/travel-booking").text
    assert re.search(r'id="payback-days">\(days to payback after 24 h of traffic; 2\.\d h so far\)', tb)

    # approving the stale proposal fails; the message shows in that proposal's box, on the page it was clicked
    for back in ("/dashboard", "/dashboard/workflows/support-bot"):
        html = httpx.get(f"{gw.url}{back}").text
        csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', html)
        assert csrf and f'id="approve-{stale}"' in html
        r = httpx.post(f"{gw.url}/dashboard/proposals/{stale}/approve", data={"csrf": csrf.group(1), "back": back})
        assert r.status_code == 303 and r.headers["location"].endswith(f"#proposal-{stale}")
        shown = httpx.get(f"{gw.url}{r.headers['location']}").text
        box = re.search(rf'<div class="proposal" data-proposal="{stale}" id="proposal-{stale}">.*?</div>', shown, re.S)
        assert box and re.search(r'<p class="error action-error" role="alert">Workflow `support-bot` has no flowchart',
                                 box.group(0)), back
        assert 'id="action-error"' not in shown  # not at the top: where it was clicked
    assert {p["id"]: p["status"] for p in list_proposals(gw.engine())}[stale] == "open"

    # a rollback whose button is gone by the time it lands (already on the frontier): the page says why
    html = httpx.get(f"{gw.url}/dashboard/workflows/travel-booking").text
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', html)
    assert csrf
    r = httpx.post(f"{gw.url}/dashboard/workflows/travel-booking/rollback", data={"csrf": csrf.group(1)},
                   follow_redirects=True)
    assert re.search(r'<p class="error" id="action-error" role="alert">Workflow `travel-booking` already runs on the '
                     r"frontier", r.text)
