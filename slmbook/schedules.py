r"""Learning-rate schedules: linear warmup, then cosine decay (or a constant rate).

The schedules are pure functions of the step number, so they can be tested
at known points, plotted whole (:func:`lr_curve`) and plugged into any torch
optimizer through :func:`make_scheduler` (a ``LambdaLR`` that multiplies each
parameter group's base learning rate).

Warmup then cosine, with :math:`W` warmup steps, :math:`S` steps in all:

.. math::

    \eta(s) = \begin{cases}
        \eta_{\max} \dfrac{s + 1}{W} & s < W \\[1ex]
        \eta_{\min} + \tfrac12 (\eta_{\max} - \eta_{\min})
            \bigl(1 + \cos(\pi \tfrac{s - W}{S - W})\bigr) & W \le s < S \\[1ex]
        \eta_{\min} & s \ge S
    \end{cases}

The first step (:math:`s = 0`) already gets :math:`\eta_{\max}/W` (not 0, which
would waste it); the rate reaches :math:`\eta_{\max}` at :math:`s = W - 1` and
:math:`s = W`, is halfway between the two at :math:`s = W + (S - W)/2`, and
:math:`\eta_{\min}` from :math:`s = S` on.

See chapter 6, "Updating the parameters" (book/06_update.ipynb); chapter 7,
"Iterating" (book/07_iterate.ipynb), trains with them.
"""

from __future__ import annotations

import math
from functools import partial

import numpy as np
import torch

from slmbook._checks import finite_float, non_negative_int, positive_int, unit_interval

__all__ = ["SCHEDULES", "constant", "lr_curve", "make_scheduler", "warmup_cosine"]


def _check(step: int, max_lr: float, warmup_steps: int, max_steps: int | None, min_lr: float):
    non_negative_int("step", step)
    for name, value in (("max_lr", max_lr), ("min_lr", min_lr)):
        if finite_float(name, value) < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
    if min_lr > max_lr:
        raise ValueError(f"min_lr ({min_lr}) must not exceed max_lr ({max_lr})")
    non_negative_int("warmup_steps", warmup_steps)
    if max_steps is not None:
        positive_int("max_steps", max_steps)
        if warmup_steps > max_steps:
            raise ValueError(
                f"warmup_steps ({warmup_steps}) must not exceed max_steps ({max_steps}): "
                "shorten the warmup or train longer"
            )


def warmup_cosine(
    step: int, *, max_lr: float, warmup_steps: int, max_steps: int, min_lr: float = 0.0
) -> float:
    """Learning rate at ``step``: linear warmup to ``max_lr``, cosine decay to ``min_lr``.

    Parameters
    ----------
    step : int
        The optimizer step, counted from 0.
    max_lr, min_lr : float
        Peak and final learning rates, ``0 <= min_lr <= max_lr``.
    warmup_steps, max_steps : int
        ``0 <= warmup_steps <= max_steps``; after ``max_steps`` the rate stays ``min_lr``.

    See chapter 6, "Updating the parameters" (book/06_update.ipynb).
    """
    _check(step, max_lr, warmup_steps, max_steps, min_lr)
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    if step >= max_steps:
        return min_lr
    progress = (step - warmup_steps) / (max_steps - warmup_steps)  # 0 -> 1
    return min_lr + 0.5 * (max_lr - min_lr) * (1.0 + math.cos(math.pi * progress))


def constant(
    step: int,
    *,
    max_lr: float,
    warmup_steps: int = 0,
    max_steps: int | None = None,
    min_lr: float = 0.0,
) -> float:
    """Learning rate at ``step``: linear warmup to ``max_lr`` (if any), then constant.

    ``max_steps`` and ``min_lr`` are accepted (and checked) so that both
    schedules take the same arguments; they do not change the rate.

    See chapter 6, "Updating the parameters" (book/06_update.ipynb).
    """
    _check(step, max_lr, warmup_steps, max_steps, min_lr)
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    return max_lr


SCHEDULES = {"cosine": warmup_cosine, "constant": constant}


def _get(name: str):
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; choose one of {sorted(SCHEDULES)}")
    return SCHEDULES[name]


def make_scheduler(
    optimizer: torch.optim.Optimizer,
    name: str = "cosine",
    *,
    warmup_steps: int,
    max_steps: int,
    min_lr_ratio: float = 0.1,
) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` that applies a schedule to any torch optimizer.

    Each parameter group's own ``lr`` is the peak; the rate decays to
    ``min_lr_ratio`` times it. Call ``scheduler.step()`` after each
    ``optimizer.step()``. Step 0's rate is set as soon as the scheduler is
    created.

    Parameters
    ----------
    optimizer : torch.optim.Optimizer
    name : {"cosine", "constant"}
    warmup_steps, max_steps : int
    min_lr_ratio : float in [0, 1]

    See chapter 6, "Updating the parameters" (book/06_update.ipynb).
    """
    fn = _get(name)
    min_lr_ratio = unit_interval("min_lr_ratio", min_lr_ratio, closed_right=True)
    _check(0, 1.0, warmup_steps, max_steps, min_lr_ratio)
    factor = partial(
        fn, max_lr=1.0, warmup_steps=warmup_steps, max_steps=max_steps, min_lr=min_lr_ratio
    )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def lr_curve(
    name: str = "cosine",
    *,
    max_lr: float,
    warmup_steps: int,
    max_steps: int,
    min_lr: float = 0.0,
    num_steps: int | None = None,
) -> np.ndarray:
    """The learning rate at steps ``0 .. num_steps - 1`` (default ``max_steps``), for plots.

    Returns
    -------
    numpy.ndarray
        ``(num_steps,)`` float64.

    See chapter 6, "Updating the parameters" (book/06_update.ipynb).
    """
    fn = _get(name)
    n = max_steps if num_steps is None else num_steps
    n = non_negative_int("num_steps", n)
    kw = dict(max_lr=max_lr, warmup_steps=warmup_steps, max_steps=max_steps, min_lr=min_lr)
    _check(0, **kw)
    return np.array([fn(s, **kw) for s in range(n)], dtype=np.float64)
