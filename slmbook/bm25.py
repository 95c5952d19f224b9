r"""BM25 from scratch: Okapi term weighting as one sparse matrix, so search stays one product.

BM25 (Robertson and Sparck Jones's probabilistic relevance model, as tuned in
the Okapi system) scores passage ``d`` for query ``q`` by

.. math::

    \mathrm{score}(q, d) = \sum_{t \in q} \mathrm{qtf}(t) \cdot \mathrm{idf}(t) \cdot
    \frac{\mathrm{tf}(t, d)}{\mathrm{tf}(t, d) + k_1 \left(1 - b + b\,|d| / \mathrm{avgdl}\right)}

where ``tf(t, d)`` counts term ``t`` in ``d``, ``qtf(t)`` counts it in the
query, ``|d|`` is the passage's number of terms and ``avgdl`` their mean over
the ``n`` passages. With ``df(t)`` the number of passages holding ``t``,

.. math::

    \mathrm{idf}(t) = \ln\left(1 + \frac{n - \mathrm{df}(t) + 0.5}{\mathrm{df}(t) + 0.5}\right).

Two things separate it from TF-IDF's cosine:

* **saturation** (``k1``): the ``tf`` factor grows with the count but never
  beyond 1, so the tenth "loop" in a passage adds less than the second;
  ``k1 = 0`` keeps only presence (binary tf), a large ``k1`` is nearly linear;
* **length normalisation** (``b``): a long passage needs more occurrences for
  the same weight; ``b = 0`` ignores length, ``b = 1`` divides fully by
  ``|d| / avgdl``.

This is the variant of Lucene and of `bm25s <https://github.com/xhluca/bm25s>`_
(``method="lucene"``, the tests check equality with it). It leaves out the
classic Okapi factor ``(k1 + 1)`` in the numerator, a constant that changes no
ranking, and its idf keeps the ``1 +`` inside the logarithm, so that a term in
more than half the passages still counts a little instead of negatively (the
Robertson-Sparck Jones idf without it, as in ``rank_bm25.BM25Okapi``, goes below 0).

Everything that depends on the passage (idf, saturation, length) is computed
once, at fit time, into an ``(n, V)`` sparse matrix ``W``; a query is its row
of term counts ``c``, ``(1, V)``, and the scores of all passages are
``c @ W.T``: the same one sparse product as for TF-IDF, with the same
tokenizer. :class:`slmbook.retrieval.TfidfRetriever` uses it with
``weighting="bm25"``.

See chapter 9, "Retrieval" (book/09_retrieval.ipynb).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from slmbook._checks import finite_float, unit_interval

if TYPE_CHECKING:
    import scipy.sparse as sp

__all__ = [
    "LUCENE_STOP_WORDS",
    "Bm25Vectorizer",
    "bm25_idf",
    "bm25_params",
    "bm25_weights",
    "weighting_options",
]

BACKENDS = ("sklearn", "scratch")
WEIGHTINGS = ("tfidf", "bm25")
K1, B = 1.5, 0.75  # bm25s's defaults (Lucene's k1 is 1.2)

LUCENE_STOP_WORDS: tuple[str, ...] = (
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "if", "in", "into", "is", "it",
    "no", "not", "of", "on", "or", "such", "that", "the", "their", "then", "there", "these",
    "they", "this", "to", "was", "will", "with",
)
"""Lucene's classic English stop set (33 words), bm25s's ``stopwords="en"``.

