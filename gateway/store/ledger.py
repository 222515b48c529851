"""The ledger: one record per accepted request, written in batches off the request path.

    writer = LedgerWriter(engine, batch_size=500, flush_interval=0.2)
    await writer.start(); writer.submit(record); ...; await writer.stop()   # stop() drains everything

Why a queue and a thread: a request must not wait on the database. Records go on an in-memory queue;
one task takes batches and hands each to a worker thread for an `executemany`. `stop()` drains the
queue, so after N accepted requests and a graceful stop exactly N records exist.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from dataclasses import dataclass

from sqlalchemy import Engine, insert, select

from gateway.store.schema import requests, workflows

log = logging.getLogger("tiergate.ledger")


@dataclass(slots=True)
class Record:
    id: str
    ts: float
    workflow: str
    conversation: str
    turn: int
    key_id: str | None
    requested_model: str
    served_model: str | None
    tier: str
    stream: bool
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    tokens_estimated: bool = False
    cost_usd: float = 0.0
    baseline_cost_usd: float = 0.0
    ttfb_ms: float | None = None
    latency_ms: float = 0.0
    status: int = 200
    error_type: str | None = None
    attempts: int = 1
    prompt_fingerprint: str | None = None
    config_hash: str | None = None
    route_reason: str | None = None
    prompt_tokens_before_trim: int | None = None
    tools_called: str | None = None
    tools_dropped: int | None = None
    trim_saved_usd: float | None = None
    stage: str | None = None
    workflow_source: str = dataclasses.field(default="fingerprint", repr=False)

    def row(self) -> dict[str, object]:
        row = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        row.pop("workflow_source")
        return row


class LedgerWriter:
    def __init__(
        self, engine: Engine, *, batch_size: int = 500, flush_interval: float = 0.2, queue_max: int = 100_000
    ):
        self._engine = engine
        self._batch_size = batch_size
        self._interval = flush_interval
        self._queue: asyncio.Queue[Record] = asyncio.Queue(maxsize=queue_max)
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._known_workflows: set[str] = set()
        # compiled once: SQLAlchemy's per-call statement compilation was ~10% of the gateway's CPU
        self._insert_sql = str(insert(requests).compile(dialect=engine.dialect))
        self._columns = [c.name for c in requests.columns]
        self._positional = engine.dialect.paramstyle in ("qmark", "format", "numeric")
        self.written = 0
        self.failed_batches = 0

    async def start(self) -> None:
        self._known_workflows = await asyncio.to_thread(self._load_workflows)
        self._stopping = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name="ledger-writer")

    def submit(self, record: Record) -> None:
        try:
            self._queue.put_nowait(record)
        except asyncio.QueueFull:
            # Never block a request on the ledger; a full queue means the store is down or far behind.
            log.error("ledger queue full (%d records); dropping record %s", self._queue.qsize(), record.id)

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    async def stop(self) -> None:
        """Write everything queued, then end the writer. Never cancelled mid-batch: no loss, no duplicate."""
        if self._task is not None:
            self._stopping.set()
            await self._task
            self._task = None
        while not self._queue.empty():
            await self._write(self._take_batch())

    def _take_batch(self) -> list[Record]:
        batch: list[Record] = []
        while len(batch) < self._batch_size and not self._queue.empty():
            batch.append(self._queue.get_nowait())
        return batch

    async def _run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._stopping.wait(), timeout=self._interval)
            except TimeoutError:
                pass
            while not self._queue.empty():
                await self._write(self._take_batch())
            if self._stopping.is_set():
                return

    async def _write(self, batch: list[Record]) -> None:
        if not batch:
            return
        for attempt in range(5):
            try:
                await asyncio.to_thread(self._write_sync, batch)
                self.written += len(batch)
                return
            except Exception as exc:  # a store hiccup must not lose the batch: retry, then report
                log.warning(
                    "ledger write of %d records failed (attempt %d): %s", len(batch), attempt + 1, exc
                )
                await asyncio.sleep(0.2 * 2**attempt)
        self.failed_batches += 1
        log.error("ledger dropped a batch of %d records after retries", len(batch))

    def _load_workflows(self) -> set[str]:
        with self._engine.connect() as conn:
            return {r[0] for r in conn.execute(select(workflows.c.id))}

    def _write_sync(self, batch: list[Record]) -> None:
        new_wf: dict[str, dict[str, object]] = {}
        for r in batch:
            if r.workflow not in self._known_workflows and r.workflow not in new_wf:
                new_wf[r.workflow] = {
                    "id": r.workflow,
                    "source": r.workflow_source,
                    "fingerprint": r.prompt_fingerprint,
                    "first_seen": r.ts,
                }
        with self._engine.begin() as conn:
            rows = [r.row() for r in batch]
            if self._positional:
                conn.exec_driver_sql(self._insert_sql, [tuple(row[c] for c in self._columns) for row in rows])
            else:
                conn.exec_driver_sql(self._insert_sql, rows)
            if new_wf:
                existing = {
                    row[0]
                    for row in conn.execute(select(workflows.c.id).where(workflows.c.id.in_(list(new_wf))))
                }
                fresh = [v for k, v in new_wf.items() if k not in existing]
                if fresh:
                    conn.execute(insert(workflows), fresh)
        self._known_workflows.update(new_wf)


def now() -> float:
    return time.time()
