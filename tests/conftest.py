"""Shared fixtures: real processes on loopback ports (fake upstreams, gateways), real PostgreSQL and Redis.

PostgreSQL and Redis tests skip with a reason when the servers are not reachable, unless
TIERGATE_REQUIRE_SERVICES=1 (CI sets it), which turns those skips into failures.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

# The loop's test helpers (loop_helpers, loop_fixtures, loop_gateway.py, fake_compile.py) live in
# tests/loop/ and serve tests/web/ and tests/demo/ too: pytest puts only a test file's own folder and
# this one on sys.path, so the helper folder is added here, before any test module imports from it.
sys.path.insert(0, str(Path(__file__).resolve().parent / "loop"))

from tg_testing import (  # noqa: F401  (re-exported for tests/loop/loop_helpers.py)
    PG_ADMIN_URL,
    REDIS_URL,
    REQUIRE_SERVICES,
    ROOT,
    UPSTREAM_KEY,
    UPSTREAM_KEY_ENV,
    Gateway,
    Proc,
    Upstream,
    base_config,
    free_port,
    service_missing,
)


@pytest.fixture(scope="session")
def fake_upstreams(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Upstream]]:
    logs = tmp_path_factory.mktemp("upstreams")
    ups = {}
    for name in ("frontier", "cheap"):
        port = free_port()
        proc = Proc(
            [sys.executable, str(ROOT / "tests" / "fake_upstream.py"), "--port", str(port), "--name", name],
            logs / f"{name}.log",
        ).start()
        ups[name] = Upstream(name, port, proc)
    for up in ups.values():
        up.proc.wait_http(f"{up.base}/v1/models")
    yield ups
    for up in ups.values():
        up.proc.stop()


@pytest.fixture
def upstreams(fake_upstreams: dict[str, Upstream]) -> dict[str, Upstream]:
    for up in fake_upstreams.values():
        up.reset()
    return fake_upstreams


@pytest.fixture
def start_gateway(tmp_path: Path, upstreams: dict[str, Upstream]) -> Iterator[Any]:
    started: list[Gateway] = []

    def start(
        overrides: dict[str, Any] | None = None,
        *,
        env: dict[str, str] | None = None,
        db_url: str | None = None,
        name: str = "gw",
    ) -> Gateway:
        db_url = db_url or f"sqlite:///{tmp_path / 'tiergate.db'}"
        cfg = base_config(upstreams, db_url)
        for key, value in (overrides or {}).items():
            cfg[key] = (
                {**cfg[key], **value} if isinstance(value, dict) and isinstance(cfg.get(key), dict) else value
            )
        db_url = cfg["storage"]["url"]
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        port = free_port()
        proc_env = {UPSTREAM_KEY_ENV: UPSTREAM_KEY, "TIERGATE_ADMIN_KEY": "", **(env or {})}
        proc = Proc(
            [sys.executable, "-m", "gateway.cli", "serve", "--config", str(path), "--port", str(port)],
            tmp_path / f"{name}.log",
            env=proc_env,
        )
        proc.start().wait_http(f"http://127.0.0.1:{port}/healthz")
        gw = Gateway(f"http://127.0.0.1:{port}", proc, db_url, path)
        started.append(gw)
        return gw

    yield start
    for gw in started:
        gw.stop()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for one test, dropped afterwards."""
    import psycopg

    try:
        admin = psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        service_missing("PostgreSQL at " + PG_ADMIN_URL, str(exc).splitlines()[0])
    name = "tg_" + uuid.uuid4().hex[:12]
    admin.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


@pytest.fixture
def redis_url() -> str:
    import redis

    try:
        client = redis.Redis.from_url(REDIS_URL, socket_timeout=2)
        client.flushdb()
        client.close()
    except redis.RedisError as exc:
        service_missing("Redis at " + REDIS_URL, str(exc))
    return REDIS_URL
