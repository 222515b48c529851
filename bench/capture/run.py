"""Transcript capture at volume: write cost per turn, bytes stored per turn, export speed and memory.

    python bench/capture/run.py                       # SQLite, 2,000 conversations x 20 turns
    python bench/capture/run.py --pg postgresql://postgres@127.0.0.1:5432/test --conversations 1000

Drives the capture writer's own write path (`gateway.store.transcripts.write_turns`, batches of 200
turns, as the writer thread does) with an agent-shaped conversation: a 1.5 KB procedure, 4 tool
schemas, history re-sent every turn, a tool call every third turn. Then exports every conversation
with `export_lines` and reports the peak memory the export allocated (tracemalloc), which must stay
flat as conversations grow. Prints a markdown table; nothing is written unless --out is given.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from sqlalchemy import func, select, text  # noqa: E402

from gateway.proxy.capture import CaptureConfig, Redactor  # noqa: E402
from gateway.store.engine import make_engine, migrate  # noqa: E402
from gateway.store.schema import transcript_messages  # noqa: E402
from gateway.store.transcripts import Turn, export_lines, write_turns  # noqa: E402

PROCEDURE = ("You are the support assistant of Acme Shop. " * 40).strip()
TOOLS = [
    {"type": "function", "function": {"name": n, "description": f"{n} " * 10, "parameters": {
        "type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]}}}
    for n in ("lookup_order", "track_shipment", "create_return", "update_address")
]


def conversation(c: int, turns: int) -> list[tuple[list[dict[str, Any]], int, dict[str, Any]]]:
    """(messages sent, messages an earlier turn sent, reply) for each turn of conversation `c`."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": PROCEDURE},
                                      {"role": "user", "content": f"Hello, I am customer {c}."}]
    out = []
    continued = 0
    for t in range(turns):
        messages.append({"role": "system", "content": f"Current step: step_{t % 7}. Do what the step says."})
        if t % 3 == 1:
            reply = {"role": "assistant", "content": None, "tool_calls": [{"id": f"call_{t}", "type": "function",
                     "function": {"name": "lookup_order", "arguments": json.dumps({"order_id": f"A{c}{t}"})}}]}
        else:
            reply = {"role": "assistant", "content": f"Turn {t}: here is what I found for order A{c}{t}, anything else?"}
        out.append((list(messages), continued, reply))
        messages.append(reply)
        continued = len(messages)
        if t % 3 == 1:
            messages.append({"role": "tool", "tool_call_id": f"call_{t}", "content": json.dumps({"status": "shipped"})})
        else:
            messages.append({"role": "user", "content": f"Thanks. Next question number {t} about my order."})
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pg", default=None, help="PostgreSQL admin URL: bench in a fresh database, dropped after")
    p.add_argument("--conversations", type=int, default=2000)
    p.add_argument("--turns", type=int, default=20)
    p.add_argument("--out", default=None, help="append the table to this markdown file")
    args = p.parse_args()
    tmp = tempfile.mkdtemp(prefix="tg-capture-bench-")
    url = f"sqlite:///{tmp}/capture.db"
    admin = None
    if args.pg:
        import uuid

        import psycopg

        admin = psycopg.connect(args.pg, autocommit=True)
        name = "tg_capture_bench_" + uuid.uuid4().hex[:8]
        admin.execute(f'CREATE DATABASE "{name}"')
        url = args.pg.rsplit("/", 1)[0] + "/" + name
    engine = make_engine(url)
    migrate(engine)
    red = Redactor(CaptureConfig(redact=("cards",)))
    script = conversation(0, args.turns)
    # bytes per turn, one conversation alone: what each turn adds, and what re-storing history would cost
    added = [len(json.dumps(m[0][m[1]:])) + len(json.dumps(m[2])) for m in script]
    quadratic = [len(json.dumps(m[0])) + len(json.dumps(m[2])) for m in script]

    batch: list[Turn] = []
    write_s = 0.0
    n_turns = 0
    t_all = time.perf_counter()
    for c in range(args.conversations):
        for t, (msgs, continued, reply) in enumerate(conversation(c, args.turns)):
            batch.append(Turn("bench", f"conv-{c}", t + 1, time.time(), msgs, continued, TOOLS, reply, red.json))
            if len(batch) == 200:
                t0 = time.perf_counter()
                write_turns(engine, batch)
                write_s += time.perf_counter() - t0
                n_turns += len(batch)
                batch = []
    if batch:
        t0 = time.perf_counter()
        write_turns(engine, batch)
        write_s += time.perf_counter() - t0
        n_turns += len(batch)
    total_s = time.perf_counter() - t_all
    with engine.connect() as conn:
        stored = conn.execute(select(func.sum(func.length(transcript_messages.c.body)))).scalar_one()
        rows = conn.execute(select(func.count()).select_from(transcript_messages)).scalar_one()
        if engine.dialect.name == "postgresql":
            size = conn.execute(text("SELECT pg_total_relation_size('transcript_messages')")).scalar_one()
        else:
            size = sum(f.stat().st_size for f in Path(tmp).glob("capture.db*"))

    t0 = time.perf_counter()
    lines = 0
    nbytes = 0
    for line in export_lines(engine, "bench"):
        lines += 1
        nbytes += len(line)
    export_s = time.perf_counter() - t0
    tracemalloc.start()  # a second pass for memory: tracemalloc slows every allocation down
    for _ in export_lines(engine, "bench"):
        pass
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    engine.dispose()

    backend = "PostgreSQL" if "postgres" in url else "SQLite"
    table = [
        f"| capture at volume ({backend}, {args.conversations:,} conversations x {args.turns} turns) | value |",
        "|---|---|",
        f"| turns written | {n_turns:,} ({rows:,} message rows) |",
        f"| write cost per turn (writer thread, batches of 200) | {write_s / n_turns * 1e6:.0f} us |",
        f"| write throughput | {n_turns / write_s:,.0f} turns/s |",
        f"| bytes stored per turn (message JSON, mean) | {stored / n_turns:,.0f} B |",
        f"| store size on disk per turn (tables + indexes) | {size / n_turns:,.0f} B |",
        f"| one 20-turn conversation: bytes added per turn, turns 1/10/20 | "
        f"{added[0]:,} / {added[min(9, len(added) - 1)]:,} / {added[-1]:,} B |",
        f"| the same if history were re-stored each turn (quadratic) | "
        f"{quadratic[0]:,} / {quadratic[min(9, len(quadratic) - 1)]:,} / {quadratic[-1]:,} B |",
        f"| one 20-turn conversation: total stored vs re-stored | {sum(added):,} B vs {sum(quadratic):,} B |",
        f"| export speed | {lines / export_s:,.0f} conversations/s, {nbytes / export_s / 1e6:.1f} MB/s |",
        f"| export peak memory (tracemalloc) | {peak / 1e6:.1f} MB for {nbytes / 1e6:.0f} MB exported |",
        f"| wall time | {total_s:.0f} s generating and writing, {export_s:.1f} s exporting |",
    ]
    print("\n".join(table))
    if args.out:
        with open(args.out, "a") as fh:
            fh.write("\n".join(table) + "\n")
    if admin is not None:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
    for f in Path(tmp).glob("*"):
        os.unlink(f)
    os.rmdir(tmp)


if __name__ == "__main__":
    main()
