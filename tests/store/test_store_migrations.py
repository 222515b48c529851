"""The Alembic migrations build exactly the schema the code declares, in SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

import gateway.store.loop_schema  # noqa: F401  (its tables join gateway.store.schema.metadata)
from gateway.store.engine import make_engine, migrate
from gateway.store.schema import metadata


def _script_heads() -> tuple[str, ...]:
    from importlib import resources

    from alembic.config import Config
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(resources.files("gateway.store").joinpath("migrations")))
    return tuple(ScriptDirectory.from_config(cfg).get_heads())


def _diff(url: str) -> list[object]:
    engine = make_engine(url)
    try:
        migrate(engine)
        migrate(engine)  # a second start finds the store at head and changes nothing
        with engine.connect() as conn:
            heads = MigrationContext.configure(conn).get_current_heads()
            diff = compare_metadata(MigrationContext.configure(conn), metadata)
            tables = set(inspect(conn).get_table_names())
    finally:
        engine.dispose()
    assert len(heads) == 1 and heads == _script_heads(), f"one head after migrating, got {heads}"
    assert set(metadata.tables) <= tables
    return diff


def test_migrations_match_declared_schema_sqlite(tmp_path: Path) -> None:
    assert _diff(f"sqlite:///{tmp_path / 'store.db'}") == []


@pytest.mark.postgres
def test_migrations_match_declared_schema_postgres(pg_url: str) -> None:
    assert _diff(pg_url) == []
