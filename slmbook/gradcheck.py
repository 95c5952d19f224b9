r"""Finite-difference gradient checking: is a backward pass right?

The derivative of a scalar function :math:`f` along coordinate :math:`i` is
approximated by a *central* difference,

.. math::

    \frac{\partial f}{\partial x_i} \approx
    \frac{f(x + \epsilon e_i) - f(x - \epsilon e_i)}{2 \epsilon},

whose error shrinks like :math:`\epsilon^2` (a one-sided difference only like
:math:`\epsilon`). In float64 with :math:`\epsilon = 10^{-6}` the two
gradients of a correct implementation agree to about 8 significant digits;
in float32 rounding swamps the difference, which is why the inputs must be
float64.

It costs two evaluations of :math:`f` per coordinate, so for a model only a
few randomly chosen coordinates per tensor are checked (``n_coords``).

Taught in chapter 5, "The backward pass" (book/05_backward.ipynb).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from slmbook._checks import positive_int

__all__ = ["GradcheckResult", "gradcheck", "numerical_gradient"]


@dataclass
class GradcheckResult:
    """The outcome of :func:`gradcheck`.

    Attributes
    ----------
    passed:
        True when every checked coordinate satisfies
        ``|analytical - numerical| <= atol + rtol * |numerical|``.
    max_abs_error:
        The largest ``|analytical - numerical|`` over checked coordinates.
    max_rel_error:
        The largest ``|analytical - numerical| / max(|analytical|, |numerical|, atol)``
        (the floor ``atol`` keeps gradients that are zero up to rounding from
        reporting huge relative errors).
    n_checked:
        How many coordinates were compared.
    worst:
        ``(input index, flat coordinate)`` of the largest relative error.
    analytical, numerical:
        The compared values, one 1-D float64 tensor per input (only the
        checked coordinates, in the order of ``indices``).
    indices:
        The flat coordinates checked in each input.
    """

    passed: bool
    max_abs_error: float
    max_rel_error: float
    n_checked: int
    worst: tuple[int, int]
    analytical: list[torch.Tensor]
    numerical: list[torch.Tensor]
    indices: list[torch.Tensor]

    def __bool__(self) -> bool:
        return self.passed

    def __repr__(self) -> str:
        return (
            f"GradcheckResult(passed={self.passed}, max_rel_error={self.max_rel_error:.3g}, "
            f"max_abs_error={self.max_abs_error:.3g}, n_checked={self.n_checked}, "
            f"worst={self.worst})"
        )


def _check_inputs(inputs: Sequence[torch.Tensor]) -> None:
    for i, x in enumerate(inputs):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"input {i} is a {type(x).__name__}, not a tensor")
        if x.dtype != torch.float64:
            raise TypeError(
                f"input {i} is {x.dtype}; finite differences need float64 "
                "(convert with .double(), or model.double() for a model)"
            )
        if not x.is_contiguous():
            raise ValueError(f"input {i} is not contiguous; pass x.contiguous() instead")


def numerical_gradient(
    f: Callable[..., torch.Tensor],
    inputs: Sequence[torch.Tensor],
    *,
    eps: float = 1e-6,
    indices: Sequence[torch.Tensor] | None = None,
) -> list[torch.Tensor]:
    """Central-difference gradient of the scalar ``f(*inputs)``.

    Each input is perturbed **in place** (and restored), so ``f`` may also
    ignore its arguments and read the same tensors elsewhere, for example a
    model's parameters.

    Parameters
    ----------
    f:
        A function of the inputs returning a scalar tensor.
    inputs:
        float64 tensors of any shape.
    eps:
        The step :math:`\\epsilon`.
    indices:
        For each input, the flat coordinates to differentiate (1-D int64);
        ``None`` means all of them.

    Returns
    -------
    list of torch.Tensor
        One 1-D float64 tensor per input, the derivatives at ``indices``.

    See chapter 5, "The backward pass" (book/05_backward.ipynb).
    """
    _check_inputs(inputs)
    if indices is None:
        indices = [torch.arange(x.numel()) for x in inputs]
    grads = []
    with torch.no_grad():
        for x, idx in zip(inputs, indices, strict=True):
            flat = x.view(-1)  # shares memory with x
            g = torch.empty(len(idx), dtype=torch.float64)
            for k, i in enumerate(idx.tolist()):
                original = flat[i].item()
                flat[i] = original + eps
                f_plus = float(f(*inputs))
                flat[i] = original - eps
                f_minus = float(f(*inputs))
                flat[i] = original
                g[k] = (f_plus - f_minus) / (2 * eps)
            grads.append(g)
    return grads


def _analytic_gradients(f, inputs: Sequence[torch.Tensor], analytical) -> list[torch.Tensor]:
    """The gradient to check: ``analytical(*inputs)``, or autograd's of ``f`` at ``inputs``."""
    if analytical is None:
        no_grad = [i for i, x in enumerate(inputs) if not x.requires_grad]
        if no_grad:
            raise ValueError(
                f"inputs {no_grad} do not require grad; call .requires_grad_() on them or pass "
                "analytical= to check a hand-written gradient"
            )
        out = f(*inputs)
        if not isinstance(out, torch.Tensor) or out.numel() != 1:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"f must return a scalar tensor, got {shape}; reduce it, e.g. .sum()")
        grads = torch.autograd.grad(out, list(inputs), allow_unused=True)
        return [
            torch.zeros_like(x) if g is None else g for x, g in zip(inputs, grads, strict=True)
        ]
    grads = list(analytical(*inputs))
    for i, (x, g) in enumerate(zip(inputs, grads, strict=True)):
        if g.shape != x.shape:
            raise ValueError(
                f"analytical gradient {i} has shape {tuple(g.shape)}, but input {i} has "
                f"shape {tuple(x.shape)}; return one gradient per input, of its shape"
            )
    return grads


