"""Virtual keys for clients: shown once at creation, stored only as a SHA-256 hash.

    created = create_key(engine, KeyCreate(name="support-bot", workflow="support"))
    created.key   # "tg-..." (the only time it is ever visible)

SHA-256 rather than a slow password hash: the keys are 256-bit random tokens, so there is nothing to
brute-force, and a lookup must cost microseconds on the request path.
"""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Engine, insert, select, update

from gateway.store.schema import api_keys

KEY_PREFIX = "tg-"


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    workflow: str | None = Field(default=None, description="bind every request with this key to a workflow")
    rate_limit_rpm: int | None = Field(default=None, ge=1, description="requests per minute")
    monthly_budget_usd: float | None = Field(default=None, gt=0)


class KeyPublic(BaseModel):
    id: str
    name: str
    prefix: str
    workflow: str | None
    rate_limit_rpm: int | None
    monthly_budget_usd: float | None
    created: float
    revoked: float | None


class KeyCreated(KeyPublic):
    key: str = Field(description="the secret; shown only in this response")


@dataclass(frozen=True)
class KeyInfo:
    id: str
    workflow: str | None
    rate_limit_rpm: int | None
    monthly_budget_usd: float | None


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(engine: Engine, spec: KeyCreate) -> KeyCreated:
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    row: dict[str, Any] = {
        "id": uuid.uuid4().hex,
        "name": spec.name,
        "key_hash": hash_key(key),
        "prefix": key[:10],
        "workflow": spec.workflow,
        "rate_limit_rpm": spec.rate_limit_rpm,
        "monthly_budget_usd": spec.monthly_budget_usd,
        "created": time.time(),
        "revoked": None,
    }
    with engine.begin() as conn:
        conn.execute(insert(api_keys), [row])
    public = {k: v for k, v in row.items() if k != "key_hash"}
    return KeyCreated(**public, key=key)


def list_keys(engine: Engine) -> list[KeyPublic]:
    cols = [c for c in api_keys.c if c.name not in ("key_hash", "note")]
    with engine.connect() as conn:
        rows = conn.execute(select(*cols).order_by(api_keys.c.created)).mappings().all()
    return [KeyPublic(**r) for r in rows]


def revoke_key(engine: Engine, key_id: str) -> bool:
    with engine.begin() as conn:
        res = conn.execute(
            update(api_keys)
            .where(api_keys.c.id == key_id, api_keys.c.revoked.is_(None))
            .values(revoked=time.time())
        )
    return res.rowcount > 0


def find_key(engine: Engine, key: str) -> KeyInfo | None:
    with engine.connect() as conn:
        row = conn.execute(
            select(
                api_keys.c.id, api_keys.c.workflow, api_keys.c.rate_limit_rpm, api_keys.c.monthly_budget_usd
            ).where(api_keys.c.key_hash == hash_key(key), api_keys.c.revoked.is_(None))
        ).first()
    return KeyInfo(*row) if row else None


class KeyCache:
    """Resolved keys for a few seconds, so the request path rarely touches the store."""

    def __init__(self, engine: Engine, ttl: float):
        self._engine = engine
        self._ttl = ttl
        self._cache: dict[str, tuple[float, KeyInfo | None]] = {}

    def get(self, key: str) -> tuple[bool, KeyInfo | None]:
        hit = self._cache.get(hash_key(key))
        if hit is not None and hit[0] > time.monotonic():
            return True, hit[1]
        return False, None

    def load(self, key: str) -> KeyInfo | None:
        info = find_key(self._engine, key)
        if len(self._cache) > 50_000:
            self._cache.clear()
        self._cache[hash_key(key)] = (time.monotonic() + self._ttl, info)
        return info

    def forget_all(self) -> None:
        self._cache.clear()
