r"""The loss L: how wrong the model's next-token predictions are.

For one position the model outputs logits :math:`z \in \mathbb{R}^V`; softmax
turns them into probabilities :math:`p_c = e^{z_c} / \sum_k e^{z_k}`, and the
cross-entropy with the true next token :math:`y` is

.. math::

    \ell(z, y) = -\log p_y = \operatorname{logsumexp}(z) - z_y .

Computing :math:`e^{z}` directly overflows for logits of a few hundred (float32)
and :math:`\log` of an underflowed 0 is :math:`-\infty`; subtracting the
maximum first (:func:`logsumexp`) gives the same number with no overflow.

The loss is in nats. :func:`perplexity` (:math:`e^\ell`) is the size of a
uniform choice that would be as surprising; :func:`bits_per_token`
(:math:`\ell / \ln 2`) is the code length an ideal compressor driven by the
model would use, which makes the model comparable with zlib, bz2 and lzma
(:mod:`slmbook.compression`).

Taught in chapter 4, "Computing the loss" (book/04_loss.ipynb).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from slmbook._checks import model_block_size, model_device, positive_int, unit_interval
from slmbook.data import iter_batches
from slmbook.inference import evaluating

IGNORE_INDEX = -100
"""A target equal to this is not scored (torch's convention): the one definition in slmbook."""

__all__ = [
    "IGNORE_INDEX",
    "bits_per_char",
    "bits_per_token",
    "check_logits_targets",
    "cross_entropy",
    "estimate_loss",
    "log_softmax",
    "logsumexp",
    "perplexity",
]

_REDUCTIONS = ("mean", "sum", "none")


def logsumexp(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """``log(sum(exp(x)))`` along ``dim``, without overflow.

    Uses ``m + log(sum(exp(x - m)))`` with ``m = max(x)``: every exponent is
    at most 0, so nothing overflows, and the largest term is exactly 1, so the
    sum never underflows to 0.

    Parameters
    ----------
    x:
        Any floating tensor, shape (..., V).
    dim:
        The dimension to reduce.

    Returns
    -------
    torch.Tensor
        Shape (...,): ``x`` with ``dim`` removed.

    See chapter 4, "Computing the loss" (book/04_loss.ipynb).
    """
    m = x.detach().amax(dim=dim, keepdim=True)  # (..., 1); the result does not depend on m
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))  # a row of -inf stays -inf
    return (m + (x - m).exp().sum(dim=dim, keepdim=True).log()).squeeze(dim)


