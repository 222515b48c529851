"""The loop's JSON API on a real gateway process: proposals raised from real traffic, decisions with and
without the admin key, a job that runs, a canary that starts, a rollback, and a restart mid-training."""

from __future__ import annotations

import os
import re
import signal
from typing import Any

import openai
import pytest
from loop_helpers import ADMIN, LoopGateway, wait_for

pytest_plugins = ["loop_fixtures"]  # store, start_loop_gateway

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

SYSTEM = "You are the booking assistant of Skyway Travel. Be brief and polite."
TOOLS = [{"type": "function", "function": {"name": "search_flights", "parameters": {"type": "object"}}}]


def traffic(gw: LoopGateway, workflow: str, conversations: int, key: str | None = None) -> None:
    client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=key or ADMIN, max_retries=0)
    for i in range(conversations):
        client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": f"trip {i}"}],
            tools=TOOLS,  # type: ignore[arg-type]
            extra_headers={"X-Tiergate-Workflow": workflow, "X-Tiergate-Conversation": f"{workflow}-{i}"},
        )


def virtual_key(gw: LoopGateway) -> str:
    r = gw.api("POST", "/api/keys", json={"name": "app"})
    assert r.status_code == 201, r.text
    return str(r.json()["key"])


def open_proposal(gw: LoopGateway, workflow: str) -> dict[str, Any]:
    def find() -> dict[str, Any] | None:
        rows = gw.api("GET", "/api/proposals", params={"status": "open"}).json()["data"]
        return next((p for p in rows if p["workflow"] == workflow), None)

    found = wait_for(find, timeout=15)
    assert found, "the loop raised no proposal"
    return found  # type: ignore[no-any-return]


LOOP = {"compile_cost_usd": 0.0001, "min_conversations": 10, "compiled_models": {"travel-booking": "house"},
        "serve_command": None, "canary_share": 0.5}


def test_admin_key_guards_every_loop_endpoint_and_decisions_are_recorded(start_loop_gateway: Any) -> None:
    gw = start_loop_gateway(LOOP)
    calls = [("GET", "/api/proposals"), ("POST", "/api/proposals/1/approve"), ("POST", "/api/proposals/1/reject"),
             ("GET", "/api/jobs"), ("GET", "/api/jobs/1"), ("GET", "/api/workflows/w/route"),
             ("POST", "/api/workflows/w/rollback"), ("POST", "/api/workflows/w/samples"),
             ("GET", "/api/workflows/w/payback")]
    app_key = virtual_key(gw)
    for method, path in calls:
        for key in (None, "wrong", app_key):
            r = gw.api(method, path, key=key)
            assert r.status_code == 401, (method, path, key, r.text)
            assert r.json()["error"]["type"] == "authentication_error"
    assert gw.api("GET", "/api/proposals").json() == {"data": []}
    r = gw.api("POST", "/api/proposals/41/approve", json={"by": "ana"})
    assert r.status_code == 404 and "No proposal `41`" in r.json()["error"]["message"]

    # nothing to compile support-bot from (no flowchart, too few captured conversations): no proposal, and why
    traffic(gw, "support-bot", 11, app_key)
    why = wait_for(lambda: gw.api("GET", "/api/workflows/support-bot/payback").json().get("cannot_compile"))
    assert why and "Workflow `support-bot` has no flowchart" in why
    traffic(gw, "travel-booking", 11, app_key)
    # reject, with the admin key: recorded with who and when
    prop = open_proposal(gw, "travel-booking")
    assert all(p["workflow"] != "support-bot" for p in gw.api("GET", "/api/proposals").json()["data"])
    r = gw.api("POST", f"/api/proposals/{prop['id']}/reject", json={"by": "bob", "note": "too risky"})
    assert r.status_code == 200
    p = r.json()["proposal"]
    assert (p["status"], p["decided_by"], p["note"]) == ("rejected", "bob", "too risky") and p["decided_at"] > 0
    assert gw.api("GET", "/api/proposals", params={"status": "rejected"}).json()["data"][0]["id"] == prop["id"]
    assert gw.api("GET", "/api/proposals", params={"status": "open"}).json()["data"] == []
    assert gw.api("GET", "/api/proposals", params={"status": "bogus"}).status_code == 400


