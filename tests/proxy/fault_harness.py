"""Gateways for the fault and soak tests: one per store (SQLite file, PostgreSQL database), shared by a module.

gw = FaultGateway.start(tmp_dir, ups, db_url, overrides)
rows = gw.rows(workflow="t-1", n=1)      # ledger rows of one test's requests, read from the store
gw.dead_letters()                         # what the store refused
"""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import yaml
from sqlalchemy import select
from tg_testing import (
    PG_ADMIN_URL,
    UPSTREAM_KEY,
    UPSTREAM_KEY_ENV,
    Proc,
    Upstream,
    base_config,
    free_port,
    service_missing,
)

from gateway.store.engine import make_engine
from gateway.store.schema import ledger_dead_letters, requests

CLOSED_PORT_BASE = "http://127.0.0.1:{port}/v1"


def fault_models(ups: dict[str, Upstream]) -> list[dict[str, Any]]:
    """Models with no retries and no fallbacks, so each fault reaches the client exactly as scripted."""
    f = ups["frontier"]
    closed = CLOSED_PORT_BASE.format(port=free_port())
    price = {"input_per_million": 1.0, "output_per_million": 2.0}
    common = {"api_key_env": UPSTREAM_KEY_ENV, "max_retries": 0, "price": price}
    return [
        {"name": "solo", "upstream": "openai/solo", "api_base": f.api_base, "timeout": 1.5, **common},
        {"name": "patient", "upstream": "openai/patient", "api_base": f.api_base, "timeout": 30, **common},
        {"name": "gone", "upstream": "openai/gone", "api_base": closed, "connect_timeout": 1, **common},
        {
            "name": "claude",
            "upstream": "anthropic/claude-sonnet-4-5",
            "api_base": f.base,
            "timeout": 1.5,
            **common,
        },
        {"name": "claude-gone", "upstream": "anthropic/claude-sonnet-4-5", "api_base": closed[:-3], **common},
    ]


def new_pg_database() -> str:
    try:
        admin = psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        service_missing("PostgreSQL at " + PG_ADMIN_URL, str(exc).splitlines()[0])
    name = "tg_" + uuid.uuid4().hex[:12]
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    return f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"


def drop_pg_database(url: str) -> None:
    with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=3) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')


def store_url(kind: str, tmp: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{tmp / 'ledger.db'}"
        return
    url = new_pg_database()
    try:
        yield url
    finally:
        drop_pg_database(url)


class FaultGateway:
    def __init__(self, url: str, proc: Proc, db_url: str):
        self.url, self.proc, self.db_url = url, proc, db_url
        self.v1 = f"{url}/v1"
        self.engine = make_engine(db_url)

    @classmethod
    def start(
        cls,
        tmp: Path,
        ups: dict[str, Upstream],
        db_url: str,
        overrides: dict[str, Any] | None = None,
        env: dict[str, str] | None = None,
    ) -> FaultGateway:
        cfg = base_config(ups, db_url)
        cfg["models"] = cfg["models"] + fault_models(ups)
        for key, value in (overrides or {}).items():
            cfg[key] = {**cfg.get(key, {}), **value} if isinstance(value, dict) else value
        path = tmp / f"gw-{uuid.uuid4().hex[:6]}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        port = free_port()
        proc = Proc(
            [sys.executable, "-m", "gateway.cli", "serve", "--config", str(path), "--port", str(port)],
            path.with_suffix(".log"),
            env={UPSTREAM_KEY_ENV: UPSTREAM_KEY, "TIERGATE_ADMIN_KEY": "", **(env or {})},
        )
        proc.start().wait_http(f"http://127.0.0.1:{port}/healthz", timeout=60)
        return cls(f"http://127.0.0.1:{port}", proc, db_url)

    def stop(self) -> int:
        code = self.proc.stop()
        self.engine.dispose()
        return code

    def all_rows(self, where: Any = None) -> list[dict[str, Any]]:
        stmt = select(requests) if where is None else select(requests).where(where)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(stmt.order_by(requests.c.ts)).mappings()]

    def rows(self, workflow: str, n: int = 1, timeout: float = 15.0) -> list[dict[str, Any]]:
        """The rows of `workflow` once `n` are there, plus a beat so that a duplicate would show too."""
        deadline = time.monotonic() + timeout
        while len(self.all_rows(requests.c.workflow == workflow)) < n and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        return self.all_rows(requests.c.workflow == workflow)

    def dead_letters(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(select(ledger_dead_letters)).mappings()]

    def log(self) -> str:
        return self.proc.text()
