"""The queue-and-flush loop shared by the store's writers (ledger records, transcript turns).

A request hands its item to `submit`-like code that puts it on the queue without waiting; a background
task takes up to `batch_size` items every `flush_interval` seconds and hands them to `_write`. `stop`
writes everything still queued before returning: a graceful stop loses nothing accepted.
"""

from __future__ import annotations

import asyncio
from typing import Generic, TypeVar

T = TypeVar("T")


class BatchWriter(Generic[T]):
    """Subclasses implement `_write(batch)`; it must not raise (a writer isolates its own failures)."""

    task_name = "store-writer"

    def __init__(self, *, batch_size: int, flush_interval: float, queue_max: int) -> None:
        self._batch_size = batch_size
        self._interval = flush_interval
        self._queue: asyncio.Queue[T] = asyncio.Queue(maxsize=queue_max)
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    def _start_task(self) -> None:
        self._stopping = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name=self.task_name)

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    async def stop(self) -> None:
        """Write everything queued, then end the writer. Never cancelled mid-batch: no loss, no duplicate."""
        self._stopping.set()
        if self._task is not None:
            await self._task
            self._task = None
        while not self._queue.empty():
            await self._write(self._take_batch())

    def _take_batch(self) -> list[T]:
        batch: list[T] = []
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

    async def _write(self, batch: list[T]) -> None:
        raise NotImplementedError
