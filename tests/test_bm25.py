"""slmbook.bm25 and TfidfRetriever(weighting="bm25"): BM25 weighting from scratch.

Covers: the scores equal bm25s's (``method="lucene"``, float64) and
``rank_bm25.BM25Okapi``'s (its idf swapped for the same Lucene idf, its
scores divided by the constant ``k1 + 1``) to 1e-12 relative on a small
collection fed the same token lists, for several ``k1``/``b`` and both
backends; the same scores from the formula written out densely (no
reference needed); rankings equal to the reference's; edge cases (empty
query, unknown words, ``k`` larger than the collection, ``b = 0`` ignores
length, ``k1 = 0`` is binary tf, repeated query terms count); save/load
round trip; every argument error; the default weighting is still TF-IDF.
"""

import math

import numpy as np
import pytest
import scipy.sparse as sp

from slmbook.bm25 import (
    LUCENE_STOP_WORDS,
    Bm25Vectorizer,
    bm25_idf,
    bm25_params,
    bm25_weights,
    weighting_options,
)
from slmbook.passages import Passage
from slmbook.retrieval import Retriever, TfidfRetriever

TEXTS = [
    "The with statement wraps a block with methods of a context manager.",
    "A for loop iterates over the items of any iterable object; loop loop loop.",
    "The try statement specifies exception handlers and cleanup code for the try block.",
    "Lambda expressions create small anonymous functions.",
    "the and of",  # only stop words: a passage of length 0
    "Dictionaries map hashable keys to arbitrary values, keys keys.",
    "A block, a loop, a statement.",
]
QUERIES = ["block statement loop", "loop loop keys", "context manager block block", "try"]
PARAMS = [(1.5, 0.75), (1.2, 0.75), (0.0, 0.75), (1.5, 0.0), (2.0, 1.0)]


def bm25(k1=1.5, b=0.75, backend="sklearn", texts=TEXTS):
    return TfidfRetriever(weighting="bm25", k1=k1, b=b, backend=backend).fit(texts)


def tokens_of(r, texts):
    analyze = r.vectorizer_.build_analyzer()
    return [analyze(t) for t in texts]


def dense_bm25(docs, query, k1, b):
    """The formula in the module docstring, one term at a time (token lists in, (n,) out)."""
    n, avgdl = len(docs), np.mean([len(d) for d in docs])
    scores = np.zeros(n)
    for t in query:
        df = sum(t in d for d in docs)
        if df == 0:
            continue
        idf = np.log(1 + (n - df + 0.5) / (df + 0.5))
        for i, d in enumerate(docs):
            tf = d.count(t)
            if tf:  # an absent term adds nothing (0 / 0 when k1 = 0)
                scores[i] += idf * tf / (tf + k1 * (1 - b + b * len(d) / avgdl))
    return scores


# ---------------------------------------------------------------- scores against references
@pytest.mark.parametrize(("k1", "b"), PARAMS)
@pytest.mark.parametrize("backend", ["sklearn", "scratch"])
def test_scores_equal_the_formula(k1, b, backend):
    r = bm25(k1, b, backend)
    docs = tokens_of(r, TEXTS)
    expected = np.array([dense_bm25(docs, q, k1, b) for q in tokens_of(r, QUERIES)])
    np.testing.assert_allclose(r.scores(QUERIES).toarray(), expected, rtol=1e-12, atol=0)


@pytest.mark.parametrize(("k1", "b"), PARAMS)
@pytest.mark.parametrize("backend", ["sklearn", "scratch"])
def test_scores_and_rankings_equal_bm25s(k1, b, backend):
    bm25s = pytest.importorskip("bm25s")
    r = bm25(k1, b, backend)
    ref = bm25s.BM25(k1=k1, b=b, method="lucene", dtype="float64")
    ref.index(tokens_of(r, TEXTS), show_progress=False)
    mine = r.scores(QUERIES).toarray()
    for query, row, hits in zip(tokens_of(r, QUERIES), mine, r.search_batch(QUERIES, k=len(TEXTS)),
                                strict=True):
        expected = ref.get_scores(query)
        np.testing.assert_allclose(row, expected, rtol=1e-12, atol=0)
        order = np.lexsort((np.arange(len(expected)), -expected))  # ties: passage order
        assert [int(h.passage_id) for h in hits] == order.tolist()
        np.testing.assert_allclose([h.score for h in hits], expected[order], rtol=1e-12, atol=0)


# rank_bm25 divides 0 by 0 (nan) for a passage without the term when k1 = 0, or when b = 1
# and the passage is empty: those two settings are checked against bm25s only
@pytest.mark.parametrize(("k1", "b"), [(1.5, 0.75), (1.2, 0.75), (1.5, 0.0), (2.0, 0.5)])
def test_scores_equal_rank_bm25_okapi_with_the_lucene_idf(k1, b):
    rank_bm25 = pytest.importorskip("rank_bm25")
    r = bm25(k1, b)
    docs = tokens_of(r, TEXTS)
    ref = rank_bm25.BM25Okapi(docs, k1=k1, b=b)
    # BM25Okapi's idf is ln((n - df + 0.5) / (df + 0.5)), floored; put the Lucene idf instead
    n = len(docs)
    dfs = {t: sum(t in d for d in docs) for t in ref.idf}
    ref.idf = {t: math.log(1 + (n - df + 0.5) / (df + 0.5)) for t, df in dfs.items()}
    for query, row in zip(tokens_of(r, QUERIES), r.scores(QUERIES).toarray(), strict=True):
        # Okapi's (k1 + 1) factor: a constant, which the Lucene variant leaves out
        np.testing.assert_allclose(row, ref.get_scores(query) / (k1 + 1), rtol=1e-12, atol=0)


