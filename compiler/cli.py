"""The compiler's commands for the `tiergate` CLI: ``compile`` and ``serve-model`` (+ ``flowchart``).

    tiergate compile configs/workflows/travel-booking.yaml --base-model scratch:tiny --out build/travel
    tiergate serve-model build/travel --port 8100

The lead's app calls ``register(app)``; heavy imports (torch, transformers) happen only when a command runs.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from .config import ConfigError


def _fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    """Add ``compile`` and ``serve-model`` to ``app``; also the ``flowchart`` sub-app when present."""

    @app.command("compile")
    def compile_cmd(
        out: Annotated[Path, typer.Option("--out", help="Output folder (data, run, eval, artifact).")],
        flowchart: Annotated[Path | None, typer.Argument(
            help="Workflow flowchart (.yaml, .mmd, .dot); omit it with --from-traffic.")] = None,
        base_model: Annotated[str | None, typer.Option(
            "--base-model", help="`scratch:<size>`, a local HF folder or a hub id.")] = None,
        config: Annotated[Path | None, typer.Option(
            "--config", help="Compile YAML; defaults to configs/compile.yaml when it exists.")] = None,
        max_steps: Annotated[int | None, typer.Option("--max-steps", help="Training steps.")] = None,
        lora: Annotated[bool, typer.Option("--lora", help="Refused: procedural knowledge is not low-rank.")] = False,
        teacher: Annotated[str | None, typer.Option(
            "--teacher", help="litellm model that renders conversations (else offline templates).")] = None,
        max_teacher_usd: Annotated[float | None, typer.Option(
            "--max-teacher-usd", help="Teacher budget: refuse when the estimate exceeds it, stop when spent.")] = None,
        traffic: Annotated[Path | None, typer.Option(
            "--traffic", help="JSONL of logged conversations to add to training.")] = None,
        set_: Annotated[list[str] | None, typer.Option(
            "--set", help="Any config field, e.g. `--set data.variants_per_path=20`.")] = None,
        from_traffic: Annotated[Path | None, typer.Option(
            "--from-traffic", help="No flowchart: mine this JSONL export, train on it, gate on replay too.")] = None,
        replay_min_accuracy: Annotated[float | None, typer.Option(
            "--replay-min-accuracy",
            help="--from-traffic: replay gate turn accuracy to pass (`gate.min_replay_accuracy`).")] = None,
        holdout: Annotated[float | None, typer.Option(
            "--holdout", help="--from-traffic: share of conversations held out for fitness and replay "
                              "(`gate.replay_holdout`).")] = None,
    ) -> None:
        """Compile a workflow into a small model's weights; the artifact is written only if the eval gate passes."""
        from .config import load_compile_config
        from .train import TrainError, parse_sets

        overrides: dict[str, Any] = {}
        try:
            overrides.update(parse_sets(set_ or []))
        except TrainError as exc:
            _fail(str(exc))
        for key, value in (("train.base_model", base_model), ("train.max_steps", max_steps),
                           ("data.teacher_model", teacher), ("data.traffic", str(traffic) if traffic else None),
                           ("data.max_teacher_usd", max_teacher_usd),
                           ("gate.min_replay_accuracy", replay_min_accuracy), ("gate.replay_holdout", holdout)):
            if value is not None:
                overrides[key] = value
        if lora:
            overrides["train.lora"] = True
        if config is None and Path("configs/compile.yaml").is_file():
            config = Path("configs/compile.yaml")
        if from_traffic is not None:
            if flowchart is not None:
                _fail("pass a flowchart or --from-traffic, not both")
            if not from_traffic.is_file():
                _fail(f"conversation export `{from_traffic}` does not exist; write it with `tiergate export WORKFLOW`")
        elif flowchart is None or not flowchart.is_file():
            _fail(f"flowchart `{flowchart}` does not exist; pass a .yaml, .mmd or .dot file (or --from-traffic FILE).")
        try:
            cfg = load_compile_config(config, overrides)
            from .base_model import check_base_model

            check_base_model(cfg.train.base_model, lora=cfg.train.lora)
        except (ConfigError, ValueError) as exc:
            _fail(str(exc))
        if importlib.util.find_spec("trl") is None:
            _fail("compile needs the `compile` extra (torch, transformers, trl); run `pip install tiergate[compile]`.")
        from .pipeline import compile_workflow

        if from_traffic is not None:
            from .traffic_compile import compile_from_traffic, summary

            try:
                res = compile_from_traffic(from_traffic, out, cfg, echo=typer.echo)
            except (ValueError, FileNotFoundError) as exc:
                _fail(str(exc))
            typer.echo(summary(res))
            if not res.passed:
                typer.echo(f"error: gate failed, no artifact written; see {out / 'gate-report.md'}", err=True)
                raise typer.Exit(1)
            typer.echo(f"artifact: {res.artifact}")
            return
        assert flowchart is not None
        try:
            result = compile_workflow(flowchart, out, cfg, echo=typer.echo)
        except (ValueError, FileNotFoundError) as exc:
            _fail(str(exc))
        if not result.main_process:  # another rank of `accelerate launch`: the main process reports
            return
        m = result.metrics
        typer.echo(
            f"node accuracy {m['node_accuracy']:.3f}, success {m['success_rate']:.3f}, "
            f"tool calls {m['tool_accuracy']}, stages {result.stages}"
        )
        if not result.passed:
            typer.echo(f"error: eval gate failed, no artifact written; see {out / 'gate-report.md'}", err=True)
            raise typer.Exit(1)
        typer.echo(f"artifact: {result.artifact}")

    @app.command("serve-model")
    def serve_model_cmd(
        model_dir: Annotated[Path, typer.Argument(help="Artifact folder, or the `compile --out` folder.")],
        host: Annotated[str, typer.Option("--host", help="Interface to bind.")] = "127.0.0.1",
        port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 8100,
        backend: Annotated[str, typer.Option(
            "--backend", help="auto (vLLM when it and a GPU are present), vllm or cpu.")] = "auto",
    ) -> None:
        """Serve a compiled model over the OpenAI chat API (vLLM on GPU, built-in server on CPU)."""
        from .artifact import resolve_artifact
        from .serve import ServeError, serve_model

        try:
            resolve_artifact(model_dir)
            serve_model(model_dir, host, port, backend)
        except (ServeError, FileNotFoundError, ValueError) as exc:
            _fail(str(exc))

    if importlib.util.find_spec("compiler.flowchart_cli") is not None:
        from . import flowchart_cli

        flowchart_cli.register_flowchart(app)


def main() -> None:  # pragma: no cover - convenience until the lead's CLI exists
    app = typer.Typer(no_args_is_help=True)
    register(app)
    app(args=sys.argv[1:])
