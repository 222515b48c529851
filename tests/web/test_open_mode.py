"""Open mode (no admin key) is safe: other origins and other host names cannot approve, roll back or spend.

The gateway runs as a real process with no admin key; a second HTTP server on another loopback port
plays the hostile site, and Debian's Chromium (through Playwright, no browser download) opens it.
"""

from __future__ import annotations

import http.server
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from loop_helpers import LoopGateway, Upstream, free_port, ledger_rows, seed, wait_for
from sqlalchemy import func, select

from gateway.loop import canary
from gateway.loop.proposals import list_proposals
from gateway.store.engine import make_engine, migrate
from gateway.store.schema import requests as R
from gateway.web.guard import host_name, is_loopback

pytest_plugins = ["loop_fixtures"]  # store, start_loop_gateway

CHROMIUM = Path("/usr/bin/chromium")
LOOP = {"min_conversations": 20, "compile_cost_usd": 0.05, "serve_command": None,
        "compiled_models": {"travel-booking": "house"}}
CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "spend the key"}]}


def open_gateway(start_loop_gateway: Any, tmp_path: Path) -> LoopGateway:
    """Open mode over a store with history: a proposal waiting, and travel-booking compiled (to roll back)."""
    db_url = f"sqlite:///{tmp_path / 'open.db'}"
    engine = make_engine(db_url)
    migrate(engine)
    seed(engine, ledger_rows("travel-booking", 40, start=time.time() - 3 * 3600, spacing=200, first_prompt=800))
    seed(engine, ledger_rows("support-bot", 30, start=time.time() - 3 * 3600, spacing=200, fingerprint="fp-s"))
    canary.set_route(engine, "travel-booking", "compiled", 1.0, reason="compiled for the test", actor="test",
                     model="house", fingerprint="fp-a")
    gw = start_loop_gateway(LOOP, admin=None, db_url=db_url, extra={"workflows": [
        {"name": "travel-booking", "frontier": "gpt-4o", "cheap": "gpt-4o-mini"},
        {"name": "support-bot", "frontier": "gpt-4o", "cheap": "gpt-4o-mini",
         "flowchart": str(Path(__file__).resolve().parents[2] / "configs/workflows/travel-booking.yaml")},
    ]})
    assert wait_for(lambda: list_proposals(engine, "open")), "the loop raised no proposal"
    engine.dispose()
    return gw


def snapshot(gw: LoopGateway, ups: dict[str, Upstream]) -> dict[str, Any]:
    engine = gw.engine()
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(func.count()).select_from(R)).scalar_one()
        return {
            "proposals": {p["id"]: p["status"] for p in list_proposals(engine)},
            "route": canary.get_route(engine, "travel-booking")["mode"],
            "ledger_rows": rows,
            "upstream_calls": sum(len(u.log()) for u in ups.values()),
        }
    finally:
        engine.dispose()


def test_host_origin_and_content_type_checks(start_loop_gateway: Any, upstreams: dict[str, Upstream],
                                             tmp_path: Path) -> None:
    gw = open_gateway(start_loop_gateway, tmp_path)
    port = gw.url.rsplit(":", 1)[1]
    pid = list_proposals(gw.engine(), "open")[0]["id"]
    before = snapshot(gw, upstreams)
    assert before["route"] == "compiled" and before["proposals"][pid] == "open"

    # DNS rebinding: the same socket reached under another name is refused, reads included
    for host in ("evil.example", f"evil.example:{port}", f"127.0.0.1.nip.io:{port}"):
        r = httpx.get(f"{gw.url}/api/workflows", headers={"Host": host})
        assert r.status_code == 403, host
        assert r.json()["error"]["type"] == "permission_error" and "Host" in r.json()["error"]["message"]
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", "localhost"):
        assert httpx.get(f"{gw.url}/api/workflows", headers={"Host": host}).status_code == 200, host

    foreign = f"http://127.0.0.1:{free_port()}"
    attempts = [
        ("POST", f"/api/proposals/{pid}/approve", {}),
        ("POST", "/api/workflows/travel-booking/rollback", {}),
        ("POST", "/v1/chat/completions", {"content": json.dumps(CHAT)}),
        ("POST", "/chat/completions", {"content": json.dumps(CHAT)}),
        ("POST", "/api/keys", {"content": json.dumps({"name": "stolen"})}),
    ]
    for origin in (foreign, "null", "https://evil.example", f"https://127.0.0.1:{port}"):
        for method, path, kw in attempts:
            r = httpx.request(method, f"{gw.url}{path}", headers={"Origin": origin}, **kw)
            assert r.status_code == 403, (origin, path, r.text)
            err = r.json()["error"]
            assert err["type"] == "permission_error" and origin in err["message"], err
    # no Origin, but Fetch metadata says the browser sent it from another site
    r = httpx.post(f"{gw.url}/api/proposals/{pid}/approve", headers={"Sec-Fetch-Site": "same-site"})
    assert r.status_code == 403
    # a JSON endpoint refuses bodies declared as something else (text/plain is what no-cors sends)
    r = httpx.post(f"{gw.url}/api/proposals/{pid}/approve", content=b'{"by": "x"}',
                   headers={"Content-Type": "text/plain;charset=UTF-8"})
    assert r.status_code == 415 and r.json()["error"]["code"] == "unsupported_media_type"
    assert snapshot(gw, upstreams) == before

    # /api/keys: curl's default form type gets a 415 that says what to send; JSON and no type are read
    r = httpx.post(f"{gw.url}/api/keys", content=b'{"name": "ci"}',
                   headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 415
    assert "Content-Type: application/json" in r.json()["error"]["message"], r.text
    assert httpx.post(f"{gw.url}/api/keys", content=b'{"name": "ci"}').status_code == 201
    assert httpx.post(f"{gw.url}/api/keys", json={"name": "ci2"}).status_code == 201

    # SDK clients send no Origin: they keep working, and so does a request from the gateway's own origin
    client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key="anything", max_retries=0)
    reply = client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hello"}],
        extra_headers={"X-Tiergate-Workflow": "support-bot"})
    assert reply.http_response.status_code == 200 and reply.parse().choices[0].message.content
    r = httpx.post(f"{gw.url}/api/proposals/{pid}/reject", json={"by": "ana"}, headers={"Origin": gw.url})
    assert r.status_code == 200 and r.json()["proposal"]["status"] == "rejected"


