r"""A retriever that learns: one weight per vocabulary term on top of TF-IDF.

Chapter 9's :class:`~slmbook.retrieval.TfidfRetriever` scores a passage ``z``
for a question ``x`` by the dot product of their L2-normalised TF-IDF rows,
``<q(x), d(z)>``. :class:`LearnedTfidfRetriever` gives every vocabulary term
``t`` a learnable weight ``w_t = softplus(theta_t)`` on the query side,

.. math:: s(x, z) = \sum_t w_t\, q_t(x)\, d_t(z),

initialised at ``theta_t = log(e - 1)`` so that ``w_t = 1`` exactly and the
scores start equal to TF-IDF's (the weighted query is not renormalised: that
is what keeps the initial scores bit-for-bit equal; the overall scale of
``w`` then acts like an inverse temperature). A term whose weight rises
counts for more in every question that contains it.

The scores of the retrieved candidates are recomputed with gradients from
fixed TF-IDF products (``q_t d_t`` has no parameter), so the index itself
never needs a gradient: only ``theta`` does. With ``doc_weights=True`` each
term also gets a weight ``u_t`` on the passage side, ``s = sum_t w_t u_t q_t
d_t``. The stored index (the passages' weighted vectors that the first stage
searches) then goes *stale* as ``u`` learns: :meth:`reindex` rebuilds it.

Taught in chapter 11, "Training retriever and generator together"
(book/11_joint.ipynb).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from slmbook._checks import positive_float, positive_int
from slmbook.marginal import retrieval_log_prior
from slmbook.retrieval import Hit, TfidfRetriever

__all__ = ["THETA_AT_ONE", "CollapseReport", "LearnedTfidfRetriever", "prior_entropy"]

def _sparse():
    import scipy.sparse  # on first use: ``import slmbook`` stays light

    return scipy.sparse


THETA_AT_ONE = math.log(math.expm1(1.0))
"""``theta`` with ``softplus(theta) == 1.0`` exactly (``log(e - 1)``, about 0.5413)."""


class LearnedTfidfRetriever(nn.Module):
    """TF-IDF with a learnable weight per term; an ``nn.Module`` and a ``Retriever``.

    Parameters
    ----------
    base:
        A fitted :class:`~slmbook.retrieval.TfidfRetriever`, with either
        weighting (``"tfidf"`` or ``"bm25"``); its vocabulary, passages and
        weighted matrix are used as they are (and not modified), so with
        every weight at 1 the scores are the base's own.
    candidate_k:
        How many passages the first stage retrieves for :meth:`scores` and
        how many :meth:`search` re-ranks (at least the ``k`` asked for).
    doc_weights:
        Also learn a weight per term on the passage side (makes the stored
        index stale as it learns; see :meth:`reindex`).
    dtype:
        Of the weights and scores; ``torch.float64`` keeps the initial scores
        equal to TF-IDF's to the last bit.

    Notes
    -----
    The first stage scores every passage of the stored index with the
    weighted query (exact, sparse, no gradient); :meth:`scores` then recomputes
    the candidates' scores with gradients. Without document weights the two
    agree, so :meth:`search` is the exact top-k of the learned score. The
    module lives on the CPU.

    Examples
    --------
    >>> base = TfidfRetriever().fit(["the cat sat", "a dog barked", "the cat ran"])
    >>> r = LearnedTfidfRetriever(base, candidate_k=2)
    >>> [h.passage_id for h in r.search("cat", k=2)] == [h.passage_id for h in base.search("cat", k=2)]
    True

    See chapter 11, "Training retriever and generator together" (book/11_joint.ipynb).
    """

    def __init__(
        self,
        base: TfidfRetriever,
        *,
        candidate_k: int = 10,
        doc_weights: bool = False,
        dtype: torch.dtype = torch.float64,
    ) -> None:
        super().__init__()
        if not isinstance(base, TfidfRetriever):
            raise TypeError(f"base must be a fitted TfidfRetriever, got {type(base).__name__}")
        n = len(base)  # raises NotFittedError if base is not fitted
        self.base = base
        self.candidate_k = min(positive_int("candidate_k", candidate_k), n)
        self._docs = _sparse().csr_matrix(base.matrix_, dtype=np.float64)  # (N, V), the base's rows
        self._docs.sort_indices()
        vocab_size = self._docs.shape[1]
        self.theta = nn.Parameter(torch.full((vocab_size,), THETA_AT_ONE, dtype=dtype))
        self.doc_theta = (
            nn.Parameter(torch.full((vocab_size,), THETA_AT_ONE, dtype=dtype)) if doc_weights else None
        )
        self.reindex()

    def extra_repr(self) -> str:
        return (f"n_passages={self._docs.shape[0]}, vocab_size={self._docs.shape[1]}, "
                f"candidate_k={self.candidate_k}, doc_weights={self.doc_theta is not None}")

    def __len__(self) -> int:
        return self._docs.shape[0]

    # ------------------------------------------------------------ weights
    def query_weights(self) -> Tensor:
        """``w = softplus(theta)``: ``(V,)``, one weight per vocabulary term (1 at initialisation)."""
        return nn.functional.softplus(self.theta)

    def doc_term_weights(self) -> Tensor | None:
        """``u = softplus(doc_theta)``: ``(V,)``, or ``None`` without document weights."""
        return None if self.doc_theta is None else nn.functional.softplus(self.doc_theta)

    def _term_weights(self) -> Tensor:
        w = self.query_weights()
        u = self.doc_term_weights()
        return w if u is None else w * u

    def term_weights(self, *, side: str = "query") -> dict[str, float]:
        """``{term: weight}`` for ``side="query"`` or ``"doc"``, in vocabulary order."""
        if side not in ("query", "doc"):
            raise ValueError(f"side={side!r} is unknown; use 'query' or 'doc'")
        weights = self.query_weights() if side == "query" else self.doc_term_weights()
        if weights is None:
            raise ValueError("this retriever has no document weights; build it with doc_weights=True")
        names = self.base.vectorizer_.get_feature_names_out()
        return dict(zip(names.tolist(), weights.detach().tolist(), strict=True))

    # ------------------------------------------------------------ the index
    def reindex(self) -> LearnedTfidfRetriever:
        """Rebuild the stored index from the current document weights; return ``self``.

        With TF-IDF this is one sparse column scaling of the (N, V) matrix
        (milliseconds); a neural retriever would have to re-encode every passage.
        """
        u = self.doc_term_weights()
        if u is None:
            self._index = self._docs
            self._indexed_u = None
        else:
            self._indexed_u = u.detach().clone()
            sp = _sparse()
            self._index = sp.csr_matrix(self._docs @ sp.diags(self._indexed_u.cpu().numpy()))
        self._index_by_term = self._index.T.tocsr()  # (V, N)
        return self

    @property
    def is_stale(self) -> bool:
        """``True`` when the document weights changed since the index was last built."""
        u = self.doc_term_weights()
        return u is not None and not torch.equal(u.detach(), self._indexed_u)

    # ------------------------------------------------------------ scoring
    def _query_matrix(self, queries: Sequence[str]):  # (B, V) scipy.sparse CSR
        if isinstance(queries, str):
            raise TypeError("queries is a single str; pass a list of str")
        for i, q in enumerate(queries):
            if not isinstance(q, str):
                raise TypeError(f"query {i} is a {type(q).__name__}, not a str")
        Q = _sparse().csr_matrix(self.base.vectorizer_.transform(list(queries)), dtype=np.float64)
        Q.sort_indices()
        return Q

    def _first_stage(self, Q, k: int) -> np.ndarray:
        """Top ``k`` passage rows of the stored index for each query row: ``(B, k)`` int64."""
        w = self.query_weights().detach().cpu().numpy().astype(np.float64)
        sp = _sparse()
        scores = (sp.csr_matrix(Q @ sp.diags(w)) @ self._index_by_term).toarray()  # (B, N)
        return np.argsort(-scores, axis=1, kind="stable")[:, :k]  # ties: passage order

    def candidates(self, queries: Sequence[str], k: int | None = None) -> np.ndarray:
        """First stage: ``(B, k)`` passage rows (``k`` defaults to ``candidate_k``), no gradient."""
        k = self.candidate_k if k is None else min(positive_int("k", k), len(self))
        return self._first_stage(self._query_matrix(queries), k)

    def scores(
        self, queries: Sequence[str], candidate_ids: np.ndarray | Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Learned scores of each query's candidates, with gradients to the weights.

        Parameters
        ----------
        queries:
            ``B`` questions.
        candidate_ids:
            ``(B, K)`` passage rows to score (e.g. the ones whose reader
            log-probabilities were cached); by default the first stage's
            ``candidate_k`` best.

        Returns
        -------
        (Tensor, Tensor)
            ``(B, K)`` int64 passage rows (``self.base.ids_[row]`` is the id)
            and ``(B, K)`` scores ``sum_t w_t u_t q_t d_t`` that require grad.
            At initialisation they equal ``TfidfRetriever``'s cosines.

        See chapter 11, "Training retriever and generator together" (book/11_joint.ipynb).
        """
        Q = self._query_matrix(queries)
        empty = np.flatnonzero(np.diff(Q.indptr) == 0)
        if len(empty):
            raise ValueError(f"query {int(empty[0])} ({queries[int(empty[0])]!r}) has no term of "
                             "the vocabulary: nothing to score; drop it or rephrase it")
        if candidate_ids is None:
            cand = self._first_stage(Q, self.candidate_k)
        else:
            cand = np.asarray(candidate_ids.cpu() if isinstance(candidate_ids, Tensor) else candidate_ids)
            if cand.ndim != 2 or cand.shape[0] != Q.shape[0] or not np.issubdtype(cand.dtype, np.integer):
                raise ValueError(f"candidate_ids must be ({Q.shape[0]}, K) integer passage rows, "
                                 f"got shape {cand.shape} of {cand.dtype}")
            if cand.size and (cand.min() < 0 or cand.max() >= len(self)):
                raise ValueError(f"candidate_ids must lie in [0, {len(self)}), got "
                                 f"[{cand.min()}, {cand.max()}]")
        b, k = cand.shape
        # fixed products q_t(x) d_t(z), one sparse row per (question, candidate)
        products = Q[np.repeat(np.arange(b), k)].multiply(self._docs[cand.ravel()]).tocoo()
        weights = self._term_weights()
        values = torch.from_numpy(products.data).to(weights.dtype) * weights[torch.from_numpy(products.col)]
        flat = torch.zeros(b * k, dtype=weights.dtype).index_add(0, torch.from_numpy(products.row), values)
        return torch.from_numpy(cand.astype(np.int64)), flat.view(b, k)

    # ------------------------------------------------------------ the Retriever protocol
    def search(self, query: str, k: int = 5) -> list[Hit]:
        """The ``k`` best passages by learned score, best first (``[]`` for a query with no known term)."""
        if not isinstance(query, str):
            raise TypeError(f"query is a {type(query).__name__}, not a str")
        return self.search_batch([query], k)[0]

    @torch.no_grad()
    def search_batch(self, queries: Sequence[str], k: int = 5) -> list[list[Hit]]:
        """:meth:`search` for many queries: the first stage's ``max(k, candidate_k)``, re-ranked."""
        k = positive_int("k", k)
        Q = self._query_matrix(queries)
        known = np.diff(Q.indptr) > 0
        results: list[list[Hit]] = [[] for _ in queries]
        rows = np.flatnonzero(known)
        base = self.base
        for start in range(0, len(rows), 256):
            chunk = rows[start : start + 256]
            cand = self._first_stage(Q[chunk], min(max(k, self.candidate_k), len(self)))
            ids, s = self.scores([queries[i] for i in chunk], cand)
            order = torch.sort(s, dim=1, descending=True, stable=True).indices[:, :k]
            for row, i in enumerate(chunk.tolist()):
                hits = []
                for o in order[row].tolist():
                    j = int(ids[row, o])
                    hits.append(Hit(base.ids_[j], float(s[row, o]), base.texts_[j], base.sources_[j]))
                results[i] = hits
        return results

    # ------------------------------------------------------------ diagnostics
    @torch.no_grad()
    def collapse_report(
        self, queries: Sequence[str], temperature: float, candidate_ids: np.ndarray | None = None
    ) -> CollapseReport:
        """Diagnose retrieval collapse on ``queries`` (see :class:`CollapseReport`)."""
        ids, s = self.scores(queries, candidate_ids)
        entropy = prior_entropy(s, temperature)
        top1 = ids[torch.arange(len(ids)), s.argmax(dim=1)].tolist()
        most_common = Counter(top1).most_common(1)[0][1]
        return CollapseReport(
            mean_entropy=float(entropy.mean()),
            max_entropy=math.log(s.shape[1]),
            distinct_top1=len(set(top1)),
            n_queries=len(top1),
            most_common_top1_share=most_common / len(top1),
        )


