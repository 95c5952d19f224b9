"""slmbook.metrics: recall@k, MRR, nDCG@k, exact match and evaluate().

Covers: every measure on small cases computed by hand (nDCG also against
scikit-learn's ``ndcg_score`` on binary relevance); SQuAD's answer
normalisation step by step; evaluate() on a fitted retriever and on any
object that follows the Retriever protocol; every documented error.
"""

import math

import numpy as np
import pytest

from slmbook.evalsets import Question
from slmbook.metrics import (
    evaluate,
    exact_match,
    mean_reciprocal_rank,
    ndcg_at_k,
    normalize_answer,
    recall_at_k,
)
from slmbook.retrieval import Hit, TfidfRetriever

RETRIEVED = [["a", "b", "c"], ["x", "y", "z"], ["q", "r", "s"]]
RELEVANT = [{"a"}, {"z", "w"}, {"nothing"}]
TEXTS = [
    "The with statement wraps a block with methods of a context manager.",
    "A for loop iterates over the items of any iterable object.",
    "The try statement specifies exception handlers and cleanup code.",
    "Lambda expressions create small anonymous functions.",
    "Dictionaries map hashable keys to arbitrary values.",
]


def test_recall_at_k_hand_computed():
    assert recall_at_k(RETRIEVED, RELEVANT, 1) == pytest.approx(1 / 3)
    assert recall_at_k(RETRIEVED, RELEVANT, 2) == pytest.approx(1 / 3)
    assert recall_at_k(RETRIEVED, RELEVANT, 3) == pytest.approx(2 / 3)
    assert recall_at_k(RETRIEVED, RELEVANT, 10) == pytest.approx(2 / 3)


def test_mrr_hand_computed():
    assert mean_reciprocal_rank(RETRIEVED, RELEVANT) == pytest.approx((1 + 1 / 3 + 0) / 3)
    assert mean_reciprocal_rank(RETRIEVED, RELEVANT, k=2) == pytest.approx(1 / 3)
    assert mean_reciprocal_rank([["b", "a", "a"]], [{"a"}]) == pytest.approx(0.5)


def test_ndcg_hand_computed():
    # query 1: relevant at rank 1 of one relevant label: 1; query 2: rank 3 of two labels:
    # (1/log2(4)) / (1 + 1/log2(3)); query 3: nothing relevant retrieved: 0
    expected = (1 + (1 / 2) / (1 + 1 / math.log2(3)) + 0) / 3
    assert ndcg_at_k(RETRIEVED, RELEVANT, 3) == pytest.approx(expected, rel=1e-12)
    assert ndcg_at_k(RETRIEVED, RELEVANT, 1) == pytest.approx(1 / 3, rel=1e-12)
    assert ndcg_at_k([["a", "b"]], [{"a", "b"}], 2) == pytest.approx(1.0)
    assert ndcg_at_k([["b", "a"]], [{"a", "b"}], 2) == pytest.approx(1.0)
    # a label found twice (two passages of one topic) counts once: never above 1
    assert ndcg_at_k([["a", "a", "x"]], [{"a"}], 3) == pytest.approx(1.0)
    assert ndcg_at_k([["x", "a", "a"]], [{"a"}], 3) == pytest.approx(1 / math.log2(3))
    assert ndcg_at_k([["x"]], [set()], 1) == 0.0


def test_ndcg_equals_sklearn_on_binary_relevance():
    from sklearn.metrics import ndcg_score

    rng = np.random.default_rng(0)
    for _ in range(20):
        n = 8
        rel = rng.random(n) < 0.3
        if not rel.any():
            rel[0] = True
        order = rng.permutation(n)  # our ranking, best first
        scores = np.empty(n)
        scores[order] = np.arange(n, 0, -1)
        labels = [str(i) for i in order]
        relevant = {str(i) for i in np.flatnonzero(rel)}
        for k in (1, 3, 8):
            theirs = ndcg_score(rel[None].astype(float), scores[None], k=k)
            assert ndcg_at_k([labels], [relevant], k) == pytest.approx(theirs, rel=1e-12)


def test_normalize_answer_squad_steps():
    assert normalize_answer("The Eiffel Tower") == "eiffel tower"
    assert normalize_answer("  an  apple,  a PEAR. ") == "apple pear"
    assert normalize_answer("Theory") == "theory"  # articles only as whole words
    assert normalize_answer("rock'n'roll!") == "rocknroll"
    assert normalize_answer("") == ""


