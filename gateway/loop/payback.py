"""Payback arithmetic for compiling a workflow, from plain numbers, plus the `loop:` config it reads.

    cfg = LoopConfig.from_dict(settings.loop)
    usage = WorkflowUsage(conversations=800, requests=4000, cost_usd=96.0, prompt_tokens=6_000_000,
                          completion_tokens=400_000, static_prompt_tokens=900, days=4.0)
    p = payback(usage, cfg)
    p.payback_conversations, p.days_to_payback, p.threshold_conversations

Why pure: the numbers behind a proposal must be checkable by hand and by table-driven tests; the
ledger queries that feed them live in `proposals.py`. Defaults are published figures: an 8B model on
one A100 at $0.05 per million input and $0.23 per million output tokens, and $65 for a compile.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any


class LoopConfigError(ValueError):
    """The config's `loop:` section is unusable; the message names the key and the fix."""


@dataclass(frozen=True)
class LoopConfig:
    """The `loop:` section of the gateway config; each field's comment is its documentation.

    Unknown keys are refused so a typo never silently falls back to a default.
    """

    # --- payback
    self_hosted_input_per_million: float = 0.05  # USD per million input tokens on the compiled model
    self_hosted_output_per_million: float = 0.23  # USD per million output tokens on the compiled model
    compile_cost_usd: float | None = 65.0  # flat compile cost; null = estimate from the teacher/GPU keys below
    teacher_tokens_input: int = 0  # data generation: teacher prompt tokens (for the estimate)
    teacher_tokens_output: int = 0  # data generation: teacher completion tokens
    teacher_input_per_million: float = 2.5  # teacher price, USD per million input tokens
    teacher_output_per_million: float = 10.0  # teacher price, USD per million output tokens
    gpu_hours: float = 0.0  # training + eval GPU hours (for the estimate)
    gpu_hour_usd: float = 0.0  # USD per GPU hour
    min_conversations: int = 500  # never propose below this many conversations, whatever the payback
    min_observation_s: float = 86400.0  # traffic seen this long before days-to-payback is extrapolated from it
    # --- stability
    stability_window_s: float = 7 * 86400.0  # static prompt + tool set unchanged this long before proposing
    # --- jobs
    jobs_dir: str = "tiergate-jobs"  # compile outputs, one folder per job
    compile_command: tuple[str, ...] = ()  # default: this Python running `gateway.cli compile`
    compile_args: tuple[str, ...] = ("--base-model", "scratch:tiny")  # appended after FLOWCHART --out DIR
    traffic_compile_args: tuple[str, ...] = ()  # appended for a workflow without a flowchart (`--from-traffic`)
    min_captured_conversations: int = 50  # captured conversations a workflow without a flowchart needs to compile
    max_resumes: int = 1  # restarts of a compile whose process vanished, before the job fails
    max_running_jobs: int = 1  # compiles running at once (two CPU trainings on one box thrash); others wait queued
    poll_interval_s: float = 1.0  # how often the loop looks at jobs and canaries
    threshold_interval_s: float = 30.0  # how often it checks thresholds and folds the ledger rollup
    rollup_lag_s: float = 900.0  # ledger hours are folded this long after they end (> the longest request)
    # --- canary and switch
    compiled_models: dict[str, str] = field(default_factory=dict)  # workflow -> configured model serving it
    serve_command: tuple[str, ...] | None = ()  # () = `gateway.cli serve-model`; null = served elsewhere (vLLM)
    canary_share: float = 0.1  # share of new conversations sent to the compiled model during the canary
    promote_after: int = 50  # good canary conversations before promotion to 100%
    min_quality: float = 0.85  # mean sampled comparison score below this rolls back
    max_error_rate: float = 0.1  # error share of canary requests above this rolls back
    min_samples: int = 5  # samples needed before quality or error rate can roll back
    compare_share: float = 0.2  # during the canary: share of compiled-side requests also asked of the frontier
    compiled_compare_share: float = 0.02  # after promotion: the sampled comparison goes on, more sparsely
    static_prompt_tokens: dict[str, int] = field(default_factory=dict)  # workflow -> static prompt tokens per
    # request (procedure, preload, tool schemas); default: the smallest first-turn prompt seen

    def attached_flowchart(self, workflow: str) -> Path:
        """Where a mined chart a person reviewed and attached from the dashboard is kept (gateway.loop.premine)."""
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in workflow)[:80]
        return Path(self.jobs_dir).resolve() / "flowcharts" / f"{safe}.yaml"

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None) -> LoopConfig:
        raw = dict(raw or {})
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(raw) - set(known))
        if unknown:
            raise LoopConfigError(
                f"loop.{unknown[0]}: unknown key; use one of {', '.join(sorted(known))} (see docs/loop.md)"
            )
        out: dict[str, Any] = {}
        for key, value in raw.items():
            default = known[key].default
            if key in ("compile_command", "compile_args", "serve_command", "traffic_compile_args"):
                if value is None and key == "serve_command":
                    out[key] = None
                    continue
                if isinstance(value, str):
                    value = value.split()
                if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
                    raise LoopConfigError(f"loop.{key}: `{value}` must be a list of strings (a command line)")
                out[key] = tuple(value)
            elif key == "compiled_models":
                if not isinstance(value, dict):
                    raise LoopConfigError(f"loop.compiled_models: `{value}` must map workflow names to model names")
                out[key] = {str(k): str(v) for k, v in value.items()}
            elif key == "static_prompt_tokens":
                if not isinstance(value, dict) or not all(isinstance(v, int) and v >= 0 for v in value.values()):
                    raise LoopConfigError(
                        f"loop.static_prompt_tokens: `{value}` must map workflow names to token counts (>= 0)")
                out[key] = {str(k): int(v) for k, v in value.items()}
            elif key == "compile_cost_usd" and value is None:
                out[key] = None
            elif key == "jobs_dir":
                out[key] = str(value)
            else:
                kind = int if isinstance(default, int) and not isinstance(default, bool) else float
                try:
                    number = kind(value)
                except (TypeError, ValueError):
                    raise LoopConfigError(f"loop.{key}: `{value}` is not a number; write e.g. {default}") from None
                if number < 0:
                    raise LoopConfigError(f"loop.{key}: `{value}` is negative; use a value >= 0")
                out[key] = number
        cfg = cls(**out)
        if not 0.0 <= cfg.canary_share <= 1.0:
            raise LoopConfigError(f"loop.canary_share: `{cfg.canary_share}` must lie between 0 and 1")
        for key in ("compare_share", "compiled_compare_share"):
            if not 0.0 <= getattr(cfg, key) <= 1.0:
                raise LoopConfigError(f"loop.{key}: `{getattr(cfg, key)}` must lie between 0 and 1")
        if cfg.max_running_jobs < 1:
            raise LoopConfigError(f"loop.max_running_jobs: `{cfg.max_running_jobs}` must be at least 1")
        if not 0.0 <= cfg.min_quality <= 1.0:
            raise LoopConfigError(f"loop.min_quality: `{cfg.min_quality}` must lie between 0 and 1")
        return cfg


