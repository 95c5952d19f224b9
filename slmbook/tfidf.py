r"""TF-IDF from scratch, following scikit-learn's estimator conventions.

A document becomes a vector with one entry per term of the vocabulary:

.. math::

    \mathrm{tfidf}(t, d) = \mathrm{tf}(t, d) \cdot \mathrm{idf}(t)

where ``tf(t, d)`` is how many times term ``t`` occurs in document ``d`` (or
``1 + ln tf`` with ``sublinear_tf=True``) and, for ``n`` documents of which
``df(t)`` contain ``t``,

.. math::

    \mathrm{idf}(t) = \ln\frac{1 + n}{1 + \mathrm{df}(t)} + 1
    \quad\text{(smooth\_idf=True)}, \qquad
    \mathrm{idf}(t) = \ln\frac{n}{\mathrm{df}(t)} + 1
    \quad\text{(smooth\_idf=False)}.

Each row is then divided by its L2 (or L1) norm, so that the dot product of
two rows is their cosine similarity. With the same options the result equals
:class:`sklearn.feature_extraction.text.TfidfVectorizer`'s (the tests check it).

As in scikit-learn, ``norm``, ``use_idf``, ``sublinear_tf`` and ``smooth_idf``
take effect at the next ``fit`` (the analysis options at every call), and
``get_params``/``set_params`` let ``sklearn.base.clone`` and ``GridSearchCV`` use
the class. scikit-learn and scipy are imported on first use, not at import.

See chapter 9, "Retrieval" (book/09_retrieval.ipynb).
"""

from __future__ import annotations

import inspect
import math
import re
from collections import Counter
from collections.abc import Iterable
from numbers import Integral
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import scipy.sparse as sp

# the first two are scikit-learn's, loaded by __getattr__ when first used
__all__ = ["ENGLISH_STOP_WORDS", "NotFittedError", "TfidfVectorizer", "idf"]  # noqa: F822


def __getattr__(name: str) -> Any:
    if name == "ENGLISH_STOP_WORDS":
        from sklearn.feature_extraction import text

        return text.ENGLISH_STOP_WORDS
    if name == "NotFittedError":
        from sklearn import exceptions

        return exceptions.NotFittedError
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_SINGLE_STR = (
    "Iterable over raw text documents expected, string object received: "
    "pass a list of strings, e.g. [text]"
)


