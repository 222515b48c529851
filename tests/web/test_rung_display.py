"""Which rungs are active per workflow and why, in `tiergate workflows` and on the dashboard."""

from __future__ import annotations

import subprocess
import sys
from urllib.parse import quote

import httpx
import openai
from tg_testing import ROOT


def test_rungs_active_and_why_for_listed_and_found_workflows(start_gateway):
    gw = start_gateway(
        {
            "defaults": {"trim": {"min_requests": 3}, "capture": {"retention_days": 7}},
            "workflows": [
                {"name": "listed", "frontier": "gpt-4o", "cheap": "gpt-4o-mini", "trim": False, "propose": False}
            ],
        }
    )
    c = openai.OpenAI(base_url=gw.v1, api_key="x", max_retries=0)
    for i in range(4):
        c.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": f"q{i}"}],
                                  extra_headers={"X-Tiergate-Workflow": "found"})
    c.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}],
                              extra_headers={"X-Tiergate-Workflow": "listed"})
    gw.wait_records(5)

    page = httpx.get(f"{gw.url}/dashboard/workflows/found").text
    assert "Rungs active and why" in page
    assert "no cheap model named" in page  # routing off: nothing to route to
    assert 'data-rung="trim"' in page and ">on<" in page  # trimming on by default, 4 of 3 requests seen
    assert "not enough traffic yet: 4 of 500 conversations" in page  # proposals wait for conversations
    listed = httpx.get(f"{gw.url}/dashboard/workflows/{quote('listed')}").text
    assert "shadow labels to gpt-4o-mini" in listed and "off in config" in listed
    overview = httpx.get(f"{gw.url}/dashboard").text
    assert 'class="rung waiting"' in overview and 'class="rung off"' in overview

    gw.stop()
    out = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "workflows", "--config", str(gw.config_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=60, env={"COLUMNS": "250", "PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0, out.stderr
    text = " ".join(out.stdout.split())
    assert "found (found)" in text and "off: no cheap model named" in text
    assert "waiting: configured; not enough traffic yet: 0 of 200 shadow labels" in text
    assert "on: default; 4 conversations kept (7 days and latest 10000)" in text


def test_a_unicode_workflow_name_is_shown_as_itself(start_gateway):
    gw = start_gateway()
    c = openai.OpenAI(base_url=gw.v1, api_key="x", max_retries=0)
    c.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}],
                              metadata={"workflow": "日本語 café"})
    gw.wait_records(1)
    overview = httpx.get(f"{gw.url}/dashboard").text
    assert "日本語 café" in overview and f'/dashboard/workflows/{quote("日本語 café")}' in overview
    page = httpx.get(f"{gw.url}/dashboard/workflows/{quote('日本語 café')}")
    assert page.status_code == 200 and "日本語 café" in page.text and "Rungs active and why" in page.text
    api = httpx.get(f"{gw.url}/api/workflows").json()["data"]
    assert [w["workflow"] for w in api] == ["日本語 café"]
    gw.stop()
    out = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "workflows", "--config", str(gw.config_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=60, env={"COLUMNS": "250", "PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0 and "日本語 café" in out.stdout, out.stderr
