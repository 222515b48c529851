"""Offline evaluation of the learned router on a labelled dataset (what `tiergate router eval` runs).

Protocol, fixed so numbers are comparable and honest: one seeded random split into train and test;
the threshold for the target retention is calibrated on out-of-fold scores of the train split only;
every reported figure is measured on the test split, which nothing is tuned on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from ._calibrate import RouteCosts, calibrate_threshold
from ._features import RequestFeatures
from ._learned import LearnedRouter, out_of_fold_scores
from ._metrics import RoutingCurve, routing_curve
from ._signals import response_signals

__all__ = ["EvalData", "EvalReport", "evaluate_router"]

Mode = Literal["prompt", "cascade"]


@dataclass(frozen=True)
class EvalData:
    """Prompts with per-model correctness (and the weak model's answers, for cascade mode)."""

    prompts: tuple[str, ...]
    weak_correct: tuple[bool, ...]
    strong_correct: tuple[bool, ...]
    weak_responses: tuple[str, ...] | None = None


@dataclass(frozen=True)
class EvalReport:
    """Figures on the test split. Costs are per request in the price unit (1 and 10 without prices)."""

    mode: Mode
    seed: int
    n_train: int
    n_test: int
    curve: RoutingCurve
    target: float
    confidence: float | None
    threshold: float
    strong_share: float
    retention: float
    quality: float
    cost_per_request: float
    strong_cost_per_request: float

    @property
    def apgr(self) -> float:
        return self.curve.apgr

    @property
    def cpt50(self) -> float:
        return self.curve.cpt(0.5)

    @property
    def cpt80(self) -> float:
        return self.curve.cpt(0.8)

    @property
    def saving(self) -> float:
        """Cost saved against sending every request to the strong model, as a share."""
        return 1 - self.cost_per_request / self.strong_cost_per_request


def evaluate_router(
    data: EvalData,
    mode: Mode = "prompt",
    target: float = 0.95,
    costs: RouteCosts | None = None,
    seed: int = 0,
    train_share: float = 0.5,
    confidence: float | None = None,
) -> EvalReport:
    """Train on a seeded split, calibrate on the train split's out-of-fold scores, test on the rest."""
    n = len(data.prompts)
    if mode == "cascade" and data.weak_responses is None:
        raise ValueError("Cascade mode needs the weak model's answers; pass `weak_responses`.")
    if not 0 < train_share < 1:
        raise ValueError(f"Train share `{train_share}` is not in (0, 1); use a share such as 0.5.")
    n_train = int(round(n * train_share))
    if n_train < 10 or n - n_train < 10:
        raise ValueError(
            f"`{n}` rows give too small a split; evaluation needs at least 10 rows on each side."
        )
    base = costs or RouteCosts()
    costs = RouteCosts(base.cheap, base.frontier, cascade=mode == "cascade")
    order = np.random.default_rng(seed).permutation(n)
    train, test = order[:n_train], order[n_train:]
    features = [RequestFeatures.from_prompt(p) for p in data.prompts]
    signals = (
        [response_signals(r) for r in data.weak_responses]
        if mode == "cascade" and data.weak_responses
        else None
    )
    weak = np.asarray(data.weak_correct, dtype=float)
    strong = np.asarray(data.strong_correct, dtype=float)
    # label = the cheap answer was as good as the strong one: what shadow comparison yields live
    good = weak >= strong

    def pick(rows: np.ndarray) -> tuple[list[RequestFeatures], list[dict[str, float]] | None]:
        return [features[i] for i in rows], None if signals is None else [signals[i] for i in rows]

    train_features, train_signals = pick(train)
    train_labels = [bool(good[i]) for i in train]
    held_out = out_of_fold_scores(train_features, train_labels, train_signals, seed=seed)
    calibration = calibrate_threshold(
        held_out, weak[train], target, costs, frontier_quality=strong[train], confidence=confidence
    )
    router = LearnedRouter.fit(train_features, train_labels, train_signals).with_threshold(
        calibration.threshold
    )
    test_features, test_signals = pick(test)
    scores = np.asarray(router.scores(test_features, test_signals))
    curve = routing_curve(scores, weak[test], strong[test])
    cheap = scores >= calibration.threshold
    quality = float(np.where(cheap, weak[test], strong[test]).mean())
    strong_quality = float(strong[test].mean())
    share = float(1 - cheap.mean())
    return EvalReport(
        mode=mode,
        seed=seed,
        n_train=len(train),
        n_test=len(test),
        curve=curve,
        target=target,
        confidence=confidence,
        threshold=calibration.threshold,
        strong_share=share,
        retention=quality / strong_quality if strong_quality else 1.0,
        quality=quality,
        cost_per_request=costs.cost(1 - share),
        strong_cost_per_request=costs.frontier,
    )