def test_proposal_approved_through_the_api_runs_a_job_and_starts_the_canary(start_loop_gateway: Any) -> None:
    gw = start_loop_gateway(LOOP, env={"FAKE_COMPILE_STEPS": "10"})
    key = virtual_key(gw)
    traffic(gw, "travel-booking", 12, key)
    prop = open_proposal(gw, "travel-booking")
    assert prop["kind"] == "compile" and prop["numbers"]["conversations"] >= 10 and prop["numbers"]["due"]
    payback = gw.api("GET", "/api/workflows/travel-booking/payback").json()
    assert payback["stability"]["stable"] and payback["proposal"]["id"] == prop["id"]

    r = gw.api("POST", f"/api/proposals/{prop['id']}/approve", json={"by": "ana", "note": "go"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["proposal"]["status"] == "approved" and body["proposal"]["decided_by"] == "ana"
    assert body["job"]["state"] == "queued"
    again = gw.api("POST", f"/api/proposals/{prop['id']}/approve", json={"by": "bob"})
    assert again.status_code == 409 and "already approved by ana" in again.json()["error"]["message"]

    job_id = body["job"]["id"]
    job = wait_for(lambda: (j := gw.api("GET", f"/api/jobs/{job_id}").json())["state"] == "ready" and j, timeout=30)
    assert job and job["progress"] == 1.0 and job["artifact"].endswith("artifact")
    route = wait_for(lambda: (r := gw.api("GET", "/api/workflows/travel-booking/route").json())["mode"] == "canary" and r)
    assert route and route["model"] == "house" and route["share"] == 0.5 and route["job_id"] == job_id
    assert route["switches"][0]["reason"].startswith(f"job {job_id} ready")

    r = gw.api("POST", "/api/workflows/travel-booking/samples", json={"conversation": "c1", "score": 0.9})
    assert r.status_code == 201
    r = gw.api("POST", "/api/workflows/travel-booking/rollback", json={"by": "ana", "reason": "testing rollback"})
    assert r.status_code == 200 and r.json()["mode"] == "frontier"
    assert r.json()["switches"][0] | {"ts": 0, "id": 0} == {
        "id": 0, "ts": 0, "workflow": "travel-booking", "from_mode": "canary", "to_mode": "frontier", "share": 0.0,
        "reason": "testing rollback", "actor": "ana"}
    r = gw.api("POST", "/api/workflows/travel-booking/rollback")
    assert r.status_code == 409


def test_gateway_killed_mid_training_resumes_the_job_after_restart(start_loop_gateway: Any) -> None:
    env = {"FAKE_COMPILE_STEPS": "60", "FAKE_COMPILE_STEP_S": "0.05"}
    gw = start_loop_gateway(LOOP, env=env)
    traffic(gw, "travel-booking", 10)
    prop = open_proposal(gw, "travel-booking")
    job_id = gw.api("POST", f"/api/proposals/{prop['id']}/approve", json={"by": "ana"}).json()["job"]["id"]
    job = wait_for(lambda: (j := gw.api("GET", f"/api/jobs/{job_id}").json())["state"] == "training"
                   and (j["detail"].get("train") or {}).get("step", 0) >= 3 and j, timeout=20)
    assert job, "the job never reached training"
    os.killpg(job["pid"], signal.SIGKILL)  # the host goes down: worker and gateway together
    gw.proc.stop(signal.SIGKILL)
    gw2 = start_loop_gateway(LOOP, env=env, db_url=gw.db_url, name="restarted")
    done = wait_for(lambda: (j := gw2.api("GET", f"/api/jobs/{job_id}").json())["state"] in ("ready", "failed") and j,
                    timeout=30)
    assert done and done["state"] == "ready" and done["attempts"] == 2 and done["detail"]["resumed"] is True


def test_canary_serves_the_compiled_model_and_rolls_back_on_a_quality_drop(
    start_loop_gateway: Any, upstreams: dict[str, Any]
) -> None:
    from gateway.loop.canary import on_compiled

    loop = LOOP | {"compare_share": 1.0, "min_samples": 4, "min_quality": 0.85, "canary_share": 0.5}
    gw = start_loop_gateway(loop, env={"FAKE_COMPILE_STEPS": "5"})
    traffic(gw, "travel-booking", 10)
    prop = open_proposal(gw, "travel-booking")
    gw.api("POST", f"/api/proposals/{prop['id']}/approve", json={"by": "ana"}).raise_for_status()
    assert wait_for(lambda: gw.api("GET", "/api/workflows/travel-booking/route").json()["mode"] == "canary", timeout=30)
    upstreams["cheap"].reset()  # `house`, the compiled model here, is served by the fake cheap upstream
    client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=ADMIN, max_retries=0)
    ids = [f"canary-{i}" for i in range(40)]
    on = [c for c in ids if on_compiled(c, 0.5)]
    off = [c for c in ids if not on_compiled(c, 0.5)]
    tiers = {}
    for conv in [on[0], off[0], on[1], off[1], on[2]]:  # 3 compared conversations: fewer than min_samples
        i = ids.index(conv)
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o", tools=TOOLS,
            messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": f"trip {i}"}],
            extra_headers={"X-Tiergate-Workflow": "travel-booking", "X-Tiergate-Conversation": conv},
        )
        tiers[conv] = raw.headers["x-tiergate-tier"]
        if raw.headers["x-tiergate-tier"] == "compiled":
            assert raw.headers["x-tiergate-model"] == "house"
    expected = {c: ("compiled" if on_compiled(c, 0.5) else "frontier") for c in tiers}
    assert tiers == expected and "compiled" in tiers.values()  # sticky, as the pure function says
    for conv in on[3:6]:
        client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": conv}],
            tools=TOOLS,  # type: ignore[arg-type]
            extra_headers={"X-Tiergate-Workflow": "travel-booking", "X-Tiergate-Conversation": conv})
    sent = [e["body"] for e in upstreams["cheap"].log() if e["body"]["model"] == "house-model"]
    assert sent and all(m["role"] != "system" for b in sent for m in b["messages"]) and all("tools" not in b for b in sent)
    # sampled comparisons score `cheap: trip i` against `frontier: trip i` (0.5) and `cheap: canary-i` against
    # `frontier: canary-i` (1/3): a mean under 0.85, so the loop rolls back
    route = wait_for(lambda: (r := gw.api("GET", "/api/workflows/travel-booking/route").json())["mode"] == "frontier"
                     and r, timeout=20)
    assert route, "no automatic rollback"
    last = route["switches"][0]
    assert last["actor"] == "loop" and re.match(r"quality 0\.\d\d < 0\.85 over [4-6] sampled", last["reason"])
    assert gw.api("POST", "/api/workflows/travel-booking/rollback").status_code == 409
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": "hi"}],
        tools=TOOLS,  # type: ignore[arg-type]
        extra_headers={"X-Tiergate-Workflow": "travel-booking",
                       "X-Tiergate-Conversation": next(c for c, t in tiers.items() if t == "compiled")})
    assert raw.headers["x-tiergate-tier"] != "compiled"  # after the rollback nobody is on the compiled side
