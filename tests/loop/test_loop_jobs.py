"""Compile jobs in worker processes: states followed from the compiler's files, restarts survived."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest
from loop_helpers import FLOWCHART, HERE, ledger_rows, seed, wait_for
from sqlalchemy import Engine

from gateway.loop.jobs import JobRunner, get_job, observe
from gateway.loop.payback import LoopConfig
from gateway.loop.proposals import approve, raise_due
from gateway.settings import parse_settings

pytest_plugins = ["loop_fixtures"]  # store, start_loop_gateway

SETTINGS = parse_settings(f'{{"workflows": [{{"name": "travel-booking", "flowchart": "{FLOWCHART}"}}]}}', "<t>")


def cfg_for(tmp_path: Path, **kw: object) -> LoopConfig:
    return LoopConfig(jobs_dir=str(tmp_path / "jobs"), compile_command=(sys.executable, str(HERE / "fake_compile.py")),
                      compile_cost_usd=0.01, min_conversations=1, stability_window_s=0, **kw)  # type: ignore[arg-type]


def approved_job(store: Engine, cfg: LoopConfig) -> int:
    seed(store, ledger_rows("travel-booking", 3))
    [pid] = raise_due(store, cfg)
    return int(approve(store, pid, by="ana", settings=SETTINGS, cfg=cfg)[1]["id"])


def run_until(runner: JobRunner, job_id: int, pred, timeout: float = 20.0) -> dict:  # type: ignore[no-untyped-def]
    seen: list[str] = []

    def step() -> dict | None:  # type: ignore[type-arg]
        runner.tick()
        job = get_job(runner.engine, job_id)
        if not seen or seen[-1] != job["state"]:
            seen.append(job["state"])
        return job if pred(job) else None

    job = wait_for(step, timeout=timeout, interval=0.05)
    assert job, f"job {job_id} never got there; states seen: {seen}, now {get_job(runner.engine, job_id)}"
    job["seen"] = seen
    return job


def test_observe_reads_the_compilers_files(tmp_path: Path) -> None:
    out = tmp_path / "job"
    assert observe(out) == ("generating", 0.0, {})
    (out / "data").mkdir(parents=True)
    (out / "data" / "meta.json").write_text('{"paths": 3, "conversations": 90}')
    assert observe(out)[:2] == ("training", 0.1)
    (out / "run").mkdir()
    (out / "run" / "progress.json").write_text('{"status": "running", "step": 50, "max_steps": 100}')
    state, progress, detail = observe(out)
    assert state == "training" and progress == pytest.approx(0.1 + 0.75 * 0.5) and detail["train"]["step"] == 50
    (out / "run" / "progress.json").write_text('{"status": "finished", "step": 100, "max_steps": 100}')
    assert observe(out)[0] == "evaluating"
    (out / "artifact").mkdir()
    (out / "artifact" / "manifest.json").write_text('{"workflow": "travel-booking"}')
    assert observe(out)[:2] == ("ready", 1.0)
    (out / "progress.json").write_text('{"stage": "training", "fraction": 0.5}')  # the CLI's own summary wins
    assert observe(out)[:2] == ("training", pytest.approx(0.475))


def test_job_runs_to_ready_in_a_worker_process(store: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_COMPILE_STEPS", "15")
    cfg = cfg_for(tmp_path)
    job_id = approved_job(store, cfg)
    runner = JobRunner(store, cfg)
    job = run_until(runner, job_id, lambda j: j["state"] == "ready")
    assert "training" in job["seen"] and job["seen"][-1] == "ready"
    assert job["progress"] == 1.0 and job["attempts"] == 1 and job["pid"] is None and job["error"] is None
    assert job["artifact"] == str(Path(job["out_dir"]) / "artifact")
    assert (Path(job["artifact"]) / "manifest.json").is_file()
    assert "gate passed" in (Path(job["out_dir"]) / "compile.log").read_text()


def test_failed_gate_fails_the_job_with_the_reason(store: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_COMPILE_FAIL", "1")
    cfg = cfg_for(tmp_path)
    job_id = approved_job(store, cfg)
    job = run_until(JobRunner(store, cfg), job_id, lambda j: j["state"] == "failed")
    assert job["error"] == "eval gate failed: node accuracy 0.41 < 0.95"


def test_missing_compiler_fails_cleanly(store: Engine, tmp_path: Path) -> None:
    cfg = LoopConfig(**{**cfg_for(tmp_path).__dict__, "compile_command": ("/nonexistent/tiergate",)})
    job_id = approved_job(store, cfg)
    job = run_until(JobRunner(store, cfg), job_id, lambda j: j["state"] == "failed")
    assert job["error"].startswith("cannot start `/nonexistent/tiergate`") and "loop.compile_command" in job["error"]


def _kill_mid_training(store: Engine, cfg: LoopConfig, job_id: int) -> dict:  # type: ignore[type-arg]
    """Gateway and worker die together (a host crash): kill the compile's process group, drop the runner."""
    runner = JobRunner(store, cfg)
    job = run_until(runner, job_id, lambda j: j["state"] == "training" and (j["detail"].get("train") or {}).get("step", 0) >= 3)
    os.killpg(job["pid"], signal.SIGKILL)
    runner.children[job_id].wait()
    return job


