"""Evaluating retrieval: question sets for the default corpus, recall@k and MRR.

Two kinds of queries, each with the labels of what should come back:

* :func:`load_questions`: questions written by hand in plain language, as a
  reader would ask them ("how do I handle an error raised inside a with
  block?"), labelled with the documentation topics (passage sources) that
  answer them. Shipped as ``slmbook/assets/questions.json``. Some are
  marked ``"paraphrase"``: they avoid the documentation's own words on
  purpose, which is where word-matching retrieval struggles.
* :func:`heldout_sentences`: built automatically from passages. One sentence
  of a passage becomes the query and that passage is the answer. With
  ``remove=True`` (the default) the sentence is cut out of the passage that
  gets indexed, so the retriever cannot simply find the exact words again.

See chapter 9, "Retrieval" (book/09_retrieval.ipynb).
"""

from __future__ import annotations

import dataclasses
import json
import random
import re
from collections.abc import Collection, Hashable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from slmbook.retrieval import Passage, TfidfRetriever


__all__ = [
    "Question",
    "evaluate",
    "heldout_sentences",
    "load_questions",
    "mean_reciprocal_rank",
    "recall_at_k",
]

QUESTIONS_VERSION = 1


@dataclass(frozen=True)
class Question:
    """A query and the labels that answer it.

    ``relevant`` holds topic names (passage sources) for hand-written
    questions, passage ids for held-out sentences; ``kind`` is ``"direct"``,
    ``"paraphrase"`` or ``"heldout"``.
    """

    id: str
    text: str
    relevant: tuple[str, ...]
    kind: str


def load_questions() -> list[Question]:
    """The hand-written question set (84 questions), labelled with topics.

    Examples
    --------
    >>> qs = load_questions()
    >>> qs[0].text
    'How do I handle an error raised inside a with block?'
    >>> qs[0].relevant
    ('compound', 'context-managers', 'specialnames', 'with')

    See chapter 9, "Retrieval" (book/09_retrieval.ipynb).
    """
    raw = resources.files("slmbook").joinpath("assets/questions.json").read_text("utf-8")
    data = json.loads(raw)
    if data.get("version") != QUESTIONS_VERSION:
        raise ValueError(
            f"questions.json has version {data.get('version')!r}, expected {QUESTIONS_VERSION}; "
            "reinstall slmbook"
        )
    return [
        Question(q["id"], q["question"], tuple(q["topics"]), q["kind"]) for q in data["questions"]
    ]


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(])")


def heldout_sentences(
    passages: Sequence[Passage],
    *,
    n: int | None = None,
    min_words: int = 8,
    seed: int = 0,
    remove: bool = True,
) -> tuple[list[Passage], list[Question]]:
    """Build queries from the passages themselves: one held-out sentence each.

    For every passage with at least two sentences, one sentence of at least
    ``min_words`` words is drawn (seeded) and becomes a query whose relevant
    passage is that passage.

    Parameters
    ----------
    passages:
        The collection, e.g. from :func:`slmbook.retrieval.split_passages`.
    n:
        Keep at most ``n`` queries (a seeded sample), or all with ``None``.
    min_words:
        Shortest sentence used as a query.
    seed:
        Seed of the draws.
    remove:
        Cut each drawn sentence out of its passage in the returned collection,
        so that the query is not found verbatim (a harder, fairer test).

    Returns
    -------
    (passages, questions)
        The collection to index (same ids and order as the input) and the queries.

    See chapter 9, "Retrieval" (book/09_retrieval.ipynb).
    """
    if min_words < 1:
        raise ValueError(f"min_words={min_words} must be at least 1")
    rng = random.Random(seed)
    out_passages, questions = [], []
    for p in passages:
        sentences = _SENTENCE_END.split(p.text)
        candidates = [s for s in sentences if len(s.split()) >= min_words]
        if len(sentences) < 2 or not candidates:
            out_passages.append(p)
            continue
        sentence = rng.choice(candidates)
        questions.append(Question(f"heldout:{p.id}", " ".join(sentence.split()), (p.id,), "heldout"))
        if remove:
            rest = " ".join(s for s in sentences if s is not sentence)
            p = dataclasses.replace(p, text=rest)
        out_passages.append(p)
    if n is not None and n < len(questions):
        questions = [questions[i] for i in sorted(rng.sample(range(len(questions)), n))]
    return out_passages, questions


# ---------------------------------------------------------------- evaluation
def _check_eval(retrieved: Sequence, relevant: Sequence, k: int | None) -> None:
    if len(retrieved) != len(relevant):
        raise ValueError(
            f"retrieved has {len(retrieved)} queries but relevant has {len(relevant)}; "
            "pass one list of results and one set of relevant labels per query"
        )
    if len(retrieved) == 0:
        raise ValueError("no queries to evaluate")
    if k is not None and k <= 0:
        raise ValueError(f"k={k} must be a positive number of results")


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

    See chapter 9, "Retrieval" (book/09_retrieval.ipynb).
    """
    _check_eval(retrieved, relevant, k)
    hits = [any(r in set(rel) for r in res[:k]) for res, rel in zip(retrieved, relevant, strict=True)]
    return float(np.mean(hits))


def mean_reciprocal_rank(
    retrieved: Sequence[Sequence[Hashable]],
    relevant: Sequence[Collection[Hashable]],
    *,
    k: int | None = None,
) -> float:
    """Mean over queries of ``1 / rank`` of the first relevant result (0 if none in the top ``k``).

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


def evaluate(
    retriever: TfidfRetriever,
    queries: Sequence[str],
    relevant: Sequence[Collection[str]],
    *,
    ks: Sequence[int] = (1, 5, 10),
    label: str = "source",
) -> dict[str, float]:
    """Recall@k for each ``k`` in ``ks`` and MRR (over the top ``max(ks)``) of a retriever.

    ``label`` is the :class:`Hit` field compared with ``relevant``:
    ``"source"`` (topics) or ``"passage_id"``.

    See chapter 9, "Retrieval" (book/09_retrieval.ipynb).
    """
    if label not in ("source", "passage_id"):
        raise ValueError(f"label={label!r} must be 'source' or 'passage_id'")
    depth = max(ks)
    hits = retriever.search_batch(list(queries), depth)
    labels = [[getattr(h, label) for h in row] for row in hits]
    out = {f"recall@{k}": recall_at_k(labels, relevant, k) for k in ks}
    out["mrr"] = mean_reciprocal_rank(labels, relevant, k=depth)
    return out