def test_backends_give_the_same_matrix():
    a, b = bm25(backend="sklearn"), bm25(backend="scratch")
    assert a.vectorizer_.vocabulary_ == b.vectorizer_.vocabulary_
    np.testing.assert_allclose(a.matrix_.toarray(), b.matrix_.toarray(), rtol=1e-15, atol=0)
    assert a.search_batch(QUERIES, k=3) == b.search_batch(QUERIES, k=3)


# ---------------------------------------------------------------- the weighting itself
def test_idf_and_weights():
    np.testing.assert_allclose(bm25_idf(np.array([1, 2, 3]), 3),
                               np.log1p((3 - np.array([1, 2, 3]) + 0.5) / (np.array([1, 2, 3]) + 0.5)))
    assert (bm25_idf(np.arange(11), 10) > 0).all()  # even a term in every passage counts a little
    counts = sp.csr_matrix(np.array([[2.0, 0.0], [1.0, 1.0]]))  # lengths 2 and 2: avgdl 2
    W = bm25_weights(counts, np.array([1.0, 2.0]), k1=1.0, b=0.5).toarray()
    np.testing.assert_allclose(W, [[2 / 3, 0.0], [0.5, 1.0]], rtol=1e-15)
    assert counts.toarray()[0, 0] == 2.0  # the counts are not modified
    with pytest.raises(ValueError, match="every passage is empty"):
        bm25_weights(sp.csr_matrix((2, 3)), np.ones(3), k1=1.5, b=0.75)


def test_k1_zero_is_binary_tf_and_b_zero_ignores_length():
    texts = ["cat", "cat cat cat", "cat dog bird fish mouse", "dog"]
    binary = bm25(k1=0.0, b=0.75, texts=texts).scores(["cat"]).toarray()[0]
    idf_cat = bm25_idf(3, 4)
    np.testing.assert_allclose(binary, [idf_cat, idf_cat, idf_cat, 0.0], rtol=1e-15)
    flat = bm25(k1=1.5, b=0.0, texts=texts).scores(["cat"]).toarray()[0]
    np.testing.assert_allclose(flat[[0, 2]], idf_cat / (1 + 1.5), rtol=1e-15)  # tf 1, any length
    assert flat[1] > flat[0]  # tf 3 > tf 1, but saturating:
    assert flat[1] < 3 * flat[0]
    normed = bm25(k1=1.5, b=0.75, texts=texts).scores(["cat"]).toarray()[0]
    assert normed[0] > normed[2]  # with b > 0 the longer passage weighs its one "cat" less


def test_repeated_query_terms_count():
    r = bm25()
    once, twice = r.scores(["loop", "loop loop"]).toarray()
    np.testing.assert_allclose(twice, 2 * once, rtol=1e-15)


def test_vectorizer_attributes():
    vec = Bm25Vectorizer(backend="scratch", stop_words="english")
    W = vec.fit_transform(TEXTS)
    assert W.shape == (len(TEXTS), len(vec.vocabulary_)) == (len(TEXTS), len(vec.idf_))
    assert vec.avgdl_ == pytest.approx(np.mean([len(t) for t in tokens_of(bm25(), TEXTS)]))
    assert list(vec.get_feature_names_out()) == sorted(vec.vocabulary_)
    assert repr(vec) == "Bm25Vectorizer(k1=1.5, b=0.75, backend='scratch')"
    assert vec.transform(["loop loop zzz"]).toarray().sum() == 2.0
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError, match=r"Bm25Vectorizer.*call 'fit'"):
        Bm25Vectorizer().transform(["loop"])


# ---------------------------------------------------------------- search behaviour
@pytest.mark.parametrize("query", ["", "   ", "the and of", "zzzunknown qqqword"])
def test_query_without_known_terms_returns_empty(query):
    assert bm25().search(query, k=3) == []


def test_k_larger_than_collection():
    hits = bm25().search("anonymous functions", k=50)
    assert len(hits) == len(TEXTS)
    assert hits[0].passage_id == "3" and hits[0].score > 0
    assert [h.passage_id for h in hits[1:]] == ["0", "1", "2", "4", "5", "6"]
    assert all(h.score == 0.0 for h in hits[1:])


def test_search_batch_equals_search_and_protocol():
    r = bm25()
    assert r.search_batch(QUERIES, k=3, chunk_size=2) == [r.search(q, k=3) for q in QUERIES]
    assert isinstance(r, Retriever) and len(r) == len(TEXTS)
    assert "weighting='bm25'" in repr(r) and "'k1': 1.5" in repr(r)


