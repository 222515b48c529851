"""Routing benchmark on RouteLLM's GSM8K responses (Mixtral-8x7B weak, GPT-4-1106 strong).

    python -m bench.router.gsm8k [--data ../shared/data/routing/gsm8k_responses.csv] [--splits 10]

Runs the same evaluation as `tiergate router eval` (train on a seeded half, calibrate the threshold on
the train half's out-of-fold scores, measure on the other half) for prompt-only and cascade routing,
over `--splits` seeds, with and without the contaminated prompts, and prints a markdown table.
Per-request prices come from the dataset's own token counts at list prices (see PRICES).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from router import RouteCosts, count_prompt_tokens, evaluate_router
from router._dataset import load_eval_csv

WEAK = "mistralai/Mixtral-8x7B-Instruct-v0.1"
STRONG = "gpt-4-1106-preview"
HERE = Path(__file__).resolve()
DATA_DIR = HERE.parents[3] / "shared" / "data" / "routing"
# dollars per million input / output tokens: Mixtral-8x7B on Together, GPT-4 Turbo (1106) on OpenAI
PRICES = {WEAK: (0.60, 0.60), STRONG: (10.0, 30.0)}
TARGETS = {"prompt": ("apgr", 0.62, ">="), "cascade": ("cpt50", 0.25, "<=")}


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA_DIR / "gsm8k_responses.csv")
    parser.add_argument("--exclude", type=Path, default=DATA_DIR / "gsm8k_contaminated_prompts.jsonl")
    parser.add_argument("--splits", type=int, default=10, help="number of seeded splits")
    parser.add_argument("--first-seed", type=int, default=0, help="seeds first-seed..first-seed+splits-1")
    parser.add_argument("--target", type=float, default=0.95)
    parser.add_argument("--confidence", type=float, default=None, help="calibrate on a lower bound, e.g. 0.9")
    return parser


def per_request_prices(path: Path) -> tuple[float, float]:
    """Mean dollars per request of each model, from the prompts' and answers' token counts."""
    import csv

    with path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    prices = []
    for model in (WEAK, STRONG):
        per_in, per_out = PRICES[model]
        total = 0.0
        for row in rows:
            prompt = count_prompt_tokens([{"role": "user", "content": row["prompt"]}], None, "gpt-4")
            answer = count_prompt_tokens(
                [{"role": "assistant", "content": row[f"{model}_response"]}], None, "gpt-4"
            )
            total += (prompt * per_in + answer * per_out) / 1e6
        prices.append(total / len(rows))
    return prices[0], prices[1]


def main(argv: list[str] | None = None) -> None:
    args = make_parser().parse_args(argv)
    weak_price, strong_price = per_request_prices(args.data)
    costs = RouteCosts(weak_price, strong_price)
    print(f"per-request prices from token counts: weak ${weak_price:.6f}, strong ${strong_price:.6f}\n")
    print(
        "| mode | prompts | APGR | CPT(50%) | CPT(80%) | strong calls at target | retention (min) | saving | target |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    failures = []
    for exclude in (None, args.exclude):
        data, dropped = load_eval_csv(args.data, WEAK, STRONG, with_responses=True, exclude=exclude)
        for mode in ("prompt", "cascade"):
            start = time.perf_counter()
            reports = [
                evaluate_router(data, mode, args.target, costs, seed, confidence=args.confidence)
                for seed in range(args.first_seed, args.first_seed + args.splits)
            ]
            elapsed = time.perf_counter() - start

            def avg(name: str, reports: list = reports) -> float:
                return statistics.mean(getattr(r, name) for r in reports)

            def sd(name: str, reports: list = reports) -> float:
                return statistics.stdev(getattr(r, name) for r in reports) if len(reports) > 1 else 0.0

            metric, bound, sign = TARGETS[mode]
            value = avg(metric)
            met = value >= bound if sign == ">=" else value <= bound
            if not met:
                failures.append(f"{mode}: {metric} {value:.3f} not {sign} {bound}")
            label = f"{len(data.prompts)}" + (f" (-{dropped} contaminated)" if exclude else "")
            print(
                f"| {mode} | {label} | {avg('apgr'):.3f} ± {sd('apgr'):.3f} "
                f"| {avg('cpt50'):.1%} ± {sd('cpt50'):.1%} | {avg('cpt80'):.1%} ± {sd('cpt80'):.1%} "
                f"| {avg('strong_share'):.1%} | {avg('retention'):.3f} ({min(r.retention for r in reports):.3f}) "
                f"| {avg('saving'):.1%} | {metric} {sign} {bound}: {'met' if met else 'MISSED'} |"
            )
            print(f"{mode}: {args.splits} splits in {elapsed:.1f} s", file=sys.stderr)
    print(
        f"\nmean ± sd over {args.splits} seeded 50/50 splits; retention target {args.target}, calibrated on "
        + (f"its {args.confidence} lower bound" if args.confidence else "the point estimate")
        + "; saving vs strong-only at the per-request prices above.\n"
        f"command: python -m bench.router.gsm8k --splits {args.splits} --first-seed {args.first_seed} --target {args.target}"
        + (f" --confidence {args.confidence}" if args.confidence else "")
        + "\n"
        f"same as: tiergate router eval {args.data} --weak {WEAK} --strong {STRONG} --mode MODE "
        f"--seed {args.first_seed} --repeats {args.splits}"
        + (f" --confidence {args.confidence}" if args.confidence else "")
        + f" --weak-price {weak_price:.6f} --strong-price {strong_price:.6f} [--exclude {args.exclude}]"
    )
    if failures:
        print("targets missed: " + "; ".join(failures))


if __name__ == "__main__":
    main()
