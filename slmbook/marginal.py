r"""The RAG marginal likelihood: the loss as a sum over retrieved passages.

A retriever scores the ``K`` passages it retrieved for a question ``x`` with
``s(x, z)``; a temperature ``tau`` turns the scores into a distribution over
those passages, the *prior*

.. math:: p(z \mid x) = \operatorname{softmax}_z\bigl(s(x, z) / \tau\bigr).

The reader gives the answer ``y`` a probability with each passage in its
context, ``p(y | x, z)``. Nobody says which passage is the right one: the
passage is a latent variable, summed out.

* **RAG-Sequence** uses one passage for the whole answer:
  :math:`L = -\log \sum_z p(z|x)\, p(y|x, z)`.
* **RAG-Token** may use a different passage for every answer token:
  :math:`L = -\sum_t \log \sum_z p(z|x)\, p(y_t|x, z, y_{<t})`.

Both are computed in log space (``log_softmax`` then ``logsumexp``), so that
scores of +-1e4, tiny temperatures and passages under which the answer is
impossible (log-probability ``-inf``) stay finite. The gradient that reaches
the retriever is the prior minus the *posterior*
:math:`p(z|x, y) \propto p(z|x)\, p(y|x, z)`, divided by ``tau``: a passage's
score rises when the answer is likelier with it than the retriever expected.

The functions are pure functions of tensors; ``slmbook.rag`` re-exports the
two losses. Taught in chapter 11, "Training retriever and generator together"
(book/11_joint.ipynb).
"""

from __future__ import annotations

import torch
from torch import Tensor

from slmbook._checks import positive_float
from slmbook.losses import IGNORE_INDEX

__all__ = [
    "REDUCTIONS",
    "answer_token_logprobs",
    "rag_sequence_nll",
    "rag_token_nll",
    "retrieval_log_prior",
    "retrieval_posterior",
    "retrieval_prior",
]

REDUCTIONS = ("mean", "sum", "none")
"""Accepted ``reduction`` values: over the batch, the loss of each question is a sum over its tokens."""

_LOGPROB_SLACK = 1e-3  # a log-probability above this is a mistake (logits? a loss?)


# ---------------------------------------------------------------- checks
def _tensor(name: str, value: object, ndim: int, shape_doc: str) -> Tensor:
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape {shape_doc}, "
                        f"got {type(value).__name__}")
    if value.ndim != ndim:
        raise ValueError(f"{name} must have shape {shape_doc}, got {tuple(value.shape)}")
    if not value.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {value.dtype}; "
                        "convert it with .float()")
    return value


def _scores(doc_scores: object) -> Tensor:
    s = _tensor("doc_scores", doc_scores, 2, "(B, K)")
    if s.shape[1] == 0:
        raise ValueError("doc_scores has K = 0 passages per question; retrieve at least one")
    return s


def _logprobs(name: str, value: Tensor) -> Tensor:
    if value.numel() and value.detach().max() > _LOGPROB_SLACK:
        raise ValueError(
            f"{name} must be log-probabilities (<= 0), got a maximum of "
            f"{value.detach().max().item():.4g}; pass log p(y|x,z), not logits or a loss "
            "(a negative log-likelihood: negate it)"
        )
    return value


def _reduction(reduction: object) -> str:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction={reduction!r} is unknown; use one of {REDUCTIONS}")
    return reduction  # type: ignore[return-value]


