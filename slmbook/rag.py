r"""Retrieval-augmented generation: retrieve passages, put them before the question, read.

:class:`RAG` joins chapter 9's retriever and chapter 10's reader:

1. the retriever returns the ``k`` passages most similar to the question;
2. :func:`slmbook.reader.render_prompt` writes them, then the question, as
   the reader's input X' = [passages; question];
3. the reader answers greedily (:func:`slmbook.reader.read`).

``k=0`` is the closed-book model (the question alone), through the same code.
With ``min_score`` set, RAG abstains (answers :data:`ABSTAIN`) when the best
passage scores below it. :func:`diagnose` splits the errors into retrieval
misses (the passage with the answer was not retrieved) and reading misses (it
was, and the reader still got it wrong); :func:`abstention` measures coverage
and accuracy, on questions about people who are not in the world too.

:func:`default_rag` builds the pipeline with the shipped reader and the
default fact world's TF-IDF index (what ``slmbook ask`` uses).

Chapter 11's training is re-exported here: the RAG marginal losses of
:mod:`slmbook.marginal` and, from :mod:`slmbook.joint`, the cache of the frozen
reader's log-probabilities, the retriever's training and joint training
(:class:`JointRAG`, :func:`joint_loss` for ``slmbook.training.train``).

Taught in chapter 10, "Augmenting the input" (book/10_augment.ipynb).
"""

from __future__ import annotations

import importlib.resources
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from slmbook._checks import finite_float, non_negative_int, positive_int
from slmbook.joint import (
    CandidateCache,
    JointRAG,
    cache_candidates,
    joint_loss,
    retriever_loss,
    train_retriever,
)
from slmbook.marginal import (
    rag_sequence_nll,
    rag_token_nll,
    retrieval_posterior,
    retrieval_prior,
)
from slmbook.reader import ReaderTokenizer, exact_match, read, render_prompt

__all__ = [
    "ABSTAIN",
    "RAG",
    "Answer",
    "CandidateCache",
    "JointRAG",
    "abstention",
    "cache_candidates",
    "default_rag",
    "diagnose",
    "format_answer",
    "joint_loss",
    "pretrained_reader",
    "question_box",
    "rag_sequence_nll",
    "rag_token_nll",
    "retrieval_posterior",
    "retrieval_prior",
    "retriever_loss",
    "score",
    "train_retriever",
]

ABSTAIN = "I don't know"
"""What :class:`RAG` answers when it abstains."""


@dataclass(frozen=True)
class Answer:
    """The reply to one question: ``text``, the ``hits`` read, the ``prompt``, ``abstained``."""

    text: str
    hits: list[Any] = field(default_factory=list)
    prompt: str = ""
    abstained: bool = False