@dataclass(frozen=True)
class CollapseReport:
    """Signs of retrieval collapse: the prior turned one-hot, or many questions sharing a top-1.

    ``mean_entropy`` (nats) of p(z|x) near 0 means the retriever always puts
    all its mass on one candidate (it stops exploring; the passages it never
    ranks first get no gradient); near ``max_entropy = log K`` it cannot tell
    the candidates apart. ``distinct_top1`` of ``n_queries`` falls when many
    questions retrieve the same passage.

    See chapter 11, "Training retriever and generator together" (book/11_joint.ipynb).
    """

    mean_entropy: float
    max_entropy: float
    distinct_top1: int
    n_queries: int
    most_common_top1_share: float


def prior_entropy(doc_scores: Tensor, temperature: float = 1.0) -> Tensor:
    """Entropy (nats) of ``p(z|x) = softmax(s / tau)`` for each question: ``(B, K)`` -> ``(B,)``.

    >>> round(prior_entropy(torch.zeros(1, 4)).item(), 6) == round(math.log(4), 6)
    True

    See chapter 11, "Training retriever and generator together" (book/11_joint.ipynb).
    """
    positive_float("temperature", temperature)
    log_p = retrieval_log_prior(doc_scores, temperature)
    return -(log_p.exp() * log_p).nan_to_num(0.0).sum(dim=-1)
