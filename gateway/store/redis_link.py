"""A Redis connection that may go away: calls fail fast, the gateway serves on, degraded and logged.

    link = RedisLink("redis://127.0.0.1:6379/0")
    value = await link.call(lambda r: r.get("k"))   # None (and degraded) when Redis is unreachable

After a failure the link stops trying for `retry_after` seconds (so a dead Redis costs requests
nothing), then probes again; the first success logs the recovery.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import RedisError

log = logging.getLogger("tiergate.redis")
T = TypeVar("T")


class RedisLink:
    def __init__(self, url: str | None, *, timeout: float = 0.25, retry_after: float = 1.0):
        self.url = url
        self._retry_after = retry_after
        self._down_until = 0.0
        self.degraded = False
        self._client: aioredis.Redis | None = None
        if url:
            self._client = aioredis.from_url(
                url, socket_timeout=timeout, socket_connect_timeout=timeout, health_check_interval=5
            )

    @property
    def enabled(self) -> bool:
        return self._client is not None

    @property
    def available(self) -> bool:
        return self._client is not None and time.monotonic() >= self._down_until

    async def call(self, fn: Callable[[aioredis.Redis], Awaitable[T]]) -> T | None:
        if self._client is None or time.monotonic() < self._down_until:
            return None
        try:
            result = await fn(self._client)
        except (RedisError, OSError) as exc:
            self._down_until = time.monotonic() + self._retry_after
            if not self.degraded:
                log.warning(
                    "redis unreachable (%s); serving degraded with per-process state", type(exc).__name__
                )
            self.degraded = True
            return None
        if self.degraded:
            log.warning("redis is back; shared rate limits and stitching restored")
            self.degraded = False
        return result

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()

    def status(self) -> dict[str, Any]:
        if self._client is None:
            return {"configured": False}
        return {"configured": True, "degraded": self.degraded}
