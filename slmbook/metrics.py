r"""Measuring retrieval and answers: recall@k, MRR, nDCG@k and exact match.

For a query let :math:`\mathrm{rank}` be the position of the first relevant
result (1 = best). Over :math:`N` queries,

.. math::

    \mathrm{recall@}k = \frac{1}{N} \sum_i [\mathrm{rank}_i \le k], \qquad
    \mathrm{MRR} = \frac{1}{N} \sum_i \frac{1}{\mathrm{rank}_i},

with :math:`1/\mathrm{rank}_i = 0` when nothing relevant comes back.
:func:`ndcg_at_k` also rewards finding *several* relevant items high up, and
:func:`exact_match` scores a generated answer against the reference answers
(SQuAD's normalisation: lower case, no punctuation, no articles).

:func:`evaluate` runs a :class:`slmbook.retrieval.Retriever` over a question
set and reports all of them at once.

Taught in chapter 9, "Retrieval" (book/09_retrieval.ipynb).
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Collection, Hashable, Sequence
from typing import TYPE_CHECKING, Protocol

from slmbook._checks import positive_int

if TYPE_CHECKING:
    from slmbook.retrieval import Retriever

__all__ = [
    "evaluate",
    "exact_match",
    "mean_reciprocal_rank",
    "ndcg_at_k",
    "normalize_answer",
    "recall_at_k",
    "wilson_interval",
]


class LabelledQuery(Protocol):
    """What :func:`evaluate` needs of a question: its text and its relevant labels.

    :class:`slmbook.evalsets.Question` is one.
    """

    text: str
    relevant: Collection[str]


def _check_eval(retrieved: Sequence, relevant: Sequence, k: int | None) -> None:
    if isinstance(retrieved, str) or isinstance(relevant, str):
        raise TypeError("retrieved and relevant must be lists with one entry per query, not a str")
    if len(retrieved) != len(relevant):
        raise ValueError(
            f"retrieved has {len(retrieved)} queries but relevant has {len(relevant)}; "
            "pass one list of results and one set of relevant labels per query"
        )
    if len(retrieved) == 0:
        raise ValueError("no queries to evaluate; pass at least one query")
    positive_int("k", k, allow_none=True)


def recall_at_k(
    retrieved: Sequence[Sequence[Hashable]], relevant: Sequence[Collection[Hashable]], k: int
) -> float:
    """Fraction of queries with at least one relevant item among their first ``k`` results.

    This is recall@k as used for question answering retrieval (also called
    top-k accuracy or hit rate): a question counts as answered when one
    passage that answers it is retrieved.

    Parameters
    ----------
    retrieved:
        For each query, its results' labels (passage ids or sources), best first.
    relevant:
        For each query, the labels that count as relevant.
    k:
        How many results of each query are looked at (>= 1).

    Examples
    --------
    >>> recall_at_k([["a", "b"], ["c", "d"]], [{"b"}, {"x"}], k=2)
    0.5

    See chapter 9, "Retrieval" (book/09_retrieval.ipynb).
    """
    _check_eval(retrieved, relevant, k)
    found = [bool(set(res[:k]) & set(rel)) for res, rel in zip(retrieved, relevant, strict=True)]
    return sum(found) / len(found)


def mean_reciprocal_rank(
    retrieved: Sequence[Sequence[Hashable]],
    relevant: Sequence[Collection[Hashable]],
    *,
    k: int | None = None,
) -> float:
    """Mean over queries of ``1 / rank`` of the first relevant result (0 if none in the top ``k``).

    ``k=None`` looks at every result.

    Examples
    --------
    >>> mean_reciprocal_rank([["a", "b"], ["c", "d"]], [{"b"}, {"c"}])
    0.75

    See chapter 9, "Retrieval" (book/09_retrieval.ipynb).
    """
    _check_eval(retrieved, relevant, k)
    total = 0.0
    for res, rel in zip(retrieved, relevant, strict=True):
        rel = set(rel)
        for rank, label in enumerate(res[:k] if k else res, start=1):
            if label in rel:
                total += 1.0 / rank
                break
    return total / len(retrieved)


def ndcg_at_k(
    retrieved: Sequence[Sequence[Hashable]], relevant: Sequence[Collection[Hashable]], k: int
) -> float:
    r"""Mean normalised discounted cumulative gain of the first ``k`` results (binary relevance).

    For one query, :math:`\mathrm{DCG@}k = \sum_{i=1}^{k} \mathrm{rel}_i / \log_2(i + 1)`
    where :math:`\mathrm{rel}_i` is 1 if the i-th result is relevant and has
    not appeared higher up (a label found twice, e.g. two passages of one
    relevant topic, counts once), else 0. It is divided by the best possible
    value, :math:`\sum_{i=1}^{\min(k, |\mathrm{relevant}|)} 1 / \log_2(i + 1)`,
    so a perfect ranking scores 1. A query with no relevant label scores 0.

    Examples
    --------
    >>> round(ndcg_at_k([["x", "a"]], [{"a"}], k=2), 4)  # 1/log2(3)
    0.6309

    See chapter 9, "Retrieval" (book/09_retrieval.ipynb).
    """
    _check_eval(retrieved, relevant, k)
    total = 0.0
    for res, rel in zip(retrieved, relevant, strict=True):
        rel, seen = set(rel), set()
        dcg = 0.0
        for i, label in enumerate(res[:k], start=1):
            if label in rel and label not in seen:
                dcg += 1.0 / math.log2(i + 1)
                seen.add(label)
        ideal = sum(1.0 / math.log2(i + 1) for i in range(1, min(k, len(rel)) + 1))
        total += dcg / ideal if ideal else 0.0
    return total / len(retrieved)


_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD's answer normalisation: lower case, drop punctuation and articles, collapse spaces.

    The steps, in the order of the official SQuAD v1.1 evaluation script:
    lower-case; remove every ASCII punctuation character; remove the words
    "a", "an" and "the"; join the remaining words with single spaces.

    Examples
    --------
    >>> normalize_answer("  The Eiffel-Tower!  ")
    'eiffeltower'

    See chapter 9, "Retrieval" (book/09_retrieval.ipynb).
    """
    if not isinstance(text, str):
        raise TypeError(f"answer must be a str, got {text!r} ({type(text).__name__})")
    text = text.lower().translate(_PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, answers: str | Sequence[str]) -> float:
    """1.0 if ``prediction`` equals one of ``answers`` after :func:`normalize_answer`, else 0.0.

    Several reference answers may be given; matching any one of them counts
    (SQuAD's maximum over ground truths). Average it over questions to get the
    exact-match rate.

    Examples
    --------
    >>> exact_match("the Paris", "Paris")
    1.0
    >>> exact_match("Paris, France", ["Paris", "Lyon"])
    0.0

    See chapter 9, "Retrieval" (book/09_retrieval.ipynb).
    """
    if isinstance(answers, str):
        answers = [answers]
    if len(answers) == 0:
        raise ValueError("answers is empty; pass at least one reference answer")
    guess = normalize_answer(prediction)
    return float(any(guess == normalize_answer(a) for a in answers))


