"""Routing-quality metrics from the routing literature (RouteLLM's CPT and APGR).

Kept apart from the policies because they judge a router offline, on labelled data, and never run on
the request path. Definitions: `/work/shared/data/routing/README.md` (copied into docs/bench-router.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

# labels and scores arrive as lists from the gateway and as arrays from offline evaluation
Floats = Sequence[float] | npt.NDArray[np.float64]

__all__ = ["RoutingCurve", "routing_curve"]


@dataclass(frozen=True)
class RoutingCurve:
    """Quality as a function of the share of strong calls, for one router on one labelled set.

    Example::

        curve = routing_curve(scores, weak_correct, strong_correct)
        curve.apgr, curve.cpt(0.5), curve.quality_at(0.3)

    `shares[k] = k / n` and `quality[k]` is the mean correctness when the `k` prompts the router
    trusts the weak model least go to the strong model.
    """

    shares: tuple[float, ...]
    quality: tuple[float, ...]
    weak_quality: float
    strong_quality: float

    def pgr(self, k: int) -> float:
        """Performance gap recovered at `k` strong calls; 0 when the two models tie overall."""
        gap = self.strong_quality - self.weak_quality
        if gap == 0:
            return 0.0
        return (self.quality[k] - self.weak_quality) / gap

    @property
    def apgr(self) -> float:
        """Area under the PGR curve over shares in [0, 1] (random ~0.5, oracle well above 0.8)."""
        pgr = np.array([self.pgr(k) for k in range(len(self.quality))])
        return float(np.trapezoid(pgr, np.array(self.shares)))

    def cpt(self, recovered: float) -> float:
        """Smallest share of strong calls recovering `recovered` of the weak-to-strong gap."""
        for k, share in enumerate(self.shares):
            if self.pgr(k) >= recovered - 1e-12:
                return share
        return 1.0

    def quality_at(self, share: float) -> float:
        """Quality when `share` of the prompts (rounded down to whole prompts) go to the strong model."""
        k = int(np.floor(share * (len(self.quality) - 1) + 1e-9))
        return self.quality[k]


def routing_curve(weak_trust: Floats, weak_correct: Floats, strong_correct: Floats) -> RoutingCurve:
    """Build the curve by sending prompts to the strong model in increasing order of `weak_trust`.

    `weak_trust` is any score where higher means "the weak model is more likely good enough", such
    as `LearnedRouter.score`. Ties keep the input order (stable sort) so results are reproducible.
    """
    trust = np.asarray(weak_trust, dtype=float)
    weak = np.asarray(weak_correct, dtype=float)
    strong = np.asarray(strong_correct, dtype=float)
    if not (len(trust) == len(weak) == len(strong)) or len(trust) == 0:
        raise ValueError(
            f"routing_curve needs equally long, non-empty inputs; got `{len(trust)}` scores, "
            f"`{len(weak)}` weak and `{len(strong)}` strong labels. Pass one score and two labels per prompt."
        )
    n = len(trust)
    order = np.argsort(trust, kind="stable")
    gain = (strong - weak)[order]
    totals = weak.sum() + np.concatenate([[0.0], np.cumsum(gain)])
    quality = tuple(float(q) for q in totals / n)
    shares = tuple(k / n for k in range(n + 1))
    return RoutingCurve(shares, quality, float(weak.mean()), float(strong.mean()))
