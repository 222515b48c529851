"""`tiergate demo --yes --exit` end to end, as a real process.

Three runs: one with stand-ins for the compiler and the model server (tests/loop/fake_compile.py writes the
compiler's files; a simulated provider serves the "compiled" model), which walks the whole loop through
canary, promotion and the switch in seconds; one with the real `tiergate compile` on the scratch model
for two steps, which cannot pass the eval gate and must end with the gate's reason, what to try, nothing
switched and a non-zero exit; and the newcomer's command as it is, real compiler and model server, which
must reach the switch (minutes: the CI runs it once).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from loop_helpers import HERE, ROOT
from sqlalchemy import func, select

from gateway.demo.scene import compiler_ready
from gateway.store.engine import make_engine
from gateway.store.loop_schema import switches
from gateway.store.schema import requests

pytestmark = pytest.mark.slow
RUNNER = "import typer; from gateway.loop.cli import register; app = typer.Typer(); register(app); app()"


def demo(tmp_path: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-c", RUNNER, "demo", "--yes", "--exit", "--conversations", "16", "--port", "0",
           "--compile-cost", "0.2", "--workdir", str(tmp_path / "demo"), *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def test_demo_walks_the_whole_loop(tmp_path: Path) -> None:
    serve = (f"{sys.executable} -m gateway.demo.simulated --port {{port}} --name travel-booking-compiled "
             "--script {script} --miss-share 0.02")
    run = demo(tmp_path, "--compile-steps", "6", "--compile-command", f"{sys.executable} {HERE / 'fake_compile.py'}",
               "--serve-command", serve)
    out = run.stdout
    assert run.returncode == 0, out + run.stderr
    for line in ("SIMULATION", "SIMULATED gpt-4o ", "$2.50 / $10.00 per M tokens", "1. Replaying 16",
                 "2. Proposal #1: compile `travel-booking`", "approved by `demo --yes`", "eval gate passed",
                 "traffic goes on meanwhile", "on the live traffic", "4. Canary: 50%",
                 "switch: frontier -> canary (loop)", "switch: canary -> compiled (loop): quality", "5. Switched",
                 "at the requested model (gpt-4o)", "with routing and trimming", "cheaper than the requested model",
                 "compiled ", "routed ", "frontier ", "Dashboard: http://"):
        assert line in out, f"`{line}` missing from the demo's output:\n{out}"
    engine = make_engine(f"sqlite:///{tmp_path / 'demo' / 'tiergate.db'}")
    with engine.connect() as conn:
        tiers = dict(conn.execute(select(requests.c.tier, func.count()).group_by(requests.c.tier)).all())
        modes = [r.to_mode for r in conn.execute(select(switches).order_by(switches.c.id))]
    engine.dispose()
    assert {"frontier", "routed", "compiled", "shadow"} <= set(tiers)
    assert modes == ["canary", "compiled"]


@pytest.mark.skipif(compiler_ready() is not None, reason=f"needs the compile extra: {compiler_ready()}")
def test_demo_with_the_real_compiler_stops_at_the_gate(tmp_path: Path) -> None:
    run = demo(tmp_path, "--compile-steps", "2", "--compile-set", "train.batch_size=2",
               "--compile-set", "data.variants_per_path=2", "--compile-set", "data.max_eval_conversations=3",
               timeout=400)
    out = run.stdout
    assert "3. Compiling (scratch model, 2 steps)" in out and "evaluating" in out
    # two steps on CPU: the gate holds the model back, the demo says why and what to try, and a demo
    # that did not demonstrate is not a success under --exit
    assert run.returncode == 1, out + run.stderr
    assert "The compile did not produce a model after" in out and "eval gate failed: node accuracy" in out
    assert "Nothing was switched" in out and "What to try:" in out and "train.max_tokens" in out
    assert "with routing and trimming" in out and "not switched" in out
    assert "ended without a switch" in run.stderr
    assert (tmp_path / "demo" / "jobs").is_dir()


@pytest.mark.skipif(compiler_ready() is not None, reason=f"needs the compile extra: {compiler_ready()}")
def test_demo_with_the_real_compiler_reaches_the_switch(tmp_path: Path) -> None:
    """The newcomer's path end to end: the real scratch compile (token budget, early stop), the real
    `tiergate serve-model`, canary and promotion on live traffic, the headline. About 5 minutes on a
    quiet 2-core CPU (docs/benchmarks.md); the timeout leaves room for a slow, shared one."""
    run = demo(tmp_path, timeout=1800)
    out = run.stdout
    assert run.returncode == 0, out + run.stderr
    for line in ("3. Compiling (scratch model, a budget of", "tokens/s measured now", "ETA",
                 "eval gate passed", "conversations of live traffic meanwhile", "4. Canary", "5. Switched",
                 "with routing and trimming", "cheaper than the requested model", "Dashboard: http://"):
        assert line in out, f"`{line}` missing from the demo's output:\n{out}"
    engine = make_engine(f"sqlite:///{tmp_path / 'demo' / 'tiergate.db'}")
    with engine.connect() as conn:
        tiers = dict(conn.execute(select(requests.c.tier, func.count()).group_by(requests.c.tier)).all())
        modes = [r.to_mode for r in conn.execute(select(switches).order_by(switches.c.id))]
    engine.dispose()
    assert tiers.get("compiled", 0) > 0 and modes == ["canary", "compiled"]


def test_demo_refuses_a_taken_port_and_talks_to_nothing_there(tmp_path: Path) -> None:
    # another server (here a plain socket that would log any request) holds the port the demo is told to use
    import socket

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen(8)
        held.settimeout(0.5)
        port = held.getsockname()[1]
        cmd = [sys.executable, "-c", RUNNER, "demo", "--yes", "--exit", "--port", str(port),
               "--workdir", str(tmp_path / "demo")]
        run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
        with pytest.raises(TimeoutError):
            held.accept()  # the demo never connected to it
    assert run.returncode == 2, run.stdout[-2000:] + run.stderr[-2000:]
    assert f"Port {port} on 127.0.0.1 is taken" in run.stderr + run.stdout and "--port 0" in run.stderr + run.stdout
    assert "Traceback" not in run.stderr
