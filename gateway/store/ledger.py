"""The ledger: one record per request, written in batches off the request path.

    writer = LedgerWriter(engine, batch_size=500, flush_interval=0.2)
    await writer.start(); writer.submit(record); ...; await writer.stop()   # stop() drains everything

Why a queue and a thread: a request must not wait on the database. Records go on an in-memory queue;
one task takes batches and hands each to a worker thread for an `executemany`. `stop()` drains the
queue, so after N requests and a graceful stop exactly N records exist.

What can go wrong, and what happens (docs/ledger.md):
- a row the store refuses (a constraint, a value it cannot hold): the batch is split in halves until
  the row is alone, so every other row is written at once; the refused one goes to the
  `ledger_dead_letters` table with the store's reason;
- the store unreachable (connection refused, database locked): the remaining rows are retried with
  backoff until it is back, while the queue holds them (up to `queue_max`; beyond it a record is lost);
- either way `dead_lettered` / `lost` count it (Prometheus), and `degraded` is true while it happens
  and for `degraded_seconds` after (`/healthz`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Engine, exc, insert, select

from gateway.store.batching import BatchWriter
from gateway.store.schema import ledger_dead_letters, requests, workflows

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
    # set by the first `Accounts.finish`: a record is submitted once, whatever path ends the request
    finished: bool = dataclasses.field(default=False, repr=False)

    def row(self) -> dict[str, object]:
        row = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        row.pop("workflow_source")
        row.pop("finished")
        return row


STORE_DOWN = (exc.OperationalError, exc.InterfaceError, exc.TimeoutError)
STOP_ATTEMPTS = 6  # at shutdown a store that stays down gets ~10 s of tries, then the file fallback


def _store_down(error: BaseException) -> bool:
    """True when the store itself is unavailable (retry later), not when it refused one row."""
    if isinstance(error, STORE_DOWN):
        return True
    return isinstance(error, exc.DBAPIError) and bool(error.connection_invalidated)


def _reason(error: BaseException) -> str:
    orig = getattr(error, "orig", None) or error
    text = (str(orig).strip().splitlines() or [""])[0]
    return f"{type(orig).__name__}: {text}"[:500]


class LedgerWriter(BatchWriter[Record]):
    task_name = "ledger-writer"

    def __init__(
        self,
        engine: Engine,
        *,
        batch_size: int = 500,
        flush_interval: float = 0.2,
        queue_max: int = 100_000,
        degraded_seconds: float = 60.0,
        dead_letter_file: str | None = None,
        on_problem: Callable[[str, int], None] | None = None,
    ):
        super().__init__(batch_size=batch_size, flush_interval=flush_interval, queue_max=queue_max)
        self._engine = engine
        self._known_workflows: set[str] = set()
        # compiled once: SQLAlchemy's per-call statement compilation was ~10% of the gateway's CPU
        self._insert_sql = str(insert(requests).compile(dialect=engine.dialect))
        self._columns = [c.name for c in requests.columns]
        self._positional = engine.dialect.paramstyle in ("qmark", "format", "numeric")
        self._degraded_seconds = degraded_seconds
        self._dead_letter_file = Path(dead_letter_file) if dead_letter_file else None
        self._on_problem = on_problem  # (kind, n): kind `dead_lettered` or `lost`; feeds the metrics
        self.written = 0
        self.dead_lettered = 0
        self.lost = 0
        self.store_down = False
        self.last_problem: str | None = None
        self._problem_at = float("-inf")

    async def start(self) -> None:
        self._known_workflows = await asyncio.to_thread(self._load_workflows)
        self._start_task()

    def submit(self, record: Record) -> None:
        try:
            self._queue.put_nowait(record)
        except asyncio.QueueFull:
            # Never block a request on the ledger; a full queue means the store is down or far behind.
            self._lose([record], f"ledger queue full ({self._queue.qsize()} records)")

    @property
    def degraded(self) -> bool:
        """While the store is down, and for `degraded_seconds` after a record was dead-lettered or lost."""
        return self.store_down or time.monotonic() - self._problem_at < self._degraded_seconds

    def health(self) -> dict[str, Any]:
        return {
            "status": "degraded" if self.degraded else "ok",
            "pending": self.pending,
            "written": self.written,
            "dead_lettered": self.dead_lettered,
            "lost": self.lost,
            "store_down": self.store_down,
            "last_problem": self.last_problem,
        }

    def _problem(self, kind: str, records: list[Record], reason: str) -> None:
        self._problem_at = time.monotonic()
        self.last_problem = f"{kind}: {reason}"[:500]
        if self._on_problem is not None:
            self._on_problem(kind, len(records))

    async def _write(self, batch: list[Record]) -> None:
        """Write a batch; isolate rows the store refuses; wait out a store that is down."""
        attempt = 0
        while batch:
            done: list[Record] = []
            refused: list[tuple[Record, str]] = []
            try:
                await asyncio.to_thread(self._write_isolating, batch, done, refused)
            except Exception as error:  # the store is down: keep what is left and try again
                settled = {id(r) for r in done} | {id(r) for r, _ in refused}
                batch = [r for r in batch if id(r) not in settled]
                attempt += 1
                if not self.store_down:
                    log.error("ledger store unavailable (%s); holding %d records", _reason(error), len(batch))
                self.store_down = True
                self.last_problem = f"store unavailable: {_reason(error)}"[:500]
                if self._stopping.is_set() and attempt >= STOP_ATTEMPTS:
                    self._lose(batch, f"store unavailable at shutdown: {_reason(error)}")
                    batch = []
                else:
                    await asyncio.sleep(min(5.0, 0.1 * 2**attempt))
            else:
                if self.store_down:
                    log.warning("ledger store is back")
                self.store_down = False
                batch = []
            finally:
                self.written += len(done)
                if refused:
                    await asyncio.to_thread(self._dead_letter, refused)

    def _write_isolating(
        self, batch: list[Record], done: list[Record], refused: list[tuple[Record, str]]
    ) -> None:
        """Write `batch`; on a row's error split it in halves, down to the refused rows themselves."""
        try:
            self._write_sync(batch)
        except Exception as error:
            if _store_down(error):
                raise
            if len(batch) == 1:
                refused.append((batch[0], _reason(error)))
                return
            mid = len(batch) // 2
            self._write_isolating(batch[:mid], done, refused)
            self._write_isolating(batch[mid:], done, refused)
        else:
            done.extend(batch)

    def _dead_letter(self, refused: list[tuple[Record, str]]) -> None:
        now = time.time()
        rows = [
            {"ts": now, "record_id": r.id, "reason": reason, "record": orjson.dumps(r.row()).decode()}
            for r, reason in refused
        ]
        for r, reason in refused:
            log.error("ledger refused record %s: %s; kept in ledger_dead_letters", r.id, reason)
        try:
            with self._engine.begin() as conn:
                conn.execute(insert(ledger_dead_letters), rows)
        except Exception as error:
            by_reason = "; ".join(sorted({reason for _, reason in refused}))
            self._lose(
                [r for r, _ in refused], f"{by_reason}; the dead-letter table failed too: {_reason(error)}"
            )
            return
        self.dead_lettered += len(refused)
        self._problem("dead_lettered", [r for r, _ in refused], refused[-1][1])

    def _lose(self, records: list[Record], reason: str) -> None:
        """Records the store will never hold: to the dead-letter file if configured, else the log."""
        lines = [orjson.dumps({"reason": reason, "record": r.row()}) for r in records]
        kept = False
        if self._dead_letter_file is not None:
            try:
                with self._dead_letter_file.open("ab") as fh:
                    fh.write(b"".join(line + b"\n" for line in lines))
                kept = True
            except OSError as error:
                log.error("dead-letter file %s not writable: %s", self._dead_letter_file, error)
        for line in lines if not kept else ():
            log.error("ledger lost a record: %s", line.decode())
        if kept:
            log.error(
                "ledger could not store %d records (%s); kept in %s",
                len(records),
                reason,
                self._dead_letter_file,
            )
        self.lost += len(records)
        self._problem("lost", records, reason)

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
