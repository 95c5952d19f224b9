r"""Retrieval: the ``Retriever`` protocol and a TF-IDF retriever.

The first half of retrieval-augmented generation: given a question, find the
passages (:mod:`slmbook.passages`) that help answer it.

* A :class:`Retriever` is anything with ``search(query, k)`` and
  ``search_batch(queries, k)`` returning :class:`Hit` objects, best first.
  The RAG pipeline and :func:`slmbook.metrics.evaluate` accept any of them.
* :class:`TfidfRetriever` turns every passage into an L2-normalised TF-IDF
  row; the score of a passage for a query is the dot product of their rows,
  i.e. their cosine similarity; ``weighting="bm25"`` gives BM25 scores (:mod:`slmbook.bm25`).

scikit-learn and scipy are imported when a retriever is first fitted or
loaded, not when :mod:`slmbook` is imported.

Taught in chapter 9, "Retrieval" (book/09_retrieval.ipynb).
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from slmbook._checks import positive_int
from slmbook._packing import pack_named, pack_strings, unpack_strings
from slmbook.bm25 import Bm25Vectorizer, weighting_options
from slmbook.passages import Passage, unzip_passages

if TYPE_CHECKING:
    import scipy.sparse as sp

__all__ = ["FORMAT_VERSION", "Hit", "Retriever", "TfidfRetriever", "format_hits"]

FORMAT_VERSION = 1
"""Version of the file written by :meth:`TfidfRetriever.save`."""

BACKENDS = ("sklearn", "scratch")


@dataclass(frozen=True)
class Hit:
    """One search result: the passage's id, its score (higher is better), text and source.

    See chapter 9, "Retrieval" (book/09_retrieval.ipynb).
    """

    passage_id: str
    score: float
    text: str
    source: str | None


@runtime_checkable
class Retriever(Protocol):
    """What every retriever offers: the ``k`` best passages for a query, as :class:`Hit` objects.

    ``search(query, k)`` returns at most ``k`` hits, best first;
    ``search_batch(queries, k)`` returns one such list per query. A class
    need not inherit from ``Retriever``: having both methods is enough
    (``isinstance(obj, Retriever)`` checks that they exist).

    Examples
    --------
    >>> isinstance(TfidfRetriever(), Retriever)
    True

    See chapter 9, "Retrieval" (book/09_retrieval.ipynb).
    """

    def search(self, query: str, k: int = 5) -> list[Hit]:
        """The ``k`` best passages for ``query``, best first."""
        ...

    def search_batch(self, queries: Sequence[str], k: int = 5) -> list[list[Hit]]:
        """:meth:`search` for each of ``queries``."""
        ...


class TfidfRetriever:
    """Rank passages by the cosine similarity of their TF-IDF vectors to a query (or by BM25).

    Parameters
    ----------
    backend:
        ``"sklearn"`` (scikit-learn's ``TfidfVectorizer``) or ``"scratch"``
        (:class:`slmbook.tfidf.TfidfVectorizer`); both give the same matrix.
    weighting, k1, b:
        ``"tfidf"``, or ``"bm25"`` with ``k1`` and ``b``: :func:`slmbook.bm25.weighting_options`.
    lowercase, token_pattern, ngram_range, stop_words, min_df, max_df, use_idf, smooth_idf, sublinear_tf:
        The vectorizer's options, as in scikit-learn's ``TfidfVectorizer``.
        The defaults differ from it in two places that chapter 9 measures:
        English stop words are dropped and term frequencies are damped
        (``sublinear_tf=True``). The norm is always L2, so scores are cosines.

    Notes
    -----
    * ``search`` before ``fit`` raises ``NotFittedError``; ``fit([])`` raises ``ValueError``.
    * A query with no term of the vocabulary (empty, only stop words, only
      unknown words) returns ``[]``: nothing can be ranked.
    * ``k`` must be an int >= 1; ``min(k, n_passages)`` hits come back, best
      first, ties broken by passage order; passages that share no term with
      the query score 0 and come last.

    Examples
    --------
    >>> r = TfidfRetriever().fit(["the cat sat on the mat", "dogs bark at night"])
    >>> [h.passage_id for h in r.search("where did the cat sit?", k=1)]
    ['0']

    See chapter 9, "Retrieval" (book/09_retrieval.ipynb).
    """

    def __init__(
        self,
        *,
        backend: str = "sklearn",
        weighting: str = "tfidf",
        k1: float | None = None,
        b: float | None = None,
        lowercase: bool = True,
        token_pattern: str = r"(?u)\b\w\w+\b",
        ngram_range: tuple[int, int] = (1, 1),
        stop_words: str | Sequence[str] | None = "english",
        min_df: float | int = 1,
        max_df: float | int = 1.0,
        use_idf: bool = True,
        smooth_idf: bool = True,
        sublinear_tf: bool = True,
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend={backend!r} is unknown; use 'sklearn' or 'scratch'")
        self.backend, self.weighting = backend, weighting
        tfidf = {"use_idf": use_idf, "smooth_idf": smooth_idf, "sublinear_tf": sublinear_tf}
        self.options: dict[str, Any] = {
            "lowercase": lowercase,
            "token_pattern": token_pattern,
            "ngram_range": tuple(ngram_range),
            "stop_words": stop_words if stop_words is None or isinstance(stop_words, str)
            else list(stop_words),
            "min_df": min_df,
            "max_df": max_df,
            **weighting_options(weighting, k1, b, tfidf),
        }  # the keyword arguments above, as saved with the index

    def __repr__(self) -> str:
        size = f", n_passages={len(self.ids_)}" if hasattr(self, "ids_") else ""
        kind = f"backend={self.backend!r}, weighting={self.weighting!r}"
        return f"TfidfRetriever({kind}, options={self.options!r}{size})"

    def __len__(self) -> int:
        self._check_fitted()
        return len(self.ids_)

    def _make_vectorizer(self):
        if self.weighting == "bm25":
            return Bm25Vectorizer(backend=self.backend, **self.options)
        if self.backend == "scratch":
            from slmbook.tfidf import TfidfVectorizer

            return TfidfVectorizer(**self.options, norm="l2")
        from sklearn.feature_extraction.text import TfidfVectorizer as SkTfidfVectorizer

        return SkTfidfVectorizer(**self.options, norm="l2")

    def fit(self, passages: Sequence[str | Passage]) -> TfidfRetriever:
        """Index passages (strings or :class:`Passage`); return ``self``.

        A string's id is its position (``"0"``, ``"1"``, ...) and its source ``None``.
        """
        import scipy.sparse as sp

        ids, texts, sources = unzip_passages(passages)
        vectorizer = self._make_vectorizer()
        matrix = vectorizer.fit_transform(texts)
        self._set_index(vectorizer, sp.csr_matrix(matrix), ids, texts, sources)
        return self

    def _set_index(self, vectorizer, matrix, ids, texts, sources) -> None:
        self.vectorizer_ = vectorizer
        self.matrix_ = matrix  # (n_passages, V): rows of unit L2 norm, or BM25 weights
        self.ids_, self.texts_, self.sources_ = list(ids), list(texts), list(sources)
        # (V, n_passages): row t is the posting list of term t (passages, weights)
        self._by_term = matrix.T.tocsr()
        self._post_idx = self._by_term.indices.astype(np.intp)  # bincount wants intp

    def _check_fitted(self) -> None:
        if not hasattr(self, "ids_"):
            from sklearn.exceptions import NotFittedError  # imported only when raised
            raise NotFittedError(
                "This TfidfRetriever instance is not fitted yet; call 'fit' with a list "
                "of passages before searching"
            )

    # ------------------------------------------------------------ searching
    def _queries(self, queries: Sequence[str]) -> sp.csr_matrix:
        """TF-IDF rows (or, for BM25, term counts) of the queries: (n_queries, V)."""
        import scipy.sparse as sp

        self._check_fitted()
        for i, q in enumerate(queries):
            if not isinstance(q, str):
                raise TypeError(f"query {i} is a {type(q).__name__}, not a str")
        return sp.csr_matrix(self.vectorizer_.transform(list(queries)))

    def scores(self, queries: Sequence[str]) -> sp.csr_matrix:
        """Score (cosine, or BM25) of each query for each passage: (n_queries, n_passages), sparse."""
        import scipy.sparse as sp

        if isinstance(queries, str):
            raise TypeError("queries is a single str; pass a list of str")
        return sp.csr_matrix(self._queries(queries) @ self._by_term)

    def search(self, query: str, k: int = 5) -> list[Hit]:
        """The ``k`` passages most similar to ``query``, best first (see class docstring)."""
        if not isinstance(query, str):
            raise TypeError(f"query is a {type(query).__name__}, not a str")
        return self.search_batch([query], k)[0]

    def search_batch(
        self, queries: Sequence[str], k: int = 5, *, chunk_size: int = 256
    ) -> list[list[Hit]]:
        """:meth:`search` for many queries (vectorized in chunks of ``chunk_size``)."""
        if isinstance(queries, str):
            raise TypeError("queries is a single str; pass a list, or call search()")
        k = positive_int("k", k)
        chunk_size = positive_int("chunk_size", chunk_size)
        self._check_fitted()
        results = []
        for start in range(0, len(queries), chunk_size):
            Q = self._queries(queries[start : start + chunk_size])  # (q, V)
            for row in range(Q.shape[0]):
                a, b = Q.indptr[row], Q.indptr[row + 1]
                if a == b:
                    results.append([])  # no known term: nothing to rank
                    continue
                ids, scores = self._search_row(Q.indices[a:b], Q.data[a:b], k)
                results.append([self._hit(i, s) for i, s in zip(ids, scores, strict=True)])
        return results

    def _search_row(self, terms: np.ndarray, weights: np.ndarray, k: int):
        """Top ``k`` passages for one query row (its term columns and tf-idf weights).

        Only the posting lists of the query's terms are read: each passage's
        score is the sum over the query's terms of (query weight x passage
        weight), accumulated with one ``bincount`` into a dense (n_passages,)
        array. The passages of the rarest term give a lower bound of the k-th
        best score, so only the passages above it are ranked.
        """
        ptr, idx, val = self._by_term.indptr, self._post_idx, self._by_term.data
        spans = [(ptr[t], ptr[t + 1]) for t in terms.tolist()]
        passages = np.concatenate([idx[a:b] for a, b in spans])
        products = np.concatenate([w * val[a:b] for (a, b), w in zip(spans, weights.tolist(), strict=True)])
        scores = np.bincount(passages, weights=products, minlength=len(self.ids_))
        a, b = spans[int(np.argmin([b - a for a, b in spans]))]  # rarest term
        probe = scores[idx[a:b]]
        if len(probe) >= k:
            bound = np.partition(probe, len(probe) - k)[len(probe) - k]  # <= k-th best
            candidates = np.flatnonzero(scores >= bound)
        else:
            candidates = np.flatnonzero(scores > 0)
        return _top_k(candidates, scores[candidates], k, len(scores))

    def _hit(self, i: int, score: float) -> Hit:
        return Hit(self.ids_[i], float(score), self.texts_[i], self.sources_[i])

    # ------------------------------------------------------------ saving
    def save(self, path: str | Path) -> Path:
        """Write the fitted index to one ``.npz`` file (no pickle); return its path."""
        self._check_fitted()
        vocab = self.vectorizer_.vocabulary_
        terms = sorted(vocab, key=vocab.get)
        meta = {
            "format": "slmbook.retrieval.TfidfRetriever",
            "version": FORMAT_VERSION,
            "backend": self.backend,
            "weighting": self.weighting,
            "options": self.options,
        }
        path = Path(path)
        with path.open("wb") as f:  # np.savez would otherwise append ".npz"
            np.savez(
                f,
                meta=pack_strings([json.dumps(meta)])[0],
                idf=np.asarray(getattr(self.vectorizer_, "idf_", np.ones(len(terms)))),
                data=self.matrix_.data, indices=self.matrix_.indices, indptr=self.matrix_.indptr,
                shape=np.array(self.matrix_.shape),
                has_source=np.array([s is not None for s in self.sources_]),
                **pack_named("terms", terms),
                **pack_named("ids", self.ids_),
                **pack_named("texts", self.texts_),
                **pack_named("sources", [s or "" for s in self.sources_]),
            )
        return path

    @classmethod
    def load(cls, path: str | Path) -> TfidfRetriever:
        """Read an index written by :meth:`save`; never executes code from the file.

        The vectorizer is fitted again on the stored passages (deterministic,
        and checked against the stored vocabulary and idf), so the file holds
        only arrays and JSON: no pickled object, no private attribute of
        scikit-learn. Raises ``FileNotFoundError`` if it does not exist and
        ``ValueError`` (naming the file) if it is not an index, is corrupt or
        is of another format version.
        """
        path = Path(path)
        if path.is_dir():
            raise IsADirectoryError(f"{str(path)!r} is a folder; pass the index file inside it")
        if not path.is_file():
            raise FileNotFoundError(f"index file {str(path)!r} does not exist")
        rebuild = "rebuild it with TfidfRetriever(...).fit(passages).save(path)"
        if not zipfile.is_zipfile(path):  # numpy's own message would suggest unpickling it
            raise ValueError(f"{str(path)!r} is not a TfidfRetriever index (.npz); {rebuild}")
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {name: z[name] for name in z.files}
            meta = json.loads(bytes(arrays["meta"]).decode("utf-8"))
            version = meta["version"]
        except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile, EOFError) as err:
            raise ValueError(
                f"{str(path)!r} is not a valid TfidfRetriever index ({type(err).__name__}); "
                f"{rebuild}"
            ) from err
        if meta.get("format") != "slmbook.retrieval.TfidfRetriever" or version != FORMAT_VERSION:
            raise ValueError(
                f"{str(path)!r} has index format version {version!r}; this slmbook reads "
                f"version {FORMAT_VERSION}: {rebuild}"
            )
        try:
            return cls._from_arrays(meta, arrays)
        except (KeyError, ValueError, IndexError, TypeError) as err:
            raise ValueError(f"{str(path)!r} is a corrupt TfidfRetriever index ({err})") from err

    @classmethod
    def _from_arrays(cls, meta: dict, a: dict) -> TfidfRetriever:
        import scipy.sparse as sp

        weighting = meta.get("weighting", "tfidf")  # files written before BM25 have none
        retriever = cls(backend=meta["backend"], weighting=weighting, **meta["options"])
        terms = unpack_strings(a["terms_bytes"], a["terms_offsets"])
        shape = tuple(int(n) for n in a["shape"])
        matrix = sp.csr_matrix((a["data"], a["indices"], a["indptr"]), shape=shape)
        matrix.check_format(full_check=True)
        ids = unpack_strings(a["ids_bytes"], a["ids_offsets"])
        texts = unpack_strings(a["texts_bytes"], a["texts_offsets"])
        sources = unpack_strings(a["sources_bytes"], a["sources_offsets"])
        sources = [s if has else None for s, has in zip(sources, a["has_source"], strict=True)]
        if not (len(terms) == shape[1] == len(a["idf"]) and len(ids) == len(texts) == shape[0]):
            raise ValueError("array sizes do not agree")
        vectorizer = retriever._make_vectorizer().fit(texts)
        vocab = vectorizer.vocabulary_
        if sorted(vocab, key=vocab.get) != terms:
            raise ValueError("the stored vocabulary does not match the stored passages")
        if meta["options"].get("use_idf", True) and not np.allclose(vectorizer.idf_, a["idf"], rtol=1e-12):
            raise ValueError("the stored idf does not match the stored passages")
        retriever._set_index(vectorizer, matrix, ids, texts, sources)
        return retriever


def _top_k(indices: np.ndarray, scores: np.ndarray, k: int, n: int) -> tuple[list, list]:
    """Top ``k`` of a sparse score row over ``n`` passages, ties by passage order.

    ``indices``/``scores`` are the non-zero entries. Uses ``argpartition``
    (linear time) before sorting only the candidates.
    """
    if len(scores) > k:
        threshold = scores[np.argpartition(-scores, k - 1)[k - 1]]
        keep = scores >= threshold
        indices, scores = indices[keep], scores[keep]
    order = np.lexsort((indices, -scores))[:k]
    ids, best = indices[order].tolist(), scores[order].tolist()
    missing = min(k, n) - len(ids)
    if missing > 0:  # pad with zero-score passages, in passage order
        zero = np.setdiff1d(np.arange(min(n, len(ids) + missing)), indices, assume_unique=True)
        ids += zero[:missing].tolist()
        best += [0.0] * missing
    return ids, best


def format_hits(hits: Sequence[Hit], *, max_chars: int = 160) -> str:
    """Hits as readable text: one numbered line per hit, then the start of its passage.

    See chapter 9, "Retrieval" (book/09_retrieval.ipynb).
    """
    max_chars = positive_int("max_chars", max_chars)
    if not hits:
        return "(no passage shares a word with the query)"
    lines = []
    for rank, hit in enumerate(hits, start=1):
        text = " ".join(hit.text.split())
        if len(text) > max_chars:
            text = text[: max_chars - 1] + "…"
        lines.append(f"{rank}. {hit.passage_id}  score={hit.score:.3f}\n   {text}")
    return "\n".join(lines)
