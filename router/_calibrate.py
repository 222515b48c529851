"""Turning the one knob (quality retention) into a score threshold, at the least cost.

Retention is the routed quality over the all-frontier quality on the same labelled requests. With
shadow labels the frontier's own quality is taken as 1 (it is the reference the label compares to);
offline datasets with correctness for both models pass `frontier_quality`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
import numpy.typing as npt

# labels and scores arrive as lists from the gateway and as arrays from offline evaluation
Floats = Sequence[float] | npt.NDArray[np.float64]

__all__ = ["Calibration", "RouteCosts", "calibrate_threshold"]


@dataclass(frozen=True)
class RouteCosts:
    """Average cost of one request on each model (any unit: dollars, or relative).

    `cascade=True` when the cheap call is always paid (the cheap answer is seen before deciding).
    """

    cheap: float = 1.0
    frontier: float = 10.0
    cascade: bool = False

    def cost(self, cheap_share: float) -> float:
        """Expected cost of one request when `cheap_share` of requests stay on the cheap model."""
        if self.cascade:
            return self.cheap + (1 - cheap_share) * self.frontier
        return cheap_share * self.cheap + (1 - cheap_share) * self.frontier


@dataclass(frozen=True)
class Calibration:
    """Threshold meeting the retention target on the labels it was fitted on.

    `threshold` is `inf` when no threshold meets the target (everything stays on the frontier).
    `expected_cost` is per request in the unit of the `RouteCosts` given; `saving` is relative to
    all-frontier.
    """

    threshold: float
    expected_retention: float
    cheap_share: float
    expected_cost: float
    saving: float
    n_labels: int


def calibrate_threshold(
    scores: Floats,
    cheap_quality: Floats,
    target_retention: float,
    costs: RouteCosts | None = None,
    frontier_quality: Floats | None = None,
    confidence: float | None = None,
) -> Calibration:
    """Lowest-cost threshold whose retention on these held-out labels is at least the target.

    Example::

        cal = calibrate_threshold(out_of_fold_scores(feats, labels), labels, 0.95, RouteCosts(0.15, 2.5))
        router = router.with_threshold(cal.threshold)

    Requests with `score >= threshold` go to the cheap model. `cheap_quality[i]` is 1 when the
    cheap answer was good enough (or its graded quality in [0, 1]).

    With `confidence` (one-sided, for example 0.9) the threshold must meet the target with the
    retention's normal-approximation lower bound rather than its point estimate: a few hundred
    labels leave a standard error of about 1 point of retention, enough to miss a 0.95 target on new
    traffic about half the time otherwise.
    """
    if not 0 < target_retention <= 1:
        raise ValueError(f"Target retention `{target_retention}` is not in (0, 1]; use a share such as 0.95.")
    costs = costs or RouteCosts()
    s = np.asarray(scores, dtype=float)
    cheap = np.asarray(cheap_quality, dtype=float)
    frontier = np.ones_like(cheap) if frontier_quality is None else np.asarray(frontier_quality, dtype=float)
    if not (len(s) == len(cheap) == len(frontier)) or len(s) == 0:
        raise ValueError(
            f"calibrate_threshold got `{len(s)}` scores, `{len(cheap)}` cheap and `{len(frontier)}` frontier "
            "labels; pass one of each per held-out request."
        )
    reference = frontier.sum()
    n = len(s)
    order = np.argsort(-s, kind="stable")  # most trusted first: prefixes of this order go cheap
    sorted_scores = s[order]
    # quality when the first k (most trusted) go cheap and the rest to the frontier
    quality = reference + np.concatenate([[0.0], np.cumsum((cheap - frontier)[order])])
    retention = quality / reference if reference > 0 else np.where(quality >= 0, 1.0, 0.0)
    bound = retention
    if confidence is not None:
        if not 0.5 <= confidence < 1:
            raise ValueError(
                f"Confidence `{confidence}` is not in [0.5, 1); use a level such as 0.9, or None."
            )
        z = NormalDist().inv_cdf(confidence)
        loss = (frontier - cheap)[order]  # per-request quality lost when that request goes cheap
        first = np.concatenate([[0.0], np.cumsum(loss)]) / n
        second = np.concatenate([[0.0], np.cumsum(loss**2)]) / n
        standard_error = np.sqrt(np.maximum(second - first**2, 0.0) / n) / max(reference / n, 1e-12)
        bound = retention - z * standard_error
    best_k = 0
    for k in range(n, 0, -1):  # more cheap is always cheaper when cheap < frontier; stop at first fit
        # a threshold can only cut between distinct scores
        if k < n and sorted_scores[k - 1] == sorted_scores[k]:
            continue
        if bound[k] >= target_retention - 1e-12:
            best_k = k
            break
    if costs.cheap >= costs.frontier and not costs.cascade:
        best_k = 0
    threshold = float(sorted_scores[best_k - 1]) if best_k else math.inf
    share = best_k / n
    cost = costs.cost(share)
    frontier_cost = costs.cost(0.0) if not costs.cascade else costs.frontier
    return Calibration(
        threshold=threshold,
        expected_retention=float(retention[best_k]),
        cheap_share=share,
        expected_cost=cost,
        saving=1 - cost / frontier_cost if frontier_cost else 0.0,
        n_labels=n,
    )
