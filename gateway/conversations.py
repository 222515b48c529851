"""The conversation-stitching index: continuation key -> (conversation id, turn).

Kept in Redis when configured, so a follow-up that lands on another gateway process still joins its
conversation; always mirrored in a bounded in-process LRU, which serves alone while Redis is away.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from gateway.redis_link import RedisLink

_PREFIX = "tg:conv:"


class ConversationIndex:
    def __init__(self, link: RedisLink, *, capacity: int = 200_000, ttl_seconds: int = 86_400):
        self._link = link
        self._lru: OrderedDict[str, tuple[str, int]] = OrderedDict()
        self._capacity = capacity
        self._ttl = ttl_seconds

    async def lookup(self, candidates: Sequence[str]) -> tuple[str, int] | None:
        """The conversation and last turn of the longest earlier exchange this request continues."""
        if not candidates:
            return None
        if self._link.available:
            values = await self._link.call(lambda r: r.mget([_PREFIX + c for c in candidates]))
            if values is not None:
                for v in values:
                    if v:
                        conv, _, turn = (v.decode() if isinstance(v, bytes) else v).rpartition("|")
                        return conv, int(turn)
                return None
        for c in candidates:
            hit = self._lru.get(c)
            if hit is not None:
                self._lru.move_to_end(c)
                return hit
        return None

    async def remember(self, key: str, conversation: str, turn: int) -> None:
        self._lru[key] = (conversation, turn)
        self._lru.move_to_end(key)
        while len(self._lru) > self._capacity:
            self._lru.popitem(last=False)
        if self._link.available:
            await self._link.call(lambda r: r.set(_PREFIX + key, f"{conversation}|{turn}", ex=self._ttl))
