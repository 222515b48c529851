"""Route state per workflow (frontier, canary at a share, compiled) and the rules that move it.

    on_compiled(conversation_id, 0.1)              # sticky: same answer for the same conversation and share
    route_for(table, "travel-booking", conv_id)    # -> RouteChoice | None, pure, on the request path
    (RouteChoice and strip_for_compiled live with the request path: gateway.proxy.plan)
    start_canary(engine, "travel-booking", model="travel-compiled", share=0.1, job_id=7, ...)
    decide(metrics, cfg, mode)                     # -> ("promote" | "rollback" | None, reason)
    rollback(engine, "travel-booking", reason="quality 0.62 < 0.85", actor="ana")

Every switch is one transaction: the new state and its `loop_switches` row together. Assignment is a
hash of the conversation id against the share, so any gateway process gives the same conversation the
same side with no shared state, and a conversation only moves when the share itself changes (at
promotion, towards the compiled side).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from sqlalchemy import Engine, and_, case, func, insert, select, update

from gateway.errors import Conflict, InvalidRequest
from gateway.loop.payback import LoopConfig
from gateway.loop.serving import read_prompt
from gateway.proxy.plan import RouteChoice
from gateway.store.loop_schema import ROUTE_MODES, routes, samples, switches
from gateway.store.schema import requests as R


@dataclass(frozen=True)
class RouteState:
    workflow: str
    mode: str
    share: float
    model: str | None
    persona: str = ""  # set for a model compiled from traffic: how its prompt is reduced (artifact/prompt.json)
    static_lines: frozenset[str] = frozenset()
    replies: tuple[tuple[str, tuple[frozenset[str], ...]], ...] = ()  # per step its replies' words (reply_step)


def on_compiled(conversation: str, share: float) -> bool:
    """Sticky canary assignment: a pure function of (conversation id, share)."""
    if share >= 1.0:
        return True
    if share <= 0.0:
        return False
    point = int.from_bytes(hashlib.sha256(conversation.encode()).digest()[:8], "big") / 2.0**64
    return point < share


def route_for(table: Mapping[str, RouteState], workflow: str, conversation: str) -> RouteChoice | None:
    """None keeps the request on its normal path (frontier, or what routing and trimming decide)."""
    st = table.get(workflow)
    if st is None or st.mode == "frontier" or not st.model:
        return None
    if st.mode == "compiled" or on_compiled(conversation, st.share):
        return RouteChoice(model=st.model, canary=st.mode == "canary", persona=st.persona,
                           static_lines=st.static_lines)
    return None


# ---------------------------------------------------------------------- store


def _words(text: str) -> frozenset[str]:
    """A reply's words for telling steps apart: lower-cased, without values (digits, `{slot}` placeholders)."""
    out = set()
    for w in text.lower().split():
        w = w.strip(".,!?;:()\"'")
        if w and not any(ch.isdigit() for ch in w) and "{" not in w:
            out.add(w)
    return frozenset(out)


def reply_step(text: str, replies: tuple[tuple[str, tuple[frozenset[str], ...]], ...],
               floor: float = 0.3) -> str | None:
    """The step whose replies ``text`` shares most words with (Jaccard, best reply of each step); None
    below ``floor`` or without steps. A canary comparison scores two replies of the same step as agreeing:
    the frontier says "What can I do for you today?" where the compiled model says "How can I help you
    with your order today?", both the mined step `ask_intent`, as the replay gate judges them."""
    words = _words(text)
    best, score = None, floor
    for step, examples in replies:
        for ex in examples:
            union = len(words | ex)
            s = len(words & ex) / union if union else 0.0
            if s > score or (s == score and best is None and s > 0):
                best, score = step, s
    return best


@lru_cache(maxsize=256)
def _prompt(artifact: str) -> tuple[str, frozenset[str], tuple[tuple[str, tuple[frozenset[str], ...]], ...]]:
    """An artifact's prompt reduction and its steps' replies, read once (an artifact never changes once written)."""
    p = read_prompt(artifact) or {}
    replies = tuple((str(step), tuple(_words(str(t)) for t in texts))
                    for step, texts in sorted((p.get("replies") or {}).items()) if isinstance(texts, list))
    return str(p.get("persona") or ""), frozenset(map(str, p.get("static_lines") or ())), replies


def load_table(engine: Engine) -> dict[str, RouteState]:
    with engine.connect() as conn:
        rows = conn.execute(select(routes.c.workflow, routes.c.mode, routes.c.share, routes.c.model,
                                   routes.c.artifact)).all()
    return {r.workflow: RouteState(r.workflow, r.mode, float(r.share), r.model,
                                   *(_prompt(r.artifact) if r.artifact else ("", frozenset(), ())))
            for r in rows}


def get_route(engine: Engine, workflow: str) -> dict[str, Any]:
    with engine.connect() as conn:
        row = conn.execute(select(routes).where(routes.c.workflow == workflow)).mappings().first()
        hist = conn.execute(
            select(switches).where(switches.c.workflow == workflow).order_by(switches.c.id.desc()).limit(50)
        ).mappings().all()
    state = dict(row) if row else {"workflow": workflow, "mode": "frontier", "share": 0.0, "model": None,
                                   "job_id": None, "artifact": None, "fingerprint": None, "since": None,
                                   "serve_pid": None}
    return state | {"switches": [dict(h) for h in hist]}


