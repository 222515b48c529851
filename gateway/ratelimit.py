"""Per-key request rate limits (fixed one-minute windows) and monthly spend, shared through Redis.

Without Redis, or while it is away, each process counts on its own: limits then hold per process,
which is the documented degraded mode.
"""

from __future__ import annotations

import time
from collections import defaultdict

from gateway.redis_link import RedisLink


class RateLimiter:
    def __init__(self, link: RedisLink):
        self._link = link
        self._local: dict[tuple[str, int], int] = defaultdict(int)

    async def hit(self, key_id: str, limit_rpm: int) -> tuple[bool, int]:
        """Count one request; (allowed, seconds until the window resets)."""
        window = int(time.time() // 60)
        reset = 60 - int(time.time() % 60)
        count: int | None = None
        if self._link.available:
            rkey = f"tg:rl:{key_id}:{window}"

            async def incr(r):  # type: ignore[no-untyped-def]
                async with r.pipeline(transaction=True) as p:
                    p.incr(rkey)
                    p.expire(rkey, 120)
                    res = await p.execute()
                return int(res[0])

            count = await self._link.call(incr)
        if count is None:
            self._local[(key_id, window)] += 1
            count = self._local[(key_id, window)]
            if len(self._local) > 10_000:
                for k in [k for k in self._local if k[1] < window]:
                    del self._local[k]
        return count <= limit_rpm, reset


class SpendTracker:
    """Month-to-date spend per key; seeded from the ledger once per process, shared through Redis."""

    def __init__(self, link: RedisLink):
        self._link = link
        self._local: dict[tuple[str, str], float] = {}

    @staticmethod
    def month() -> str:
        return time.strftime("%Y%m", time.gmtime())

    async def spent(self, key_id: str, seed: float) -> float:
        month = self.month()
        if self._link.available:
            val = await self._link.call(lambda r: r.get(f"tg:spend:{key_id}:{month}"))
            if val is not None:
                return float(val)
            # first sight of this key this month in Redis: seed it from the ledger
            await self._link.call(lambda r: r.set(f"tg:spend:{key_id}:{month}", seed, nx=True, ex=40 * 86400))
        return self._local.setdefault((key_id, month), seed)

    async def add(self, key_id: str, usd: float) -> None:
        if usd <= 0:
            return
        month = self.month()
        self._local[(key_id, month)] = self._local.get((key_id, month), 0.0) + usd
        if self._link.available:
            await self._link.call(lambda r: r.incrbyfloat(f"tg:spend:{key_id}:{month}", usd))
