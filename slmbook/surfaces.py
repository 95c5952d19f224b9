r"""Two-dimensional loss surfaces, to watch optimizers move.

A language model has hundreds of thousands of parameters; these toy losses
have two, so a whole optimization run fits on one contour plot.

- :func:`quadratic`: an ill-conditioned bowl
  :math:`L(x, y) = \tfrac12 (a x^2 + b y^2)`, steep along :math:`y`, flat along
  :math:`x` (condition number :math:`b/a`). Gradient descent is stable only for
  :math:`\eta < 2/b` and then crawls along :math:`x` at rate :math:`1 - \eta a`.
- :func:`rosenbrock`: :math:`L(x, y) = (a - x)^2 + b (y - x^2)^2`, a curved,
  narrow valley with its minimum at :math:`(a, a^2)`.

:func:`run_optimizer` runs any ``torch.optim.Optimizer`` (torch's or
slmbook's) on a surface and returns the trajectory.

See chapter 6, "Updating the parameters" (book/06_update.ipynb).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from slmbook._checks import non_negative_int, positive_int

__all__ = [
    "QUADRATIC",
    "ROSENBROCK",
    "Surface",
    "grid",
    "path_losses",
    "quadratic",
    "rosenbrock",
    "run_optimizer",
]


def quadratic(xy: torch.Tensor, *, a: float = 1.0, b: float = 20.0) -> torch.Tensor:
    """Ill-conditioned quadratic ``0.5 * (a x² + b y²)``; ``xy: (..., 2)`` -> ``(...)``."""
    x, y = xy[..., 0], xy[..., 1]
    return 0.5 * (a * x**2 + b * y**2)


def rosenbrock(xy: torch.Tensor, *, a: float = 1.0, b: float = 100.0) -> torch.Tensor:
    """Rosenbrock's valley ``(a - x)² + b (y - x²)²``; ``xy: (..., 2)`` -> ``(...)``."""
    x, y = xy[..., 0], xy[..., 1]
    return (a - x) ** 2 + b * (y - x**2) ** 2


@dataclass(frozen=True, eq=False)  # compared and hashed by identity
class Surface:
    """A 2-D loss with what is needed to plot it.

    Parameters
    ----------
    name : str
    fn : callable
        ``(..., 2) tensor -> (...) tensor``.
    minimum : (float, float)
        Where the loss is smallest (the loss there is 0 for both surfaces here).
    start : (float, float)
        A default starting point that shows the surface's difficulty.
    xlim, ylim : (float, float)
        Plot ranges.
    """

    name: str
    fn: Callable[[torch.Tensor], torch.Tensor]
    minimum: tuple[float, float]
    start: tuple[float, float]
    xlim: tuple[float, float]
    ylim: tuple[float, float]
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __call__(self, xy: torch.Tensor) -> torch.Tensor:
        return self.fn(xy, **self.kwargs)

    def __repr__(self) -> str:
        return f"Surface({self.name!r}, minimum={self.minimum}, start={self.start})"


QUADRATIC = Surface(
    "ill-conditioned quadratic",
    quadratic,
    (0.0, 0.0),
    (-4.5, 1.0),
    (-5.0, 5.0),
    (-2.0, 2.0),
    {"a": 1.0, "b": 20.0},
)
ROSENBROCK = Surface(
    "Rosenbrock",
    rosenbrock,
    (1.0, 1.0),
    (-1.5, 2.0),
    (-2.0, 2.0),
    (-1.0, 3.0),
    {"a": 1.0, "b": 100.0},
)


def grid(
    surface: Surface,
    *,
    n: int = 200,
    xlim: tuple[float, float] | None = None,
    ylim: tuple[float, float] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The loss on an ``n x n`` grid, for contour plots.

    Returns
    -------
    X, Y, Z : numpy.ndarray
        Each ``(n, n)``: coordinates and loss (``plt.contour(X, Y, Z)``).
    """
    if positive_int("n", n) < 2:
        raise ValueError(f"n must be >= 2 grid points per axis, got {n}")
    xlim, ylim = xlim or surface.xlim, ylim or surface.ylim
    xs = torch.linspace(*xlim, n, dtype=torch.float64)
    ys = torch.linspace(*ylim, n, dtype=torch.float64)
    X, Y = torch.meshgrid(xs, ys, indexing="xy")  # (n, n) each
    Z = surface(torch.stack([X, Y], dim=-1))  # (n, n)
    return X.numpy(), Y.numpy(), Z.numpy()


def run_optimizer(
    surface: Surface,
    make_optimizer: Callable[..., torch.optim.Optimizer],
    *,
    steps: int = 100,
    start: tuple[float, float] | None = None,
    max_norm: float = 1e6,
    **optimizer_kwargs: Any,
) -> np.ndarray:
    """Run an optimizer on a surface and return the points it visits.

    Parameters
    ----------
    surface : Surface
    make_optimizer : callable
        An optimizer class such as ``torch.optim.SGD`` or ``slmbook.optim.Adam``
        (or any ``params, **kw -> Optimizer`` factory).
    steps : int
        Number of optimizer steps.
    start : (float, float), optional
        Starting point; defaults to ``surface.start``.
    max_norm : float
        Stop early once the point is farther than this from the origin (kept
        as the last point) or is not finite (dropped): the run diverged.
    **optimizer_kwargs
        Passed to ``make_optimizer`` (``lr=...``, ``momentum=...``).

    Returns
    -------
    numpy.ndarray
        ``(k + 1, 2)`` float64: the start and the point after each of the
        ``k <= steps`` steps (``k < steps`` only if the run diverged).
    """
    steps = non_negative_int("steps", steps)
    xy = torch.tensor(start or surface.start, dtype=torch.float64, requires_grad=True)
    opt = make_optimizer([xy], **optimizer_kwargs)
    path = [xy.detach().clone()]
    for _ in range(steps):
        opt.zero_grad()
        surface(xy).backward()
        opt.step()
        point = xy.detach().clone()
        if not torch.isfinite(point).all():
            break
        path.append(point)
        if point.norm() > max_norm:
            break
    return torch.stack(path).numpy()


def path_losses(surface: Surface, path: np.ndarray) -> np.ndarray:
    """The loss at each point of a trajectory: ``(k, 2)`` -> ``(k,)`` float64."""
    return surface(torch.as_tensor(np.asarray(path), dtype=torch.float64)).numpy()
