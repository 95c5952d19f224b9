"""slmbook.tfidf: the from-scratch TfidfVectorizer equals scikit-learn's.

Covers: vocabulary and matrix equal to sklearn's over a grid of options, on the
default corpus and on random Unicode text (hypothesis); estimator conventions
(keyword-only constructor, fit returns self, trailing-underscore attributes);
errors for use before fit, bad options and empty vocabularies.
"""

import itertools

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.feature_extraction.text import TfidfVectorizer as SkTfidf

from slmbook.data import load_documents
from slmbook.tfidf import NotFittedError, TfidfVectorizer, idf

DOCS = [
    "The cat sat on the mat.",
    "The dog sat on the log, and the dog barked.",
    "Cats and dogs: cats chase dogs; dogs chase cats!",
    "A quick brown fox jumps over the lazy dog",
    "Ünïcode wörds, naïve café — and CAPITALS too",
    "",
]
NEW = ["a cat and a dog", "nothing known here", "THE CAT", ""]


def assert_same(ours: TfidfVectorizer, theirs: SkTfidf, fit_docs, new_docs) -> None:
    X = ours.fit_transform(fit_docs)
    Y = theirs.fit_transform(fit_docs)
    assert ours.vocabulary_ == theirs.vocabulary_
    if theirs.use_idf:
        np.testing.assert_allclose(ours.idf_, theirs.idf_, rtol=1e-12, atol=0)
    assert sp.isspmatrix_csr(X) or isinstance(X, sp.csr_array)
    np.testing.assert_allclose(X.toarray(), Y.toarray(), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(
        ours.transform(new_docs).toarray(), theirs.transform(new_docs).toarray(),
        rtol=1e-12, atol=1e-15,
    )


GRID = [
    dict(zip(("ngram_range", "stop_words", "sublinear_tf", "smooth_idf", "norm"), combo, strict=True))
    for combo in itertools.product(
        [(1, 1), (1, 2), (2, 3)], [None, "english"], [False, True], [True, False], ["l2", "l1", None]
    )
]


@pytest.mark.parametrize("options", GRID, ids=str)
def test_matches_sklearn_on_grid(options):
    assert_same(TfidfVectorizer(**options), SkTfidf(**options), DOCS, NEW)


@pytest.mark.parametrize(
    "options",
    [
        {"min_df": 2},
        {"max_df": 0.5},
        {"min_df": 0.2, "max_df": 3},
        {"lowercase": False},
        {"token_pattern": r"(?u)\b\w+\b"},
        {"token_pattern": r"(\w)\w*"},  # one group: the group is the token
        {"stop_words": ["the", "and", "dogs"]},
        {"use_idf": False},
    ],
    ids=str,
)
def test_matches_sklearn_other_options(options):
    assert_same(TfidfVectorizer(**options), SkTfidf(**options), DOCS, NEW)


def test_matches_sklearn_on_corpus():
    docs = list(load_documents().values())
    options = {"stop_words": "english", "sublinear_tf": True, "ngram_range": (1, 2), "min_df": 2}
    assert_same(TfidfVectorizer(**options), SkTfidf(**options), docs, docs[:5])


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    docs=st.lists(st.text(min_size=0, max_size=40), min_size=1, max_size=6),
    ngram_max=st.integers(1, 2),
    sublinear=st.booleans(),
)
def test_matches_sklearn_on_random_unicode(docs, ngram_max, sublinear):
    options = {"ngram_range": (1, ngram_max), "sublinear_tf": sublinear, "token_pattern": r"(?u)\b\w+\b"}
    try:
        expected = SkTfidf(**options).fit(docs)
    except ValueError:  # empty vocabulary: ours must refuse too
        with pytest.raises(ValueError, match="empty vocabulary"):
            TfidfVectorizer(**options).fit(docs)
        return
    assert_same(TfidfVectorizer(**options), expected, docs, docs[::-1])


def test_estimator_conventions():
    with pytest.raises(TypeError):
        TfidfVectorizer(True)  # keyword-only
    vec = TfidfVectorizer(min_df=5, norm="bogus")  # __init__ only stores
    assert vec.min_df == 5 and not hasattr(vec, "vocabulary_")
    vec = TfidfVectorizer()
    assert vec.fit(DOCS) is vec
    assert vec.idf_.shape == (len(vec.vocabulary_),)
    assert list(vec.get_feature_names_out()) == sorted(vec.vocabulary_)
    assert repr(TfidfVectorizer(sublinear_tf=True)) == "TfidfVectorizer(sublinear_tf=True)"


def test_idf_formula():
    np.testing.assert_allclose(idf(np.array([1, 3]), 3), np.log([4 / 2, 4 / 4]) + 1)
    np.testing.assert_allclose(idf(np.array([1, 3]), 3, smooth=False), np.log([3, 1]) + 1)


def test_not_fitted():
    with pytest.raises(NotFittedError, match=r"TfidfVectorizer.*call 'fit'"):
        TfidfVectorizer().transform(["a b"])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"ngram_range": (2, 1)}, "ngram_range"),
        ({"norm": "l3"}, "norm='l3'"),
        ({"min_df": -1}, "min_df=-1"),
        ({"max_df": 1.5}, "max_df=1.5"),
        ({"stop_words": "french"}, "stop_words='french'"),
        ({"token_pattern": r"(a)(b)"}, "more than one capturing group"),
        ({"min_df": 5}, "no terms remain"),
        ({"min_df": 3, "max_df": 2}, "max_df=2 corresponds to fewer"),
    ],
)
def test_bad_options(options, message):
    with pytest.raises(ValueError, match=message):
        TfidfVectorizer(**options).fit(DOCS)


def test_bad_documents():
    with pytest.raises(ValueError, match="empty vocabulary"):
        TfidfVectorizer(stop_words="english").fit(["the and of", ""])
    with pytest.raises(TypeError, match="document 1 is a int"):
        TfidfVectorizer().fit(["fine text", 3])
    with pytest.raises(TypeError, match="single str"):
        TfidfVectorizer().fit("one string")
