"""Teacher data at scale: estimate, budget, bounded concurrency, cache, validation, clean stops.

    rows, report = render_teacher_jobs(fc, cfg.data, {"train": [(path, 0), ...], "eval": [...]}, out, echo)

The caller caps first and passes only the (path, variant) pairs it keeps, so nothing is paid for a
conversation that would be thrown away. Before the first call the run walks every conversation
against the cache (``estimate``): the calls still to make, their tokens and their cost are printed,
and a run whose estimate passes ``data.max_teacher_usd`` does not start. Conversations are then
rendered ``data.teacher_concurrency`` at a time; every reply is committed to
``OUT/cache/teacher.sqlite`` as it arrives. An outage that outlives its retries, or spending that
reaches the budget, stops the run: finished conversations are written to
``OUT/data/teacher-partial.jsonl``, the cache keeps every paid reply, and the error says how to resume.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from compiler.config import DataConfig
from compiler.flowchart import Flowchart
from compiler.node_judge import NodeJudge
from compiler.paths import FlowPath
from compiler.teacher import (
    OffNodeReply,
    Price,
    Stopped,
    TeacherBudgetExceeded,
    TeacherClient,
    TeacherError,
    model_price,
    one_line,
    render_teacher,
)
from compiler.teacher_cache import TeacherCache, request_key

Job = tuple[FlowPath, int]
CHARS_PER_TOKEN = 4  # the estimate's token count; within ~20% for English, and no tokenizer to load
TOKENS_PER_MESSAGE = 4  # role and separators, as OpenAI's own counting recipe adds


@dataclass
class Estimate:
    """What the run will cost before it starts: calls not in the cache, their tokens and USD."""

    conversations: int = 0
    calls: int = 0
    cached: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    usd: float | None = None
    by_model: dict[str, dict[str, int]] = field(default_factory=dict)


class _DryRun:
    """A stand-in teacher for one conversation: cached replies until the first miss, then empty (new) calls."""

    def __init__(self, cache: TeacherCache | None, params: Mapping[str, Any], est: Estimate) -> None:
        self.cache, self.params, self.est = cache, params, est
        self.missed = False
        self.new_calls: list[tuple[str, int]] = []

    def __call__(self, model: str, messages: list[dict[str, Any]]) -> str:
        if not self.missed and self.cache is not None:
            hit = self.cache.get(request_key(model, messages, self.params))
            if hit is not None:
                self.est.cached += 1
                return hit.reply
        self.missed = True  # later requests hold a reply nobody has seen yet: none can be cached
        chars = sum(len(str(m.get("content") or "")) for m in messages)
        self.new_calls.append((model, chars // CHARS_PER_TOKEN + TOKENS_PER_MESSAGE * len(messages)))
        return ""


def conversation_seed(d: DataConfig, variant: int) -> int:
    """The teacher seed of a variant (slot values, utterance examples, call ids)."""
    return d.seed * 1_000_003 + variant


def estimate(
    fc: Flowchart, d: DataConfig, jobs: Sequence[Job], cache: TeacherCache | None, prices: Mapping[str, Price | None]
) -> Estimate:
    """Walk each conversation with the cache's replies; after its first miss every call is a new one.

    A miss is answered with the offline wording (the template or the edge's example), which is also
    what stands in for the reply's length. Regenerations of off-node replies are not foreseen: with
    an on-node teacher the calls made equal ``calls``.
    """
    params = {"temperature": d.teacher_temperature}
    est = Estimate(conversations=len(jobs))
    sim = d.simulator_model or d.teacher_model or ""
    # Cached replies go through the same node check as in the run, so a resumed run follows the same
    # regenerations; a fresh cache skips the check (the stand-in wording is the template, on its node).
    judge = NodeJudge(fc) if cache is not None and len(cache) else None
    for path, variant in jobs:
        dry = _DryRun(cache, params, est)
        try:
            conv = render_teacher(fc, path, d.teacher_model or "", sim, conversation_seed(d, variant), complete=dry,
                                  judge=judge, regenerations=max(0, d.teacher_regenerations))
        except OffNodeReply:
            continue  # dropped again from cached replies: no new call
        texts = [str(m.get("content") or "") for m in conv["messages"][1:]
                 if m["role"] in ("user", "assistant") and not m.get("tool_calls")]
        reply_tokens = (sum(map(len, texts)) // max(1, len(texts))) // CHARS_PER_TOKEN + 1
        for model, prompt_tokens in dry.new_calls:
            row = est.by_model.setdefault(model, {"calls": 0, "prompt_tokens": 0, "completion_tokens": 0})
            row["calls"] += 1
            row["prompt_tokens"] += prompt_tokens
            row["completion_tokens"] += reply_tokens
    est.calls = sum(r["calls"] for r in est.by_model.values())
    est.prompt_tokens = sum(r["prompt_tokens"] for r in est.by_model.values())
    est.completion_tokens = sum(r["completion_tokens"] for r in est.by_model.values())
    if all(prices.get(m) is not None for m in est.by_model):
        est.usd = sum(
            p.cost(r["prompt_tokens"], r["completion_tokens"])
            for m, r in est.by_model.items() if (p := prices.get(m)) is not None
        )
    return est


def count_calls(fc: Flowchart, jobs: Sequence[Job]) -> int:
    """Model calls a set of conversations needs from scratch (no cache), without rendering them."""
    from compiler.render import _plan

    per_path: dict[str, int] = {}
    total = 0
    for path, _variant in jobs:
        if path.id not in per_path:
            per_path[path.id] = sum(1 for s in _plan(fc, path) if s["role"] in ("user", "assistant"))
        total += per_path[path.id]
    return total


def _describe(est: Estimate, d: DataConfig, prices: Mapping[str, Price | None]) -> str:
    sources = ", ".join(f"{m}: {p.source if p else 'no price known'}" for m, p in prices.items())
    usd = f"about ${est.usd:.2f}" if est.usd is not None else "cost unknown"
    return (
        f"teacher estimate: {est.conversations:,} conversations need {est.calls:,} new calls "
        f"({est.cached:,} answered from the cache), ~{est.prompt_tokens / 1e6:.2f}M prompt + "
        f"{est.completion_tokens / 1e6:.2f}M completion tokens, {usd} ({sources}); "
        f"{max(1, d.teacher_concurrency)} at a time"
    )


def _client(d: DataConfig, cache: TeacherCache, prices: Mapping[str, Price | None]) -> TeacherClient:
    api_key = None
    if d.teacher_api_key_env:
        api_key = os.environ.get(d.teacher_api_key_env)
        if not api_key:
            raise TeacherError(
                f"environment variable `{d.teacher_api_key_env}` (data.teacher_api_key_env) is not set; "
                "export the teacher's API key in it"
            )
    return TeacherClient(
        cache,
        temperature=d.teacher_temperature,
        api_base=d.teacher_api_base,
        api_key=api_key,
        timeout_s=d.teacher_timeout_s,
        retries=d.teacher_retries,
        retry_wait_s=d.teacher_retry_wait_s,
        max_usd=d.max_teacher_usd,
        prices=prices,
    )


def render_teacher_jobs(
    fc: Flowchart,
    d: DataConfig,
    groups: Mapping[str, Sequence[Job]],
    out: Path,
    echo: Callable[[str], None] = print,
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, Any]]:
    """Render every group's (path, variant) pairs with the teacher; returns rows per group and the report.

    Raises ``TeacherError`` (a ``ValueError`` with a one-line message) when the budget refuses the
    estimate, or after an outage or the budget stopped the run with what was rendered kept.
    """
    if not d.teacher_model:
        raise TeacherError("no teacher model; set `data.teacher_model` (or pass --teacher)")
    teacher, sim = d.teacher_model, d.simulator_model or d.teacher_model
    prices = {m: model_price(m, d.teacher_usd_per_mtok_in, d.teacher_usd_per_mtok_out) for m in dict.fromkeys((teacher, sim))}
    jobs = [(name, path, variant) for name, items in groups.items() for path, variant in items]
    cache_path = out / "cache" / "teacher.sqlite"
    cache = TeacherCache(cache_path)
    try:
        est = estimate(fc, d, [(p, v) for _n, p, v in jobs], cache, prices)
        echo(_describe(est, d, prices))
        if d.max_teacher_usd is not None and est.calls:
            if est.usd is None:
                missing = ", ".join(f"`{m}`" for m, p in prices.items() if p is None)
                raise TeacherBudgetExceeded(
                    f"no price known for {missing} in litellm's price map, so --max-teacher-usd cannot be kept; "
                    "set data.teacher_usd_per_mtok_in and data.teacher_usd_per_mtok_out"
                )
            if est.usd > d.max_teacher_usd:
                raise TeacherBudgetExceeded(
                    f"the teacher estimate ${est.usd:.2f} ({est.calls:,} calls) exceeds --max-teacher-usd "
                    f"${d.max_teacher_usd:.2f}; raise the budget or lower data.max_train_conversations; nothing was called"
                )
        client = _client(d, cache, prices)
        rows, report = _run(fc, d, jobs, client, echo, teacher, sim)
    finally:
        cache.close()
    report.update({
        "estimate": asdict(est),
        "cache": str(cache_path),
        "price": {m: (asdict(p) if p else None) for m, p in prices.items()},
    })
    if client.failure is not None:
        partial = out / "data" / "teacher-partial.jsonl"
        partial.parent.mkdir(parents=True, exist_ok=True)
        partial.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for g in rows.values() for r in g))
        raise type(client.failure)(
            f"{client.failure}; kept {sum(map(len, rows.values()))} rendered conversations in `{partial}` and "
            f"{client.calls} new paid replies in `{cache_path}`; run the same command again to resume "
            "(cached replies are not paid twice)"
        )
    return rows, report


def _run(
    fc: Flowchart,
    d: DataConfig,
    jobs: Sequence[tuple[str, FlowPath, int]],
    client: TeacherClient,
    echo: Callable[[str], None],
    teacher: str,
    sim: str,
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, Any]]:
    judge = NodeJudge(fc)
    lock = threading.Lock()
    regenerated: dict[str, int] = {}
    dropped: dict[str, int] = {}

    def regen(node: str) -> None:
        with lock:
            regenerated[node] = regenerated.get(node, 0) + 1

    def one(path: FlowPath, variant: int) -> dict[str, Any]:
        return render_teacher(fc, path, teacher, sim, conversation_seed(d, variant), complete=client.complete,
                              judge=judge, regenerations=max(0, d.teacher_regenerations), on_regenerate=regen)

    done: dict[int, dict[str, Any]] = {}
    every = max(1, len(jobs) // 10)
    with ThreadPoolExecutor(max_workers=max(1, d.teacher_concurrency), thread_name_prefix="teacher") as pool:
        futures = {pool.submit(one, path, variant): i for i, (_name, path, variant) in enumerate(jobs)}
        try:
            for n, fut in enumerate(as_completed(futures), 1):
                if fut.cancelled():
                    continue
                try:
                    done[futures[fut]] = fut.result()
                except OffNodeReply as exc:
                    dropped[exc.node] = dropped.get(exc.node, 0) + 1
                except Stopped:
                    pass
                except TeacherError as exc:
                    client.fail(exc)
                except Exception as exc:  # a bug or a chart problem: stop the pool, keep what is done, say it once
                    client.fail(TeacherError(f"teacher rendering failed: {type(exc).__name__}: {one_line(exc, 200)}"))
                if client.stop.is_set():
                    for other in futures:
                        other.cancel()
                elif n % every == 0 and n < len(jobs):
                    echo(f"teacher: {n:,}/{len(jobs):,} conversations, {client.calls:,} calls, ${client.usd:.4f} spent")
        except BaseException:  # Ctrl-C: leaving the pool would otherwise wait for every queued conversation
            client.stop.set()
            for other in futures:
                other.cancel()
            raise
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name, _p, _v in jobs}
    for i, (name, _path, _variant) in enumerate(jobs):
        if i in done:
            rows[name].append(done[i])
    report = {
        "model": teacher,
        "simulator": sim,
        "conversations": len(jobs),
        "rendered": len(done),
        "dropped_off_node": sum(dropped.values()),
        "dropped_by_node": dropped,
        "regenerated": sum(regenerated.values()),
        "regenerated_by_node": regenerated,
        "calls": client.calls,
        "failed_attempts": client.failed_attempts,
        "cache_hits": client.cache_hits,
        "prompt_tokens": client.prompt_tokens,
        "completion_tokens": client.completion_tokens,
        "usd": round(client.usd, 6),
        "concurrency": max(1, d.teacher_concurrency),
    }
    if client.failure is None:
        echo(
            f"teacher: {len(done):,} conversations rendered, {report['dropped_off_node']} dropped off-node after "
            f"{d.teacher_regenerations} regeneration(s), {report['regenerated']} turns regenerated; "
            f"{client.calls:,} calls made, {client.cache_hits:,} answered from the cache, ${client.usd:.4f} spent"
        )
    return rows, report
