import math

import numpy as np
import pytest

from router import (
    LearnedRouter,
    RequestFeatures,
    RouteCosts,
    calibrate_threshold,
    out_of_fold_scores,
    routing_curve,
)
from router._learned import _numeric_matrix


def dataset(n: int, seed: int) -> tuple[list[RequestFeatures], list[bool], list[bool], list[bool]]:
    """Synthetic workflow: short lookups are easy for the cheap model, long multi-step asks are not."""
    rng = np.random.default_rng(seed)
    easy_words = ["status", "order", "track", "where", "open", "hours"]
    hard_words = ["reconcile", "dispute", "chargeback", "multi", "contract", "escalation"]
    features, cheap_ok, frontier_ok, labels = [], [], [], []
    for _ in range(n):
        hard = rng.random() < 0.4
        words = rng.choice(hard_words if hard else easy_words, size=int(rng.integers(3, 7)))
        numbers = " ".join(str(x) for x in rng.integers(1, 999, size=int(rng.integers(4, 9) if hard else 1)))
        features.append(RequestFeatures.from_prompt(" ".join(words) + " " + numbers))
        cheap = rng.random() < (0.35 if hard else 0.92)
        frontier = rng.random() < 0.95
        cheap_ok.append(bool(cheap))
        frontier_ok.append(bool(frontier))
        labels.append(bool(cheap >= frontier))
    return features, labels, cheap_ok, frontier_ok


def test_fast_score_matches_sklearn() -> None:
    from scipy.sparse import csr_matrix, hstack
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    feats, labels, _, _ = dataset(200, 0)
    router = LearnedRouter.fit(feats, labels)
    names, matrix = _numeric_matrix(feats, None)
    means, scales = matrix.mean(0), matrix.std(0)
    scales[scales == 0] = 1
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
    text = vectorizer.fit_transform([f.recent_text for f in feats])
    x = hstack([csr_matrix((matrix - means) / scales), text]).tocsr()
    model = LogisticRegression(C=1.0, max_iter=5000).fit(x, np.array(labels, dtype=int))
    expected = model.predict_proba(x)[:, 1]
    assert np.allclose(router.scores(feats), expected, atol=1e-9)
    assert router.n_labels == 200 and names == router.numeric_names


def test_round_trip_bytes_and_threshold() -> None:
    feats, labels, _, _ = dataset(120, 1)
    router = LearnedRouter.fit(feats, labels).with_threshold(0.7)
    blob = router.to_bytes()
    assert isinstance(blob, bytes) and blob.startswith(b"{")
    loaded = LearnedRouter.from_bytes(blob)
    assert loaded.threshold == 0.7 and loaded.n_labels == 120
    assert loaded.scores(feats) == pytest.approx(router.scores(feats), abs=1e-12)


@pytest.mark.parametrize(
    ("blob", "fragment"),
    [(b"\x00not json", "not JSON"), (b'{"format": "other"}', "format `other`"), (b"[1]", "format `list`")],
)
def test_from_bytes_rejects_foreign_blobs(blob: bytes, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        LearnedRouter.from_bytes(blob)


def test_fit_needs_both_classes_and_matching_lengths() -> None:
    feats = [RequestFeatures.from_prompt(f"q {i}") for i in range(5)]
    with pytest.raises(ValueError, match="both good and bad"):
        LearnedRouter.fit(feats, [True] * 5)
    with pytest.raises(ValueError, match="one label per request"):
        LearnedRouter.fit(feats, [True, False])
    with pytest.raises(ValueError, match="signal rows"):
        LearnedRouter.fit(feats, [True, False, True, False, True], signals=[{"a": 1.0}])


def test_text_free_and_signal_features() -> None:
    feats = [RequestFeatures.from_prompt(f"unique{i}") for i in range(40)]  # every term below min_df
    signals = [{"resp_ok": float(i % 2)} for i in range(40)]
    labels = [bool(i % 2) for i in range(40)]
    router = LearnedRouter.fit(feats, labels, signals)
    assert router.vocabulary == {}
    assert router.score(feats[1], {"resp_ok": 1.0}) > 0.9 > 0.1 > router.score(feats[0], {"resp_ok": 0.0})
    # a missing signal is read as its training mean: no information, neither extreme
    assert 0.1 < router.score(feats[0]) < 0.9
    assert len(router.scores(feats, signals)) == 40


def test_learned_router_beats_random_on_held_out_data() -> None:
    feats, labels, cheap, frontier = dataset(400, 2)
    router = LearnedRouter.fit(feats[:200], labels[:200])
    curve = routing_curve(router.scores(feats[200:]), cheap[200:], frontier[200:])
    assert curve.apgr > 0.7


def test_calibration_meets_target_on_held_out_labels() -> None:
    feats, labels, cheap, frontier = dataset(1200, 3)
    train, test = slice(0, 600), slice(600, 1200)
    held_out = out_of_fold_scores(feats[train], labels[train], seed=0)
    assert len(held_out) == 600
    for target in (0.9, 0.95):
        cal = calibrate_threshold(held_out, labels[train], target, RouteCosts(1, 10))
        assert cal.expected_retention >= target and 0 < cal.cheap_share < 1
        router = LearnedRouter.fit(feats[train], labels[train]).with_threshold(cal.threshold)
        routed_cheap = np.array(router.scores(feats[test])) >= router.threshold
        kept = np.where(routed_cheap, np.array(labels[test], dtype=float), 1.0).mean()
        assert kept >= target - 0.02, (target, kept)  # held out: within sampling error of the target
        assert routed_cheap.mean() > 0.3  # and it does route a real share cheaply
    _ = cheap, frontier


def test_out_of_fold_scores_with_few_minority_labels() -> None:
    feats = [RequestFeatures.from_prompt(f"ask {i % 3}") for i in range(12)]
    labels = [i < 3 for i in range(12)]  # 3 positives: folds capped at 3
    scores = out_of_fold_scores(feats, labels)
    assert len(scores) == 12 and all(0 <= s <= 1 for s in scores)


def test_score_handles_extreme_logits() -> None:
    feats, labels, _, _ = dataset(60, 4)
    router = LearnedRouter.fit(feats, labels)
    extreme = type(router)(**{**router.__dict__, "intercept": -1e6})
    assert extreme.score(feats[0]) == 0.0
    assert math.isclose(type(router)(**{**router.__dict__, "intercept": 1e6}).score(feats[0]), 1.0)


def test_evaluate_router_input_errors() -> None:
    from router import EvalData, evaluate_router

    data = EvalData(tuple(f"q{i}" for i in range(30)), (True, False) * 15, (True,) * 30)
    with pytest.raises(ValueError, match="weak_responses"):
        evaluate_router(data, mode="cascade")
    with pytest.raises(ValueError, match="Train share `0`"):
        evaluate_router(data, train_share=0)
    with pytest.raises(ValueError, match="at least 10 rows"):
        evaluate_router(data, train_share=0.9)