``TfidfRetriever(weighting="bm25", stop_words=LUCENE_STOP_WORDS)`` tokenizes
as bm25s does; the default ``stop_words="english"`` is scikit-learn's list of
318 words, which drops words such as "first", "find" and "part" as well.
"""


def bm25_params(k1: Any, b: Any) -> tuple[float, float]:
    """``(k1, b)`` as floats if ``k1 >= 0`` is finite and ``0 <= b <= 1``, else an error.

    >>> bm25_params(1.2, 0.75)
    (1.2, 0.75)
    >>> bm25_params(-1, 0.75)
    Traceback (most recent call last):
    ...
    ValueError: k1 must be >= 0 (0: binary tf; 1.2 to 2 is usual), got -1.0

    See chapter 9, "Retrieval" (book/09_retrieval.ipynb).
    """
    k1 = finite_float("k1", k1)
    if k1 < 0:
        raise ValueError(f"k1 must be >= 0 (0: binary tf; 1.2 to 2 is usual), got {k1!r}")
    return k1, unit_interval("b", b, closed_right=True)


def weighting_options(
    weighting: str, k1: float | None, b: float | None, tfidf: dict[str, Any]
) -> dict[str, Any]:
    """The options :class:`slmbook.retrieval.TfidfRetriever` keeps for ``weighting``, checked.

    ``"tfidf"``: ``tfidf`` (``use_idf``, ``smooth_idf``, ``sublinear_tf``) as
    given; ``k1`` and ``b`` must be ``None``. ``"bm25"``: ``{"k1": ..., "b": ...}``
    (``None`` means 1.5 and 0.75); the TF-IDF options must keep their default
    ``True``, since BM25 has its own idf and tf saturation.

    >>> weighting_options("bm25", None, 0.5, {"use_idf": True})
    {'k1': 1.5, 'b': 0.5}

    See chapter 9, "Retrieval" (book/09_retrieval.ipynb).
    """
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting={weighting!r} is unknown; use 'tfidf' or 'bm25'")
    if weighting == "tfidf":
        if k1 is not None or b is not None:
            raise ValueError(f"k1={k1!r}, b={b!r}: k1 and b are BM25 options; pass "
                             "weighting='bm25' with them, or leave them out")
        return dict(tfidf)
    for name, value in tfidf.items():
        if value is not True:
            raise ValueError(f"{name}={value!r} is a TF-IDF option; weighting='bm25' has its "
                             "own idf and tf saturation (k1, b): leave it out")
    k1, b = bm25_params(K1 if k1 is None else k1, B if b is None else b)
    return {"k1": k1, "b": b}


def bm25_idf(df: np.ndarray | int, n_docs: int) -> np.ndarray:
    """``ln(1 + (n - df + 0.5) / (df + 0.5))`` for terms in ``df`` of ``n_docs`` passages.

    ``df``: ``(V,)`` (or a scalar); returns float64 of the same shape, always > 0
    for ``0 <= df <= n``.

    >>> bm25_idf(np.array([1, 2]), 2).round(4)
    array([0.6931, 0.1823])

    See chapter 9, "Retrieval" (book/09_retrieval.ipynb).
    """
    df = np.asarray(df, dtype=np.float64)
    return np.log1p((n_docs - df + 0.5) / (df + 0.5))


def bm25_weights(counts: sp.csr_matrix, idf: np.ndarray, *, k1: float, b: float) -> sp.csr_matrix:
    """The document side of BM25: ``idf(t) * tf / (tf + k1 (1 - b + b |d| / avgdl))``.

    Parameters
    ----------
    counts:
        ``(n, V)`` sparse term counts of the passages; ``|d|`` is each row's sum.
    idf:
        ``(V,)`` idf of each column (:func:`bm25_idf`).
    k1, b:
        Saturation and length normalisation (checked by :func:`bm25_params`).

    Returns
    -------
    ``(n, V)`` float64 CSR matrix with the sparsity of ``counts``.

    See chapter 9, "Retrieval" (book/09_retrieval.ipynb).
    """
    import scipy.sparse as sp

    k1, b = bm25_params(k1, b)
    W = sp.csr_matrix(counts, dtype=np.float64, copy=True)
    lengths = np.asarray(W.sum(axis=1)).ravel()  # (n,) |d|
    avgdl = lengths.mean()
    if avgdl <= 0:
        raise ValueError("every passage is empty (no term counted); check the passages")
    norm = k1 * (1.0 - b + b * lengths / avgdl)  # (n,) the saturation constant of each row
    tf = W.data
    W.data = np.asarray(idf, dtype=np.float64)[W.indices] * tf / (tf + np.repeat(norm, np.diff(W.indptr)))
    return W


class Bm25Vectorizer:
    """Passages to BM25 weights, queries to term counts, over one vocabulary.

    Parameters
    ----------
    k1, b:
        BM25's saturation (``>= 0``) and length normalisation (in ``[0, 1]``).
    backend:
        Who counts the terms: ``"sklearn"`` (``CountVectorizer``) or
        ``"scratch"`` (:class:`slmbook.tfidf.TfidfVectorizer` with raw counts);
        both give the same vocabulary, in alphabetical order, and counts.
    lowercase, token_pattern, ngram_range, stop_words, min_df, max_df:
        The analysis options, as in scikit-learn's ``CountVectorizer``.

    Attributes
    ----------
    vocabulary_: dict[str, int]
        Term -> column.
    idf_: (V,) float64
        :func:`bm25_idf` of each column.
    avgdl_: float
        Mean number of terms per passage (after stop words and ``min_df``/``max_df``).

    Examples
    --------
    >>> vec = Bm25Vectorizer(k1=0.0, b=0.0)
    >>> vec.fit_transform(["cat cat", "dog"]).toarray().round(4)
    array([[0.6931, 0.    ],
           [0.    , 0.6931]])
    >>> vec.transform(["cat cat cat bird"]).toarray()
    array([[3., 0.]])

    See chapter 9, "Retrieval" (book/09_retrieval.ipynb).
    """

    def __init__(
        self,
        *,
        k1: float = 1.5,
        b: float = 0.75,
        backend: str = "sklearn",
        lowercase: bool = True,
        token_pattern: str = r"(?u)\b\w\w+\b",
        ngram_range: tuple[int, int] = (1, 1),
        stop_words: str | list[str] | None = None,
        min_df: float | int = 1,
        max_df: float | int = 1.0,
    ) -> None:
        self.k1, self.b = bm25_params(k1, b)
        if backend not in BACKENDS:
            raise ValueError(f"backend={backend!r} is unknown; use 'sklearn' or 'scratch'")
        self.backend = backend
        self.analysis: dict[str, Any] = {
            "lowercase": lowercase, "token_pattern": token_pattern,
            "ngram_range": tuple(ngram_range), "stop_words": stop_words,
            "min_df": min_df, "max_df": max_df,
        }
        self._counter = self._make_counter()

    def __repr__(self) -> str:
        return f"Bm25Vectorizer(k1={self.k1!r}, b={self.b!r}, backend={self.backend!r})"

    def _make_counter(self):
        if self.backend == "scratch":
            from slmbook.tfidf import TfidfVectorizer

            return TfidfVectorizer(**self.analysis, use_idf=False, norm=None, sublinear_tf=False)
        from sklearn.feature_extraction.text import CountVectorizer

        return CountVectorizer(**self.analysis, dtype=np.float64)

    def build_analyzer(self):
        """The function text -> list of terms (the counter's: lowercasing, stop words, n-grams)."""
        return self._counter.build_analyzer()

    def fit(self, texts: list[str]) -> Bm25Vectorizer:
        """Learn the vocabulary, idf and mean length; return ``self``."""
        self.fit_transform(texts)
        return self

    def fit_transform(self, texts: list[str]) -> sp.csr_matrix:
        """Fit, then return the passages' BM25 weights: ``(n, V)`` (:func:`bm25_weights`)."""
        import scipy.sparse as sp

        self._counter = self._make_counter()
        counts = sp.csr_matrix(self._counter.fit_transform(texts), dtype=np.float64)
        counts.sort_indices()
        df = np.diff(counts.tocsc().indptr)  # (V,) passages holding each term
        self.idf_ = bm25_idf(df, counts.shape[0])
        self.avgdl_ = float(counts.sum() / counts.shape[0])
        self.vocabulary_ = self._counter.vocabulary_
        return bm25_weights(counts, self.idf_, k1=self.k1, b=self.b)

    def transform(self, texts: list[str]) -> sp.csr_matrix:
        """Term counts of queries over the fitted vocabulary: ``(n_queries, V)`` float64.

        Unknown terms are ignored; a term twice in a query counts twice (as in bm25s).
        """
        import scipy.sparse as sp

        if not hasattr(self, "vocabulary_"):
            from sklearn.exceptions import NotFittedError

            raise NotFittedError(
                "This Bm25Vectorizer instance is not fitted yet; call 'fit' with a list of "
                "passages before using it"
            )
        return sp.csr_matrix(self._counter.transform(texts), dtype=np.float64)

    def get_feature_names_out(self) -> np.ndarray:
        """The terms, in column order (an object array)."""
        return np.asarray(self._counter.get_feature_names_out(), dtype=object)
