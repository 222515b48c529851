"""A persistent cache of teacher replies keyed by the exact request, so no request is paid for twice.

    cache = TeacherCache(out / "cache" / "teacher.sqlite")
    key = request_key("openai/gpt-4o-mini", messages, {"temperature": 0.7})
    cache.get(key) or cache.put(key, "openai/gpt-4o-mini", reply, usage, usd)

SQLite rather than JSONL because every reply is committed on its own (WAL journal): a compile killed
mid-run loses at most the calls in flight, never a torn line, and a rerun or a resumed job reads back
everything paid for. The key is a sha256 of the canonical JSON of model, messages, tools and sampling
parameters; where the request goes (``api_base``) and the credentials are not part of what is asked.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS replies (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    reply TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    usd REAL,
    created REAL NOT NULL
)
"""


def request_key(
    model: str,
    messages: Sequence[Mapping[str, Any]],
    params: Mapping[str, Any] | None = None,
    tools: Sequence[Mapping[str, Any]] | None = None,
) -> str:
    """sha256 of the request as the provider sees it; the same request always gives the same key."""
    canon = json.dumps(
        {"model": model, "messages": list(messages), "tools": list(tools or []), "params": dict(params or {})},
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(canon.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class CachedReply:
    reply: str
    prompt_tokens: int
    completion_tokens: int
    usd: float | None


class TeacherCache:
    """One SQLite file shared by the teacher's worker threads (one connection behind a lock)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise ValueError(
                f"teacher cache `{self.path}` cannot be opened ({exc}); move it away to start a fresh cache"
            ) from None

    def get(self, key: str) -> CachedReply | None:
        with self._lock:
            row = self._db.execute(
                "SELECT reply, prompt_tokens, completion_tokens, usd FROM replies WHERE key = ?", (key,)
            ).fetchone()
        return CachedReply(row[0], int(row[1]), int(row[2]), row[3]) if row else None

    def put(
        self, key: str, model: str, reply: str, prompt_tokens: int, completion_tokens: int, usd: float | None
    ) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO replies VALUES (?, ?, ?, ?, ?, ?, ?)",
                (key, model, reply, prompt_tokens, completion_tokens, usd, time.time()),
            )

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM replies").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