class TfidfVectorizer:
    r"""Turn a collection of texts into a matrix of TF-IDF features, from scratch.

    Parameters
    ----------
    lowercase:
        Lowercase every text before tokenizing.
    token_pattern:
        Regular expression whose matches are the tokens (if it has one capturing
        group, the group is the token). The default keeps words of two or more
        word characters.
    ngram_range:
        ``(min_n, max_n)``: use every n-gram of tokens with ``min_n <= n <= max_n``,
        joined by a space.
    stop_words:
        ``None``, ``"english"`` (scikit-learn's list) or a list of words removed
        before the n-grams are built.
    min_df, max_df:
        Drop terms whose document frequency is below ``min_df`` or above
        ``max_df``: an ``int`` is a number of documents, a ``float`` in
        ``[0, 1]`` a fraction of them.
    use_idf:
        Multiply term frequencies by the idf; otherwise keep raw tf.
    smooth_idf:
        Add one to ``n`` and to every ``df`` (as if one extra document held every
        term), so that no idf divides by zero: ``idf = ln((1 + n) / (1 + df)) + 1``.
    sublinear_tf:
        Replace ``tf`` by ``1 + ln(tf)``.
    norm:
        ``"l2"``, ``"l1"`` or ``None``: normalisation of each row.

    Attributes
    ----------
    vocabulary_: dict[str, int]
        Term -> column, in alphabetical order of the terms.
    idf_: (V,) float64
        See the :attr:`idf_` property below.
    fixed_vocabulary_: bool
        Always ``False``: ``fit`` learns the vocabulary (no ``vocabulary=`` option).

    Examples
    --------
    >>> vec = TfidfVectorizer().fit(["the cat sat", "the dog sat down"])
    >>> sorted(vec.vocabulary_)
    ['cat', 'dog', 'down', 'sat', 'the']
    >>> vec.transform(["a cat"]).toarray().round(2)
    array([[1., 0., 0., 0., 0.]])

    See chapter 9, "Retrieval" (book/09_retrieval.ipynb).
    """

    def __init__(
        self,
        *,
        lowercase: bool = True,
        token_pattern: str = r"(?u)\b\w\w+\b",
        ngram_range: tuple[int, int] = (1, 1),
        stop_words: str | list[str] | None = None,
        min_df: float | int = 1,
        max_df: float | int = 1.0,
        use_idf: bool = True,
        smooth_idf: bool = True,
        sublinear_tf: bool = False,
        norm: str | None = "l2",
    ) -> None:
        self.lowercase = lowercase
        self.token_pattern = token_pattern
        self.ngram_range = ngram_range
        self.stop_words = stop_words
        self.min_df = min_df
        self.max_df = max_df
        self.use_idf = use_idf
        self.smooth_idf = smooth_idf
        self.sublinear_tf = sublinear_tf
        self.norm = norm

    @classmethod
    def _get_param_names(cls) -> list[str]:
        """The constructor's keyword arguments, sorted (scikit-learn's convention)."""
        signature = inspect.signature(cls.__init__)
        return sorted(p.name for p in signature.parameters.values() if p.name != "self")

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor arguments as a dict (``deep`` is accepted; there is nothing nested)."""
        return {name: getattr(self, name) for name in self._get_param_names()}

    def set_params(self, **params: Any) -> TfidfVectorizer:
        """Set constructor arguments by name (ValueError for another name); return ``self``."""
        valid = self._get_param_names()
        for name, value in params.items():
            if name not in valid:
                raise ValueError(
                    f"Invalid parameter {name!r} for estimator {self!r}. "
                    f"Valid parameters are: {valid!r}."
                )
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        defaults = type(self)().get_params()
        changed = [f"{k}={v!r}" for k, v in self.get_params().items() if defaults[k] != v]
        return f"{type(self).__name__}({', '.join(changed)})"

    @property
    def idf_(self) -> np.ndarray:
        """The idf of each column: (V,) float64.

        Also computed (unused) with ``use_idf=False``; assignable with one value
        per term, as in scikit-learn.
        """
        self._check_fitted("_idf")
        return self._idf

    @idf_.setter
    def idf_(self, value: Any) -> None:
        if not self.use_idf:
            raise ValueError("idf_ cannot be set when use_idf=False; set use_idf=True first")
        value = np.asarray(value, dtype=np.float64)
        vocabulary = self.__dict__.get("vocabulary_")
        if vocabulary is not None and len(value) != len(vocabulary):
            raise ValueError(
                f"idf length = {len(value)} must be equal to vocabulary size = "
                f"{len(vocabulary)}: assign one idf per term of vocabulary_"
            )
        if "_weighting" not in self.__dict__:  # set before fit: weights from the options now
            self._weighting = self._current_weighting()
        self._idf = value

    def _current_weighting(self) -> tuple[str | None, bool, bool]:
        return self.norm, self.use_idf, self.sublinear_tf

    def _check_params(self) -> None:
        min_n, max_n = self.ngram_range
        if not 1 <= min_n <= max_n:
            why = "larger than the upper boundary" if min_n > max_n else "below 1"
            raise ValueError(
                f"Invalid value for ngram_range={self.ngram_range!r} lower boundary {why}. "
                "Use (min_n, max_n) with 1 <= min_n <= max_n"
            )
        if self.norm not in ("l1", "l2", None):
            raise ValueError(f"norm={self.norm!r} is not supported; use 'l2', 'l1' or None")
        for name in ("min_df", "max_df"):
            value = getattr(self, name)
            if isinstance(value, Integral):
                if value < 0:
                    raise ValueError(f"{name}={value} must be >= 0")
            elif not 0.0 <= value <= 1.0:
                raise ValueError(
                    f"{name}={value} must be an int (documents) or a float in [0, 1] (fraction)"
                )
        if re.compile(self.token_pattern).groups > 1:
            raise ValueError(
                f"token_pattern={self.token_pattern!r} has more than one capturing group; "
                "use at most one"
            )

    def _stop_words(self) -> frozenset[str]:
        if self.stop_words is None:
            return frozenset()
        if self.stop_words == "english":
            from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

            return ENGLISH_STOP_WORDS
        if isinstance(self.stop_words, str):
            raise ValueError(
                f"stop_words={self.stop_words!r} is not a known list; use 'english', "
                "a list of words or None"
            )
        return frozenset(self.stop_words)

    def build_analyzer(self):
        """Return the function text -> list of terms (tokens and n-grams)."""
        self._check_params()
        pattern = re.compile(self.token_pattern)
        stop = self._stop_words()
        min_n, max_n = self.ngram_range

        def analyze(text: str) -> list[str]:
            if self.lowercase:
                text = text.lower()
            tokens = [t for t in pattern.findall(text) if t not in stop]
            terms = []
            for n in range(min_n, max_n + 1):
                terms.extend(" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1))
            return terms

        return analyze

    def _count(self, texts: Iterable[str], vocabulary: dict[str, int] | None):
        """Term counts as a CSR matrix (rows: texts, columns: vocabulary).

        With ``vocabulary=None`` the vocabulary is grown while counting, in order
        of first appearance; it is returned with the matrix.
        """
        import scipy.sparse as sp

        if isinstance(texts, str):
            raise ValueError(_SINGLE_STR)
        analyze = self.build_analyzer()
        grow = vocabulary is None
        vocab: dict[str, int] = {} if grow else vocabulary
        indptr, indices, values = [0], [], []
        for i, text in enumerate(texts):
            if isinstance(text, float) and math.isnan(text):
                raise ValueError(
                    f"np.nan is an invalid document, expected byte or unicode string "
                    f"(document {i}); replace missing texts, e.g. with ''"
                )
            if not isinstance(text, str):
                raise TypeError(f"document {i} is a {type(text).__name__}, not a str; pass strings")
            counts: dict[int, int] = {}
            for term, count in Counter(analyze(text)).items():
                column = vocab.setdefault(term, len(vocab)) if grow else vocab.get(term)
                if column is not None:  # None: a term outside the fitted vocabulary
                    counts[column] = count
            indices.extend(counts)
            values.extend(counts.values())
            indptr.append(len(indices))
        X = sp.csr_matrix(
            (np.asarray(values, dtype=np.float64), np.asarray(indices, dtype=np.int64), indptr),
            shape=(len(indptr) - 1, len(vocab)),
        )
        X.sort_indices()
        return X, vocab

    def fit(self, raw_documents: Iterable[str], y: None = None) -> TfidfVectorizer:
        """Learn the vocabulary and the idf of each term; return ``self``."""
        self._fit(raw_documents)
        return self

    def fit_transform(self, raw_documents: Iterable[str], y: None = None) -> sp.csr_matrix:
        """Fit, then return the TF-IDF matrix of the same documents: (n_docs, V)."""
        counts = self._fit(raw_documents)
        return self._weight(counts)

    def _fit(self, raw_documents: Iterable[str]) -> sp.csr_matrix:
        weighting = self._current_weighting()  # the options this fit stands for
        counts, vocab = self._count(raw_documents, None)
        n_docs = counts.shape[0]
        if not vocab:
            raise ValueError(
                "empty vocabulary: the documents contain no token (or only stop words); "
                "check token_pattern and stop_words"
            )
        # document frequency: in how many rows each column is non-zero
        df = np.bincount(counts.indices, minlength=counts.shape[1])
        high = self.max_df if isinstance(self.max_df, Integral) else self.max_df * n_docs
        low = self.min_df if isinstance(self.min_df, Integral) else self.min_df * n_docs
        if high < low:
            raise ValueError(
                f"max_df={self.max_df!r} corresponds to fewer documents than min_df={self.min_df!r}"
            )
        keep = (df >= low) & (df <= high)
        if not keep.any():
            raise ValueError(
                f"no terms remain after min_df={self.min_df!r} and max_df={self.max_df!r}; "
                "lower min_df or raise max_df"
            )
        # columns in alphabetical order of the kept terms
        terms = sorted(term for term, column in vocab.items() if keep[column])
        order = np.array([vocab[term] for term in terms], dtype=np.int64)
        self.vocabulary_ = {term: j for j, term in enumerate(terms)}
        counts = counts[:, order].tocsr()
        df = df[order]
        n, df = (n_docs + 1, df + 1) if self.smooth_idf else (n_docs, df)
        self._idf = np.log(n / df) + 1.0
        self._weighting = weighting
        self.fixed_vocabulary_ = False
        return counts

    def _check_fitted(self, attribute: str = "vocabulary_") -> None:
        if attribute not in self.__dict__:
            from sklearn.exceptions import NotFittedError

            raise NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet; call 'fit' with "
                "a list of documents before using it"
            )

    def transform(self, raw_documents: Iterable[str]) -> sp.csr_matrix:
        """TF-IDF matrix of new documents over the learned vocabulary: (n_docs, V).

        Terms that are not in the vocabulary are ignored.
        """
        self._check_fitted()
        counts, _ = self._count(raw_documents, self.vocabulary_)
        return self._weight(counts)

    def _weight(self, counts: sp.csr_matrix) -> sp.csr_matrix:
        # the options of the last fit (or, for a vocabulary_ assigned by hand, the current ones)
        norm, use_idf, sublinear_tf = self.__dict__.get("_weighting", self._current_weighting())
        X = counts.astype(np.float64)
        if sublinear_tf:
            X.data = np.log(X.data) + 1.0  # 1 + ln tf (tf >= 1 on stored entries)
        if use_idf:
            if len(self.idf_) != X.shape[1]:
                raise ValueError(
                    f"idf_ has {len(self.idf_)} values but the vocabulary has {X.shape[1]} "
                    "terms: fit again, or assign one idf per term"
                )
            X.data *= self.idf_[X.indices]  # column j scaled by idf_j
        if norm is not None:
            row_norms = _row_norms(X, norm)
            row_norms[row_norms == 0.0] = 1.0  # empty rows stay zero
            X.data /= np.repeat(row_norms, np.diff(X.indptr))
        return X

    def get_feature_names_out(self) -> np.ndarray:
        """The terms, in column order (an object array, like scikit-learn's)."""
        self._check_fitted()
        return np.array(list(self.vocabulary_), dtype=object)


def _row_norms(X: sp.csr_matrix, norm: str) -> np.ndarray:
    """L1 or L2 norm of each row of a CSR matrix: (n_rows,)."""
    rows = np.repeat(np.arange(X.shape[0]), np.diff(X.indptr))
    values = np.abs(X.data) if norm == "l1" else X.data**2
    sums = np.bincount(rows, weights=values, minlength=X.shape[0])
    return sums if norm == "l1" else np.sqrt(sums)


def idf(df: np.ndarray | int, n_docs: int, *, smooth: bool = True) -> np.ndarray | float:
    """The idf of terms that occur in ``df`` of ``n_docs`` documents.

    ``ln((1 + n) / (1 + df)) + 1`` when ``smooth``, else ``ln(n / df) + 1``.

    See chapter 9, "Retrieval" (book/09_retrieval.ipynb).
    """
    if smooth:
        return np.log((1 + n_docs) / (1 + np.asarray(df, dtype=np.float64))) + 1.0
    return np.log(n_docs / np.asarray(df, dtype=np.float64)) + 1.0
