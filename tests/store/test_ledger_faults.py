"""The ledger writer when the store refuses rows or goes away: nothing good is dropped, nothing silently.

Real stores (a SQLite file, a PostgreSQL database), the real writer; the faults are the stores' own:
a duplicate primary key, a row a constraint refuses, a database locked by another connection.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select

from gateway.store.engine import make_engine, migrate
from gateway.store.ledger import LedgerWriter, Record
from gateway.store.schema import ledger_dead_letters, requests


def record(i: int, workflow: str = "wf", rid: str | None = None) -> Record:
    return Record(
        id=rid or f"r{i:031d}",
        ts=time.time(),
        workflow=workflow,
        conversation=f"c{i}",
        turn=1,
        key_id=None,
        requested_model="gpt-4o",
        served_model="gpt-4o",
        tier="frontier",
        stream=False,
    )


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.db'}"
    return str(request.getfixturevalue("pg_url"))


def rows(engine, table=requests) -> list[dict]:
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(table)).mappings()]


def test_a_refused_row_is_isolated_and_kept_with_its_reason(db_url):
    engine = make_engine(db_url)
    migrate(engine)
    with engine.begin() as conn:  # a constraint of the store's own, refusing one workflow
        if engine.dialect.name == "sqlite":
            conn.exec_driver_sql(
                "CREATE TRIGGER refuse BEFORE INSERT ON requests WHEN NEW.workflow = 'refused' "
                "BEGIN SELECT RAISE(ABORT, 'refused by trigger'); END"
            )
        else:
            conn.exec_driver_sql("ALTER TABLE requests ADD CONSTRAINT refuse CHECK (workflow <> 'refused')")
    problems: list[tuple[str, int]] = []

    async def run() -> LedgerWriter:
        writer = LedgerWriter(
            engine, batch_size=500, flush_interval=0.05, on_problem=lambda k, n: problems.append((k, n))
        )
        await writer.start()
        for i in range(200):
            writer.submit(record(i, workflow="refused" if i == 77 else "wf"))
        writer.submit(record(300, rid=record(5).id))  # a duplicate id, as the double-record bug made
        t0 = time.monotonic()
        await writer.stop()
        assert time.monotonic() - t0 < 2.0  # isolated at once, not after seconds of retries
        return writer

    writer = asyncio.run(run())
    written = rows(engine)
    assert len(written) == 199 and "r" + "0" * 29 + "77" not in {r["id"] for r in written}
    letters = sorted(rows(engine, ledger_dead_letters), key=lambda d: d["record_id"])
    assert [d["record_id"] for d in letters] == [record(5).id, record(77).id]
    assert json.loads(letters[1]["record"])["workflow"] == "refused"
    assert "refuse" in letters[1]["reason"].lower() and letters[0]["reason"]
    assert (writer.written, writer.dead_lettered, writer.lost) == (199, 2, 0)
    assert writer.degraded and writer.health()["status"] == "degraded"
    assert sum(n for k, n in problems if k == "dead_lettered") == 2
    engine.dispose()


def test_a_locked_store_is_waited_out_without_loss(tmp_path):
    path = tmp_path / "ledger.db"
    migrate(make_engine(f"sqlite:///{path}"))
    # a short busy timeout, so a lock is an error the writer sees rather than a 30 s wait
    engine = create_engine(f"sqlite:///{path}", connect_args={"timeout": 0.05, "check_same_thread": False})
    locker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    locker.execute("BEGIN EXCLUSIVE")
    seen: dict[str, bool] = {}

    async def run() -> LedgerWriter:
        writer = LedgerWriter(engine, flush_interval=0.02)
        await writer.start()
        for i in range(50):
            writer.submit(record(i))
        await asyncio.sleep(0.5)
        seen["down"], seen["degraded"] = writer.store_down, writer.degraded
        threading.Timer(0.0, lambda: locker.execute("COMMIT")).start()
        await writer.stop()
        return writer

    writer = asyncio.run(run())
    locker.close()
    assert seen == {"down": True, "degraded": True}
    assert len(rows(engine)) == 50 and writer.written == 50 and writer.lost == writer.dead_lettered == 0
    assert not writer.store_down
    engine.dispose()


def test_a_full_queue_loses_visibly_into_the_dead_letter_file(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'ledger.db'}")
    migrate(engine)
    spill = tmp_path / "dead.jsonl"

    async def run() -> LedgerWriter:
        writer = LedgerWriter(engine, queue_max=100, dead_letter_file=str(spill))
        for i in range(103):  # not started: nothing drains the queue
            writer.submit(record(i))
        await writer.start()
        await writer.stop()
        return writer

    writer = asyncio.run(run())
    lines = [json.loads(line) for line in spill.read_text().splitlines()]
    assert [entry["record"]["id"] for entry in lines] == [record(i).id for i in (100, 101, 102)]
    assert "queue full" in lines[0]["reason"]
    assert (writer.written, writer.lost) == (100, 3) and len(rows(engine)) == 100
    engine.dispose()