def test_exact_match():
    assert exact_match("The Paris", "paris") == 1.0
    assert exact_match("Paris, France", ["Paris", "France"]) == 0.0
    assert exact_match("france", ["Paris", "France"]) == 1.0
    assert exact_match("", [""]) == 1.0
    with pytest.raises(ValueError, match="answers is empty"):
        exact_match("x", [])
    with pytest.raises(TypeError, match="answer must be a str, got None"):
        exact_match(None, "x")


def test_evaluation_errors():
    with pytest.raises(ValueError, match="retrieved has 3 queries but relevant has 2"):
        recall_at_k(RETRIEVED, RELEVANT[:2], 1)
    with pytest.raises(ValueError, match="k must be a positive int, got 0"):
        recall_at_k(RETRIEVED, RELEVANT, 0)
    with pytest.raises(TypeError, match="k must be a positive int or None, got True"):
        ndcg_at_k(RETRIEVED, RELEVANT, True)
    with pytest.raises(ValueError, match="no queries"):
        mean_reciprocal_rank([], [])
    with pytest.raises(TypeError, match="not a str"):
        recall_at_k("abc", ["a", "b", "c"], 1)


def questions(*pairs):
    return [Question(str(i), text, tuple(rel), "direct") for i, (text, rel) in enumerate(pairs)]


def test_evaluate():
    retriever = TfidfRetriever().fit(TEXTS)
    qs = questions(("anonymous functions", {"3"}), ("hashable keys", {"0"}))
    scores = evaluate(retriever, qs, k=(1, 5), label="passage_id")
    # "0" pads rank 2 of the second query (zero scores come in passage order)
    assert scores == pytest.approx(
        {"recall@1": 0.5, "recall@5": 1.0, "mrr": 0.75, "ndcg@5": (1 + 1 / math.log2(3)) / 2}
    )
    assert evaluate(retriever, qs, k=1, label="passage_id") == {
        "recall@1": 0.5, "mrr": 0.5, "ndcg@1": 0.5,
    }
    with pytest.raises(ValueError, match="label='text'"):
        evaluate(retriever, qs, label="text")
    with pytest.raises(ValueError, match="k is empty"):
        evaluate(retriever, qs, k=())
    with pytest.raises(TypeError, match=r"k must be a positive int, got 2\.0"):
        evaluate(retriever, qs, k=2.0)


def test_evaluate_accepts_any_retriever():
    class Fixed:  # follows the Retriever protocol without inheriting from anything
        def search(self, query, k=5):
            return [Hit(pid, 1.0, "", src) for pid, src in [("p1", "t1"), ("p2", "t2")]][:k]

        def search_batch(self, queries, k=5):
            return [self.search(q, k) for q in queries]

    qs = questions(("q", {"t2"}), ("r", {"t3"}))
    assert evaluate(Fixed(), qs, k=(1, 2)) == pytest.approx(
        {"recall@1": 0.0, "recall@2": 0.5, "mrr": 0.25, "ndcg@2": 0.5 / math.log2(3)}
    )


def test_wilson_interval_matches_hand_computed_and_normal_limit():
    from slmbook.metrics import wilson_interval

    lo, hi = wilson_interval(8, 10)
    assert abs(lo - 0.4902) < 5e-5 and abs(hi - 0.9433) < 5e-5  # the textbook 8/10 example, 4 digits
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0
    assert 0.0 < wilson_interval(0, 10)[1] < 0.31  # not empty at zero successes
    # for large n it approaches the normal interval p +- z sqrt(p(1-p)/n)
    lo, hi = wilson_interval(50_000, 100_000)
    half = 1.96 * (0.25 / 100_000) ** 0.5
    assert abs(lo - (0.5 - half)) < 1e-6 and abs(hi - (0.5 + half)) < 1e-6


def test_wilson_interval_rejects_bad_counts():
    from slmbook.metrics import wilson_interval

    with pytest.raises(ValueError, match=r"successes must be an int in \[0, n=10\], got 11"):
        wilson_interval(11, 10)
    with pytest.raises(ValueError, match="n must be a positive int, got 0"):
        wilson_interval(0, 0)
    with pytest.raises(ValueError, match="z must be a positive finite number"):
        wilson_interval(1, 2, z=float("nan"))
