"""Test helpers shared by the test folders: processes on loopback ports, the fake upstreams, gateways.

A module of its own, not conftest.py: every folder's conftest.py is imported as `conftest`, so
`from conftest import ...` would pick whichever was imported last.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
REQUIRE_SERVICES = os.environ.get("TIERGATE_REQUIRE_SERVICES") == "1"
PG_ADMIN_URL = os.environ.get("TIERGATE_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("TIERGATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/9")
UPSTREAM_KEY_ENV = "TG_TEST_UPSTREAM_KEY"
UPSTREAM_KEY = "sk-upstream-SECRET-0123456789abcdef"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def service_missing(what: str, why: str) -> None:
    message = f"{what} not reachable ({why}); start it to run this test"
    if REQUIRE_SERVICES:
        pytest.fail(f"{message} [TIERGATE_REQUIRE_SERVICES=1]")
    pytest.skip(message)


@dataclass
class Proc:
    cmd: list[str]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        env = {**os.environ, **self.env}
        self._log = open(self.log_path, "ab")
        self.popen = subprocess.Popen(self.cmd, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        return self

    def wait_http(self, url: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.popen is not None
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.cmd} exited with {self.popen.returncode}:\n{self.text()}")
            try:
                if httpx.get(url, timeout=1.0).status_code < 500:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.cmd} not ready at {url} within {timeout}s:\n{self.text()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        assert self.popen is not None
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._log.close()
        return self.popen.returncode

    def text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@dataclass
class Upstream:
    name: str
    port: int
    proc: Proc

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_base(self) -> str:
        return f"{self.base}/v1"

    def script(self, *steps: dict[str, Any]) -> None:
        httpx.post(f"{self.base}/_script", json={"steps": list(steps)}).raise_for_status()

    def log(self) -> list[dict[str, Any]]:
        return httpx.get(f"{self.base}/_log").json()  # type: ignore[no-any-return]

    def stats(self) -> dict[str, int]:
        return httpx.get(f"{self.base}/_stats").json()  # type: ignore[no-any-return]

    def reset(self) -> None:
        httpx.post(f"{self.base}/_reset").raise_for_status()


def base_config(ups: dict[str, Upstream], db_url: str) -> dict[str, Any]:
    f, c = ups["frontier"].api_base, ups["cheap"].api_base
    return {
        "storage": {"url": db_url},
        "ledger": {"flush_interval_ms": 20},
        "auth": {"key_cache_seconds": 0.5},
        "models": [
            {
                "name": "gpt-4o",
                "upstream": "openai/gpt-4o",
                "api_base": f,
                "api_key_env": UPSTREAM_KEY_ENV,
                "timeout": 3,
                "max_retries": 2,
                "fallbacks": ["backup"],
            },
            {
                "name": "gpt-4o-mini",
                "upstream": "openai/gpt-4o-mini",
                "api_base": c,
                "api_key_env": UPSTREAM_KEY_ENV,
                "max_retries": 0,
            },
            {"name": "backup", "upstream": "openai/gpt-4o-mini", "api_base": c, "max_retries": 0},
            {
                "name": "house",
                "upstream": "openai/house-model",
                "api_base": c,
                "price": {"input_per_million": 1.0, "output_per_million": 2.0},
            },
        ],
    }


@dataclass
class Gateway:
    url: str
    proc: Proc
    db_url: str
    config_path: Path

    @property
    def v1(self) -> str:
        return f"{self.url}/v1"

    def stop(self) -> int:
        return self.proc.stop()

    def records(self) -> list[dict[str, Any]]:
        """Ledger rows, read straight from the store (stop the gateway first to see every record)."""
        from sqlalchemy import select

        from gateway.store.engine import make_engine
        from gateway.store.schema import requests

        engine = make_engine(self.db_url)
        try:
            with engine.connect() as conn:
                return [dict(r) for r in conn.execute(select(requests).order_by(requests.c.ts)).mappings()]
        finally:
            engine.dispose()

    def wait_records(self, n: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            rows = self.records()
            if len(rows) >= n or time.monotonic() > deadline:
                return rows
            time.sleep(0.05)
