r"""Training the retriever, and the retriever with the reader, from the RAG marginal likelihood.

Chapter 11's pieces, once:

1. :func:`cache_candidates`: the *frozen* reader's log-probability of each
   answer token given each of the retriever's ``K`` candidates alone,
   computed once (no gradient) into a :class:`CandidateCache`;
2. :func:`retriever_loss` and :func:`train_retriever`: the retriever's
   weights trained by the RAG-Sequence or RAG-Token loss over the cache
   (answers only), or, as the supervised bound, by the cross-entropy of the
   gold passage (relevance labels);
3. :class:`JointRAG` and :func:`joint_loss`: reader and retriever as one
   module, with a ``loss_fn`` for :func:`slmbook.training.train` that runs the
   reader live, so that one optimizer updates both.

``slmbook.rag`` re-exports all of them. Taught in chapter 11, "Training
retriever and generator together" (book/11_joint.ipynb).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slmbook._checks import positive_float, positive_int
from slmbook.inference import evaluating
from slmbook.losses import IGNORE_INDEX
from slmbook.marginal import answer_token_logprobs, rag_sequence_nll, rag_token_nll
from slmbook.reader import ReaderTokenizer, make_batch, render_prompt

__all__ = [
    "OBJECTIVES",
    "CandidateCache",
    "JointRAG",
    "cache_candidates",
    "joint_loss",
    "retriever_loss",
    "train_retriever",
]

OBJECTIVES = ("sequence", "token", "labels")
"""Accepted ``objective`` values: RAG-Sequence, RAG-Token (answers only), gold labels."""


@dataclass
class CandidateCache:
    """The frozen reader's view of each question's ``K`` candidate passages.

    Attributes
    ----------
    candidate_ids:
        ``(N, K)`` int64 passage rows of the retriever's base index
        (``retriever.base.texts_[row]``), in the retriever's order.
    token_logprobs:
        ``(N, K, L)`` float64 ``log p(y_t | x, z, y_<t)`` of each answer token
        (the end-of-answer character included), 0 outside ``mask``.
    mask:
        ``(N, L)`` bool: which of the ``L`` positions are answer tokens.
    exact:
        ``(N, K)`` bool: the reader reads the answer exactly (teacher-forced
        argmax, equal to greedy reading's) from that passage alone.
    gold:
        ``(N, K)`` bool: the candidate is the passage that holds the answer.

    See chapter 11, "Training retriever and generator together" (book/11_joint.ipynb).
    """

    candidate_ids: Tensor
    token_logprobs: Tensor
    mask: Tensor
    exact: Tensor
    gold: Tensor

    def __len__(self) -> int:
        return self.candidate_ids.shape[0]

    @property
    def answer_logprobs(self) -> Tensor:
        """``(N, K)`` ``log p(y | x, z)``: the sum over the answer's tokens."""
        return self.token_logprobs.sum(-1)

    def select(self, index: Any) -> CandidateCache:
        """The rows ``index`` (``(B,)`` ints, array or tensor) as a new cache."""
        idx = torch.as_tensor(np.asarray(index), dtype=torch.long)
        return CandidateCache(self.candidate_ids[idx], self.token_logprobs[idx], self.mask[idx],
                              self.exact[idx], self.gold[idx])


def _qas(questions: Any) -> list[Any]:
    if isinstance(questions, str):
        raise TypeError("questions is a single str; pass a list of QA records "
                        "(with .question, .answer and .passage_id)")
    qas = list(questions)
    for qa in qas:
        if not all(hasattr(qa, a) for a in ("question", "answer", "passage_id")):
            raise TypeError(f"questions must be QA records with .question, .answer and "
                            f".passage_id (slmbook.facts.QA), got {type(qa).__name__}")
        if qa.answer is None:
            raise ValueError(f"question {qa.question!r} has no answer (an absent person); "
                             "cache only answerable questions")
    return qas


@torch.no_grad()
def cache_candidates(reader: nn.Module, tokenizer: ReaderTokenizer, retriever: Any,
                     questions: Sequence[Any], k: int = 10, *,
                     batch_size: int = 200) -> CandidateCache:
    """Score every question's answer under each of the retriever's top-``k`` candidates alone.

    Parameters
    ----------
    reader, tokenizer:
        The frozen reader (logits ``(B, T, V)`` for ids ``(B, T)``) and its
        tokenizer; run in eval mode without gradients.
    retriever:
        A :class:`~slmbook.learned_retrieval.LearnedTfidfRetriever`: its first
        stage gives the candidates, its ``base`` the passage texts.
    questions:
        ``N`` QA records (``.question``, ``.answer``, ``.passage_id``).
    k:
        Candidates per question (at most the number of passages).
    batch_size:
        Prompts per reader call.

    Returns
    -------
    CandidateCache
        ``N * k`` reader passes, cached.

    See chapter 11, "Training retriever and generator together" (book/11_joint.ipynb).
    """
    qas = _qas(questions)
    k, batch_size = positive_int("k", k), positive_int("batch_size", batch_size)
    if not hasattr(retriever, "candidates") or not hasattr(retriever, "base"):
        raise TypeError(f"retriever must be a LearnedTfidfRetriever (candidates() and .base), "
                        f"got {type(retriever).__name__}")
    base = retriever.base
    cand = torch.as_tensor(retriever.candidates([qa.question for qa in qas], k), dtype=torch.long)
    n, k = cand.shape
    prompts = [render_prompt(qa.question, [base.texts_[j]]) for qa, row in zip(qas, cand.tolist(),
                                                                              strict=True) for j in row]
    answers = [qa.answer for qa in qas for _ in range(k)]
    rows, masks, exact = [], [], []
    with evaluating(reader):
        for s in range(0, len(prompts), batch_size):
            batch = make_batch(tokenizer, prompts[s : s + batch_size], answers[s : s + batch_size])
            logits = reader(batch.ids)
            lp, mask = answer_token_logprobs(logits.double(), batch.targets)
            ok = (logits.argmax(-1) == batch.targets) | (batch.targets == IGNORE_INDEX)
            rows.extend(lp)
            masks.extend(mask)
            exact.append(ok.all(dim=1))
    length = max((len(r) for r in rows), default=0)
    tok = torch.zeros(n * k, length, dtype=torch.float64)
    full_mask = torch.zeros(n * k, length, dtype=torch.bool)
    for i, (r, m) in enumerate(zip(rows, masks, strict=True)):
        tok[i, : len(r)], full_mask[i, : len(m)] = r, m
    gold = torch.tensor([[base.ids_[j] == qa.passage_id for j in row]
                         for qa, row in zip(qas, cand.tolist(), strict=True)], dtype=torch.bool)
    return CandidateCache(cand, tok.view(n, k, length), full_mask.view(n, k, length)[:, 0],
                          torch.cat(exact).view(n, k) if exact else torch.zeros(0, k, dtype=torch.bool),
                          gold.view(n, k))


def retriever_loss(scores: Tensor, cache: CandidateCache, index: Any, objective: str = "sequence",
                   temperature: float = 0.1) -> Tensor:
    """The retriever's loss on the cached rows ``index``.

    Parameters
    ----------
    scores:
        ``(B, K)`` the retriever's scores of ``cache.candidate_ids[index]``
        (with gradients).
    cache:
        The :class:`CandidateCache`.
    index:
        ``(B,)`` rows of the cache.
    objective:
        ``"sequence"`` (:func:`~slmbook.marginal.rag_sequence_nll`),
        ``"token"`` (:func:`~slmbook.marginal.rag_token_nll`), both from the
        answers alone, or ``"labels"``: cross-entropy of the gold passage's
        prior, over the rows whose gold passage is a candidate (needs labels).
    temperature:
        ``tau > 0`` of the prior ``softmax(s / tau)``.

    Returns
    -------
    Tensor
        Scalar, the mean over the questions.

    See chapter 11, "Training retriever and generator together" (book/11_joint.ipynb).
    """
    tau = positive_float("temperature", temperature)
    idx = torch.as_tensor(np.asarray(index), dtype=torch.long)
    if objective == "sequence":
        return rag_sequence_nll(scores, cache.token_logprobs[idx].sum(-1), tau)
    if objective == "token":
        return rag_token_nll(scores, cache.token_logprobs[idx], cache.mask[idx], tau)
    if objective == "labels":
        gold = cache.gold[idx]
        keep = gold.any(-1)
        return F.cross_entropy(scores[keep] / tau, gold[keep].double().argmax(-1))
    raise ValueError(f"objective={objective!r} is unknown; use one of {OBJECTIVES}")


def train_retriever(retriever: nn.Module, questions: Sequence[str], cache: CandidateCache, *,
                    objective: str = "sequence", temperature: float = 0.1, lr: float = 0.05,
                    epochs: int = 3, batch_size: int = 32, seed: int = 0,
                    batches: Iterable[Sequence[int]] | None = None) -> list[float]:
    """Adam on the retriever's trainable weights, over the cache; the reader stays frozen.

    Parameters
    ----------
    retriever:
        A :class:`~slmbook.learned_retrieval.LearnedTfidfRetriever`, trained in place.
    questions:
        The ``N`` question strings, row ``i`` of ``cache`` being ``questions[i]``.
    cache:
        Their :class:`CandidateCache`.
    objective, temperature:
        As in :func:`retriever_loss`.
    lr, epochs, batch_size, seed:
        Adam's learning rate; ``epochs`` passes over the questions in
        mini-batches of ``batch_size``, shuffled by ``torch.randperm`` from ``seed``.
    batches:
        The mini-batches of rows to use, in order, instead (e.g. a subset of
        the questions).

    Returns
    -------
    list[float]
        The loss of each step.

    See chapter 11, "Training retriever and generator together" (book/11_joint.ipynb).
    """
    if isinstance(questions, str):
        raise TypeError("questions is a single str; pass a list of questions")
    questions = list(questions)
    if len(questions) != len(cache):
        raise ValueError(f"{len(questions)} questions for a cache of {len(cache)} rows; "
                         "pass the questions the cache was built from")
    if objective not in OBJECTIVES:
        raise ValueError(f"objective={objective!r} is unknown; use one of {OBJECTIVES}")
    positive_float("lr", lr)
    epochs, batch_size = positive_int("epochs", epochs), positive_int("batch_size", batch_size)
    params = [p for p in retriever.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the retriever has no trainable parameters; set requires_grad on its weights")
    if batches is None:
        g = torch.Generator().manual_seed(seed)
        batches = [idx for _ in range(epochs)
                   for idx in torch.randperm(len(questions), generator=g).split(batch_size)]
    opt = torch.optim.Adam(params, lr=lr)
    losses = []
    for idx in batches:
        idx = torch.as_tensor(np.asarray(idx), dtype=torch.long)
        _, s = retriever.scores([questions[i] for i in idx.tolist()], cache.candidate_ids[idx])
        loss = retriever_loss(s, cache, idx, objective, temperature)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


class JointRAG(nn.Module):
    """Reader and retriever as one module, so that one optimizer (and ``train``) updates both.

    ``forward(ids)`` is the reader's: ``(B, T)`` ids to ``(B, T, V)`` logits.

    See chapter 11, "Training retriever and generator together" (book/11_joint.ipynb).
    """

    def __init__(self, reader: nn.Module, retriever: nn.Module) -> None:
        super().__init__()
        if not isinstance(reader, nn.Module) or not isinstance(retriever, nn.Module):
            raise TypeError(f"reader and retriever must be nn.Modules, got "
                            f"{type(reader).__name__} and {type(retriever).__name__}")
        self.reader, self.retriever = reader, retriever

    def forward(self, ids: Tensor) -> Tensor:
        return self.reader(ids)


def joint_loss(questions: Sequence[str], answers: Sequence[str], candidate_ids: Any,
               tokenizer: ReaderTokenizer, temperature: float = 0.1
               ) -> Callable[[JointRAG, Tensor], Tensor]:
    """A ``loss_fn(model, index)`` for :func:`slmbook.training.train`: RAG-Sequence, reader live.

    For the questions ``index`` (``(B,)``, from the sampler), the retriever
    scores their ``K`` candidates (``(B, K)``, with gradients), the reader
    reads each candidate alone and gives ``log p(y|x, z)`` (``(B, K)``, with
    gradients, through :func:`~slmbook.marginal.answer_token_logprobs`), and
    the loss is :func:`~slmbook.marginal.rag_sequence_nll` of the two.

    Parameters
    ----------
    questions, answers:
        The ``N`` training questions and their answers.
    candidate_ids:
        ``(N, K)`` passage rows of the retriever's base index (e.g.
        ``CandidateCache.candidate_ids``).
    tokenizer:
        The reader's tokenizer.
    temperature:
        ``tau > 0`` of the prior.

    Returns
    -------
    Callable
        ``loss_fn(model: JointRAG, index: Tensor) -> Tensor`` (float32 scalar).

    See chapter 11, "Training retriever and generator together" (book/11_joint.ipynb).
    """
    questions, answers = list(questions), list(answers)
    cand = torch.as_tensor(np.asarray(candidate_ids), dtype=torch.long)
    if cand.ndim != 2 or len(questions) != len(answers) or len(questions) != cand.shape[0]:
        raise ValueError(f"{len(questions)} questions, {len(answers)} answers and candidate_ids of "
                         f"shape {tuple(cand.shape)}; pass N of each and (N, K) candidate_ids")
    tau = positive_float("temperature", temperature)
    k = cand.shape[1]

    def loss_fn(model: JointRAG, index: Tensor) -> Tensor:
        idx = torch.as_tensor(index).cpu().long()
        texts = model.retriever.base.texts_
        _, s = model.retriever.scores([questions[i] for i in idx.tolist()], cand[idx])
        prompts = [render_prompt(questions[i], [texts[j]]) for i in idx.tolist()
                   for j in cand[i].tolist()]
        batch = make_batch(tokenizer, prompts, [answers[i] for i in idx.tolist() for _ in range(k)])
        device = next(model.reader.parameters()).device
        lp, _ = answer_token_logprobs(model.reader(batch.ids.to(device)), batch.targets.to(device))
        answer_lp = lp.double().sum(-1).view(len(idx), k).to(s.device)
        return rag_sequence_nll(s, answer_lp, tau).float()

    return loss_fn
