r"""Backpropagation by hand: the gradients of the last two steps of a language model.

**Softmax cross-entropy.** With :math:`p = \operatorname{softmax}(z)` and the
loss :math:`\ell = -\log p_y`, the derivative with respect to each logit is

.. math::

    \frac{\partial \ell}{\partial z_c} = p_c - [c = y],

the probabilities minus the one-hot target: push the true class's logit up,
every other logit down in proportion to how likely the model thought it was.
A mean over N scored targets divides this by N; label smoothing
:math:`\varepsilon` replaces the one-hot by the smoothed target
:math:`(1 - \varepsilon)\,[c = y] + \varepsilon / V`.

**Linear layer.** For :math:`Y = X W^\top + b` (torch's ``nn.Linear``:
``W`` has shape (out, in)) and an upstream gradient :math:`G = \partial L / \partial Y`,

.. math::

    \frac{\partial L}{\partial X} = G W, \qquad
    \frac{\partial L}{\partial W} = G^\top X, \qquad
    \frac{\partial L}{\partial b} = \textstyle\sum_{\text{rows}} G .

Each is compared with torch autograd in ``tests/test_backprop.py``.

Taught in chapter 5, "The backward pass" (book/05_backward.ipynb).
"""

from __future__ import annotations

import torch

from slmbook._checks import unit_interval
from slmbook.losses import IGNORE_INDEX, check_logits_targets

__all__ = ["linear_backward", "linear_forward", "softmax_cross_entropy_backward"]


def softmax_cross_entropy_backward(
    logits: torch.Tensor,
    targets: torch.Tensor,
    *,
    reduction: str = "mean",
    ignore_index: int = IGNORE_INDEX,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Gradient of :func:`slmbook.losses.cross_entropy` with respect to the logits.

    Parameters
    ----------
    logits:
        (..., V) floating tensor.
    targets:
        (...) integer class indices, or ``ignore_index``.
    reduction:
        ``"mean"`` (divide by the number of scored targets) or ``"sum"``.
    ignore_index:
        Targets with this value get a zero gradient row.
    label_smoothing:
        :math:`\\varepsilon` in [0, 1].

    Returns
    -------
    torch.Tensor
        (..., V), ``softmax(logits) - target distribution``, zero on ignored
        rows, divided by the number of scored targets for ``"mean"``.

    See chapter 5, "The backward pass" (book/05_backward.ipynb).
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(
            f"reduction must be 'mean' or 'sum' (the gradient of a scalar), got {reduction!r}"
        )
    label_smoothing = unit_interval("label_smoothing", label_smoothing, closed_right=True)
    check_logits_targets(logits, targets, ignore_index)
    vocab_size = logits.shape[-1]
    scored = targets != ignore_index  # (...)
    safe = torch.where(scored, targets, torch.zeros_like(targets)).long()
    probs = torch.softmax(logits.detach(), dim=-1)  # (..., V)
    one_hot = torch.nn.functional.one_hot(safe, vocab_size).to(probs.dtype)  # (..., V)
    target_dist = (1.0 - label_smoothing) * one_hot + label_smoothing / vocab_size
    grad = (probs - target_dist) * scored.unsqueeze(-1)  # (..., V), zero rows where ignored
    if reduction == "mean":
        n_scored = int(scored.sum())
        if n_scored == 0:
            raise ValueError(f"all targets equal ignore_index={ignore_index}; the mean is 0/0")
        grad = grad / n_scored
    return grad


def linear_forward(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """``x @ weight.T + bias``: x (..., in), weight (out, in), bias (out,) -> (..., out).

    See chapter 5, "The backward pass" (book/05_backward.ipynb).
    """
    if x.shape[-1] != weight.shape[-1]:
        raise ValueError(
            f"x has {x.shape[-1]} features (shape {tuple(x.shape)}) but weight expects "
            f"{weight.shape[-1]} (shape {tuple(weight.shape)}, (out, in))"
        )
    y = x @ weight.T  # (..., out)
    return y if bias is None else y + bias


def linear_backward(
    grad_out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of a linear layer given the gradient of its output.

    Parameters
    ----------
    grad_out:
        dL/dY, shape (..., out).
    x:
        The layer's input, shape (..., in).
    weight:
        (out, in).

    Returns
    -------
    (grad_x, grad_weight, grad_bias)
        Shapes (..., in), (out, in) and (out,).

    See chapter 5, "The backward pass" (book/05_backward.ipynb).
    """
    if grad_out.shape[:-1] != x.shape[:-1] or grad_out.shape[-1] != weight.shape[0]:
        raise ValueError(
            f"grad_out of shape {tuple(grad_out.shape)} does not fit x {tuple(x.shape)} and "
            f"weight {tuple(weight.shape)}: expected (..., {weight.shape[0]})"
        )
    g = grad_out.reshape(-1, grad_out.shape[-1])  # (N, out), every leading dim is a row
    x2 = x.reshape(-1, x.shape[-1])  # (N, in)
    grad_x = grad_out @ weight  # (..., in)
    grad_weight = g.T @ x2  # (out, in)
    grad_bias = g.sum(dim=0)  # (out,)
    return grad_x, grad_weight, grad_bias
