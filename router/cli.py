"""`tiergate router ...` commands: offline evaluation of the learned router.

    tiergate router eval ../shared/data/routing/gsm8k_responses.csv \
        --weak mistralai/Mixtral-8x7B-Instruct-v0.1 --strong gpt-4-1106-preview --mode cascade
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from statistics import mean

import typer
from rich.console import Console
from rich.table import Table

from ._calibrate import RouteCosts
from ._dataset import DatasetError, load_eval_csv
from ._eval import EvalReport, evaluate_router

__all__ = ["register"]


class EvalMode(StrEnum):
    prompt = "prompt"
    cascade = "cascade"


def _fail(message: str) -> typer.Exit:
    typer.echo(f"Error: {message}", err=True)
    return typer.Exit(2)


def eval_command(
    data: Path = typer.Argument(..., help="CSV with a prompt column and one True/False column per model."),
    weak: str = typer.Option(..., "--weak", help="Column of the weak (cheap) model's correctness."),
    strong: str = typer.Option(..., "--strong", help="Column of the strong (frontier) model's correctness."),
    mode: EvalMode = typer.Option(
        EvalMode.prompt, "--mode", help="prompt: decide before any call; cascade: also see `<weak>_response`."
    ),
    target: float = typer.Option(
        0.95, "--target", help="Quality retention to keep, relative to strong-only."
    ),
    weak_price: float | None = typer.Option(
        None, "--weak-price", help="Dollars per request on the weak model."
    ),
    strong_price: float | None = typer.Option(
        None, "--strong-price", help="Dollars per request on the strong model."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the train/test split (and of the folds)."),
    repeats: int = typer.Option(
        1, "--repeats", help="Average over this many splits, seeds seed..seed+repeats-1."
    ),
    train_share: float = typer.Option(0.5, "--train-share", help="Share of rows to train and calibrate on."),
    exclude: Path | None = typer.Option(
        None, "--exclude", help="JSONL of prompts to drop (`eval_prompt` field)."
    ),
    confidence: float | None = typer.Option(
        None,
        "--confidence",
        help="Calibrate on the retention's lower bound at this one-sided level (e.g. 0.9).",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of tables."),
) -> None:
    """Train a router on one split, evaluate it on the rest: quality vs strong share, CPT, APGR, saving."""
    if not 0 < target <= 1:
        raise _fail(f"`--target {target}` is not in (0, 1]; use a retention such as 0.95.")
    if (weak_price is None) != (strong_price is None):
        raise _fail("give both `--weak-price` and `--strong-price`, or neither.")
    if weak_price is not None and strong_price is not None and not 0 <= weak_price < strong_price:
        raise _fail(f"`--weak-price {weak_price}` must be >= 0 and below `--strong-price {strong_price}`.")
    if repeats < 1:
        raise _fail(f"`--repeats {repeats}` must be at least 1.")
    try:
        dataset, dropped = load_eval_csv(data, weak, strong, mode is EvalMode.cascade, exclude)
        costs = (
            RouteCosts(weak_price, strong_price)
            if weak_price is not None and strong_price is not None
            else None
        )
        reports = [
            evaluate_router(dataset, mode.value, target, costs, seed + i, train_share, confidence)
            for i in range(repeats)
        ]
    except (DatasetError, ValueError) as exc:
        raise _fail(str(exc)) from None
    summary = _summary(reports, costs is not None, len(dataset.prompts), dropped)
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    _print(summary, reports, Console(soft_wrap=True))


def _summary(reports: list[EvalReport], priced: bool, rows: int, dropped: int) -> dict[str, object]:
    first = reports[0]
    shares = [i / 10 for i in range(11)]
    return {
        "mode": first.mode,
        "rows": rows,
        "excluded": dropped,
        "splits": len(reports),
        "seeds": [r.seed for r in reports],
        "n_train": first.n_train,
        "n_test": first.n_test,
        "weak_quality": mean(r.curve.weak_quality for r in reports),
        "strong_quality": mean(r.curve.strong_quality for r in reports),
        "quality_by_strong_share": {f"{s:.1f}": mean(r.curve.quality_at(s) for r in reports) for s in shares},
        "apgr": mean(r.apgr for r in reports),
        "apgr_per_split": [r.apgr for r in reports],
        "cpt50": mean(r.cpt50 for r in reports),
        "cpt80": mean(r.cpt80 for r in reports),
        "target": first.target,
        "confidence": first.confidence,
        "at_target": {
            "strong_share": mean(r.strong_share for r in reports),
            "retention": mean(r.retention for r in reports),
            "retention_min": min(r.retention for r in reports),
            "quality": mean(r.quality for r in reports),
            "saving": mean(r.saving for r in reports),
            "cost_per_1k_requests": mean(r.cost_per_request for r in reports) * 1000 if priced else None,
            "strong_only_cost_per_1k_requests": first.strong_cost_per_request * 1000 if priced else None,
        },
    }


def _print(summary: dict[str, object], reports: list[EvalReport], console: Console) -> None:
    splits = summary["splits"]
    console.print(
        f"mode={summary['mode']}  rows={summary['rows']} (excluded {summary['excluded']})  "
        f"train={summary['n_train']} test={summary['n_test']}  splits={splits}  "
        f"weak={summary['weak_quality']:.3f} strong={summary['strong_quality']:.3f} (test quality)"
    )
    console.print("Quality against share of strong calls (test split):")
    curve = Table()
    curve.add_column("strong share", justify="right")
    curve.add_column("quality", justify="right")
    for share, quality in summary["quality_by_strong_share"].items():  # type: ignore[attr-defined]
        curve.add_row(f"{float(share):.0%}", f"{quality:.3f}")
    console.print(curve)
    console.print("Routing metrics (test split, mean over splits):")
    metrics = Table()
    for name in ("APGR", "CPT(50%)", "CPT(80%)"):
        metrics.add_column(name, justify="right")
    metrics.add_row(f"{summary['apgr']:.3f}", f"{summary['cpt50']:.1%}", f"{summary['cpt80']:.1%}")
    console.print(metrics)
    at = summary["at_target"]
    assert isinstance(at, dict)
    lines = [
        f"At target retention {summary['target']:.2f} (threshold calibrated on the train split):",
        f"  strong calls {at['strong_share']:.1%} of requests, retention {at['retention']:.3f} "
        f"(worst split {at['retention_min']:.3f}), quality {at['quality']:.3f}",
    ]
    if at["cost_per_1k_requests"] is not None:
        lines.append(
            f"  cost ${at['cost_per_1k_requests']:.2f} per 1k requests vs ${at['strong_only_cost_per_1k_requests']:.2f}"
            f" strong-only: saving {at['saving']:.1%}"
        )
    else:
        lines.append(
            f"  cost saving {at['saving']:.1%} at a 1:10 weak:strong price ratio (give --weak-price/--strong-price for dollars)"
        )
    if summary["mode"] == "cascade":
        lines.append("  (cascade: the weak call is paid on every request)")
    console.print("\n".join(lines))


def register(app: typer.Typer) -> None:
    """Add the `router` command group to the tiergate CLI."""
    router_app = typer.Typer(
        help="Routing policies: offline evaluation of the learned router.", no_args_is_help=True
    )
    router_app.command("eval")(eval_command)
    app.add_typer(router_app, name="router")