class _Site(http.server.BaseHTTPRequestHandler):
    page = b""

    def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(self.page)))
        self.end_headers()
        self.wfile.write(self.page)

    def log_message(self, *_: Any) -> None:
        return


@pytest.fixture
def hostile_site() -> Iterator[tuple[str, type[_Site]]]:
    """A second HTTP server on another loopback port: another origin, as any web page is."""
    handler = type("Site", (_Site,), {})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()
    server.server_close()


ATTACK = """<!doctype html><html><body><script>
const gw = %(gw)s, chat = %(chat)s;
const shots = [
  fetch(gw + "/api/proposals/%(pid)s/approve", {method: "POST", mode: "no-cors"}),
  fetch(gw + "/api/proposals/%(pid)s/approve", {method: "POST", mode: "no-cors", body: new Blob(['{"by": "evil"}'])}),
  fetch(gw + "/api/workflows/travel-booking/rollback", {method: "POST", mode: "no-cors"}),
  fetch(gw + "/v1/chat/completions", {method: "POST", mode: "no-cors", body: chat}),
  fetch(gw + "/v1/chat/completions", {method: "POST", mode: "no-cors", body: new Blob([chat])}),
  fetch(gw + "/api/keys", {method: "POST", mode: "no-cors", body: new Blob(['{"name": "evil"}'])}),
];
Promise.allSettled(shots).then(r => { document.title = "done " + r.map(x => x.status).join(","); });
</script></body></html>"""


@pytest.mark.browser
# in CI (TIERGATE_REQUIRE_SERVICES=1) a missing Chromium fails the test instead of skipping it
@pytest.mark.skipif(
    not CHROMIUM.exists() and os.environ.get("TIERGATE_REQUIRE_SERVICES") != "1",
    reason="needs Debian's Chromium at /usr/bin/chromium (apt-get install chromium)",
)
def test_a_page_on_another_origin_cannot_approve_roll_back_or_spend(
    start_loop_gateway: Any, upstreams: dict[str, Upstream], tmp_path: Path, hostile_site: tuple[str, Any]
) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright Python package")
    gw = open_gateway(start_loop_gateway, tmp_path)
    pid = list_proposals(gw.engine(), "open")[0]["id"]
    site, handler = hostile_site
    handler.page = (ATTACK % {"gw": json.dumps(gw.url), "chat": json.dumps(json.dumps(CHAT)), "pid": pid}).encode()
    before = snapshot(gw, upstreams)
    keys_before = httpx.get(f"{gw.url}/api/keys").json()["data"]
    port = gw.url.rsplit(":", 1)[1]
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM),
            # evil.example resolves to this machine, as a DNS-rebinding attacker's name would
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--host-resolver-rules=MAP evil.example 127.0.0.1"],
        )
        try:
            page = browser.new_page()
            page.goto(site)
            page.wait_for_function("document.title.startsWith('done')", timeout=20_000)
            # every request reached the gateway and was answered (opaque to the page), none was obeyed
            assert page.title() == "done " + ",".join(["fulfilled"] * 6)
            time.sleep(0.5)  # a ledger row would be written within the flush interval (20 ms)
            assert snapshot(gw, upstreams) == before
            assert httpx.get(f"{gw.url}/api/keys").json()["data"] == keys_before

            # DNS rebinding: the gateway's port under the attacker's name shows no data
            resp = page.goto(f"http://evil.example:{port}/api/workflows")
            assert resp is not None and resp.status == 403 and "travel-booking" not in page.content()

            # the control: the same request from the gateway's own page is obeyed (the check is the Origin)
            page.goto(f"{gw.url}/dashboard")
            status = page.evaluate("""async (gw) => (await fetch(gw + "/api/workflows/travel-booking/rollback",
                {method: "POST", headers: {"Content-Type": "application/json"}, body: '{"by": "me"}'})).status""",
                gw.url)
            assert status == 200
            assert snapshot(gw, upstreams)["route"] == "frontier"
        finally:
            browser.close()


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.5.5.5", True), ("::1", True), ("[::1]", True), ("::ffff:127.0.0.1", True),
    ("localhost", True), ("LOCALHOST.", True),
    ("evil.example", False), ("10.0.0.1", False), ("0.0.0.0", False), ("localhost.evil.example", False),
    ("127.0.0.1.nip.io", False), ("", False),
])
def test_loopback_names(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


@pytest.mark.parametrize(("header", "name"), [
    ("[::1]:8080", "::1"), ("localhost:80", "localhost"), ("127.0.0.1", "127.0.0.1"), ("::1", "::1"),
    ("Evil.Example:8080", "evil.example"),
])
def test_host_header_names(header: str, name: str) -> None:
    assert host_name(header) == name