@dataclass(frozen=True)
class WorkflowUsage:
    """A workflow's measured traffic since it became stable (sums from the ledger)."""

    conversations: int
    requests: int
    cost_usd: float
    prompt_tokens: int
    completion_tokens: int
    static_prompt_tokens: int  # per request: procedure, preload and tool schemas the compiled model holds
    days: float  # span of the traffic these sums cover


@dataclass(frozen=True)
class Payback:
    """The numbers behind a proposal; `asdict()` is what the API, the page and the store show."""

    conversations: int
    cost_per_conversation: float
    compiled_cost_per_conversation: float
    saving_per_conversation: float
    compile_cost_usd: float
    payback_conversations: int | None  # None: compiling never pays back at these prices
    conversations_per_day: float
    days_to_payback: float | None
    threshold_conversations: int | None  # larger of the payback count and the minimum
    progress: float  # conversations / threshold, capped at 1
    compiled_prompt_tokens_per_conversation: float
    completion_tokens_per_conversation: float
    observed_days: float = 0.0  # the span of traffic the daily rate comes from

    @property
    def due(self) -> bool:
        return self.threshold_conversations is not None and self.conversations >= self.threshold_conversations

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"due": self.due}


def compile_cost(cfg: LoopConfig) -> float:
    """The configured flat cost, or teacher tokens x teacher price + GPU hours x hourly price."""
    if cfg.compile_cost_usd is not None:
        return float(cfg.compile_cost_usd)
    teacher = (
        cfg.teacher_tokens_input * cfg.teacher_input_per_million
        + cfg.teacher_tokens_output * cfg.teacher_output_per_million
    ) / 1e6
    return teacher + cfg.gpu_hours * cfg.gpu_hour_usd


def compiled_cost_per_conversation(usage: WorkflowUsage, cfg: LoopConfig) -> tuple[float, float, float]:
    """(USD, prompt tokens, completion tokens) per conversation on the compiled model.

    The compiled model holds the static part of the prompt, so each request sends that much less.
    """
    if usage.conversations <= 0:
        return 0.0, 0.0, 0.0
    kept = max(0, usage.prompt_tokens - usage.static_prompt_tokens * usage.requests)
    prompt = kept / usage.conversations
    completion = usage.completion_tokens / usage.conversations
    usd = (prompt * cfg.self_hosted_input_per_million + completion * cfg.self_hosted_output_per_million) / 1e6
    return usd, prompt, completion


def payback(usage: WorkflowUsage, cfg: LoopConfig) -> Payback:
    conv = usage.conversations
    now = usage.cost_usd / conv if conv else 0.0
    compiled, prompt, completion = compiled_cost_per_conversation(usage, cfg)
    saving = now - compiled
    cost = compile_cost(cfg)
    per_day = conv / usage.days if usage.days > 0 else 0.0
    if saving > 0:
        # round(..., 9) first: 65 / 0.13 must be 500, not 501 from float noise
        count = max(0, math.ceil(round(cost / saving, 9)))
        pay: int | None = count
        threshold: int | None = max(count, cfg.min_conversations)
        # a rate from minutes of traffic is no forecast: extrapolate only after `min_observation_s`
        observed = usage.days * 86400.0 >= cfg.min_observation_s
        days: float | None = count / per_day if per_day > 0 and observed else None
    else:
        pay, threshold, days = None, None, None
    progress = min(1.0, conv / threshold) if threshold else (1.0 if threshold == 0 else 0.0)
    return Payback(
        conversations=conv,
        cost_per_conversation=now,
        compiled_cost_per_conversation=compiled,
        saving_per_conversation=saving,
        compile_cost_usd=cost,
        payback_conversations=pay,
        conversations_per_day=per_day,
        days_to_payback=days,
        threshold_conversations=threshold,
        progress=progress,
        compiled_prompt_tokens_per_conversation=prompt,
        completion_tokens_per_conversation=completion,
        observed_days=usage.days,
    )
