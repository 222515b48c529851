"""Conversation transcripts: captured turn by turn off the request path, exported one conversation a line.

    writer = TranscriptWriter(engine); await writer.start()
    writer.submit(Turn(...)); ...; await writer.stop()            # stop() writes everything accepted
    for line in export_lines(engine, "support", since=None, limit=None): ...   # OpenAI chat JSONL

Storage is linear in turns: an app re-sends the whole history every turn, but identity knows how many
leading messages an earlier turn already sent (`Identity.continued`), so a turn appends only the
messages after them plus the reply, one row each in `transcript_messages`, and touches its
conversation's row in `transcripts`. The tools offered are stored once per conversation and again
only when they change. Redaction runs here, in the writer's thread, before any row is written.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

import orjson
from sqlalchemy import Engine, and_, bindparam, delete, insert, or_, select, update

from gateway.store.batching import BatchWriter
from gateway.store.schema import transcript_messages as TM
from gateway.store.schema import transcripts as T

log = logging.getLogger("tiergate.transcripts")


@dataclass(slots=True)
class Turn:
    """One answered request, as the request path hands it over (references, no copies, no JSON)."""

    workflow: str
    conversation: str
    turn: int
    ts: float
    messages: Sequence[Any]  # everything the app sent, as it sent it
    continued: int  # leading messages an earlier turn already sent (0: a conversation's first turn)
    tools: Any
    reply: Any
    redact: Callable[[Any], str]  # value -> redacted JSON text (gateway.proxy.capture.Redactor.json)


def transcript_id(workflow: str, conversation: str, split: int = 0) -> str:
    key = f"{workflow}\x00{conversation}" + (f"\x00{split}" if split else "")
    return hashlib.blake2b(key.encode(), digest_size=16).hexdigest()


class TranscriptWriter(BatchWriter[Turn]):
    """Batched writes in a worker thread, like the ledger: a request never waits on the store."""

    def __init__(self, engine: Engine, *, batch_size: int = 200, flush_interval: float = 0.25, queue_max: int = 5_000,
                 degraded_seconds: float = 60.0, on_drop: Callable[[int], None] | None = None):
        # a queued turn holds its request's messages (references): a store outage must not hold
        # gigabytes of them, so the cap is in turns of whole requests, not the ledger's 100,000 records
        super().__init__(batch_size=batch_size, flush_interval=flush_interval, queue_max=queue_max)
        self._engine = engine
        self.written = 0
        self.dropped = 0
        self.last_drop = 0.0  # monotonic time of the last dropped turn: /healthz is degraded for a while after
        self.degraded_seconds = degraded_seconds
        self._on_drop = on_drop  # feeds the `tiergate_capture_dropped_turns` counter

    def _dropped(self, n: int) -> None:
        self.dropped += n
        self.last_drop = time.monotonic()
        if self._on_drop is not None:
            self._on_drop(n)

    def health(self) -> dict[str, Any]:
        """What /healthz says of capture: turns written, dropped, waiting; degraded after a drop."""
        recent = self.dropped > 0 and time.monotonic() - self.last_drop < self.degraded_seconds
        return {"status": "dropping" if recent else "ok", "written": self.written, "dropped": self.dropped,
                "pending": self.pending}

    task_name = "transcript-writer"

    async def start(self) -> None:
        self._start_task()

    def submit(self, turn: Turn) -> None:
        try:
            self._queue.put_nowait(turn)
        except asyncio.QueueFull:  # the store is down or far behind: the request still succeeds
            self._dropped(1)
            log.error("transcript queue full (%d turns); dropping a turn of %s", self._queue.qsize(), turn.workflow)

    async def _write(self, batch: list[Turn]) -> None:
        if not batch:
            return
        for attempt in range(3):
            try:
                await asyncio.to_thread(write_turns, self._engine, batch)
                self.written += len(batch)
                return
            except Exception as exc:  # a hiccup, or another process inserting the same conversation
                log.warning("transcript write of %d turns failed (attempt %d): %s", len(batch), attempt + 1, exc)
                await asyncio.sleep(0.05 * 2**attempt)
        # one bad turn must not take the others with it: turn by turn, dropping only what still fails
        for turn in batch:
            try:
                await asyncio.to_thread(write_turns, self._engine, [turn])
                self.written += 1
            except Exception as exc:
                self._dropped(1)
                log.error("transcripts: dropped turn %d of a `%s` conversation: %s", turn.turn, turn.workflow, exc)


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def write_turns(engine: Engine, batch: Sequence[Turn]) -> None:
    """Append a batch of turns in one transaction (blocking; the writer runs it in a thread)."""
    ids = {transcript_id(t.workflow, t.conversation) for t in batch}
    ids |= {transcript_id(t.workflow, t.conversation, t.turn) for t in batch if t.continued == 0}
    with engine.begin() as conn:
        state: dict[str, list[Any]] = {
            r.id: [r.messages, r.tools_hash, r.turns, False]
            for r in conn.execute(select(T.c.id, T.c.messages, T.c.tools_hash, T.c.turns).where(T.c.id.in_(ids)))
        }
        rows: list[dict[str, Any]] = []
        fresh: dict[str, dict[str, Any]] = {}
        touched: dict[str, dict[str, Any]] = {}
        cuts: list[tuple[str, int]] = []
        for t in batch:
            tid = transcript_id(t.workflow, t.conversation)
            st = state.get(tid)
            if st is not None and t.continued == 0 and st[0] > 0:
                # an explicit conversation id whose history matches nothing stored: keep both
                tid = transcript_id(t.workflow, t.conversation, t.turn)
                st = state.get(tid)
            stored = st[0] if st is not None else 0
            start = min(stored, t.continued)
            if start < stored:  # a retried or branched turn: the latest branch replaces the old tail
                cuts.append((tid, start))
                # the tail may also sit in this batch, not yet written: drop it too (else a duplicate key)
                rows = [r for r in rows if r["transcript_id"] != tid or r["seq"] < start]
            new = [t.redact(m) for m in t.messages[start:]] + [t.redact(t.reply)]
            rows += [
                {"transcript_id": tid, "seq": start + i, "turn": t.turn, "reply": i == len(new) - 1, "body": body}
                for i, body in enumerate(new)
            ]
            # the hash is of the tools as sent: redacting and storing them again only when they change
            # (every turn re-sends the same schemas; redacting them each time was most of a turn's cost)
            raw_tools = orjson.dumps(t.tools) if t.tools else None
            tools_hash = hashlib.blake2b(raw_tools, digest_size=8).hexdigest() if raw_tools else None
            known = None if st is None else (fresh[tid]["tools_hash"] if st[3] else st[1])
            tools_json = t.redact(t.tools) if t.tools and tools_hash != known else None
            count = start + len(new)
            if st is None:
                fresh[tid] = {
                    "id": tid, "workflow": t.workflow, "conversation": t.conversation[:80], "started": t.ts,
                    "updated": t.ts, "turns": 1, "messages": count, "tools": tools_json, "tools_hash": tools_hash,
                }
                state[tid] = [count, tools_hash, 1, True]
            elif st[3]:  # created earlier in this batch
                row = fresh[tid]
                row.update(updated=max(row["updated"], t.ts), turns=row["turns"] + 1, messages=count)
                if tools_hash != row["tools_hash"]:
                    row.update(tools=tools_json, tools_hash=tools_hash)
                st[0] = count
            else:
                st[0], st[2] = count, st[2] + 1
                row = touched.setdefault(tid, {"b_id": tid})
                row.update(updated=t.ts, turns=st[2], messages=count)
                if tools_hash != st[1]:
                    st[1] = tools_hash
                    row.update(tools=tools_json, tools_hash=tools_hash)
        for tid, start in cuts:
            conn.execute(delete(TM).where(TM.c.transcript_id == tid, TM.c.seq >= start))
        if fresh:
            _insert(conn, T, list(fresh.values()))
        plain = [r for r in touched.values() if "tools" not in r]
        for group in (plain, [r for r in touched.values() if "tools" in r]):
            if group:
                values: dict[str, Any] = {k: bindparam(k) for k in group[0] if k != "b_id"}
                conn.execute(update(T).where(T.c.id == bindparam("b_id")).values(**values), group)
        if rows:
            _insert(conn, TM, rows)


_SQL: dict[tuple[str, str], tuple[str, list[str], bool]] = {}


def _insert(conn: Any, table: Any, rows: list[dict[str, Any]]) -> None:
    """executemany with the statement compiled once per dialect: SQLAlchemy's per-row parameter
    handling was half of a turn's write cost (cProfile), as it was for the ledger."""
    key = (conn.dialect.name, table.name)
    if key not in _SQL:
        _SQL[key] = (
            str(insert(table).compile(dialect=conn.dialect)),
            [c.name for c in table.columns],
            conn.dialect.paramstyle in ("qmark", "format", "numeric"),
        )
    sql, cols, positional = _SQL[key]
    # every row carries every column (built above), so a C-speed itemgetter makes the tuples
    conn.exec_driver_sql(sql, list(map(itemgetter(*cols), rows)) if positional else rows)


