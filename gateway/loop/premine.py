"""What a compile from traffic will compile, mined before anyone approves it; and an attached flowchart.

    premine_open(engine, settings, cfg)   # the loop: each open proposal without a flowchart gets its mined graph
    latest_mined(cfg, "acme")             # -> folder with mined/{chart.yaml, chart.mmd, report.json}, or None
    attach_flowchart(cfg, "acme", text)   # a reviewed (edited) chart becomes the workflow's flowchart

When a proposal opens for a workflow that has no flowchart, the loop exports its captured conversations
into the folder its compile job will use (`JOBS_DIR/<workflow>-p<proposal>/traffic.jsonl`) and runs the
compiler's mining stage there (`python -m compiler.traffic_compile mine`, a subprocess: the gateway never
imports the compiler). The proposal and workflow pages show that graph, its fitness and coverage and
how many conversations it came from; the job compiles from the same export, so what was shown is what
is compiled. A chart attached from the page (`JOBS_DIR/flowcharts/<workflow>.yaml`, checked by
`tiergate flowchart check`) makes the next approval a flowchart compile instead.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select

from gateway.errors import InvalidRequest
from gateway.loop.jobs import TRAFFIC_FILE, export_traffic
from gateway.loop.payback import LoopConfig
from gateway.loop.proposals import compile_source
from gateway.settings import Settings
from gateway.store.loop_schema import proposals

log = logging.getLogger("tiergate.premine")


def safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:80]


def attached_path(cfg: LoopConfig, workflow: str) -> Path:
    return cfg.attached_flowchart(workflow)


def latest_mined(cfg: LoopConfig, workflow: str) -> Path | None:
    """The newest proposal folder of the workflow holding a mined graph (mined/report.json)."""
    best: tuple[int, Path] | None = None
    for report in Path(cfg.jobs_dir).resolve().glob(f"{safe(workflow)}-p*/mined/report.json"):
        folder = report.parent.parent
        try:
            pid = int(folder.name.rsplit("-p", 1)[1])
        except (IndexError, ValueError):
            continue
        if best is None or pid > best[0]:
            best = (pid, folder)
    return best[1] if best else None


def mined_summary(folder: Path) -> dict[str, Any] | None:
    """The figures the pages show: fitness, coverage, conversations, nodes (from mined/report.json)."""
    try:
        report = json.loads((folder / "mined" / "report.json").read_text())
    except (OSError, ValueError):
        return None
    return report if isinstance(report, dict) else None


def premine(engine: Engine, cfg: LoopConfig, workflow: str, proposal_id: int, timeout: float = 600.0) -> Path | None:
    """Export and mine one proposal's workflow into its job folder; the folder, or None when mining failed."""
    folder = Path(cfg.jobs_dir).resolve() / f"{safe(workflow)}-p{proposal_id}"
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / TRAFFIC_FILE).is_file():
        export_traffic(engine, workflow, folder / TRAFFIC_FILE)
    cmd = [sys.executable, "-m", "compiler.traffic_compile", "mine", str(folder / TRAFFIC_FILE), "--out", str(folder),
           "--name", workflow]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("mining `%s` for proposal %d failed: %s", workflow, proposal_id, exc)
        return None
    if done.returncode != 0:
        (folder / "mined-error.txt").write_text(done.stderr[-2000:])
        log.warning("mining `%s` for proposal %d failed: %s", workflow, proposal_id, done.stderr.strip()[-300:])
        return None
    return folder


def premine_open(engine: Engine, settings: Settings, cfg: LoopConfig, limit: int = 1) -> int:
    """Mine up to `limit` open proposals of workflows without a flowchart that have no mined graph yet."""
    with engine.connect() as conn:
        open_props = conn.execute(select(proposals.c.id, proposals.c.workflow)
                                  .where(proposals.c.status == "open").order_by(proposals.c.id)).all()
    done = 0
    for pid, wf in open_props:
        folder = Path(cfg.jobs_dir).resolve() / f"{safe(wf)}-p{pid}"
        if (folder / "mined" / "report.json").is_file() or (folder / "mined-error.txt").is_file():
            continue
        if not compile_source(engine, settings, cfg, wf).from_traffic:
            continue
        premine(engine, cfg, wf, pid)
        done += 1
        if done >= limit:
            break
    return done


def attach_flowchart(cfg: LoopConfig, workflow: str, text: str) -> Path:
    """Check a chart with `tiergate flowchart check` and make it the workflow's flowchart for the next approval."""
    if not text.strip():
        raise InvalidRequest("The flowchart is empty; paste the mined YAML (edited or not) and attach it again.")
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as fh:
        fh.write(text)
        tmp = Path(fh.name)
    try:
        done = subprocess.run([sys.executable, "-m", "gateway.cli", "flowchart", "check", str(tmp)],
                              capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            why = " ".join((done.stderr or done.stdout).split())[:400]
            raise InvalidRequest(f"The flowchart does not pass `tiergate flowchart check`: {why}")
        path = attached_path(cfg, workflow)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.replace(path)
        return path
    finally:
        tmp.unlink(missing_ok=True)
