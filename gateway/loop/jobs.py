"""Compile jobs: a `tiergate compile` worker process per job, followed through the files it writes.

    runner = JobRunner(engine, cfg)
    runner.tick()          # from the loop's thread: start queued jobs, follow running ones, settle ended ones
    list_jobs(engine)      # plain dicts for the API and the page

Why a process and files: a compile trains a model for minutes or hours; it must never share the
gateway's event loop or die with it. The job row holds the pid and the output folder; the compiler
writes its stages there (data/meta.json, run/progress.json, eval/, artifact/manifest.json), so any
gateway process, including one restarted after a crash, can tell where the job is. A job whose
process vanished (gateway and worker killed together) is started again on the same folder, where the
trainer resumes from its last checkpoint, up to `loop.max_resumes` times; then it fails with the reason.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select, update

from gateway.errors import NotFound
from gateway.loop.payback import LoopConfig
from gateway.store.loop_schema import ACTIVE_JOB_STATES, jobs

log = logging.getLogger("tiergate.jobs")

TRAFFIC_FILE = "traffic.jsonl"  # a workflow's captured conversations, exported for a compile without a flowchart


def export_traffic(engine: Engine, workflow: str, path: Path) -> int:
    """Write the workflow's captured conversations (`tiergate export`'s format) atomically; their count."""
    from gateway.store.transcripts import export_lines

    tmp = path.with_name(f".{path.name}.partial")
    n = 0
    with open(tmp, "wb") as fh:
        for line in export_lines(engine, workflow):
            fh.write(line)
            n += 1
    os.replace(tmp, path)
    return n


# share of the whole job each stage ends at, for one progress bar over the compile
STAGE_END = {"queued": 0.0, "generating": 0.1, "training": 0.85, "evaluating": 0.98, "ready": 1.0}


def _row(r: Any) -> dict[str, Any]:
    d = dict(r)
    d["detail"] = json.loads(d["detail"]) if d.get("detail") else {}
    return d


def list_jobs(engine: Engine, workflow: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    stmt = select(jobs).order_by(jobs.c.id.desc()).limit(limit)
    if workflow:
        stmt = stmt.where(jobs.c.workflow == workflow)
    with engine.connect() as conn:
        return [_row(r) for r in conn.execute(stmt).mappings()]


def get_job(engine: Engine, job_id: int) -> dict[str, Any]:
    with engine.connect() as conn:
        row = conn.execute(select(jobs).where(jobs.c.id == job_id)).mappings().first()
    if row is None:
        raise NotFound(f"No job `{job_id}`; list them with GET /api/jobs.")
    return _row(row)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def observe(out_dir: str | Path) -> tuple[str, float, dict[str, Any]]:
    """(state, progress 0..1, detail) of a compile from the files in its folder; pure reading.

    A top-level `progress.json` with a `stage` key (the compile CLI's own summary) wins; otherwise
    the stage is inferred from what the pipeline has written so far.
    """
    out = Path(out_dir)
    own = _read_json(out / "progress.json")
    if own and own.get("stage") in STAGE_END:
        stage = str(own["stage"])
        frac = float(own.get("fraction") or own.get("progress") or 0.0)
        lo = max((v for v in STAGE_END.values() if v < STAGE_END[stage]), default=0.0)
        return stage, lo + (STAGE_END[stage] - lo) * min(1.0, frac), own
    manifest = _read_json(out / "artifact" / "manifest.json")
    if manifest is not None:
        return "ready", 1.0, {"manifest": {k: manifest.get(k) for k in ("workflow", "base_model", "eval", "created")}}
    train = _read_json(out / "run" / "progress.json")
    if (out / "eval").exists() or (train and train.get("status") == "finished"):
        return "evaluating", STAGE_END["training"], {"train": train or {}}
    if train is not None:
        step, total = int(train.get("step") or 0), int(train.get("max_steps") or 0)
        frac = step / total if total else 0.0
        lo = STAGE_END["generating"]
        return "training", lo + (STAGE_END["training"] - lo) * min(1.0, frac), {"train": train}
    meta = _read_json(out / "data" / "meta.json")
    if meta is not None:
        return "training", STAGE_END["generating"], {"data": {k: meta.get(k) for k in ("paths", "conversations")}}
    return "generating", 0.0, {}


def failure_reason(out_dir: str | Path, rc: int | None) -> str:
    """Why a compile ended without an artifact, in one line: the gate's reasons, else the log's last line."""
    out = Path(out_dir)
    result = _read_json(out / "compile.json")
    if result and result.get("reasons"):
        return "eval gate failed: " + "; ".join(str(r) for r in result["reasons"])
    gate = out / "gate-report.md"
    if gate.is_file():
        return f"eval gate failed; see {gate}"
    tail = ""
    try:
        lines = [ln.strip() for ln in (out / "compile.log").read_text(errors="replace").splitlines() if ln.strip()]
        tail = lines[-1][:300] if lines else ""
    except OSError:
        pass
    code = f"exit code {rc}" if rc is not None else "the process vanished"
    return f"compile ended with {code}" + (f": {tail}" if tail else "") + f" (log: {out / 'compile.log'})"


def pid_runs(pid: int | None, out_dir: str) -> bool:
    """True when `pid` is alive and is this job's compile (a reused pid is someone else's)."""
    if not pid or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
        return out_dir.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # no /proc (macOS): trust kill(0)


class JobRunner:
    """Starts and follows compile processes; all its methods are blocking (call from a thread)."""

    def __init__(self, engine: Engine, cfg: LoopConfig):
        self.engine = engine
        self.cfg = cfg
        self.children: dict[int, subprocess.Popen[bytes]] = {}

    def command(self, flowchart: str, out_dir: str) -> list[str]:
        """`compile FLOWCHART --out DIR ...`; without a flowchart, `compile --from-traffic DIR/traffic.jsonl ...`."""
        base = list(self.cfg.compile_command) or [sys.executable, "-m", "gateway.cli", "compile"]
        if not flowchart:
            return [*base, "--from-traffic", str(Path(out_dir) / TRAFFIC_FILE), "--out", out_dir,
                    *self.cfg.compile_args, *self.cfg.traffic_compile_args]
        return [*base, flowchart, "--out", out_dir, *self.cfg.compile_args]

    def _update(self, job_id: int, **values: Any) -> None:
        if "detail" in values and not isinstance(values["detail"], str):
            values["detail"] = json.dumps(values["detail"], default=str)
        with self.engine.begin() as conn:
            conn.execute(update(jobs).where(jobs.c.id == job_id).values(updated=time.time(), **values))

    def _spawn(self, job: dict[str, Any], *, resumed: bool) -> None:
        out = Path(job["out_dir"])
        out.mkdir(parents=True, exist_ok=True)
        if not job["flowchart"] and not (out / TRAFFIC_FILE).is_file():
            exported = export_traffic(self.engine, job["workflow"], out / TRAFFIC_FILE)
            log.info("job %s (%s): exported %d captured conversations", job["id"], job["workflow"], exported)
        cmd = self.command(job["flowchart"], str(out))
        with open(out / "compile.log", "ab") as fh:
            fh.write(f"\n# {time.strftime('%Y-%m-%d %H:%M:%S')} {'resume' if resumed else 'start'}: "
                     f"{' '.join(cmd)}\n".encode())
            fh.flush()
            try:
                proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        start_new_session=True)  # outlives the gateway; Ctrl-C is not its
            except OSError as exc:
                self._update(job["id"], state="failed", error=f"cannot start `{cmd[0]}`: {exc.strerror}; "
                             "set loop.compile_command in the config", pid=None)
                return
        self.children[job["id"]] = proc
        detail = dict(job.get("detail") or {}) | ({"resumed": True} if resumed else {})
        state = "generating" if job["state"] == "queued" else job["state"]
        self._update(job["id"], pid=proc.pid, attempts=job["attempts"] + 1, state=state, detail=detail)
        log.info("job %s (%s): compile %s as pid %d", job["id"], job["workflow"],
                 "resumed" if resumed else "started", proc.pid)

    def _claim(self, job_id: int) -> bool:
        """Only one gateway starts a queued job: a conditional update decides."""
        with self.engine.begin() as conn:
            res = conn.execute(
                update(jobs).where(jobs.c.id == job_id, jobs.c.state == "queued", jobs.c.pid.is_(None))
                .values(pid=-1, updated=time.time())
            )
        return res.rowcount == 1

    def tick(self) -> list[dict[str, Any]]:
        """One pass over active jobs; returns the jobs that reached `ready` in this pass."""
        with self.engine.connect() as conn:
            active = [_row(r) for r in conn.execute(
                select(jobs).where(jobs.c.state.in_(ACTIVE_JOB_STATES)).order_by(jobs.c.id)).mappings()]
        done = []
        # oldest first; a queued job waits while `max_running_jobs` compiles (of any workflow) run
        running_now = sum(1 for j in active if j["pid"] is not None)
        for job in active:
            if job["state"] == "queued" and job["pid"] is None:
                if running_now < self.cfg.max_running_jobs and self._claim(job["id"]):
                    self._spawn(job, resumed=False)
                    running_now += 1
                continue
            child = self.children.get(job["id"])
            rc = child.poll() if child is not None else None
            running = rc is None if child is not None else pid_runs(job["pid"], job["out_dir"])
            state, progress, detail = observe(job["out_dir"])
            detail["resumed"] = bool((job.get("detail") or {}).get("resumed", False))
            if running:
                if state != "ready":
                    self._update(job["id"], state=state, progress=progress, detail=detail)
                continue
            self.children.pop(job["id"], None)
            if state == "ready":
                artifact = str(Path(job["out_dir"]) / "artifact")
                self._update(job["id"], state="ready", progress=1.0, detail=detail, artifact=artifact, pid=None)
                done.append(get_job(self.engine, job["id"]))
                log.info("job %s (%s): ready, artifact %s", job["id"], job["workflow"], artifact)
            elif child is not None or (Path(job["out_dir"]) / "compile.json").exists():
                reason = failure_reason(job["out_dir"], rc)
                self._update(job["id"], state="failed", error=reason, pid=None)
                log.warning("job %s (%s) failed: %s", job["id"], job["workflow"], reason)
            elif job["attempts"] <= self.cfg.max_resumes:
                self._spawn(job, resumed=True)  # the worker died with a previous gateway: pick it up
            else:
                reason = (f"the compile process (pid {job['pid']}) vanished while {state} and "
                          f"{job['attempts']} attempt(s) are spent (loop.max_resumes={self.cfg.max_resumes}); "
                          "approve a new proposal or raise max_resumes")
                self._update(job["id"], state="failed", error=reason, pid=None)
                log.warning("job %s (%s) failed: %s", job["id"], job["workflow"], reason)
        return done

    def close(self) -> None:
        """Leave running compiles alone (they survive a restart); just forget the handles."""
        self.children.clear()