def _sample_indices(
    inputs: Sequence[torch.Tensor], n_coords: int | None, generator: torch.Generator | None
) -> list[torch.Tensor]:
    """For each input, the flat coordinates to check: all, or ``n_coords`` drawn at random."""
    indices = []
    for x in inputs:
        if n_coords is None or n_coords >= x.numel():
            indices.append(torch.arange(x.numel()))
        else:
            indices.append(torch.randperm(x.numel(), generator=generator)[:n_coords])
    return indices


def gradcheck(
    f: Callable[..., torch.Tensor],
    inputs: Sequence[torch.Tensor],
    *,
    analytical: Callable[..., Sequence[torch.Tensor]] | None = None,
    eps: float = 1e-6,
    atol: float = 1e-7,
    rtol: float = 1e-5,
    n_coords: int | None = None,
    generator: torch.Generator | None = None,
) -> GradcheckResult:
    """Compare a gradient with central finite differences.

    Parameters
    ----------
    f:
        A function of the inputs returning a scalar tensor.
    inputs:
        float64 tensors. Unless ``analytical`` is given they must have
        ``requires_grad=True``, and the gradient checked is torch autograd's.
    analytical:
        A function of the inputs returning their gradients (same shapes), for
        checking a hand-written backward pass instead of autograd.
    eps:
        Finite-difference step.
    atol, rtol:
        A coordinate passes when ``|a - n| <= atol + rtol * |n|``.
    n_coords:
        Check at most this many random coordinates per input (``None``: all).
    generator:
        Seeds the choice of coordinates.

    Returns
    -------
    GradcheckResult
        Truthy when the check passed; holds the errors.

    See chapter 5, "The backward pass" (book/05_backward.ipynb).
    """
    _check_inputs(inputs)
    n_coords = positive_int("n_coords", n_coords, allow_none=True)
    grads = _analytic_gradients(f, inputs, analytical)
    indices = _sample_indices(inputs, n_coords, generator)
    numerical = numerical_gradient(f, inputs, eps=eps, indices=indices)
    analytic = [g.detach().reshape(-1)[idx].double() for g, idx in zip(grads, indices, strict=True)]

    passed, max_abs, max_rel, worst = True, 0.0, 0.0, (0, 0)
    for i, (a, n, idx) in enumerate(zip(analytic, numerical, indices, strict=True)):
        err = (a - n).abs()
        rel = err / torch.maximum(a.abs(), n.abs()).clamp_min(atol if atol > 0 else 1e-300)
        passed = passed and bool((err <= atol + rtol * n.abs()).all())
        if len(err) and float(err.max()) > max_abs:
            max_abs = float(err.max())
        if len(rel) and float(rel.max()) >= max_rel:
            max_rel = float(rel.max())
            worst = (i, int(idx[rel.argmax()]))
    n_checked = sum(len(idx) for idx in indices)
    return GradcheckResult(passed, max_abs, max_rel, n_checked, worst, analytic, numerical, indices)
