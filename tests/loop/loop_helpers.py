"""Loop test helpers and fixtures: a seeded store ("known ledgers") and gateways with the loop wired in.

The gateway runs as a real process (tests/loop/loop_gateway.py = create_app + gateway.web.app.wire) in
front of the shared fake upstreams; compile jobs run tests/loop/fake_compile.py, which writes the
compiler's files on the compiler's command line, fast.
"""

from __future__ import annotations

import importlib.util
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Engine, insert, select

from gateway.store.engine import make_engine
from gateway.store.schema import requests, workflows

HERE = Path(__file__).resolve().parent


def _root_conftest() -> Any:
    """tests/conftest.py's helpers, loaded by path: `from conftest import` resolves to whichever
    conftest.py pytest imported last (tests/compiler/ has one too)."""
    spec = importlib.util.spec_from_file_location("tiergate_tests_root", HERE.parent / "conftest.py")
    assert spec is not None and spec.loader is not None
    module = sys.modules.get(spec.name)
    if module is None:
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    return module


_root = _root_conftest()
ROOT, UPSTREAM_KEY, UPSTREAM_KEY_ENV = _root.ROOT, _root.UPSTREAM_KEY, _root.UPSTREAM_KEY_ENV
Proc, Upstream, base_config, free_port = _root.Proc, _root.Upstream, _root.base_config, _root.free_port
ADMIN = "tg-admin-test-key-0123456789"
FLOWCHART = ROOT / "configs" / "workflows" / "travel-booking.yaml"


def ledger_rows(
    workflow: str, conversations: int, *, turns: int = 3, fingerprint: str = "fp-a", start: float | None = None,
    spacing: float = 1.0, prompt: int = 1000, completion: int = 100, cost: float = 0.01, tier: str = "frontier",
    status: int = 200, first_prompt: int | None = None, conv_prefix: str | None = None,
) -> list[dict[str, Any]]:
    """Ledger records with known sums: `conversations` x `turns` requests, each costing `cost`."""
    start = time.time() - conversations * spacing if start is None else start
    prefix = conv_prefix or uuid.uuid4().hex[:8]
    rows = []
    for c in range(conversations):
        for t in range(1, turns + 1):
            rows.append({
                "id": uuid.uuid4().hex, "ts": start + c * spacing + t * 0.001, "workflow": workflow,
                "conversation": f"{prefix}-{c}", "turn": t, "key_id": None, "requested_model": "gpt-4o",
                "served_model": "gpt-4o", "tier": tier, "stream": False,
                "prompt_tokens": (first_prompt if (t == 1 and first_prompt is not None) else prompt),
                "completion_tokens": completion, "cached_tokens": 0, "tokens_estimated": False, "cost_usd": cost,
                "baseline_cost_usd": cost, "ttfb_ms": 10.0, "latency_ms": 20.0, "status": status,
                "error_type": None if status < 400 else "upstream_error", "attempts": 1,
                "prompt_fingerprint": fingerprint, "config_hash": None, "route_reason": None,
                "prompt_tokens_before_trim": None, "tools_called": None, "tools_dropped": None,
                "trim_saved_usd": None,
            })
    return rows


def stored_requests(db_url: str) -> list[dict[str, Any]]:
    """Every ledger row in the store at ``db_url`` (stop the gateway first to see them all)."""
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            return [dict(r) for r in conn.execute(select(requests)).mappings()]
    finally:
        engine.dispose()


def seed(engine: Engine, rows: list[dict[str, Any]]) -> None:
    with engine.begin() as conn:
        for i in range(0, len(rows), 5000):
            conn.execute(insert(requests), rows[i:i + 5000])
        known = {r[0] for r in conn.execute(select(workflows.c.id))}
        for wf in sorted({r["workflow"] for r in rows} - known):
            conn.execute(insert(workflows), {"id": wf, "source": "header", "fingerprint": None,
                                             "first_seen": rows[0]["ts"]})


def loop_settings(tmp_path: Path, **loop: Any) -> dict[str, Any]:
    return {
        "jobs_dir": str(tmp_path / "jobs"),
        "compile_command": [sys.executable, str(HERE / "fake_compile.py")],
        "poll_interval_s": 0.1,
        "threshold_interval_s": 0.2,
        "stability_window_s": 0,
        "min_conversations": 10,
        **loop,
    }


@dataclass
class LoopGateway:
    url: str
    proc: Proc
    db_url: str
    config_path: Path

    def api(self, method: str, path: str, *, key: str | None = ADMIN, **kw: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.request(method, f"{self.url}{path}", headers=headers, timeout=10, **kw)

    def engine(self) -> Engine:
        return make_engine(self.db_url)

    def stop(self) -> int:
        return self.proc.stop()


def wait_for(fn: Any, timeout: float = 20.0, interval: float = 0.1) -> Any:
    """Poll `fn` until it returns something truthy; its last value on timeout (the assert then shows it)."""
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def compile_log_tail(out_dir: str | Path, chars: int = 3000) -> str:
    """The end of a compile job's log, for an assertion message when the job failed."""
    log = Path(out_dir) / "compile.log"
    return log.read_text()[-chars:] if log.is_file() else f"(no {log})"
