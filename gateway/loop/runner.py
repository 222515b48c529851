"""The loop's background task: thresholds -> proposals, jobs -> canary -> promotion or rollback.

    handle = await start_loop(app_state)          # in the lifespan, after the ledger starts
    handle.route_for("travel-booking", conv_id)   # on the request path: RouteChoice | None, no I/O
    await handle.stop()

One pass every `loop.poll_interval_s`, in a worker thread (it reads the store and the job folders),
never on the request path. The route table the request path reads is a dict swapped whole at the end
of each pass, so a reader never sees half an update.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
from sqlalchemy import Engine, select

from gateway.loop import canary
from gateway.loop.jobs import JobRunner, pid_runs
from gateway.loop.payback import LoopConfig
from gateway.loop.premine import premine_open
from gateway.loop.proposals import raise_due, workflow_statuses
from gateway.loop.retention import enforce_retention
from gateway.loop.rollup import advance
from gateway.loop.serving import ModelServers
from gateway.proxy.plan import RouteChoice
from gateway.settings import Settings
from gateway.store.loop_schema import jobs, proposals, routes

log = logging.getLogger("tiergate.loop")


@dataclass
class LoopHandle:
    engine: Engine
    settings: Settings
    cfg: LoopConfig
    runner: JobRunner
    table: dict[str, canary.RouteState] = field(default_factory=dict)
    task: asyncio.Task[None] | None = None
    serving: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    servers: ModelServers | None = None  # artifacts the loop serves itself (no loop.compiled_models entry)
    last_error: str | None = None
    passes: int = 0
    last_threshold_check: float = 0.0

    def route_for(self, workflow: str, conversation: str) -> RouteChoice | None:
        return canary.route_for(self.table, workflow, conversation)

    def compare_share(self, on_canary: bool) -> float:
        """Share of compiled-side requests the frontier answers too: more during the canary, less after."""
        return self.cfg.compare_share if on_canary else self.cfg.compiled_compare_share

    def reply_score(self, workflow: str, frontier: str, compiled: str) -> float | None:
        """1.0 when both replies are of the same step of the compiled model's mined graph, else 0.0; None for
        an artifact without one (a flowchart compile: the comparison scores word overlap)."""
        st = self.table.get(workflow)
        if st is None or not st.replies:
            return None
        step = canary.reply_step(frontier, st.replies)
        if step is None:  # the frontier said something no step says: nothing to judge by
            return None
        return 1.0 if canary.reply_step(compiled, st.replies) == step else 0.0

    def record_sample(self, workflow: str, conversation: str, score: float) -> None:
        """Blocking store write of one canary comparison (gateway.proxy.learn calls it in a worker thread)."""
        canary.record_sample(self.engine, workflow, conversation, score=score)

    # ------------------------------------------------------------------ one pass

    def run_once(self, now: float | None = None) -> None:
        """Everything the loop does, once; blocking (tests call it directly)."""
        clock = time.monotonic()
        if now is not None or clock - self.last_threshold_check >= self.cfg.threshold_interval_s:
            self.last_threshold_check = clock
            advance(self.engine, lag_s=self.cfg.rollup_lag_s)
            raise_due(self.engine, self.cfg, self.settings, now=now)
            premine_open(self.engine, self.settings, self.cfg)  # the graph a proposal without a flowchart compiles
            enforce_retention(self.engine, self.settings, now=now)
        for job in self.runner.tick():
            self._on_ready(job)
        self._retry_pending_canaries()
        self._check_routes(now)
        self.table = canary.load_table(self.engine)
        if self.servers is not None:
            for wf in list(self.servers.ports):
                st = self.table.get(wf)
                if st is not None and st.mode == "frontier" and wf not in self.servers.starting:
                    self.servers.stop(wf)  # rolled back (by the loop or a person): the model server goes
        self.passes += 1

    def _fingerprint_of(self, proposal_id: int | None) -> str | None:
        if proposal_id is None:
            return None
        with self.engine.connect() as conn:
            return conn.execute(select(proposals.c.fingerprint).where(proposals.c.id == proposal_id)).scalar()

    def _on_ready(self, job: dict[str, Any]) -> None:
        wf = job["workflow"]
        model = self.cfg.compiled_models.get(wf)
        if not model and self.servers is not None:
            served = self.servers.ensure(wf, job["artifact"])
            if served is None:
                self.servers.starting.add(wf)
                return  # still loading: _retry_pending_canaries comes back on a later pass
            self.servers.starting.discard(wf)
            canary.start_canary(
                self.engine, wf, model=served, share=self.cfg.canary_share, job_id=job["id"],
                artifact=job["artifact"], fingerprint=self._fingerprint_of(job["proposal_id"]),
                serve_pid=self.servers.pid(wf),
            )
            log.info("`%s` canary started: %.0f%% of new conversations on `%s`", wf, self.cfg.canary_share * 100,
                     served)
            return
        if not model or self.settings.model(model) is None:
            log.warning(
                "job %s for `%s` is ready but no model serves it: add `loop.compiled_models: {%s: NAME}` "
                "naming a configured model whose api_base points at `tiergate serve-model %s`",
                job["id"], wf, wf, job["artifact"],
            )
            return
        pid = self._ensure_served(wf, model, job["artifact"])
        if pid is False:
            return  # not up yet: _retry_pending_canaries picks it up on a later pass
        canary.start_canary(
            self.engine, wf, model=model, share=self.cfg.canary_share, job_id=job["id"], artifact=job["artifact"],
            fingerprint=self._fingerprint_of(job["proposal_id"]), serve_pid=pid or None,
        )
        log.info("`%s` canary started: %.0f%% of new conversations on `%s`", wf, self.cfg.canary_share * 100, model)

    def _retry_pending_canaries(self) -> None:
        """Ready jobs whose canary never started (model server still loading, or a restart in between)."""
        with self.engine.connect() as conn:
            ready = conn.execute(select(jobs).where(jobs.c.state == "ready").order_by(jobs.c.id.desc())).mappings().all()
            started = {r.job_id for r in conn.execute(select(routes.c.job_id))}
        seen: set[str] = set()
        for job in ready:
            if job["workflow"] in seen:
                continue
            seen.add(job["workflow"])
            if job["id"] not in started and (job["workflow"] in self.cfg.compiled_models or self.servers is not None):
                self._on_ready(dict(job))

    def _ensure_served(self, workflow: str, model: str, artifact: str) -> int | None | bool:
        """Start `tiergate serve-model` for the artifact on the model's api_base port, once healthy.

        Returns the pid, None when the model is served elsewhere (`loop.serve_command: null`), or
        False while the server is still starting.
        """
        if self.cfg.serve_command is None:
            return None
        mc = self.settings.model(model)
        base = (mc.base_url if mc else None) or ""
        parsed = urlparse(base)
        port = parsed.port or 80
        proc = self.serving.get(workflow)
        if proc is None or proc.poll() is not None:
            cmd = list(self.cfg.serve_command) or [sys.executable, "-m", "gateway.cli", "serve-model", "{artifact}",
                                                   "--port", "{port}"]
            cmd = [c.replace("{artifact}", artifact).replace("{port}", str(port)) for c in cmd]
            logf = open(Path(artifact).parent / "serve.log", "ab")  # the child keeps its own copy of the fd
            proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
            logf.close()
            self.serving[workflow] = proc
            log.info("serving `%s` (%s) as pid %d: %s", workflow, artifact, proc.pid, " ".join(cmd))
        try:
            health = f"{parsed.scheme}://{parsed.hostname}:{port}/healthz"
            if httpx.get(health, timeout=2.0).status_code == 200:
                return proc.pid
        except httpx.HTTPError:
            pass
        return False

    def _check_routes(self, now: float | None) -> None:
        with self.engine.connect() as conn:
            live = [dict(r) for r in conn.execute(select(routes).where(routes.c.mode != "frontier")).mappings()]
        if not live:
            return
        for r in live:
            wf = r["workflow"]
            status = workflow_statuses(self.engine, self.cfg, workflow=wf, now=now)
            fp_now = status[0].stability.fingerprint if status else None
            if r["fingerprint"] and fp_now and fp_now != r["fingerprint"]:
                canary.rollback(self.engine, wf, actor="loop",
                                reason=f"prompt drift: fingerprint {r['fingerprint']} -> {fp_now}; recompile proposed "
                                       "once the new prompt is stable")
                continue
            if self.servers is not None and wf not in self.cfg.compiled_models and r["artifact"]:
                self.servers.ensure(wf, r["artifact"])  # adopt or restart the loop's own model server
            elif r["serve_pid"] and wf not in self.serving and not pid_runs(r["serve_pid"], r["artifact"] or ""):
                # the model server died with a previous gateway: bring it back
                self._ensure_served(wf, r["model"], r["artifact"])
            metrics = canary.canary_metrics(self.engine, wf, r["since"])
            action, reason = canary.decide(metrics, self.cfg, r["mode"])
            if action == "rollback":
                canary.rollback(self.engine, wf, reason=reason, actor="loop")
                log.warning("`%s` rolled back to the frontier: %s", wf, reason)
            elif action == "promote":
                canary.promote(self.engine, wf, reason=reason)
                log.info("`%s` promoted to the compiled model: %s", wf, reason)

    # ------------------------------------------------------------------ task

    async def _run(self) -> None:
        while True:
            try:
                await asyncio.to_thread(self.run_once)
                self.last_error = None
            except Exception as exc:  # the loop must outlive a store hiccup; say what happened
                if str(exc) != self.last_error:
                    log.exception("loop pass failed: %s", exc)
                self.last_error = str(exc)
            await asyncio.sleep(self.cfg.poll_interval_s)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass
            self.task = None
        self.runner.close()
        for proc in self.serving.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.serving.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.serving.clear()
        if self.servers is not None:
            await asyncio.to_thread(self.servers.close)


def make_handle(engine: Engine, settings: Settings, prices: Any = None) -> LoopHandle:
    cfg = LoopConfig.from_dict(settings.loop)
    return LoopHandle(engine=engine, settings=settings, cfg=cfg, runner=JobRunner(engine, cfg),
                      servers=ModelServers(settings, cfg, prices) if cfg.serve_command is not None else None)


async def start_loop(state: Any) -> LoopHandle:
    """Start the loop for an AppState (needs `.engine` and `.settings`); call `await handle.stop()` at exit."""
    handle = make_handle(state.engine, state.settings, getattr(state, "prices", None))
    handle.table = await asyncio.to_thread(canary.load_table, state.engine)
    handle.task = asyncio.create_task(handle._run(), name="tiergate-loop")
    return handle