class RAG:
    """Answer questions by retrieving ``k`` passages and reading them.

    Parameters
    ----------
    retriever:
        Anything with ``search(query, k) -> list[Hit]`` (a :class:`Hit` has
        ``passage_id``, ``score`` and ``text``); ``search_batch(queries, k)``
        is used when it exists. Unused when ``k == 0``.
    reader, tokenizer:
        The reader model (logits (B, T, V) for ids (B, T)) and its
        :class:`~slmbook.reader.ReaderTokenizer`.
    k:
        Passages put before the question (0: closed book, the question alone).
    min_score:
        Abstain when no passage scores at least this much (``None``: never).
    max_answer:
        Longest answer read, in characters.

    Examples
    --------
    >>> from slmbook.reader import make_reader
    >>> from slmbook.retrieval import TfidfRetriever
    >>> rag = RAG(TfidfRetriever().fit(["Ann lives in Oslo."]), make_reader(n_layer=1, n_embd=8),
    ...           ReaderTokenizer(), k=1, min_score=0.9, max_answer=2)
    >>> rag.answer("Where does Bo work?").abstained
    True

    See chapter 10, "Augmenting the input" (book/10_augment.ipynb).
    """

    def __init__(self, retriever: Any, reader: nn.Module, tokenizer: ReaderTokenizer, k: int = 3,
                 min_score: float | None = None, *, max_answer: int = 16) -> None:
        self.k = non_negative_int("k", k)
        if self.k > 0 and not hasattr(retriever, "search"):
            raise TypeError(f"retriever must have a search(query, k) method, got "
                            f"{type(retriever).__name__}; pass k=0 for a closed-book model")
        self.retriever, self.reader, self.tokenizer = retriever, reader, tokenizer
        self.min_score = finite_float("min_score", min_score, allow_none=True)
        self.max_answer = positive_int("max_answer", max_answer)

    def __repr__(self) -> str:
        return (f"RAG(retriever={type(self.retriever).__name__}, k={self.k}, "
                f"min_score={self.min_score})")

    def retrieve(self, questions: Sequence[str]) -> list[list[Any]]:
        """The ``k`` best hits of each question (``[]`` for each when ``k == 0``)."""
        if self.k == 0:
            return [[] for _ in questions]
        if hasattr(self.retriever, "search_batch"):
            return list(self.retriever.search_batch(list(questions), self.k))
        return [self.retriever.search(q, self.k) for q in questions]

    def answer(self, question: str) -> Answer:
        """Retrieve, render, read: the :class:`Answer` to one question."""
        if not isinstance(question, str):
            raise TypeError(f"question must be a str, got {type(question).__name__}")
        return self.answer_batch([question])[0]

    def answer_batch(self, questions: Sequence[str]) -> list[Answer]:
        """:meth:`answer` for many questions: one retrieval call and batched reading."""
        if isinstance(questions, str):
            raise TypeError("questions is a single str; pass a list, or call answer()")
        questions = list(questions)
        hits = self.retrieve(questions)
        prompts = [render_prompt(q, [h.text for h in hs]) for q, hs in zip(questions, hits,
                                                                          strict=True)]
        keep = [i for i, hs in enumerate(hits) if not self._abstains(hs)]
        texts = read(self.reader, self.tokenizer, [prompts[i] for i in keep],
                     max_answer=self.max_answer) if keep else []
        read_text = dict(zip(keep, texts, strict=True))
        return [Answer(read_text.get(i, ABSTAIN), hits[i], prompts[i], i not in read_text)
                for i in range(len(questions))]

    def _abstains(self, hits: list[Any]) -> bool:
        if self.min_score is None or self.k == 0:
            return False
        return not hits or hits[0].score < self.min_score


def score(answers: Sequence[Answer], qas: Sequence[Any]) -> float:
    """Exact match of ``answers`` against the ``answer`` of each QA (an abstention is wrong).

    See chapter 10, "Augmenting the input" (book/10_augment.ipynb).
    """
    _same_length(answers, qas)
    return sum(not a.abstained and exact_match(a.text, q.answer)
               for a, q in zip(answers, qas, strict=True)) / max(1, len(qas))


def diagnose(answers: Sequence[Answer], qas: Sequence[Any]) -> list[str]:
    """Why each answer is right or wrong: ``"correct"``, ``"retrieval miss"``, ``"reading miss"``.

    A retrieval miss: the passage that holds the answer (``qa.passage_id``)
    is not among the hits, so the reader could not read it. A reading miss:
    it is, and the answer is still wrong. An abstention is ``"abstained"``.

    See chapter 10, "Augmenting the input" (book/10_augment.ipynb).
    """
    _same_length(answers, qas)
    out = []
    for a, q in zip(answers, qas, strict=True):
        if a.abstained:
            out.append("abstained")
        elif exact_match(a.text, q.answer):
            out.append("correct")
        elif q.passage_id not in [h.passage_id for h in a.hits]:
            out.append("retrieval miss")
        else:
            out.append("reading miss")
    return out


