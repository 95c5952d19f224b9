"""Tests for slmbook.surfaces: the 2-D toy losses and run_optimizer.

Covers: values, minima and gradients of the quadratic and Rosenbrock surfaces
against closed forms; the grid used for contour plots; run_optimizer's
trajectory against hand-written gradient descent, with torch's and slmbook's
optimizers giving the same path; divergence stopping early; bad arguments.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from slmbook import optim
from slmbook.surfaces import (
    QUADRATIC,
    ROSENBROCK,
    grid,
    path_losses,
    quadratic,
    rosenbrock,
    run_optimizer,
)


def test_values_minima_and_gradients():
    xy = torch.tensor([[0.5, -1.0], [2.0, 3.0]], dtype=torch.float64, requires_grad=True)
    q = quadratic(xy, a=1.0, b=20.0)
    torch.testing.assert_close(q, torch.tensor([0.125 + 10.0, 2.0 + 90.0], dtype=torch.float64))
    (grad,) = torch.autograd.grad(q.sum(), xy)
    torch.testing.assert_close(grad, xy.detach() * torch.tensor([1.0, 20.0], dtype=torch.float64))
    r = rosenbrock(xy)
    x, y = xy.detach()[:, 0], xy.detach()[:, 1]
    torch.testing.assert_close(r, (1 - x) ** 2 + 100 * (y - x**2) ** 2)
    (grad,) = torch.autograd.grad(r.sum(), xy)
    expected = torch.stack([-2 * (1 - x) - 400 * x * (y - x**2), 200 * (y - x**2)], dim=-1)
    torch.testing.assert_close(grad, expected)
    for surface in (QUADRATIC, ROSENBROCK):
        at_min = surface(torch.tensor(surface.minimum, dtype=torch.float64))
        assert at_min.item() == pytest.approx(0.0, abs=1e-12)
        assert surface(torch.tensor(surface.start, dtype=torch.float64)).item() > 1.0
        assert surface.name in repr(surface)


def test_grid_shapes_and_values():
    X, Y, Z = grid(ROSENBROCK, n=21)
    assert X.shape == Y.shape == Z.shape == (21, 21)
    assert X[0, 0] == pytest.approx(-2.0) and X[0, -1] == pytest.approx(2.0)
    assert Y[0, 0] == pytest.approx(-1.0) and Y[-1, 0] == pytest.approx(3.0)
    np.testing.assert_allclose(Z, (1 - X) ** 2 + 100 * (Y - X**2) ** 2, rtol=1e-12)
    with pytest.raises(ValueError, match="n must be >= 2"):
        grid(QUADRATIC, n=1)


def test_gradient_descent_path_matches_closed_form():
    # on 0.5 (a x² + b y²), each GD step multiplies x by (1 - lr a) and y by (1 - lr b)
    lr, steps = 0.04, 30
    path = run_optimizer(QUADRATIC, torch.optim.SGD, steps=steps, lr=lr)
    assert path.shape == (steps + 1, 2)
    k = np.arange(steps + 1)
    x0, y0 = QUADRATIC.start
    np.testing.assert_allclose(path[:, 0], x0 * (1 - lr * 1.0) ** k, rtol=1e-12)
    np.testing.assert_allclose(path[:, 1], y0 * (1 - lr * 20.0) ** k, rtol=1e-12, atol=1e-15)
    losses = path_losses(QUADRATIC, path)
    assert losses.shape == (steps + 1,) and np.all(np.diff(losses) < 0)


@pytest.mark.parametrize(
    ("name", "kw"),
    [("SGD", {"lr": 1e-3, "momentum": 0.9}), ("Adam", {"lr": 0.05}), ("AdamW", {"lr": 0.05})],
)
def test_slmbook_and_torch_optimizers_walk_the_same_path(name, kw):
    ours = run_optimizer(ROSENBROCK, getattr(optim, name), steps=200, **kw)
    theirs = run_optimizer(ROSENBROCK, getattr(torch.optim, name), steps=200, **kw)
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-12)
    assert path_losses(ROSENBROCK, ours)[-1] < path_losses(ROSENBROCK, ours)[0]


def test_divergence_stops_early():
    path = run_optimizer(QUADRATIC, torch.optim.SGD, steps=500, lr=0.2, max_norm=100.0)
    assert len(path) < 501  # |1 - 0.2 * 20| = 3: y triples every step
    assert np.linalg.norm(path[-1]) > 100.0 and np.all(np.isfinite(path))
    start = run_optimizer(QUADRATIC, torch.optim.SGD, steps=0, lr=0.1, start=(1.0, 2.0))
    np.testing.assert_allclose(start, [[1.0, 2.0]])
    with pytest.raises(ValueError, match="steps must be a non-negative int, got -1"):
        run_optimizer(QUADRATIC, torch.optim.SGD, steps=-1, lr=0.1)


def test_plotting_helpers_draw_trajectories_and_frames():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from slmbook.plotting import animate_learning_rates, plot_trajectories

    path = run_optimizer(QUADRATIC, torch.optim.SGD, steps=5, lr=0.05)
    ax = plot_trajectories(QUADRATIC, {"a": path, "b": path[:3]}, title="t")
    assert ax.get_title() == "t" and len(ax.get_legend().get_texts()) == 2
    np.testing.assert_allclose(ax.lines[1].get_xydata(), path)  # lines[0]: the minimum
    plt.close(ax.figure)
    anim = animate_learning_rates(QUADRATIC, torch.optim.SGD, [0.01, 0.2], steps=5)
    line, curve = anim._func(1)  # the frame for lr=0.2 (diverging, stopped at max_norm)
    assert len(curve.get_xdata()) == len(line.get_xdata()) <= 6
    assert "lr = 0.2" in anim._fig.axes[0].get_title()
    html = anim.to_jshtml()  # the static-page player: one embedded image per frame
    assert html.count("data:image/png;base64") == 2


def test_lr_explorer_checks_its_arguments():
    pytest.importorskip("ipywidgets")
    from slmbook.widgets import lr_explorer

    with pytest.raises(ValueError, match="unknown surface 'bowl'"):
        lr_explorer("bowl")
    with pytest.raises(ValueError, match="unknown optimizer 'Lion'"):
        lr_explorer("quadratic", "Lion")
