"""The learned router: P(cheap answer is good enough) from request features.

Trained with scikit-learn (TF-IDF of the recent turns + standardised numeric features, logistic
regression), then flattened into plain weights. Scoring one request re-implements the linear model
in plain Python (~150 µs) because sklearn's per-call path (vectorise, stack, validate, predict)
measured ~0.8 ms, most of the budget of a routing decision; tests check both give the same
probability. Stored as JSON bytes rather than pickle so a model loaded from the gateway's store can
never execute code.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ._features import RequestFeatures

__all__ = ["LearnedRouter", "out_of_fold_scores"]

_FORMAT = "tiergate.learned_router/1"
_TOKEN = re.compile(r"(?u)\b\w\w+\b")  # sklearn's default token_pattern


def _check_labels(features: Sequence[Any], labels: Sequence[Any]) -> np.ndarray:
    y = np.asarray([bool(v) for v in labels], dtype=int)
    if len(y) != len(features):
        raise ValueError(
            f"Got `{len(features)}` feature rows but `{len(y)}` labels; pass one label per request."
        )
    if len(set(y.tolist())) < 2:
        raise ValueError(
            f"All `{len(y)}` labels are `{bool(y[0]) if len(y) else None}`; a router needs both good and "
            "bad cheap answers to learn from. Collect more shadow labels first."
        )
    return y


@dataclass(frozen=True)
class LearnedRouter:
    """A fitted, immutable router. Build with `LearnedRouter.fit`, never by hand.

    Example::

        router = LearnedRouter.fit(features, labels)           # labels: cheap answer was good enough
        router = router.with_threshold(calibration.threshold)  # see calibrate_threshold
        router.score(RequestFeatures.from_request(body))       # -> 0.83
        blob = router.to_bytes(); LearnedRouter.from_bytes(blob)

    `signals` are optional extra numeric columns per request (for cascade scoring: the cheap
    answer's `response_signals`); a router fitted with them must be scored with them.
    """

    vocabulary: Mapping[str, int]
    idf: tuple[float, ...]
    text_weights: tuple[float, ...]
    numeric_names: tuple[str, ...]
    numeric_means: tuple[float, ...]
    numeric_scales: tuple[float, ...]
    numeric_weights: tuple[float, ...]
    intercept: float
    n_labels: int
    ngram_max: int = 2
    threshold: float | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def fit(
        cls,
        features: Sequence[RequestFeatures],
        labels: Sequence[bool],
        signals: Sequence[Mapping[str, float]] | None = None,
        *,
        c: float = 1.0,
        ngram_max: int = 2,
        min_df: int = 2,
        use_text: bool = True,
    ) -> LearnedRouter:
        """Fit on labelled requests; `labels[i]` says the cheap model's answer was good enough."""
        from scipy.sparse import csr_matrix, hstack
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression

        y = _check_labels(features, labels)
        names, matrix = _numeric_matrix(features, signals)
        means = matrix.mean(axis=0)
        scales = matrix.std(axis=0)
        scales[scales == 0] = 1.0
        numeric = (matrix - means) / scales
        vocabulary: dict[str, int] = {}
        idf: tuple[float, ...] = ()
        x = csr_matrix(numeric)
        if use_text:
            vectorizer = TfidfVectorizer(ngram_range=(1, ngram_max), min_df=min_df, sublinear_tf=True)
            try:
                text = vectorizer.fit_transform([f.recent_text for f in features])
            except ValueError:  # every term below min_df: fall back to numeric features only
                text = None
            if text is not None:
                vocabulary = {term: int(i) for term, i in vectorizer.vocabulary_.items()}
                idf = tuple(float(v) for v in vectorizer.idf_)
                x = hstack([x, text]).tocsr()
        model = LogisticRegression(C=c, max_iter=5000).fit(x, y)
        coef = model.coef_[0]
        k = len(names)
        return cls(
            vocabulary=vocabulary,
            idf=idf,
            text_weights=tuple(float(v) for v in coef[k:]),
            numeric_names=names,
            numeric_means=tuple(float(v) for v in means),
            numeric_scales=tuple(float(v) for v in scales),
            numeric_weights=tuple(float(v) for v in coef[:k]),
            intercept=float(model.intercept_[0]),
            n_labels=len(y),
            ngram_max=ngram_max,
            meta={"c": c, "min_df": min_df, "positive_share": float(y.mean())},
        )

    def with_threshold(self, threshold: float) -> LearnedRouter:
        """Copy with the calibrated threshold: route cheap when `score >= threshold`."""
        return replace(self, threshold=float(threshold))

    def _terms(self, text: str) -> Counter[str]:
        tokens = _TOKEN.findall(text.lower())
        terms: Counter[str] = Counter()
        for n in range(1, self.ngram_max + 1):
            for i in range(len(tokens) - n + 1):
                term = tokens[i] if n == 1 else " ".join(tokens[i : i + n])
                if term in self.vocabulary:
                    terms[term] += 1
        return terms

    def score(self, features: RequestFeatures, signals: Mapping[str, float] | None = None) -> float:
        """P(cheap answer is good enough) for one request, in well under a millisecond."""
        values = features.numeric()
        if signals:
            values.update(signals)
        z = self.intercept
        for name, mean, scale, weight in zip(
            self.numeric_names, self.numeric_means, self.numeric_scales, self.numeric_weights, strict=True
        ):
            z += weight * (values.get(name, mean) - mean) / scale
        if self.vocabulary:
            weighted = []
            for term, count in self._terms(features.recent_text).items():
                j = self.vocabulary[term]
                weighted.append((j, (1.0 + math.log(count)) * self.idf[j]))
            norm = math.sqrt(sum(v * v for _, v in weighted))
            if norm > 0:
                z += sum(self.text_weights[j] * v for j, v in weighted) / norm
        return 1.0 / (1.0 + math.exp(-z)) if z > -700 else 0.0

    def scores(
        self, features: Sequence[RequestFeatures], signals: Sequence[Mapping[str, float]] | None = None
    ) -> list[float]:
        """`score` over many requests (offline evaluation)."""
        if signals is None:
            return [self.score(f) for f in features]
        return [self.score(f, s) for f, s in zip(features, signals, strict=True)]

    def to_bytes(self) -> bytes:
        """Serialise to JSON bytes, for the gateway's store."""
        data = {
            "format": _FORMAT,
            "vocabulary": dict(self.vocabulary),
            "idf": list(self.idf),
            "text_weights": list(self.text_weights),
            "numeric_names": list(self.numeric_names),
            "numeric_means": list(self.numeric_means),
            "numeric_scales": list(self.numeric_scales),
            "numeric_weights": list(self.numeric_weights),
            "intercept": self.intercept,
            "n_labels": self.n_labels,
            "ngram_max": self.ngram_max,
            "threshold": self.threshold,
            "meta": dict(self.meta),
        }
        return json.dumps(data, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, blob: bytes) -> LearnedRouter:
        """Load what `to_bytes` wrote."""
        try:
            data = json.loads(blob)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ValueError(
                f"Stored learned router is not JSON ({exc}); retrain it with `LearnedRouter.fit`."
            ) from exc
        if not isinstance(data, dict) or data.get("format") != _FORMAT:
            found = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise ValueError(f"Stored learned router has format `{found}`, expected `{_FORMAT}`; retrain it.")
        return cls(
            vocabulary=data["vocabulary"],
            idf=tuple(data["idf"]),
            text_weights=tuple(data["text_weights"]),
            numeric_names=tuple(data["numeric_names"]),
            numeric_means=tuple(data["numeric_means"]),
            numeric_scales=tuple(data["numeric_scales"]),
            numeric_weights=tuple(data["numeric_weights"]),
            intercept=float(data["intercept"]),
            n_labels=int(data["n_labels"]),
            ngram_max=int(data["ngram_max"]),
            threshold=data["threshold"],
            meta=data["meta"],
        )


def _numeric_matrix(
    features: Sequence[RequestFeatures], signals: Sequence[Mapping[str, float]] | None
) -> tuple[tuple[str, ...], np.ndarray]:
    rows = [f.numeric() for f in features]
    if signals is not None:
        if len(signals) != len(rows):
            raise ValueError(
                f"Got `{len(rows)}` feature rows but `{len(signals)}` signal rows; pass one each."
            )
        for row, extra in zip(rows, signals, strict=True):
            row.update(extra)
    names = tuple(sorted({k for row in rows for k in row}))
    matrix = np.array([[row.get(k, 0.0) for k in names] for row in rows], dtype=float)
    return names, matrix


def out_of_fold_scores(
    features: Sequence[RequestFeatures],
    labels: Sequence[bool],
    signals: Sequence[Mapping[str, float]] | None = None,
    *,
    folds: int = 5,
    seed: int = 0,
    **fit_options: Any,
) -> list[float]:
    """Scores of each labelled request from a router that never saw it, for honest calibration.

    Calibrating a threshold on the training rows' own scores overstates retention; k-fold
    out-of-fold scores are held-out without spending labels on a separate calibration split.
    """
    from sklearn.model_selection import StratifiedKFold

    y = _check_labels(features, labels)
    folds = max(2, min(folds, int(np.bincount(y).min())))
    result = [0.0] * len(y)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for train, test in splitter.split(np.zeros(len(y)), y):
        router = LearnedRouter.fit(
            [features[i] for i in train],
            [bool(y[i]) for i in train],
            None if signals is None else [signals[i] for i in train],
            **fit_options,
        )
        for i in test:
            result[i] = router.score(features[i], None if signals is None else signals[i])
    return result
