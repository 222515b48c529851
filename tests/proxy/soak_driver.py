"""The soak: concurrent SDK clients, good requests mixed with every upstream fault, and the ledger count.

    outcomes = asyncio.run(drive(gw.v1, n=2400, concurrency=32, seed=7))   # {request id: outcome}
    check_ledger(outcomes, rows)                                           # one row per id, truthful

Used by tests/proxy/test_soak.py (modest) and bench/soak/run.py (bigger). The upstream's faults come
from its chaos mode (tests/fake_upstream.py `/_chaos`); the clients add their own: requests to an
unreachable model, bad input, and leaving a stream after its first chunk.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from dataclasses import dataclass
from typing import Any

import httpx
import openai

# what the upstream does to a request, drawn per request; plain answers dominate, as in production
CHAOS: list[dict[str, Any]] = [
    *[{}] * 12,
    {"chunks": 5, "chunk_delay": 0.01},
    {"status": 500},
    {"status": 503},
    {"status": 429, "retry_after": 0},
    {"delay": 2},  # past the model's 1.5 s timeout
    {"raw": "<html>bad gateway</html>"},
    {"raw": "[1, 2, 3]"},
    {"truncate": 30},
    {"no_done": True},
    {"content": "a b c d", "chunks": 4, "error_after": 1},
    {"content": "a b c d", "chunks": 4, "disconnect_after": 1},
    {"content": "a b c d", "chunks": 4, "silent_after": 1},  # until the timeout, or the client leaves
]


@dataclass
class Outcome:
    stream: bool
    status: int  # what the client saw: the HTTP status (200 for a stream that started)
    event_error: bool = False  # a stream that ended in an error event
    left: bool = False  # the client left the stream early


def set_chaos(upstream_base: str, seed: int) -> None:
    httpx.post(f"{upstream_base}/_chaos", json={"steps": CHAOS, "seed": seed}).raise_for_status()


async def _one(ac: openai.AsyncOpenAI, rng: random.Random, i: int) -> tuple[str, Outcome]:
    stream = rng.random() < 0.5
    roll = rng.random()
    model = "gone" if roll < 0.03 else "solo"
    content: Any = f"soak request {i}"
    if 0.03 <= roll < 0.06:
        content = [{"type": "text", "text": i}]  # bad input: refused with a 400, recorded
    leave = stream and rng.random() < 0.1
    kw: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": content}],
        "extra_headers": {"X-Tiergate-Workflow": f"soak-{i % 7}"},
    }
    try:
        raw = await ac.chat.completions.with_raw_response.create(stream=stream, **kw)
    except openai.APIStatusError as exc:
        return exc.response.headers["x-request-id"], Outcome(stream, exc.response.status_code)
    rid = raw.headers["x-request-id"]
    if not stream:
        raw.parse()
        return rid, Outcome(False, 200)
    out = Outcome(True, 200)
    chunks = raw.parse()
    try:
        async for _ in chunks:
            if leave:
                out.left = True
                break
    except openai.APIError:
        out.event_error = True
    finally:
        await chunks.close()
    return rid, out


async def drive(v1: str, n: int, concurrency: int, seed: int) -> dict[str, Outcome]:
    """Send `n` requests from `concurrency` clients; every request's id and what its client saw."""
    rng = random.Random(seed)
    plan = [random.Random(rng.random()) for _ in range(n)]
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(n):
        queue.put_nowait(i)
    outcomes: dict[str, Outcome] = {}
    # keep-alive shorter than the server's 5 s: else a request can race the server closing an idle
    # connection and fail before it was sent (a client-side race, not the gateway's)
    limits = httpx.Limits(max_connections=concurrency, keepalive_expiry=2.0)
    http = httpx.AsyncClient(limits=limits, timeout=30)
    ac = openai.AsyncOpenAI(base_url=v1, api_key="x", max_retries=0, http_client=http)

    async def worker() -> None:
        while not queue.empty():
            i = queue.get_nowait()
            rid, out = await _one(ac, plan[i], i)
            assert rid not in outcomes, f"request id {rid} answered twice"
            outcomes[rid] = out

    try:
        await asyncio.gather(*[worker() for _ in range(concurrency)])
    finally:
        await ac.close()
    return outcomes


def check_ledger(outcomes: dict[str, Outcome], rows: list[dict[str, Any]]) -> Counter[str]:
    """Exactly one row per request sent, and each row says what its client saw; returns the mix."""
    client_rows = [r for r in rows if r["tier"] != "shadow"]
    ids = Counter(r["id"] for r in client_rows)
    assert len(client_rows) == len(outcomes), (len(client_rows), len(outcomes))
    assert set(ids) == set(outcomes) and max(ids.values()) == 1
    mix: Counter[str] = Counter()
    for r in client_rows:
        out = outcomes[r["id"]]
        if out.stream and out.status == 200:
            if out.left:
                assert r["error_type"] in ("client_disconnected", None) or r["status"] >= 400, r
                mix["stream left by the client"] += 1
            elif out.event_error:
                assert r["status"] >= 400 and r["error_type"], r
                mix[f"stream error event: {r['error_type']}"] += 1
            else:
                assert (r["status"], r["error_type"]) == (200, None), r
                mix["stream ok"] += 1
        else:
            assert r["status"] == out.status, (r, out)
            assert (r["error_type"] is None) == (out.status == 200), r
            kind = "stream" if out.stream else "call"
            mix[f"{kind} {out.status}" + (f" {r['error_type']}" if r["error_type"] else "")] += 1
    return mix
