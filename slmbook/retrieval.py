r"""Retrieval: passages, a TF-IDF retriever, and how to measure it.

The first half of retrieval-augmented generation: given a question, find the
passages that help answer it.

1. :func:`split_passages` cuts documents into passages of at most ``max_words``
   words, along paragraph boundaries where it can, each overlapping the
   previous one by ``overlap`` words so that no sentence is lost at a cut.
2. :class:`TfidfRetriever` turns every passage into an L2-normalised TF-IDF
   row; the score of a passage for a query is the dot product of their rows,
   i.e. their cosine similarity, and :meth:`TfidfRetriever.search` returns the
   ``k`` best as :class:`Hit` objects.
3. :func:`recall_at_k` and :func:`mean_reciprocal_rank` (defined in
   :mod:`slmbook.evalsets`) measure how often and how high a relevant passage
   comes back.

Taught in chapter 9, "Retrieval" (book/09_retrieval.ipynb).
"""

from __future__ import annotations

import itertools
import json
import re
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.exceptions import NotFittedError

# the measures live with the evaluation sets; re-exported here for convenience
from slmbook.evalsets import evaluate, mean_reciprocal_rank, recall_at_k
from slmbook.tfidf import TfidfVectorizer

__all__ = [
    "FORMAT_VERSION",
    "Hit",
    "Passage",
    "TfidfRetriever",
    "evaluate",
    "format_hits",
    "mean_reciprocal_rank",
    "recall_at_k",
    "split_passages",
]

FORMAT_VERSION = 1
"""Version of the file written by :meth:`TfidfRetriever.save`."""

DEFAULT_OPTIONS: dict[str, Any] = {"stop_words": "english", "sublinear_tf": True}
"""Vectorizer options used unless the caller overrides them (chapter 9 measures why)."""

BACKENDS = ("sklearn", "scratch")


# ---------------------------------------------------------------- passages
@dataclass(frozen=True)
class Passage:
    """A piece of a document: ``id`` is ``"<source>#<n>"``, the n-th passage of ``source``."""

    id: str
    text: str
    source: str


def split_passages(
    documents: Mapping[str, str] | Sequence[str], *, max_words: int = 120, overlap: int = 20
) -> list[Passage]:
    """Cut documents into passages of at most ``max_words`` words.

    A passage ends at the end of a paragraph (a blank line) when that keeps at
    least half the budget, otherwise it is cut after ``max_words`` words. The
    next passage starts ``overlap`` words before the previous one ended.
    Whitespace inside a paragraph is collapsed to single spaces.

    Parameters
    ----------
    documents:
        ``{source: text}`` (e.g. :func:`slmbook.data.load_documents`) or a list
        of texts (their sources are ``"0"``, ``"1"``, ...).
    max_words:
        Word budget of a passage (>= 1).
    overlap:
        Words shared by consecutive passages of one document (``0 <= overlap < max_words``).

    Returns
    -------
    list[Passage]
        In document order; empty documents give no passage.

    See chapter 9, "Retrieval" (book/09_retrieval.ipynb).
    """
    if max_words < 1:
        raise ValueError(f"max_words={max_words} must be at least 1")
    if not 0 <= overlap < max_words:
        raise ValueError(f"overlap={overlap} must satisfy 0 <= overlap < max_words={max_words}")
    if not isinstance(documents, Mapping):
        documents = {str(i): text for i, text in enumerate(documents)}
    passages = []
    for source, text in documents.items():
        if not isinstance(text, str):
            raise TypeError(f"document {source!r} is a {type(text).__name__}, not a str")
        chunks = _split_words(text, max_words, overlap)
        passages.extend(Passage(f"{source}#{n}", chunk, source) for n, chunk in enumerate(chunks))
    return passages