# ---------------------------------------------------------------------------------------- read back


def export_lines(
    engine: Engine, workflow: str, *, since: float | None = None, limit: int | None = None, page: int = 100
) -> Iterator[bytes]:
    """A workflow's conversations as JSONL lines (`{"messages", "tools", "tiergate"}`), oldest first.

    The OpenAI chat format `tiergate compile --traffic` reads; `tiergate` tags the line with its
    workflow and conversation id (compiler/traffic.py keeps the tag).

    Keyset pages of `page` conversations, so memory stays flat however many there are.
    """
    after: tuple[float, str] | None = None
    sent = 0
    while limit is None or sent < limit:
        take = page if limit is None else min(page, limit - sent)
        q = select(T.c.id, T.c.started, T.c.tools, T.c.conversation).where(T.c.workflow == workflow)
        if since is not None:
            q = q.where(T.c.started >= since)
        if after is not None:
            q = q.where(or_(T.c.started > after[0], and_(T.c.started == after[0], T.c.id > after[1])))
        with engine.connect() as conn:
            heads = conn.execute(q.order_by(T.c.started, T.c.id).limit(take)).all()
            if not heads:
                return
            bodies: dict[str, list[str]] = {h.id: [] for h in heads}
            for tid, body in conn.execute(
                select(TM.c.transcript_id, TM.c.body)
                .where(TM.c.transcript_id.in_(list(bodies)))
                .order_by(TM.c.transcript_id, TM.c.seq)
            ):
                bodies[tid].append(body)
        for h in heads:
            tools = f',"tools":{h.tools}' if h.tools else ""
            tag = _dumps({"workflow": workflow, "conversation": h.conversation})
            yield f'{{"messages":[{",".join(bodies[h.id])}]{tools},"tiergate":{tag}}}\n'.encode()
        sent += len(heads)
        after = (heads[-1].started, heads[-1].id)


def delete_transcripts(engine: Engine, ids: Sequence[str]) -> int:
    """Remove conversations and their messages, in chunks (retention)."""
    done = 0
    for i in range(0, len(ids), 500):
        chunk = list(ids[i : i + 500])
        with engine.begin() as conn:
            conn.execute(delete(TM).where(TM.c.transcript_id.in_(chunk)))
            done += conn.execute(delete(T).where(T.c.id.in_(chunk))).rowcount
    return done
