"""Per-key request rate limits (fixed one-minute windows) and monthly spend, shared through Redis.

Without Redis, or while it is away, each process counts on its own: limits then hold per process,
which is the documented degraded mode.

    await check_limits(limiter, spend, metrics, key, spend_seed)   # RateLimited / BudgetExceeded, or None
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable

from gateway.errors import BudgetExceeded, RateLimited
from gateway.metrics import Metrics
from gateway.proxy.keys import KeyInfo
from gateway.store.money import usd
from gateway.store.redis_link import RedisLink


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


async def check_limits(
    limiter: RateLimiter,
    spend: SpendTracker,
    metrics: Metrics,
    key: KeyInfo | None,
    spend_seed: Callable[[str], float],
) -> None:
    """Refuse a keyed request over its rate limit or monthly budget; `spend_seed(key_id)` reads the ledger."""
    if key is None:
        return
    if key.rate_limit_rpm:
        allowed, reset = await limiter.hit(key.id, key.rate_limit_rpm)
        if not allowed:
            metrics.rejected.labels("rate_limit").inc()
            raise RateLimited(
                f"Rate limit of {key.rate_limit_rpm} requests per minute reached for this key; retry in {reset}s.",
                headers={"Retry-After": str(reset)},
            )
    if key.monthly_budget_usd:
        spent = await spend.spent(key.id, spend_seed(key.id))
        if spent >= key.monthly_budget_usd:
            metrics.rejected.labels("budget").inc()
            raise BudgetExceeded(
                f"This key's monthly budget of {usd(key.monthly_budget_usd)} is spent ({usd(spent)}); "
                "raise the budget or wait for next month."
            )