def abstention(answers: Sequence[Answer], qas: Sequence[Any]) -> dict[str, float]:
    """Coverage, accuracy when answering, and abstention on questions with no answer.

    ``qas`` may mix questions about people in the world and about absent
    people (``qa.answer is None``). Returns ``coverage`` (share of answerable
    questions answered), ``accuracy`` (exact match among those answered),
    ``abstain_absent`` (share of unanswerable questions abstained on) and the
    ``counts``.

    See chapter 10, "Augmenting the input" (book/10_augment.ipynb).
    """
    _same_length(answers, qas)
    known = [(a, q) for a, q in zip(answers, qas, strict=True) if q.answer is not None]
    absent = [a for a, q in zip(answers, qas, strict=True) if q.answer is None]
    answered = [(a, q) for a, q in known if not a.abstained]
    counts = Counter(diagnose([a for a, _ in known], [q for _, q in known]))
    return {
        "coverage": len(answered) / max(1, len(known)),
        "accuracy": sum(exact_match(a.text, q.answer) for a, q in answered) / max(1, len(answered)),
        "abstain_absent": sum(a.abstained for a in absent) / max(1, len(absent)),
        "counts": dict(counts),
    }


def _same_length(answers: Sequence[Any], qas: Sequence[Any]) -> None:
    if len(answers) != len(qas):
        raise ValueError(f"{len(answers)} answers for {len(qas)} questions; pass one per question")


def format_answer(answer: Answer, *, max_chars: int = 100) -> str:
    """An :class:`Answer` as text: the answer, then the passages read, with their scores.

    See chapter 10, "Augmenting the input" (book/10_augment.ipynb).
    """
    positive_int("max_chars", max_chars)
    lines = [f"answer: {answer.text}" + ("   (abstained)" if answer.abstained else "")]
    for i, h in enumerate(answer.hits, 1):
        text = h.text if len(h.text) <= max_chars else h.text[: max_chars - 3] + "..."
        lines.append(f"  [{i}] {h.score:.3f}  {text}")
    return "\n".join(lines)


def question_box(rag: RAG, question: str):
    """A question box over ``rag``: type a question, see the answer and the passages read.

    A thin layer over :meth:`RAG.answer` and :func:`format_answer`; the default
    ``question`` is answered at once, so that the static page shows a reply
    (new questions need a live kernel).

    See chapter 10, "Augmenting the input" (book/10_augment.ipynb).
    """
    import ipywidgets as widgets

    def show(question: str) -> None:
        print(format_answer(rag.answer(question)) if question.strip() else "(ask a question)")

    box = widgets.Text(value=question, description="question", continuous_update=False,
                       layout=widgets.Layout(width="90%"))
    return widgets.interact(show, question=box)


def pretrained_reader() -> tuple[nn.Module, ReaderTokenizer]:
    """The shipped reader (``slmbook/assets/reader.pt``) in eval mode, and its tokenizer.

    Made by ``scripts/train_reader.py``; ``reader.json`` next to it records
    how (command, time, data, results).

    See chapter 10, "Augmenting the input" (book/10_augment.ipynb).
    """
    from slmbook import checkpoints

    resource = importlib.resources.files("slmbook") / "assets" / "reader.pt"
    fix = "regenerate it with `python scripts/train_reader.py` from the repository root"
    if not resource.is_file():
        raise FileNotFoundError(f"the shipped reader {resource} is missing; {fix}")
    with importlib.resources.as_file(resource) as file:
        ckpt = checkpoints.load(file)
        model = ckpt.build_model()
    model.eval()
    return model, ReaderTokenizer()


def default_rag(k: int = 3, *, hard: bool = False, min_score: float | None = None,
                seed: int = 0) -> RAG:
    """The shipped reader over the TF-IDF index of the fact world ``make_world(seed)``.

    ``hard=True`` indexes the hard passages (with the answerless FAQ ones).

    See chapter 10, "Augmenting the input" (book/10_augment.ipynb).
    """
    from slmbook.facts import make_world
    from slmbook.retrieval import TfidfRetriever

    retriever = TfidfRetriever().fit(make_world(seed).passages(hard=hard))
    model, tokenizer = pretrained_reader()
    return RAG(retriever, model, tokenizer, k=k, min_score=min_score)
