"""Engine creation and schema migrations for the store (SQLite by default, PostgreSQL by URL).

engine = make_engine("sqlite:///tiergate.db"); migrate(engine)
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url

_PG_MIGRATION_LOCK = 0x7469_6572  # "tier": an advisory lock id so concurrent starts migrate once


def normalise_url(url: str) -> str:
    """`postgresql://` and `postgres://` use psycopg 3 (the driver we install), not psycopg2."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def make_engine(url: str) -> Engine:
    url = normalise_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            # WAL: readers (dashboard, API) never block the ledger writer, and the other way round.
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)


@contextlib.contextmanager
def _migration_lock(engine: Engine) -> Iterator[Any]:
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
            try:
                yield conn
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _PG_MIGRATION_LOCK})
                conn.commit()
        return
    database = engine.url.database
    lock_path = Path(database).expanduser().resolve().with_suffix(".migrate.lock") if database else None
    if lock_path is None or database == ":memory:":
        with engine.connect() as conn:
            yield conn
        return
    fd = _lock_file(lock_path)
    try:
        with engine.connect() as conn:
            yield conn
    finally:
        # removed while still held, so no `tiergate.migrate.lock` is left beside the store (or in git);
        # a process waiting on the removed file sees that and locks a fresh one (`_lock_file`)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock_path)
        os.close(fd)


def _lock_file(path: Path) -> int:
    """An exclusive flock on `path`, created if needed; retried if its holder removed it meanwhile."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)  # the holder removed it after we opened it: lock the new one


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to `revision` with Alembic; safe when several processes start at once."""
    cfg = Config()
    cfg.set_main_option("script_location", str(resources.files("gateway.store").joinpath("migrations")))
    with _migration_lock(engine) as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
        conn.commit()