def set_route(
    engine: Engine, workflow: str, mode: str, share: float, *, reason: str, actor: str, **fields: Any
) -> dict[str, Any]:
    """Move a workflow's route and record the switch, atomically."""
    if mode not in ROUTE_MODES:
        raise InvalidRequest(f"Route mode `{mode}` is unknown; use one of {', '.join(ROUTE_MODES)}.")
    now = time.time()
    with engine.begin() as conn:
        row = conn.execute(select(routes).where(routes.c.workflow == workflow)).mappings().first()
        before = row["mode"] if row else "frontier"
        values = {"mode": mode, "share": share, "since": now, **fields}
        if row is None:
            conn.execute(insert(routes).values(workflow=workflow, **values))
        else:
            conn.execute(update(routes).where(routes.c.workflow == workflow).values(**values))
        conn.execute(insert(switches).values(
            workflow=workflow, ts=now, from_mode=before, to_mode=mode, share=share, reason=reason, actor=actor,
        ))
    return get_route(engine, workflow)


def start_canary(
    engine: Engine, workflow: str, *, model: str, share: float, job_id: int | None, artifact: str | None,
    fingerprint: str | None, serve_pid: int | None = None, actor: str = "loop",
) -> dict[str, Any]:
    mode = "compiled" if share >= 1.0 else "canary"
    return set_route(
        engine, workflow, mode, share, reason=f"job {job_id} ready: canary at {share:.0%} on `{model}`",
        actor=actor, model=model, job_id=job_id, artifact=artifact, fingerprint=fingerprint, serve_pid=serve_pid,
    )


def promote(engine: Engine, workflow: str, reason: str, actor: str = "loop") -> dict[str, Any]:
    return set_route(engine, workflow, "compiled", 1.0, reason=reason, actor=actor)


def rollback(engine: Engine, workflow: str, *, reason: str, actor: str) -> dict[str, Any]:
    current = get_route(engine, workflow)
    if current["mode"] == "frontier":
        raise Conflict(f"Workflow `{workflow}` already runs on the frontier; there is nothing to roll back.")
    return set_route(engine, workflow, "frontier", 0.0, reason=reason, actor=actor)


def record_sample(
    engine: Engine, workflow: str, conversation: str, *, score: float | None, ok: bool = True,
    ts: float | None = None,
) -> None:
    """A sampled comparison of a compiled-side conversation against the frontier (score 0..1)."""
    if score is not None and not 0.0 <= score <= 1.0:
        raise InvalidRequest(f"`score` is {score}; a comparison score lies between 0 and 1.", param="score")
    with engine.begin() as conn:
        conn.execute(insert(samples).values(
            workflow=workflow, conversation=conversation[:64], ts=time.time() if ts is None else ts,
            ok=1 if ok else 0, score=score,
        ))


@dataclass(frozen=True)
class CanaryMetrics:
    requests: int  # compiled-side requests in the ledger since the mode started
    errors: int
    conversations: int  # distinct compiled-side conversations without an error
    samples: int  # sampled comparisons since the mode started
    scored: int
    mean_score: float | None
    sample_failures: int

    @property
    def error_rate(self) -> float:
        if self.requests:
            return self.errors / self.requests
        return self.sample_failures / self.samples if self.samples else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "error_rate": self.error_rate}


def canary_metrics(engine: Engine, workflow: str, since: float) -> CanaryMetrics:
    # a client that hangs up mid-stream is not the model's error
    bad = (R.c.status >= 400) | (R.c.error_type.is_not(None) & (R.c.error_type != "client_disconnected"))
    with engine.connect() as conn:
        led = conn.execute(
            select(
                func.count(),
                func.coalesce(func.sum(case((bad, 1), else_=0)), 0),
                func.count(func.distinct(case((~bad, R.c.conversation)))),
            ).where(and_(R.c.workflow == workflow, R.c.tier == "compiled", R.c.ts >= since))
        ).one()
        smp = conn.execute(
            select(
                func.count(),
                func.count(samples.c.score),
                func.avg(samples.c.score),
                func.coalesce(func.sum(case((samples.c.ok == 0, 1), else_=0)), 0),
                func.count(func.distinct(case((samples.c.ok == 1, samples.c.conversation)))),
            ).where(and_(samples.c.workflow == workflow, samples.c.ts >= since))
        ).one()
    conversations = int(led[2]) if led[0] else int(smp[4])
    return CanaryMetrics(
        requests=int(led[0]), errors=int(led[1]), conversations=conversations, samples=int(smp[0]),
        scored=int(smp[1]), mean_score=float(smp[2]) if smp[2] is not None else None, sample_failures=int(smp[3]),
    )


def decide(m: CanaryMetrics, cfg: LoopConfig, mode: str) -> tuple[str | None, str]:
    """Promote, roll back or hold, from the measured canary; pure so thresholds are table-tested."""
    if mode == "frontier":
        return None, "on the frontier"
    enough = max(m.requests, m.samples) >= cfg.min_samples
    if enough and m.error_rate > cfg.max_error_rate:
        return "rollback", f"error rate {m.error_rate:.0%} > {cfg.max_error_rate:.0%} over {max(m.requests, m.samples)} calls"
    if m.scored >= cfg.min_samples and m.mean_score is not None and m.mean_score < cfg.min_quality:
        return "rollback", f"quality {m.mean_score:.2f} < {cfg.min_quality:.2f} over {m.scored} sampled conversations"
    if mode == "canary" and m.conversations >= cfg.promote_after and m.scored >= cfg.min_samples:
        return "promote", (
            f"quality {m.mean_score:.2f} >= {cfg.min_quality:.2f} over {m.conversations} canary conversations"
        )
    return None, "holding"
