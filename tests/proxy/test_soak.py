"""Soak: a few thousand requests from concurrent clients, faults at random; after a graceful stop the
ledger holds exactly one row per request sent (count and ids), on SQLite and on PostgreSQL.

Bounded (2,400 requests on loopback, stops itself); bench/soak/run.py runs a bigger one.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator

import pytest
from fault_harness import FaultGateway, store_url
from soak_driver import check_ledger, drive, set_chaos
from tg_testing import Upstream

N = 2400
CONCURRENCY = 32


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp(f"soak-{request.param}")
    yield from store_url(request.param, tmp)


def test_soak_one_row_per_request(store, tmp_path, upstreams: dict[str, Upstream]):
    gw = FaultGateway.start(tmp_path, upstreams, store, {"server": {"log_level": "error"}})
    set_chaos(upstreams["frontier"].base, seed=11)
    t0 = time.monotonic()
    try:
        outcomes = asyncio.run(asyncio.wait_for(drive(gw.v1, N, CONCURRENCY, seed=3), timeout=240))
    finally:
        code = gw.stop()
    took = time.monotonic() - t0
    assert code in (0, -signal.SIGTERM)  # a graceful stop: uvicorn re-raises the SIGTERM it handled
    assert len(outcomes) == N
    mix = check_ledger(outcomes, gw.all_rows())
    assert gw.dead_letters() == []
    # every kind of fault happened (the mix is seeded): errors before the first byte, in the body, mid-stream
    assert {"stream ok", "stream left by the client"} <= set(mix)
    for kind in (
        "upstream_timeout",
        "upstream_truncated",
        "overloaded",
        "upstream_unavailable",
        "invalid_request",
    ):
        assert any(kind in k for k in mix), (kind, mix)
    print(f"\nsoak on {store.split(':')[0]}: {N} requests in {took:.1f}s, ledger rows {N}:", dict(mix))
