"""The loop tests' fixtures, loaded by `pytest_plugins = ["loop_fixtures"]` in each test module.

A plugin module, not a conftest.py: another conftest.py under tests/ would shadow the root one for the
`from conftest import ...` lines elsewhere (pytest imports every conftest as `conftest`). tests/conftest.py
puts this folder on sys.path, so tests/web/ and tests/demo/ load it too.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from loop_helpers import (
    ADMIN,
    FLOWCHART,
    HERE,
    UPSTREAM_KEY,
    UPSTREAM_KEY_ENV,
    LoopGateway,
    Proc,
    Upstream,
    base_config,
    free_port,
    loop_settings,
)
from sqlalchemy import Engine

from gateway.store.engine import make_engine, migrate


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'loop.db'}")
    migrate(engine)
    yield engine
    engine.dispose()



@pytest.fixture
def start_loop_gateway(tmp_path: Path, upstreams: dict[str, Upstream]) -> Iterator[Any]:
    started: list[LoopGateway] = []

    def start(loop: dict[str, Any] | None = None, *, admin: str | None = ADMIN, env: dict[str, str] | None = None,
              db_url: str | None = None, name: str = "loopgw", extra: dict[str, Any] | None = None) -> LoopGateway:
        db_url = db_url or f"sqlite:///{tmp_path / 'tiergate.db'}"
        cfg = base_config(upstreams, db_url)
        cfg["workflows"] = [{"name": "travel-booking", "frontier": "gpt-4o", "cheap": "gpt-4o-mini",
                             "flowchart": str(FLOWCHART)}]
        cfg["loop"] = loop_settings(tmp_path, **(loop or {}))
        cfg["ledger"] = {"flush_interval_ms": 20}
        cfg.update(extra or {})
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        port = free_port()
        proc_env = {UPSTREAM_KEY_ENV: UPSTREAM_KEY, "TIERGATE_ADMIN_KEY": admin or "", **(env or {})}
        proc = Proc([sys.executable, str(HERE / "loop_gateway.py"), "--config", str(path), "--port", str(port)],
                    tmp_path / f"{name}.log", env=proc_env)
        proc.start().wait_http(f"http://127.0.0.1:{port}/healthz")
        gw = LoopGateway(f"http://127.0.0.1:{port}", proc, db_url, path)
        started.append(gw)
        return gw

    yield start
    for gw in started:
        if gw.proc.popen is not None and gw.proc.popen.poll() is None:
            gw.stop()
