import math
import re

import pytest

from router import RouteCosts, calibrate_threshold, routing_curve


@pytest.mark.parametrize(
    ("scores", "cheap", "target", "threshold", "share", "retention"),
    [
        # all cheap answers good: everything goes cheap
        ([0.9, 0.8, 0.1], [1, 1, 1], 0.95, 0.1, 1.0, 1.0),
        # the least trusted one is bad: cut above it
        ([0.9, 0.8, 0.1], [1, 1, 0], 0.95, 0.8, 2 / 3, 1.0),
        # losing one in four is allowed at 0.75
        ([0.9, 0.8, 0.7, 0.1], [1, 0, 1, 1], 0.75, 0.1, 1.0, 0.75),
        ([0.9, 0.8, 0.7, 0.1], [1, 0, 1, 1], 0.8, 0.9, 0.25, 1.0),
        # nothing meets the target: stay on the frontier
        ([0.9, 0.8], [0, 0], 0.99, math.inf, 0.0, 1.0),
        # ties cannot be split: both or neither
        ([0.5, 0.5, 0.2], [1, 0, 1], 0.9, math.inf, 0.0, 1.0),
    ],
)
def test_calibration_table(
    scores: list, cheap: list, target: float, threshold: float, share: float, retention: float
) -> None:
    cal = calibrate_threshold(scores, cheap, target, RouteCosts(1, 10))
    assert cal.threshold == threshold
    assert cal.cheap_share == pytest.approx(share)
    assert cal.expected_retention == pytest.approx(retention)
    assert cal.expected_cost == pytest.approx(share * 1 + (1 - share) * 10)
    assert cal.saving == pytest.approx(1 - cal.expected_cost / 10)
    assert cal.n_labels == len(scores)


def test_frontier_quality_and_cascade_costs() -> None:
    # frontier wrong on the last one, cheap right: routing it cheap raises quality
    cal = calibrate_threshold(
        [0.9, 0.2], [1, 1], 1.0, RouteCosts(1, 10, cascade=True), frontier_quality=[1, 0]
    )
    assert cal.cheap_share == 1.0 and cal.expected_retention == 2.0
    assert cal.expected_cost == 1.0 and cal.saving == pytest.approx(0.9)
    frontier_only = RouteCosts(1, 10, cascade=True).cost(0.0)
    assert frontier_only == 11  # cascade always pays the cheap call


def test_cheap_model_not_cheaper_means_frontier() -> None:
    cal = calibrate_threshold([0.9, 0.8], [1, 1], 0.9, RouteCosts(10, 10))
    assert cal.threshold == math.inf and cal.cheap_share == 0


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"scores": [0.1], "cheap_quality": [1], "target_retention": 0}, "not in (0, 1]"),
        ({"scores": [0.1, 0.2], "cheap_quality": [1], "target_retention": 0.9}, "one of each"),
        ({"scores": [], "cheap_quality": [], "target_retention": 0.9}, "one of each"),
    ],
)
def test_calibration_errors(kwargs: dict, fragment: str) -> None:
    with pytest.raises(ValueError, match=re.escape(fragment)):
        calibrate_threshold(**kwargs)


def test_routing_curve_by_hand() -> None:
    # weak right on 0 and 2, strong right on 1 and 2; trust says 0 > 2 > 1 > 3
    curve = routing_curve([0.9, 0.1, 0.5, 0.0], [1, 0, 1, 0], [0, 1, 1, 0])
    assert curve.weak_quality == 0.5 and curve.strong_quality == 0.5
    assert curve.pgr(2) == 0.0  # no gap: PGR defined as 0
    curve = routing_curve([0.9, 0.1, 0.5, 0.0], [1, 0, 1, 0], [1, 1, 1, 1])
    # order to strong: 3 (gain 1), 1 (gain 1), 2 (0), 0 (0)
    assert curve.quality == (0.5, 0.75, 1.0, 1.0, 1.0)
    assert curve.cpt(0.5) == 0.25 and curve.cpt(1.0) == 0.5
    assert curve.apgr == pytest.approx((0 + 0.5) / 2 * 0.25 + (0.5 + 1) / 2 * 0.25 + 0.5)
    assert curve.quality_at(0.5) == 1.0
    random_like = routing_curve([0, 0, 0, 0], [0, 0, 1, 1], [1, 1, 0, 0])
    assert random_like.cpt(0.5) == 1.0  # no gap between the models: nothing to recover, reported as 100%
    with pytest.raises(ValueError, match="equally long"):
        routing_curve([0.1], [1, 0], [1, 1])


def test_confidence_demands_a_margin() -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    scores = rng.random(400)
    cheap = (rng.random(400) < 0.5 + 0.5 * scores).astype(float)  # trusted requests are mostly fine
    point = calibrate_threshold(scores, cheap, 0.9)
    cautious = calibrate_threshold(scores, cheap, 0.9, confidence=0.95)
    assert point.expected_retention >= 0.9 and cautious.expected_retention >= 0.9
    assert cautious.cheap_share < point.cheap_share and cautious.threshold > point.threshold
    assert calibrate_threshold(scores, cheap, 0.9, confidence=0.5) == point  # z = 0
    with pytest.raises(ValueError, match="Confidence `1.2`"):
        calibrate_threshold(scores, cheap, 0.9, confidence=1.2)
