"""slmbook.tfidf: the from-scratch TfidfVectorizer equals scikit-learn's.

Covers: vocabulary and matrix equal to sklearn's over a grid of options, on the
default corpus and on random Unicode text (hypothesis); estimator conventions
(keyword-only constructor, fit returns self, trailing-underscore attributes,
get_params/set_params so that sklearn's clone works, weighting options frozen
at fit as in sklearn, an assignable idf_ checked against the vocabulary,
pickling); errors for use before fit, bad options, bad documents and empty
vocabularies; the module imports neither scikit-learn nor scipy. scikit-learn's
own TfidfVectorizer tests run against this class in test_sklearn_suite.py.
"""

import itertools
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.base import clone
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
        ours.transform(new_docs).toarray(),
        theirs.transform(new_docs).toarray(),
        rtol=1e-12,
        atol=1e-15,
    )


GRID = [
    dict(
        zip(("ngram_range", "stop_words", "sublinear_tf", "smooth_idf", "norm"), combo, strict=True)
    )
    for combo in itertools.product(
        [(1, 1), (1, 2), (2, 3)],
        [None, "english"],
        [False, True],
        [True, False],
        ["l2", "l1", None],
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
    options = {
        "ngram_range": (1, ngram_max),
        "sublinear_tf": sublinear,
        "token_pattern": r"(?u)\b\w+\b",
    }
    try:
        expected = SkTfidf(**options).fit(docs)
    except ValueError:  # empty vocabulary: ours must refuse too
        with pytest.raises(ValueError, match="empty vocabulary"):
            TfidfVectorizer(**options).fit(docs)
        return
    assert_same(TfidfVectorizer(**options), expected, docs, docs[::-1])


def test_estimator_conventions():
    with pytest.raises(TypeError, match="positional argument"):
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
    for call in ("fit", "fit_transform"):  # ValueError with sklearn's message
        with pytest.raises(ValueError, match="raw text documents expected, string object"):
            getattr(TfidfVectorizer(), call)("one string")
    with pytest.raises(ValueError, match="raw text documents expected, string object"):
        TfidfVectorizer().fit(DOCS).transform("one string")
    for nan in (np.nan, float("nan")):
        with pytest.raises(ValueError, match=r"np.nan is an invalid document.*document 1"):
            TfidfVectorizer().fit(["fine text", nan])
    with pytest.raises(ValueError, match=r"np\.nan is an invalid document"):
        SkTfidf().fit(["fine text", np.nan])  # the same error type as scikit-learn's


def test_get_params_set_params_and_clone():
    vec = TfidfVectorizer(ngram_range=(1, 2), norm="l1")
    params = vec.get_params()
    sk_params = SkTfidf().get_params()
    assert set(params) <= set(sk_params)  # a subset of sklearn's options, same names
    assert params["ngram_range"] == (1, 2) and params["norm"] == "l1"
    assert vec.set_params(min_df=2, sublinear_tf=True) is vec
    assert vec.min_df == 2 and vec.sublinear_tf
    with pytest.raises(ValueError, match=r"Invalid parameter 'analyzer'.*Valid parameters"):
        vec.set_params(analyzer="char")
    copy = clone(vec.fit(DOCS))
    assert copy.get_params() == vec.get_params()
    assert not hasattr(copy, "vocabulary_")  # clone: same options, not fitted
    assert (
        repr(copy) == "TfidfVectorizer(min_df=2, ngram_range=(1, 2), norm='l1', sublinear_tf=True)"
    )


def test_pickle_round_trip():
    vec = TfidfVectorizer(sublinear_tf=True).fit(DOCS)
    copy = pickle.loads(pickle.dumps(vec))
    assert copy.get_params() == vec.get_params()
    np.testing.assert_array_equal(copy.transform(NEW).toarray(), vec.transform(NEW).toarray())


@pytest.mark.parametrize(
    "change",
    [
        {"norm": "l1"},
        {"norm": None},
        {"use_idf": False},
        {"sublinear_tf": True},
        {"smooth_idf": False},
    ],
    ids=str,
)
def test_weighting_options_take_effect_at_the_next_fit_like_sklearn(change):
    ours, theirs = TfidfVectorizer().fit(DOCS), SkTfidf().fit(DOCS)
    docs = NEW + DOCS[:3]  # some terms occur more than once (for sublinear_tf)
    before = ours.transform(docs).toarray()
    ours.set_params(**change)
    theirs.set_params(**change)
    np.testing.assert_array_equal(ours.transform(docs).toarray(), before)  # unchanged
    np.testing.assert_allclose(theirs.transform(docs).toarray(), before, rtol=1e-12, atol=1e-15)
    assert_same(ours, theirs, DOCS, docs)  # refitted: the new option applies, as in sklearn
    assert not np.allclose(ours.transform(docs).toarray(), before)


def test_assigned_idf():
    ours, theirs = TfidfVectorizer().fit(DOCS), SkTfidf().fit(DOCS)
    new_idf = np.linspace(1.0, 3.0, len(ours.vocabulary_))
    ours.idf_ = new_idf
    theirs.idf_ = new_idf
    np.testing.assert_allclose(
        ours.transform(NEW).toarray(), theirs.transform(NEW).toarray(), rtol=1e-12, atol=1e-15
    )
    with pytest.raises(ValueError, match=r"idf length = 3 must be equal to vocabulary size = \d+"):
        ours.idf_ = [1.0, 2.0, 3.0]
    np.testing.assert_array_equal(ours.idf_, new_idf)  # the refused value changed nothing
    with pytest.raises(ValueError, match="idf_ cannot be set when use_idf=False"):
        TfidfVectorizer(use_idf=False).fit(DOCS).idf_ = new_idf
    with pytest.raises(NotFittedError, match="call 'fit'"):
        TfidfVectorizer().idf_  # noqa: B018


def test_vocabulary_and_idf_assigned_by_hand_transform_like_the_fitted():
    """How an index is restored from a file: a fresh vectorizer, vocabulary_ then idf_."""
    fitted = TfidfVectorizer(sublinear_tf=True).fit(DOCS)
    restored = TfidfVectorizer(sublinear_tf=True)
    restored.vocabulary_ = dict(fitted.vocabulary_)
    restored.idf_ = fitted.idf_
    np.testing.assert_array_equal(
        restored.transform(NEW).toarray(), fitted.transform(NEW).toarray()
    )
    early = TfidfVectorizer()
    early.idf_ = [1.0, 2.0]  # before the vocabulary: checked when used
    early.vocabulary_ = {"cat": 0, "dog": 1, "fox": 2}
    with pytest.raises(ValueError, match="idf_ has 2 values but the vocabulary has 3 terms"):
        early.transform(NEW)


def test_module_imports_neither_sklearn_nor_scipy():
    path = Path(__file__).parents[1] / "slmbook" / "tfidf.py"
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('tfidf_alone', {str(path)!r})\n"
        "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)\n"
        "module.TfidfVectorizer(norm='l1')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('sklearn', 'scipy')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_grid_search_over_vectorizer_options():
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import Pipeline

    docs = ["cats purr and cats nap", "a cat naps", "cats chase mice", "the cat purrs"] * 3
    docs += ["dogs bark at night", "a dog barks", "dogs fetch sticks", "the dog runs"] * 3
    labels = [0] * 12 + [1] * 12
    pipe = Pipeline([("vect", TfidfVectorizer()), ("clf", LogisticRegression())])
    grid = {"vect__norm": ["l1", "l2"], "vect__sublinear_tf": [False, True]}
    search = GridSearchCV(pipe, grid, cv=3).fit(docs, labels)
    assert search.best_score_ == 1.0
    assert len(search.cv_results_["params"]) == 4
    best = search.best_estimator_.named_steps["vect"]
    assert isinstance(best, TfidfVectorizer) and best.norm in ("l1", "l2")
    assert search.predict(["a cat purrs", "a dog barks"]).tolist() == [0, 1]