def evaluate(
    retriever: Retriever,
    questions: Sequence[LabelledQuery],
    k: int | Sequence[int] = (1, 5, 10),
    *,
    label: str = "source",
) -> dict[str, float]:
    """Recall@k for each ``k``, then MRR and nDCG over the deepest ``k``, of a retriever.

    Parameters
    ----------
    retriever:
        Any :class:`slmbook.retrieval.Retriever` (it needs ``search_batch``).
    questions:
        Objects with ``.text`` and ``.relevant``, e.g. from
        :func:`slmbook.evalsets.load_questions`.
    k:
        One depth or several (each >= 1).
    label:
        The :class:`slmbook.retrieval.Hit` field compared with ``relevant``:
        ``"source"`` (topics) or ``"passage_id"``.

    Returns
    -------
    dict[str, float]
        ``{"recall@1": ..., ..., "mrr": ..., "ndcg@10": ...}``.

    See chapter 9, "Retrieval" (book/09_retrieval.ipynb).
    """
    if label not in ("source", "passage_id"):
        raise ValueError(f"label={label!r} must be 'source' or 'passage_id'")
    ks = [k] if not isinstance(k, Sequence) else list(k)
    if not ks:
        raise ValueError("k is empty; pass a depth such as 10 or several such as (1, 5, 10)")
    ks = [positive_int("k", depth) for depth in ks]
    if isinstance(questions, str) or not isinstance(questions, Sequence):
        raise TypeError(f"questions must be a list of questions, not {type(questions).__name__}")
    depth = max(ks)
    hits = retriever.search_batch([q.text for q in questions], depth)
    labels = [[getattr(h, label) for h in row] for row in hits]
    relevant = [set(q.relevant) for q in questions]
    out = {f"recall@{d}": recall_at_k(labels, relevant, d) for d in ks}
    out["mrr"] = mean_reciprocal_rank(labels, relevant, k=depth)
    out[f"ndcg@{depth}"] = ndcg_at_k(labels, relevant, depth)
    return out


def wilson_interval(successes: int, n: int, *, z: float = 1.96) -> tuple[float, float]:
    r"""Wilson score interval of the proportion ``successes / n`` (95% for ``z = 1.96``).

    With :math:`\hat p = k/n`, the interval is

    .. math::

        \frac{\hat p + z^2/2n \pm z\sqrt{\hat p(1-\hat p)/n + z^2/4n^2}}{1 + z^2/n},

    which, unlike :math:`\hat p \pm z\sqrt{\hat p(1-\hat p)/n}`, stays inside [0, 1]
    and is not empty at 0 or n successes (Wilson 1927). It is the interval the book
    puts around every exact match it reports.

    >>> lo, hi = wilson_interval(8, 10)
    >>> round(lo, 3), round(hi, 3)
    (0.49, 0.943)
    >>> wilson_interval(0, 10)[0]
    0.0

    See chapter 10, "Augmenting the input" (book/10_augment.ipynb).
    """
    n = positive_int("n", n)
    if isinstance(successes, bool) or not isinstance(successes, int) or not 0 <= successes <= n:
        raise ValueError(f"successes must be an int in [0, n={n}], got {successes!r}")
    z = float(z)
    if not (math.isfinite(z) and z > 0):
        raise ValueError(f"z must be a positive finite number, got {z!r}")
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)