def _reduce(loss: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


# ---------------------------------------------------------------- prior, posterior
def retrieval_log_prior(doc_scores: Tensor, temperature: float = 1.0) -> Tensor:
    """``log p(z|x) = log_softmax(s / tau)`` over the retrieved passages.

    Parameters
    ----------
    doc_scores:
        ``(B, K)`` float: the retriever's score of each of the ``K`` passages
        retrieved for each of ``B`` questions.
    temperature:
        ``tau > 0``; below 1 sharpens the distribution, above 1 flattens it.

    Returns
    -------
    Tensor
        ``(B, K)``, each row's exponentials summing to 1.

    See chapter 11, "Training retriever and generator together" (book/11_joint.ipynb).
    """
    s = _scores(doc_scores)
    tau = positive_float("temperature", temperature)
    return torch.log_softmax(s / tau, dim=-1)


def retrieval_prior(doc_scores: Tensor, temperature: float = 1.0) -> Tensor:
    """``p(z|x) = softmax(s / tau)`` over the retrieved passages: ``(B, K)`` -> ``(B, K)``.

    >>> retrieval_prior(torch.tensor([[0.0, 0.0]]))
    tensor([[0.5000, 0.5000]])

    See chapter 11, "Training retriever and generator together" (book/11_joint.ipynb).
    """
    return retrieval_log_prior(doc_scores, temperature).exp()


def retrieval_posterior(
    doc_scores: Tensor, answer_logprobs: Tensor, temperature: float = 1.0
) -> Tensor:
    """``p(z|x, y)``: the prior reweighted by how well each passage explains the answer.

    Parameters
    ----------
    doc_scores:
        ``(B, K)`` float, the retriever's scores.
    answer_logprobs:
        ``(B, K)`` float, ``log p(y|x, z)``: the reader's log-probability of the
        whole answer with passage ``z`` in its context (``-inf`` allowed for
        some passages of a row, not all).
    temperature:
        ``tau > 0``.

    Returns
    -------
    Tensor
        ``(B, K)``, rows summing to 1.

    >>> retrieval_posterior(torch.zeros(1, 2), torch.log(torch.tensor([[0.9, 0.1]])))
    tensor([[0.9000, 0.1000]])

    See chapter 11, "Training retriever and generator together" (book/11_joint.ipynb).
    """
    log_prior = retrieval_log_prior(doc_scores, temperature)
    lp = _tensor("answer_logprobs", answer_logprobs, 2, "(B, K)")
    if lp.shape != log_prior.shape:
        raise ValueError(f"answer_logprobs has shape {tuple(lp.shape)} but doc_scores has "
                         f"{tuple(log_prior.shape)}; both are (B, K)")
    return torch.softmax(log_prior + _logprobs("answer_logprobs", lp), dim=-1)


# ---------------------------------------------------------------- the two losses
def rag_sequence_nll(
    doc_scores: Tensor,
    answer_logprobs: Tensor,
    temperature: float = 1.0,
    reduction: str = "mean",
) -> Tensor:
    """RAG-Sequence loss ``-log sum_z p(z|x) p(y|x, z)``.

    Parameters
    ----------
    doc_scores:
        ``(B, K)`` float, the retriever's scores of the retrieved passages
        (with gradients, to train the retriever).
    answer_logprobs:
        ``(B, K)`` float, ``log p(y|x, z)`` of the whole answer (the sum of
        its tokens' log-probabilities) given each passage (with gradients, to
        train the reader). ``-inf`` is allowed for some passages of a row.
    temperature:
        ``tau > 0`` of the prior ``softmax(s / tau)``.
    reduction:
        ``"mean"`` (over the ``B`` questions), ``"sum"`` or ``"none"`` (``(B,)``).

    Returns
    -------
    Tensor
        Scalar, or ``(B,)`` with ``reduction="none"``. With ``K = 1`` it is
        ``-answer_logprobs``: the single-passage reader loss.

    Examples
    --------
    >>> s = torch.zeros(1, 2)  # the retriever cannot tell the passages apart
    >>> lp = torch.log(torch.tensor([[0.8, 0.2]]))  # p(y|x,z) under each passage
    >>> round(rag_sequence_nll(s, lp).item(), 4)  # -log(0.5*0.8 + 0.5*0.2)
    0.6931

    See chapter 11, "Training retriever and generator together" (book/11_joint.ipynb).
    """
    reduction = _reduction(reduction)
    log_prior = retrieval_log_prior(doc_scores, temperature)
    lp = _tensor("answer_logprobs", answer_logprobs, 2, "(B, K)")
    if lp.shape != log_prior.shape:
        raise ValueError(f"answer_logprobs has shape {tuple(lp.shape)} but doc_scores has "
                         f"{tuple(log_prior.shape)}; both are (B, K)")
    joint = log_prior + _logprobs("answer_logprobs", lp)  # log p(z|x) + log p(y|x,z)
    return _reduce(-torch.logsumexp(joint, dim=-1), reduction)


def rag_token_nll(
    doc_scores: Tensor,
    token_logprobs: Tensor,
    mask: Tensor,
    temperature: float = 1.0,
    reduction: str = "mean",
) -> Tensor:
    """RAG-Token loss ``-sum_t log sum_z p(z|x) p(y_t|x, z, y_<t)`` over the masked tokens.

    Parameters
    ----------
    doc_scores:
        ``(B, K)`` float, the retriever's scores.
    token_logprobs:
        ``(B, K, L)`` float, the reader's log-probability of answer token
        ``t`` given passage ``z`` and the answer's earlier tokens. Values at
        positions outside ``mask`` are ignored (they may be anything, even
        ``-inf`` or NaN).
    mask:
        ``(B, L)`` bool (or 0/1): which of the ``L`` positions are answer
        tokens (answers of different lengths are padded to ``L``).
    temperature:
        ``tau > 0`` of the prior.
    reduction:
        ``"mean"`` (over questions, of each question's sum over its tokens),
        ``"sum"`` or ``"none"`` (``(B,)``).

    Returns
    -------
    Tensor
        Scalar, or ``(B,)``. With ``L = 1`` it equals :func:`rag_sequence_nll`;
        with ``K = 1``, the single-passage loss ``-sum_t token_logprobs``.

    Examples
    --------
    >>> s = torch.zeros(1, 2)
    >>> tok = torch.log(torch.tensor([[[0.9, 0.1], [0.1, 0.9]]]))  # (B=1, K=2, L=2)
    >>> round(rag_token_nll(s, tok, torch.ones(1, 2, dtype=torch.bool)).item(), 4)  # -2 log 0.5
    1.3863
    >>> round(rag_sequence_nll(s, tok.sum(-1)).item(), 4)  # one passage for both: -log 0.09
    2.4079

    See chapter 11, "Training retriever and generator together" (book/11_joint.ipynb).
    """
    reduction = _reduction(reduction)
    log_prior = retrieval_log_prior(doc_scores, temperature)
    tok = _tensor("token_logprobs", token_logprobs, 3, "(B, K, L)")
    if tok.shape[:2] != log_prior.shape:
        raise ValueError(f"token_logprobs has shape {tuple(tok.shape)} but doc_scores has "
                         f"{tuple(log_prior.shape)}; token_logprobs is (B, K, L)")
    if not isinstance(mask, Tensor):
        raise TypeError(f"mask must be a (B, L) bool tensor, got {type(mask).__name__}")
    if mask.shape != (tok.shape[0], tok.shape[2]):
        raise ValueError(f"mask has shape {tuple(mask.shape)}; token_logprobs "
                         f"{tuple(tok.shape)} needs (B, L) = {(tok.shape[0], tok.shape[2])}")
    if mask.dtype != torch.bool:
        if mask.is_floating_point() or mask.is_complex() or ((mask != 0) & (mask != 1)).any():
            raise TypeError(f"mask must be bool or integer 0/1, got {mask.dtype} values")
        mask = mask.bool()
    keep = mask[:, None, :].expand_as(tok)
    # padding must not reach logsumexp: -inf there would make the gradient NaN
    tok = torch.where(keep, tok, torch.zeros((), dtype=tok.dtype, device=tok.device))
    _logprobs("token_logprobs", tok)
    per_token = -torch.logsumexp(log_prior[:, :, None] + tok, dim=1)  # (B, L)
    per_token = torch.where(mask, per_token, torch.zeros((), dtype=tok.dtype, device=tok.device))
    return _reduce(per_token.sum(dim=-1), reduction)


# ---------------------------------------------------------------- from the reader's logits
def answer_token_logprobs(
    logits: Tensor, targets: Tensor, ignore_index: int = IGNORE_INDEX
) -> tuple[Tensor, Tensor]:
    """The reader's log-probability of each answer token, left-aligned, and its mask.

    Turns the output of a reader run on padded ``prompt + answer`` rows (as
    built by ``slmbook.reader.make_batch``) into the ``token_logprobs`` of
    :func:`rag_token_nll`; their sum over the mask is the ``answer_logprobs``
    of :func:`rag_sequence_nll`. Differentiable (for joint training).

    Parameters
    ----------
    logits:
        ``(N, T, V)`` float, the reader's next-token logits.
    targets:
        ``(N, T)`` int64, the next token where it is scored (the answer) and
        ``ignore_index`` elsewhere (the prompt, the padding).
    ignore_index:
        The not-scored target.

    Returns
    -------
    (Tensor, Tensor)
        ``(N, L)`` log-probabilities of the answer tokens in order, 0 after
        each row's end, and the ``(N, L)`` bool mask of real tokens, with
        ``L`` the longest answer.

    >>> logits = torch.zeros(1, 3, 2)  # two equally likely tokens at every position
    >>> lp, mask = answer_token_logprobs(logits, torch.tensor([[-100, 1, 0]]))
    >>> lp.exp(), mask
    (tensor([[0.5000, 0.5000]]), tensor([[True, True]]))

    See chapter 11, "Training retriever and generator together" (book/11_joint.ipynb).
    """
    if not isinstance(logits, Tensor) or logits.ndim != 3:
        raise ValueError(f"logits must be an (N, T, V) tensor, got "
                         f"{tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__}")
    if not isinstance(targets, Tensor) or targets.shape != logits.shape[:2]:
        raise ValueError(f"targets must be an (N, T) = {tuple(logits.shape[:2])} tensor, got "
                         f"{tuple(targets.shape) if isinstance(targets, Tensor) else type(targets).__name__}")
    scored = targets != ignore_index  # (N, T)
    logp = torch.log_softmax(logits, dim=-1)
    picked = logp.gather(-1, torch.where(scored, targets, 0)[..., None])[..., 0]  # (N, T)
    lengths = scored.sum(dim=1)  # (N,)
    n = targets.shape[0]
    length = int(lengths.max()) if n else 0
    rows = torch.arange(n, device=targets.device)[:, None].expand_as(targets)[scored]
    cols = (scored.cumsum(dim=1) - 1)[scored]  # each answer token's place in its answer
    out = picked.new_zeros(n, length).index_put((rows, cols), picked[scored])
    mask = torch.arange(length, device=targets.device)[None, :] < lengths[:, None]
    return out, mask
