"""Inference-time distillation: the logged frontier exchanges most like the current turn.

The bank is vectorised when the gateway (re)builds it from its logs, off the request path. TF-IDF
is computed here with numpy rather than scikit-learn: it is a few lines, it matches sklearn's
`TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)` (a test checks), and importing sklearn
takes 1-2.5 s, which stalled the gateway's first bank build past its refresh interval. A lookup
touches only the postings of the turn's terms.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._features import RequestFeatures

__all__ = ["Demonstration", "DemonstrationBank", "nearest_demonstrations"]

_TOKEN = re.compile(r"(?u)\b\w\w+\b")  # sklearn's default token_pattern


def _terms(text: str) -> Counter[str]:
    tokens = _TOKEN.findall(text.lower())
    terms = Counter(tokens)
    terms.update(" ".join(tokens[i : i + 2]) for i in range(len(tokens) - 1))
    return terms


@dataclass(frozen=True)
class Demonstration:
    """One logged frontier exchange offered as an example, with its cosine similarity to the turn."""

    similarity: float
    exchange: Mapping[str, Any]


@dataclass(frozen=True, eq=False)
class DemonstrationBank:
    """Logged frontier exchanges of one workflow, vectorised for nearest-neighbour lookup.

    Example::

        bank = DemonstrationBank.build([{"messages": [...], "response": {...}}, ...])
        for demo in nearest_demonstrations(features, bank, k=3):
            demo.exchange["messages"]

    Each exchange is plain data holding at least `messages` (the request's chat messages); it is
    returned as given. `idf` maps each term (unigram or bigram) to its smoothed inverse document
    frequency, `postings` maps it to the exchanges holding it and their L2-normalised weights.
    """

    exchanges: tuple[Mapping[str, Any], ...]
    idf: Mapping[str, float] = field(default_factory=dict)
    postings: Mapping[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    @classmethod
    def build(cls, exchanges: Sequence[Mapping[str, Any]], recent_turns: int = 4) -> DemonstrationBank:
        """Vectorise the exchanges' recent turns: TF-IDF, sublinear tf, unigrams and bigrams."""
        docs = [_terms(RequestFeatures.from_request(e, recent_turns).recent_text) for e in exchanges]
        n = len(docs)
        document_frequency: Counter[str] = Counter()
        for terms in docs:
            document_frequency.update(terms.keys())
        idf = {t: math.log((1 + n) / (1 + df)) + 1 for t, df in document_frequency.items()}
        lists: dict[str, tuple[list[int], list[float]]] = {}
        for i, terms in enumerate(docs):
            weights = {t: (1 + math.log(c)) * idf[t] for t, c in terms.items()}
            norm = math.sqrt(sum(w * w for w in weights.values()))
            for t, w in weights.items():
                ids, values = lists.setdefault(t, ([], []))
                ids.append(i)
                values.append(w / norm)
        postings = {
            t: (np.array(ids, dtype=np.int64), np.array(values)) for t, (ids, values) in lists.items()
        }
        return cls(tuple(exchanges), idf, postings)


def nearest_demonstrations(
    features: RequestFeatures, bank: DemonstrationBank, k: int = 3, min_similarity: float = 0.0
) -> tuple[Demonstration, ...]:
    """The `k` exchanges of `bank` closest to `features.recent_text` (cosine), most similar first."""
    if k <= 0 or not bank.postings:
        return ()
    terms = {t: c for t, c in _terms(features.recent_text).items() if t in bank.idf}
    weights = {t: (1 + math.log(c)) * bank.idf[t] for t, c in terms.items()}
    norm = math.sqrt(sum(w * w for w in weights.values()))
    if norm == 0:
        return ()
    similarities = np.zeros(len(bank.exchanges))
    for t, w in weights.items():
        ids, values = bank.postings[t]
        similarities[ids] += values * (w / norm)
    order = np.argsort(-similarities, kind="stable")[:k]
    return tuple(
        Demonstration(float(similarities[i]), bank.exchanges[i])
        for i in order
        if similarities[i] > min_similarity
    )
