import pytest

from router import DemonstrationBank, RequestFeatures, nearest_demonstrations

EXCHANGES = [
    {"messages": [{"role": "user", "content": "How do I reset my password?"}], "answer": "reset"},
    {"messages": [{"role": "user", "content": "Where is my parcel, order 1234?"}], "answer": "track"},
    {"messages": [{"role": "user", "content": "I want a refund for a broken kettle"}], "answer": "refund"},
    {"messages": [{"role": "user", "content": "Refund please, the toaster is broken"}], "answer": "refund2"},
]


def test_nearest_demonstrations_ranks_by_similarity() -> None:
    bank = DemonstrationBank.build(EXCHANGES)
    found = nearest_demonstrations(
        RequestFeatures.from_prompt("my kettle arrived broken, refund?"), bank, k=2
    )
    assert [d.exchange["answer"] for d in found] == ["refund", "refund2"]
    assert 1 >= found[0].similarity >= found[1].similarity > 0
    assert found[0].exchange is EXCHANGES[2]


def test_no_match_zero_k_and_empty_bank() -> None:
    bank = DemonstrationBank.build(EXCHANGES)
    assert nearest_demonstrations(RequestFeatures.from_prompt("zzz qqq"), bank, k=3) == ()
    assert nearest_demonstrations(RequestFeatures.from_prompt("refund"), bank, k=0) == ()
    assert (
        nearest_demonstrations(RequestFeatures.from_prompt("refund"), DemonstrationBank.build([]), k=3) == ()
    )
    blank = DemonstrationBank.build([{"messages": [{"role": "user", "content": "?"}]}])
    assert nearest_demonstrations(RequestFeatures.from_prompt("refund"), blank, k=3) == ()


def test_similarities_match_sklearn_cosine() -> None:
    from sklearn.feature_extraction.text import TfidfVectorizer

    bank = DemonstrationBank.build(EXCHANGES)
    query = "refund for my broken kettle, order 1234 please"
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    matrix = vectorizer.fit_transform([e["messages"][0]["content"] for e in EXCHANGES])
    expected = (matrix @ vectorizer.transform([query]).T).toarray().ravel()
    found = nearest_demonstrations(RequestFeatures.from_prompt(query), bank, k=4)
    for demo in found:
        assert demo.similarity == pytest.approx(expected[EXCHANGES.index(demo.exchange)])
    assert len(found) == int((expected > 0).sum())


def test_weights_match_sklearn_on_a_corpus_with_repeated_terms() -> None:
    import random

    from sklearn.feature_extraction.text import TfidfVectorizer

    rng = random.Random(0)
    words = "refund order late parcel kettle broken broken address change cancel the my".split()
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(1, 25))) for _ in range(60)]
    bank = DemonstrationBank.build([{"messages": [{"role": "user", "content": t}]} for t in texts])
    query = "my broken broken kettle order is late, refund the order"
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    expected = (vectorizer.fit_transform(texts) @ vectorizer.transform([query]).T).toarray().ravel()
    found = nearest_demonstrations(RequestFeatures.from_prompt(query), bank, k=60)
    got = {texts.index(d.exchange["messages"][0]["content"]): d.similarity for d in found}
    for i, similarity in enumerate(expected):
        if similarity > 0:
            assert got[i] == pytest.approx(similarity)