def log_softmax(logits: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Log-probabilities ``logits - logsumexp(logits)``, shape unchanged (..., V).

    See chapter 4, "Computing the loss" (book/04_loss.ipynb).
    """
    return logits - logsumexp(logits, dim=dim).unsqueeze(dim)


def check_logits_targets(
    logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = IGNORE_INDEX
) -> None:
    """Raise a clear error unless logits (..., V) and targets (...) fit together.

    The checks of :func:`cross_entropy` (shapes, dtypes, NaN, targets in [0, V)).
    """
    if not isinstance(logits, torch.Tensor) or not logits.is_floating_point():
        kind = logits.dtype if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise TypeError(f"logits must be a floating-point tensor of shape (..., V), got {kind}")
    if not isinstance(targets, torch.Tensor) or targets.is_floating_point() or targets.is_complex():
        kind = targets.dtype if isinstance(targets, torch.Tensor) else type(targets).__name__
        raise TypeError(
            f"targets must be an integer tensor of class indices, got {kind}; "
            "convert with targets.long()"
        )
    if logits.ndim == 0 or tuple(logits.shape[:-1]) != tuple(targets.shape):
        raise ValueError(
            f"logits of shape {tuple(logits.shape)} do not match targets of shape "
            f"{tuple(targets.shape)}: expected logits (..., V) and targets (...), for example "
            "(B, T, V) and (B, T); reshape one of them"
        )
    if logits.numel() and not bool(logits.detach().max() < math.inf):  # NaN compares False
        n_nan = int(torch.isnan(logits).sum())
        if n_nan:
            raise ValueError(
                f"logits contain {n_nan} NaN value(s) out of {logits.numel()}: the model's "
                "forward pass has already diverged (check the learning rate and the inputs)"
            )
        raise ValueError("logits contain +inf; the loss would be NaN (use finite logits)")
    vocab_size = logits.shape[-1]
    out_of_range = ((targets < 0) | (targets >= vocab_size)) & (targets != ignore_index)
    if out_of_range.any():
        bad = targets[out_of_range]
        raise ValueError(
            f"target {int(bad[0])} is outside [0, V) with V = {vocab_size} "
            f"({bad.numel()} bad target(s)); targets must be class indices below the vocabulary "
            f"size, or ignore_index={ignore_index}"
        )


def cross_entropy(
    logits: torch.Tensor,
    targets: torch.Tensor,
    *,
    ignore_index: int = IGNORE_INDEX,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    r"""Cross-entropy between logits and integer targets, written from scratch.

    Equal in value and gradient to ``torch.nn.functional.cross_entropy``
    (with the class dimension last):

    .. math::

        \ell_i = (1 - \varepsilon)\,(-\log p_{i, y_i})
                 + \varepsilon \cdot \frac{1}{V} \sum_c (-\log p_{i, c})

    where :math:`\varepsilon` is ``label_smoothing`` (the target distribution
    puts :math:`1 - \varepsilon + \varepsilon / V` on the true class and
    :math:`\varepsilon / V` on each other class).

    Parameters
    ----------
    logits:
        Unnormalised scores, shape (..., V): (N, V) as in torch, or (B, T, V)
        straight from the model. Any floating dtype; ``-inf`` is allowed
        (a masked class), NaN and ``+inf`` are not.
    targets:
        Class indices, shape (...) (the shape of ``logits`` without its last
        dimension), integers in [0, V) or ``ignore_index``.
    ignore_index:
        Targets equal to this value are not scored: their loss is 0 and they
        are left out of the mean.
    reduction:
        ``"mean"`` (over scored targets), ``"sum"`` or ``"none"`` (shape (...)).
    label_smoothing:
        :math:`\varepsilon` in [0, 1].

    Returns
    -------
    torch.Tensor
        A scalar in nats, or shape (...) for ``reduction="none"``.

    Raises
    ------
    TypeError
        If ``logits`` is not floating point or ``targets`` not integer.
    ValueError
        If the shapes do not match, a target is outside [0, V), the logits
        hold NaN or ``+inf``, ``reduction`` or ``label_smoothing`` is invalid,
        or ``reduction="mean"`` is asked of a batch whose targets are all
        ``ignore_index``.

    Notes
    -----
    An all-ignored batch: ``"sum"`` gives 0 (with zero gradient) and
    ``"none"`` gives zeros, but ``"mean"`` over zero targets is 0 / 0 and
    raises ``ValueError`` instead of returning NaN as torch does, because a
    silent NaN would poison every parameter at the next step. Use
    ``reduction="sum"`` and divide by your own count when batches may be
    entirely padding (as :func:`estimate_loss` does).

    See chapter 4, "Computing the loss" (book/04_loss.ipynb).
    """
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    label_smoothing = unit_interval("label_smoothing", label_smoothing, closed_right=True)
    check_logits_targets(logits, targets, ignore_index)

    logp = log_softmax(logits)  # (..., V)
    scored = targets != ignore_index  # (...)
    safe_targets = torch.where(scored, targets, torch.zeros_like(targets)).long()
    nll = -logp.gather(-1, safe_targets.unsqueeze(-1)).squeeze(-1)  # (...)
    if label_smoothing > 0.0:
        uniform_nll = -logp.mean(dim=-1)  # (...): cross-entropy with the uniform distribution
        nll = (1.0 - label_smoothing) * nll + label_smoothing * uniform_nll
    loss = torch.where(scored, nll, torch.zeros_like(nll))  # (...)

    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    n_scored = int(scored.sum())
    if n_scored == 0:
        if targets.numel() == 0:
            raise ValueError("the batch is empty: the mean loss over no targets is undefined")
        raise ValueError(
            f"all {targets.numel()} targets equal ignore_index={ignore_index}, so the mean loss "
            "is 0/0; use reduction='sum' (which gives 0) or skip this batch"
        )
    return loss.sum() / n_scored


def perplexity(loss: float | torch.Tensor) -> float | torch.Tensor:
    """``exp(loss)``: the number of equally likely choices that would be as surprising.

    A model that predicts uniformly over V tokens has loss ln V and
    perplexity V. Takes the loss in nats; returns a float for a float.

    See chapter 4, "Computing the loss" (book/04_loss.ipynb).
    """
    return loss.exp() if isinstance(loss, torch.Tensor) else math.exp(loss)


def bits_per_token(loss: float | torch.Tensor) -> float | torch.Tensor:
    """``loss / ln 2``: the loss in bits instead of nats.

    With a character tokenizer a token is a character, so this is also the
    bits per character that compressors are measured in.

    See chapter 4, "Computing the loss" (book/04_loss.ipynb).
    """
    return loss / math.log(2.0)


def bits_per_char(loss: float | torch.Tensor, n_tokens: int, n_chars: int) -> float | torch.Tensor:
    """Bits per character when tokens are not characters (BPE, bytes).

    The text's total code length is ``loss * n_tokens`` nats; spread over its
    ``n_chars`` characters and converted to bits that is
    ``loss * n_tokens / (n_chars * ln 2)``. Compare models with different
    tokenizers this way, never by their loss per token.

    Parameters
    ----------
    loss:
        Mean loss per token, in nats.
    n_tokens:
        The number of tokens the loss was averaged over.
    n_chars:
        The number of characters those tokens decode to.

    See chapter 4, "Computing the loss" (book/04_loss.ipynb).
    """
    if n_tokens <= 0 or n_chars <= 0:
        raise ValueError(
            f"n_tokens and n_chars must be positive, got n_tokens={n_tokens}, n_chars={n_chars}"
        )
    return bits_per_token(loss) * n_tokens / n_chars


def estimate_loss(
    model: nn.Module,
    data: torch.Tensor | Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    batch_size: int = 64,
    block_size: int | None = None,
    max_batches: int | None = None,
) -> float:
    """Mean cross-entropy of a model over a data split, in nats per target token.

    Runs the model in eval mode (no dropout) under ``torch.no_grad()`` and
    restores each submodule's previous train/eval mode afterwards, even if
    the forward pass fails.

    Parameters
    ----------
    model:
        Maps ``X: (B, T) int64`` to logits (B, T, V).
    data:
        Either token ids, a 1-D int64 tensor (N,), evaluated deterministically
        over :func:`slmbook.data.iter_batches` (consecutive, non-overlapping
        windows), or an iterable of ``(X, Y)`` batches, both (B, T) int64;
        targets equal to -100 are not scored.
    batch_size:
        Windows per forward pass when ``data`` is token ids.
    block_size:
        Window length when ``data`` is token ids; defaults to
        ``model.config.block_size``.
    max_batches:
        Stop after this many batches (a quicker, partial estimate).

    Returns
    -------
    float
        Total loss over all scored targets divided by their number (every
        target weighs the same, whatever the batch sizes).

    See chapter 4, "Computing the loss" (book/04_loss.ipynb).
    """
    max_batches = positive_int("max_batches", max_batches, allow_none=True)
    if isinstance(data, torch.Tensor):
        if data.ndim != 1:
            raise ValueError(
                f"token ids must be 1-D (N,), got shape {tuple(data.shape)}; pass an iterable "
                "of (X, Y) batches for 2-D data"
            )
        if block_size is None:
            block_size = model_block_size(model)
            if block_size is None:
                raise ValueError(
                    f"{type(model).__name__} has no config.block_size; pass block_size= explicitly"
                )
        batches: Iterable[tuple[torch.Tensor, torch.Tensor]] = iter_batches(
            data, batch_size, block_size
        )
    else:
        batches = data
    device = model_device(model)

    total = torch.zeros((), dtype=torch.float64)
    count = 0
    with evaluating(model):
        for i, (x, y) in enumerate(batches):
            if max_batches is not None and i >= max_batches:
                break
            logits = model(x.to(device))  # (B, T, V)
            y = y.to(device)
            total += cross_entropy(logits, y, reduction="sum").double().cpu()
            count += int((y != IGNORE_INDEX).sum())
    if count == 0:
        raise ValueError("no target was scored (empty data, or every target is -100)")
    return float(total) / count
