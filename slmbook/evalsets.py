"""Question sets for evaluating retrieval on the default corpus.

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

The measures themselves (recall@k, MRR, ...) are in :mod:`slmbook.metrics`.

See chapter 9, "Retrieval" (book/09_retrieval.ipynb).
"""

from __future__ import annotations

import dataclasses
import json
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources

from slmbook._checks import non_negative_int, positive_int
from slmbook.passages import Passage

__all__ = ["Question", "heldout_sentences", "load_questions"]

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
        The collection, e.g. from :func:`slmbook.passages.split_passages`.
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
    min_words = positive_int("min_words", min_words)
    n = non_negative_int("n", n, allow_none=True)
    if isinstance(passages, str) or not isinstance(passages, Sequence):
        raise TypeError(f"passages must be a list of Passage, not {type(passages).__name__}")
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