def test_job_killed_mid_training_resumes_after_restart(store: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_COMPILE_STEPS", "40")
    cfg = cfg_for(tmp_path, max_resumes=1)
    job_id = approved_job(store, cfg)
    killed = _kill_mid_training(store, cfg, job_id)
    job = run_until(JobRunner(store, cfg), job_id, lambda j: j["state"] == "ready")  # a fresh gateway's runner
    assert job["attempts"] == 2 and job["detail"]["resumed"] is True and job["error"] is None
    log = (Path(job["out_dir"]) / "compile.log").read_text()
    assert "resume:" in log
    resumed_at = int(log.split("resuming from step ")[1].split()[0])
    assert resumed_at >= killed["detail"]["train"]["step"] >= 3  # the trainer's checkpoint, not step 0


def test_job_killed_mid_training_fails_with_the_reason_when_resumes_are_spent(
    store: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_COMPILE_STEPS", "40")
    cfg = cfg_for(tmp_path, max_resumes=0)
    job_id = approved_job(store, cfg)
    killed = _kill_mid_training(store, cfg, job_id)
    job = run_until(JobRunner(store, cfg), job_id, lambda j: j["state"] == "failed")
    assert job["error"].startswith(f"the compile process (pid {killed['pid']}) vanished while training")
    assert "loop.max_resumes=0" in job["error"]


def test_worker_outlives_a_gateway_restart_and_is_followed(store: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_COMPILE_STEPS", "30")
    cfg = cfg_for(tmp_path)
    job_id = approved_job(store, cfg)
    first = JobRunner(store, cfg)
    job = run_until(first, job_id, lambda j: j["state"] == "training")
    child = first.children[job_id]
    first.close()  # the gateway goes away; its worker keeps training
    second = JobRunner(store, cfg)
    done = run_until(second, job_id, lambda j: j["state"] == "ready" or j["state"] == "failed")
    child.wait()
    assert done["state"] == "ready" and done["attempts"] == 1 and job["pid"] == child.pid


def test_queued_job_is_started_once(store: Engine, tmp_path: Path) -> None:
    cfg = cfg_for(tmp_path)
    job_id = approved_job(store, cfg)
    a, b = JobRunner(store, cfg), JobRunner(store, cfg)
    a.tick()
    b.tick()
    assert list(a.children) == [job_id] and b.children == {}
    run_until(a, job_id, lambda j: j["state"] == "ready")


def test_queued_jobs_wait_for_a_free_slot_oldest_first(
    store: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_COMPILE_STEPS", "10")
    settings = parse_settings(
        f'{{"workflows": [{{"name": "travel-booking", "flowchart": "{FLOWCHART}"}}, '
        f'{{"name": "trips-b", "flowchart": "{FLOWCHART}"}}]}}', "<t>")
    cfg = cfg_for(tmp_path)  # max_running_jobs defaults to 1
    seed(store, ledger_rows("travel-booking", 3) + ledger_rows("trips-b", 3))
    first, second = (int(approve(store, pid, by="ana", settings=settings, cfg=cfg)[1]["id"])
                     for pid in sorted(raise_due(store, cfg)))
    runner = JobRunner(store, cfg)
    runner.tick()
    assert list(runner.children) == [first]
    assert get_job(store, second)["state"] == "queued" and get_job(store, second)["pid"] is None
    run_until(runner, first, lambda j: j["state"] == "ready")
    assert get_job(store, second)["state"] == "queued" or second in runner.children
    run_until(runner, second, lambda j: j["state"] == "ready")
    assert LoopConfig.from_dict({"max_running_jobs": 2}).max_running_jobs == 2
    with pytest.raises(ValueError, match="max_running_jobs"):
        LoopConfig.from_dict({"max_running_jobs": 0})
