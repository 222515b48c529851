"""Capture retention: remove conversations older than a workflow's `capture.retention_days`, and beyond
its `capture.max_conversations` most recent; a workflow whose capture is off keeps nothing new and loses
nothing old until its retention says so.

    removed = enforce_retention(engine, settings)    # the loop runs it with its threshold checks

Age is the conversation's last captured turn (`transcripts.updated`), so a long conversation that is
still going is kept whole. Deletes go in chunks of 500 conversations, each its own transaction.
"""

from __future__ import annotations

import logging
import time

from sqlalchemy import Engine, select

from gateway.proxy.defaults import resolve
from gateway.settings import Settings
from gateway.store.schema import transcripts as T
from gateway.store.transcripts import delete_transcripts

log = logging.getLogger("tiergate.retention")


def enforce_retention(engine: Engine, settings: Settings, *, now: float | None = None) -> int:
    """Delete what each workflow's capture settings no longer keep; returns conversations removed."""
    now = time.time() if now is None else now
    with engine.connect() as conn:
        names = [r[0] for r in conn.execute(select(T.c.workflow).distinct())]
    removed = 0
    for name in names:
        cfg = resolve(settings, name).capture
        doomed: list[str] = []
        with engine.connect() as conn:
            if cfg.retention_days is not None:
                cutoff = now - cfg.retention_days * 86400.0
                doomed += [
                    r[0] for r in conn.execute(select(T.c.id).where(T.c.workflow == name, T.c.updated < cutoff))
                ]
            if cfg.max_conversations is not None:
                doomed += [
                    r[0]
                    for r in conn.execute(
                        select(T.c.id)
                        .where(T.c.workflow == name)
                        .order_by(T.c.updated.desc(), T.c.id.desc())
                        .offset(cfg.max_conversations)
                    )
                ]
        if doomed:
            n = delete_transcripts(engine, sorted(set(doomed)))
            removed += n
            log.info("retention: removed %d conversations of workflow %s", n, name)
    return removed