def test_default_weighting_is_still_tfidf():
    r = TfidfRetriever()
    assert r.weighting == "tfidf" and "k1" not in r.options and r.options["sublinear_tf"] is True
    assert r.fit(TEXTS).search("loop", k=1)[0].score <= 1.0  # a cosine


# ---------------------------------------------------------------- save / load
@pytest.mark.parametrize("backend", ["sklearn", "scratch"])
def test_save_load_round_trip(tmp_path, backend):
    passages = [Passage("x#0", "Ünïcode café text about loops", "x"), *TEXTS]
    r = TfidfRetriever(weighting="bm25", k1=1.2, b=0.6, backend=backend).fit(passages)
    loaded = TfidfRetriever.load(r.save(tmp_path / "bm25.npz"))
    assert (loaded.weighting, loaded.backend, loaded.options) == ("bm25", backend, r.options)
    assert loaded.options["k1"] == 1.2 and loaded.options["b"] == 0.6
    assert loaded.search_batch(QUERIES, k=4) == r.search_batch(QUERIES, k=4)
    assert loaded.search("café", k=1)[0].source == "x"


def test_file_without_weighting_loads_as_tfidf(tmp_path):
    path = TfidfRetriever().fit(TEXTS).save(tmp_path / "old.npz")
    with np.load(path) as z:
        arrays = dict(z)
    meta = bytes(arrays["meta"]).decode()
    assert '"weighting": "tfidf", ' in meta
    arrays["meta"] = np.frombuffer(meta.replace('"weighting": "tfidf", ', "").encode(), np.uint8)
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    loaded = TfidfRetriever.load(path)
    assert loaded.weighting == "tfidf"
    assert loaded.search_batch(QUERIES, k=2) == TfidfRetriever().fit(TEXTS).search_batch(QUERIES, k=2)


def test_load_rejects_a_bm25_index_with_other_parameters(tmp_path):
    path = bm25().save(tmp_path / "edited.npz")
    with np.load(path) as z:
        arrays = dict(z)
    arrays["idf"] = arrays["idf"] * 1.01  # as if fitted on other passages
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    with pytest.raises(ValueError, match=r"edited\.npz.*corrupt.*idf does not match"):
        TfidfRetriever.load(path)


# ---------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"weighting": "bm42"}, ValueError, r"weighting='bm42' is unknown; use 'tfidf' or 'bm25'"),
        ({"weighting": "bm25", "k1": -1}, ValueError, r"k1 must be >= 0 .*got -1\.0"),
        ({"weighting": "bm25", "k1": float("nan")}, ValueError, r"k1 must be a finite number, got nan"),
        ({"weighting": "bm25", "k1": "1.5"}, TypeError, r"k1 must be a finite number, got '1\.5'"),
        ({"weighting": "bm25", "b": 1.5}, ValueError, r"b must be in \[0, 1\], got 1\.5"),
        ({"weighting": "bm25", "b": True}, TypeError, r"b must be a finite number, got True"),
        ({"k1": 1.2}, ValueError, r"k1=1\.2, b=None: k1 and b are BM25 options; pass weighting='bm25'"),
        ({"b": 0.5}, ValueError, r"k1 and b are BM25 options"),
        ({"weighting": "bm25", "sublinear_tf": False}, ValueError,
         r"sublinear_tf=False is a TF-IDF option; weighting='bm25' has its own idf"),
        ({"weighting": "bm25", "use_idf": False}, ValueError, r"use_idf=False is a TF-IDF option"),
        ({"weighting": "bm25", "backend": "faiss"}, ValueError, r"backend='faiss' is unknown"),
    ],
)
def test_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        TfidfRetriever(**kwargs)


def test_helpers_check_their_arguments():
    assert bm25_params(0, 1) == (0.0, 1.0)
    assert weighting_options("tfidf", None, None, {"use_idf": False}) == {"use_idf": False}
    assert weighting_options("bm25", 2, None, {}) == {"k1": 2.0, "b": 0.75}
    with pytest.raises(ValueError, match=r"b must be in \[0, 1\], got -0\.1"):
        bm25_weights(sp.csr_matrix(np.ones((1, 1))), np.ones(1), k1=1.0, b=-0.1)
    with pytest.raises(ValueError, match=r"backend='dense' is unknown"):
        Bm25Vectorizer(backend="dense")


def test_lucene_stop_words_are_bm25s_english_list():
    stopwords = pytest.importorskip("bm25s.stopwords")
    assert sorted(LUCENE_STOP_WORDS) == sorted(stopwords.STOPWORDS_EN)
    assert len(set(LUCENE_STOP_WORDS)) == len(LUCENE_STOP_WORDS) == 33


def test_lucene_stop_words_keep_words_sklearn_drops():
    passages = ["find the first part", "the cat sat"]
    lucene = TfidfRetriever(weighting="bm25", stop_words=LUCENE_STOP_WORDS).fit(passages)
    english = TfidfRetriever(weighting="bm25").fit(passages)
    assert [h.passage_id for h in lucene.search("first part", k=1)] == ["0"]
    assert english.search("first part", k=1) == []  # both words are scikit-learn stop words
