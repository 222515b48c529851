"""The demo's compile, as a newcomer watches it: the time to expect before training starts, one progress
line per poll (tokens/s, held-out loss, ETA) and, if the gate held the model back, what to try next."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

TRAIN_SPEED_SHARE = 1.0  # real training tokens/s over the probe's: 3,450-3,780 against 3,405 in one demo run
# when the compile stopped over seeds 0-4 (docs/bench-compile.md): the demo's estimate says so
EARLY_STOPS = "all five stopped early, at 45-87%"
EARLY_STOP_SHARE = 0.45  # seed 0, the demo's (seeds 1-4: 46%, 65%, 87%, 50%)


def expected_compile(compile_sets: tuple[str, ...]) -> str | None:
    """'a budget of N tokens, about M min here' from the compile config and this machine's speed now.

    Said before the compile starts (issue 17: a newcomer should know what to wait for). The speed comes
    from a few forward-backward passes of the scratch model in a separate process with the compile's
    thread count (``compiler.budget``; in this process the gateway's threads would slow it); the run
    itself stops early when the held-out loss shows the gate will pass.
    """
    import subprocess
    import sys

    try:
        from compiler.config import load_compile_config
        from compiler.train import parse_sets

        path = Path("configs/compile.yaml")
        cfg = load_compile_config(path if path.is_file() else None, parse_sets(list(compile_sets)))
        if not cfg.train.max_tokens:
            return None
        probe = (f"from compiler.budget import measure_tokens_per_s; print(measure_tokens_per_s("
                 f"{cfg.train.base_model!r}, vocab_size={cfg.train.vocab_size}, batch_size={cfg.train.batch_size}, "
                 f"threads={train_threads()}))")
        out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=180)
        speed = float(out.stdout.strip().splitlines()[-1]) * TRAIN_SPEED_SHARE
    except Exception:  # an estimate only: the compile itself reports what is wrong
        return None
    if speed <= 0:
        return None
    most = cfg.train.max_tokens / speed / 60
    if cfg.train.stop_eval_loss is None:
        return f"a budget of {cfg.train.max_tokens:,} tokens: about {most:.0f} min at {speed:,.0f} tokens/s measured now"
    return (f"a budget of {cfg.train.max_tokens:,} tokens, about {most:.0f} min at most at {speed:,.0f} tokens/s "
            f"measured now; it stops early once two held-out checks in a row show loss <= {cfg.train.stop_eval_loss} and every "
            f"turn's first token likely (over seeds 0-4, "
            f"{EARLY_STOPS} of the budget: about {most * EARLY_STOP_SHARE:.0f} min here), then about a "
            "minute of evaluation")


def train_threads() -> int:
    """Torch threads for the demo's compile: all cores but one, which the demo's gateway, simulated
    providers and live traffic keep busy meanwhile (two threads on a busy 2-core machine run several
    times slower than one: they wait on each other)."""
    return max(1, (os.cpu_count() or 2) - 1)


def progress_line(job: dict[str, Any]) -> str:
    detail = job.get("detail") or {}
    train = detail.get("train") or {}
    line = f"   {job.get('state', 'queued')} {job.get('progress', 0) * 100:3.0f}%"
    if train.get("step") is not None and job.get("state") == "training":
        line += f"  step {train.get('step')}/{train.get('max_steps')}"
        if train.get("tokens_per_s"):
            line += f"  {train['tokens_per_s']:,.0f} tokens/s"
        if train.get("eval_loss") is not None:
            line += f"  held-out loss {train['eval_loss']:.3f}"
        if train.get("eta_s") is not None:
            line += f"  ETA {train['eta_s'] / 60:.1f} min"
    return line


def what_to_try(job: dict[str, Any]) -> str:
    """The next thing to try when the gate held the model back, from how far the training got."""
    train = (job.get("detail") or {}).get("train") or {}
    loss = train.get("best_eval_loss")
    hint = []
    if loss is not None:
        hint.append(f"the best held-out loss was {loss:.3f}")
    return ("; ".join(hint) + ("; " if hint else "") +
            "give it more tokens (--compile-set train.max_tokens=2000000), or another seed "
            "(--compile-set data.seed=1 --compile-set train.seed=1); `tiergate compile` prints the same gate report, "
            "and docs/bench-compile.md has the pass rate over seeds")