def _split_words(text: str, max_words: int, overlap: int) -> list[str]:
    words, para = [], []  # para[i]: paragraph number of words[i]
    for p, paragraph in enumerate(re.split(r"\n\s*\n", text)):
        split = paragraph.split()
        words.extend(split)
        para.extend([p] * len(split))
    # ends[i] is True where a paragraph ends just before word i
    ends = [i for i in range(1, len(words) + 1) if i == len(words) or para[i] != para[i - 1]]
    chunks, start = [], 0
    while start < len(words):
        limit = start + max_words
        fitting = [e for e in ends if start + max_words // 2 <= e <= limit]
        end = fitting[-1] if fitting else min(limit, len(words))
        chunks.append(_join(words[start:end], para[start:end]))
        if end == len(words):
            break
        start = max(end - overlap, start + 1)
    return chunks


def _join(words: list[str], para: list[int]) -> str:
    out = [words[0]]
    for i in range(1, len(words)):
        out.append("\n\n" if para[i] != para[i - 1] else " ")
        out.append(words[i])
    return "".join(out)


# ---------------------------------------------------------------- retriever
@dataclass(frozen=True)
class Hit:
    """One search result: the passage's id, its cosine score, text and source."""

    passage_id: str
    score: float
    text: str
    source: str | None


class TfidfRetriever:
    """Rank passages by the cosine similarity of their TF-IDF vectors to a query.

    Parameters
    ----------
    backend:
        ``"sklearn"`` (scikit-learn's ``TfidfVectorizer``) or ``"scratch"``
        (:class:`slmbook.tfidf.TfidfVectorizer`); both give the same matrix.
    **options:
        Vectorizer options, on top of ``DEFAULT_OPTIONS``
        (``stop_words="english", sublinear_tf=True``). ``norm`` stays ``"l2"``
        so that scores are cosines.

    Notes
    -----
    * ``search`` before ``fit`` raises ``NotFittedError``; ``fit([])`` raises ``ValueError``.
    * A query with no term of the vocabulary (empty, only stop words, only
      unknown words) returns ``[]``: nothing can be ranked.
    * ``k <= 0`` raises ``ValueError``; otherwise ``min(k, n_passages)`` hits
      come back, best first, ties broken by passage order; passages that
      share no term with the query score 0 and come last.

    Examples
    --------
    >>> r = TfidfRetriever().fit(["the cat sat on the mat", "dogs bark at night"])
    >>> [h.passage_id for h in r.search("where did the cat sit?", k=1)]
    ['0']

    See chapter 9, "Retrieval" (book/09_retrieval.ipynb).
    """

    def __init__(self, *, backend: str = "sklearn", **options: Any) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend={backend!r} is unknown; use 'sklearn' or 'scratch'")
        if options.get("norm", "l2") != "l2":
            raise ValueError(f"norm={options['norm']!r}: the retriever needs norm='l2' (cosine)")
        self.backend = backend
        self.options = {**DEFAULT_OPTIONS, **options}
        self._make_vectorizer()  # fail early on an unknown option

    def __repr__(self) -> str:
        size = f", n_passages={len(self.ids_)}" if hasattr(self, "ids_") else ""
        return f"TfidfRetriever(backend={self.backend!r}, options={self.options!r}{size})"

    def __len__(self) -> int:
        self._check_fitted()
        return len(self.ids_)

    def _make_vectorizer(self):
        if self.backend == "scratch":
            return TfidfVectorizer(**self.options)
        from sklearn.feature_extraction.text import TfidfVectorizer as SkTfidfVectorizer

        return SkTfidfVectorizer(**self.options)

    def fit(self, passages: Sequence[str | Passage]) -> TfidfRetriever:
        """Index passages (strings or :class:`Passage`); return ``self``.

        A string's id is its position (``"0"``, ``"1"``, ...) and its source ``None``.
        """
        if isinstance(passages, str) or not isinstance(passages, Sequence):
            raise TypeError(
                f"passages must be a list of str or Passage, not {type(passages).__name__}"
            )
        if len(passages) == 0:
            raise ValueError("cannot fit on an empty collection; pass at least one passage")
        ids, texts, sources = [], [], []
        for i, p in enumerate(passages):
            if isinstance(p, Passage):
                ids.append(p.id), texts.append(p.text), sources.append(p.source)
            elif isinstance(p, str):
                ids.append(str(i)), texts.append(p), sources.append(None)
            else:
                raise TypeError(
                    f"passage {i} is a {type(p).__name__}, not a str or Passage; pass text"
                )
        vectorizer = self._make_vectorizer()
        matrix = vectorizer.fit_transform(texts)
        self._set_index(vectorizer, sp.csr_matrix(matrix), ids, texts, sources)
        return self

    def _set_index(self, vectorizer, matrix, ids, texts, sources) -> None:
        self.vectorizer_ = vectorizer
        self.matrix_ = matrix  # (n_passages, V), rows of unit L2 norm
        self.ids_, self.texts_, self.sources_ = list(ids), list(texts), list(sources)
        # (V, n_passages): row t is the posting list of term t (passages, weights)
        self._by_term = matrix.T.tocsr()
        self._post_idx = self._by_term.indices.astype(np.intp)  # bincount wants intp

    def _check_fitted(self) -> None:
        if not hasattr(self, "ids_"):
            raise NotFittedError(
                "This TfidfRetriever instance is not fitted yet; call 'fit' with a list "
                "of passages before searching"
            )

    # ------------------------------------------------------------ searching
    def _queries(self, queries: Sequence[str]) -> sp.csr_matrix:
        """TF-IDF rows of the queries: (n_queries, V)."""
        self._check_fitted()
        for i, q in enumerate(queries):
            if not isinstance(q, str):
                raise TypeError(f"query {i} is a {type(q).__name__}, not a str")
        return sp.csr_matrix(self.vectorizer_.transform(list(queries)))

    def scores(self, queries: Sequence[str]) -> sp.csr_matrix:
        """Cosine similarity of each query with each passage: (n_queries, n_passages), sparse."""
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
        if k <= 0:
            raise ValueError(f"k={k} must be a positive number of passages")
        if chunk_size <= 0:
            raise ValueError(f"chunk_size={chunk_size} must be a positive number of queries")
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
            "options": self.options,
        }
        try:
            meta_json = json.dumps(meta)
        except TypeError as err:
            raise TypeError(f"cannot save: options must be JSON values ({err})") from err
        has_source = np.array([s is not None for s in self.sources_])
        path = Path(path)
        with path.open("wb") as f:  # np.savez would otherwise append ".npz"
            np.savez(
                f,
                meta=_pack([meta_json])[0],
                idf=np.asarray(getattr(self.vectorizer_, "idf_", np.ones(len(terms)))),
                data=self.matrix_.data,
                indices=self.matrix_.indices,
                indptr=self.matrix_.indptr,
                shape=np.array(self.matrix_.shape),
                has_source=has_source,
                **_pack_named("terms", terms),
                **_pack_named("ids", self.ids_),
                **_pack_named("texts", self.texts_),
                **_pack_named("sources", [s or "" for s in self.sources_]),
            )
        return path

    @classmethod
    def load(cls, path: str | Path) -> TfidfRetriever:
        """Read an index written by :meth:`save`; never executes code from the file.

        Raises ``FileNotFoundError`` if it does not exist and ``ValueError``
        (naming the file) if it is corrupt or of another format version.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"index file {str(path)!r} does not exist")
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {name: z[name] for name in z.files}
            meta = json.loads(bytes(arrays["meta"]).decode("utf-8"))
            version = meta["version"]
        except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile, EOFError) as err:
            raise ValueError(
                f"{str(path)!r} is not a valid TfidfRetriever index ({err}); rebuild it "
                "with TfidfRetriever(...).fit(passages).save(path)"
            ) from err
        if meta.get("format") != "slmbook.retrieval.TfidfRetriever" or version != FORMAT_VERSION:
            raise ValueError(
                f"{str(path)!r} has index format version {version!r}; this slmbook reads "
                f"version {FORMAT_VERSION}: rebuild the index with fit(...).save(path)"
            )
        try:
            return cls._from_arrays(meta, arrays)
        except (KeyError, ValueError, IndexError) as err:
            raise ValueError(f"{str(path)!r} is a corrupt TfidfRetriever index ({err})") from err

    @classmethod
    def _from_arrays(cls, meta: dict, a: dict) -> TfidfRetriever:
        options = dict(meta["options"])
        if "ngram_range" in options:
            options["ngram_range"] = tuple(options["ngram_range"])
        retriever = cls(backend=meta["backend"], **options)
        terms = _unpack(a["terms_bytes"], a["terms_offsets"])
        shape = tuple(int(n) for n in a["shape"])
        matrix = sp.csr_matrix((a["data"], a["indices"], a["indptr"]), shape=shape)
        matrix.check_format(full_check=True)
        n = shape[0]
        ids = _unpack(a["ids_bytes"], a["ids_offsets"])
        texts = _unpack(a["texts_bytes"], a["texts_offsets"])
        sources = _unpack(a["sources_bytes"], a["sources_offsets"])
        sources = [s if has else None for s, has in zip(sources, a["has_source"], strict=True)]
        if not (len(terms) == shape[1] == len(a["idf"]) and len(ids) == len(texts) == n):
            raise ValueError("array sizes do not agree")
        vectorizer = retriever._make_vectorizer()
        vectorizer.vocabulary_ = {t: j for j, t in enumerate(terms)}
        if options.get("use_idf", True):
            vectorizer.idf_ = a["idf"]
        elif retriever.backend == "sklearn":
            from sklearn.feature_extraction.text import TfidfTransformer

            vectorizer._tfidf = TfidfTransformer(use_idf=False, norm="l2").fit(
                sp.csr_matrix((1, len(terms)))
            )
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


def _pack(strings: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Strings as one UTF-8 byte array plus offsets (no pickle, no fixed width)."""
    encoded = [s.encode("utf-8") for s in strings]
    offsets = np.cumsum([0] + [len(e) for e in encoded], dtype=np.int64)
    return np.frombuffer(b"".join(encoded), dtype=np.uint8), offsets


def _pack_named(name: str, strings: Sequence[str]) -> dict[str, np.ndarray]:
    data, offsets = _pack(strings)
    return {f"{name}_bytes": data, f"{name}_offsets": offsets}


def _unpack(data: np.ndarray, offsets: np.ndarray) -> list[str]:
    raw = data.tobytes()
    return [raw[a:b].decode("utf-8") for a, b in itertools.pairwise(offsets)]


def format_hits(hits: Sequence[Hit], *, max_chars: int = 160) -> str:
    """Hits as readable text: one numbered line per hit, then the start of its passage.

    See chapter 9, "Retrieval" (book/09_retrieval.ipynb).
    """
    if max_chars < 1:
        raise ValueError(f"max_chars={max_chars} must be at least 1")
    if not hits:
        return "(no passage shares a word with the query)"
    lines = []
    for rank, hit in enumerate(hits, start=1):
        text = " ".join(hit.text.split())
        if len(text) > max_chars:
            text = text[: max_chars - 1] + "…"
        lines.append(f"{rank}. {hit.passage_id}  score={hit.score:.3f}\n   {text}")
    return "\n".join(lines)
