"""The app state every request handler may reach: built once in the lifespan of `create_app`.

Apart from the factory so that `deps` and the routers can name it without importing the factory
(which imports them).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine

from gateway.metrics import Metrics
from gateway.proxy.keys import KeyCache
from gateway.proxy.pricing import PriceBook
from gateway.proxy.service import ChatService
from gateway.settings import Settings
from gateway.store.ledger import LedgerWriter
from gateway.store.redis_link import RedisLink
from gateway.store.transcripts import TranscriptWriter


@dataclass
class AppState:
    """Everything a request handler may need, built once in the lifespan."""

    settings: Settings
    engine: Engine
    ledger: LedgerWriter
    chat: ChatService
    keys: KeyCache
    redis: RedisLink
    metrics: Metrics
    prices: PriceBook
    transcripts: TranscriptWriter | None = None  # capture's writer (its health is in /healthz)
