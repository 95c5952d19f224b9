"""Tests of slmbook.gradcheck: central differences equal known derivatives, gradcheck passes
on autograd's and on a correct hand-written gradient, fails on a deliberately wrong one and
reports where, samples coordinates of a small network, and rejects bad inputs."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from slmbook.gradcheck import GradcheckResult, gradcheck, numerical_gradient


def _inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 2, generator=g, dtype=torch.float64, requires_grad=True)
    return x, w


def _f(x, w):
    return (x @ w).tanh().pow(2).sum()


def _right(x, w):
    h = (x @ w).tanh()
    dpre = 2 * h * (1 - h**2)  # d sum(tanh(z)^2) / dz
    return dpre @ w.T, x.T @ dpre


def _wrong(x, w):
    h = (x @ w).tanh()
    dpre = 2 * h  # forgot the derivative of tanh
    return dpre @ w.T, x.T @ dpre


def test_numerical_gradient_of_a_known_function():
    x = torch.tensor([0.3, -1.2, 2.0], dtype=torch.float64)
    (g,) = numerical_gradient(lambda t: (t**3).sum(), [x])
    assert_close(g, 3 * x**2, rtol=1e-8, atol=1e-9)
    assert_close(x, torch.tensor([0.3, -1.2, 2.0], dtype=torch.float64))  # restored


def test_passes_on_autograd_and_on_a_correct_hand_gradient():
    x, w = _inputs()
    result = gradcheck(_f, [x, w])
    assert isinstance(result, GradcheckResult) and result.passed and bool(result)
    assert result.max_rel_error < 1e-6
    assert result.n_checked == 12 + 8
    assert gradcheck(_f, [x.detach(), w.detach()], analytical=_right).passed


def test_fails_on_a_wrong_gradient_and_says_where():
    x, w = _inputs()
    result = gradcheck(_f, [x.detach(), w.detach()], analytical=_wrong)
    assert not result.passed and not result
    assert result.max_rel_error > 1e-2
    assert result.worst[0] in (0, 1)
    assert "passed=False" in repr(result)


def test_samples_coordinates_of_a_network():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    x = torch.randn(6, 5, dtype=torch.float64)
    y = torch.randint(0, 3, (6,))
    params = list(net.parameters())
    result = gradcheck(
        lambda *_: nn.functional.cross_entropy(net(x), y),
        params,
        n_coords=3,
        generator=torch.Generator().manual_seed(0),
    )
    assert result.passed
    assert result.n_checked == sum(min(3, p.numel()) for p in params)
    assert all(len(i) == min(3, p.numel()) for i, p in zip(result.indices, params, strict=True))


def test_errors():
    x, w = _inputs()
    with pytest.raises(TypeError, match=r"input 0 is torch.float32; .*\.double\(\)"):
        gradcheck(_f, [x.float(), w])
    with pytest.raises(ValueError, match=r"inputs \[1\] do not require grad"):
        gradcheck(_f, [x, w.detach()])
    with pytest.raises(ValueError, match=r"scalar tensor, got \(3, 2\); reduce it"):
        gradcheck(lambda x, w: x @ w, [x, w])
    with pytest.raises(ValueError, match=r"n_coords must be a positive int"):
        gradcheck(_f, [x, w], n_coords=0)
    with pytest.raises(ValueError, match=r"analytical gradient 1 has shape \(2, 4\)"):
        gradcheck(_f, [x, w], analytical=lambda x, w: (x, w.T))
    with pytest.raises(ValueError, match=r"not contiguous"):
        numerical_gradient(lambda t: t.sum(), [w.detach().T])
    with pytest.raises(TypeError, match=r"input 0 is a list"):
        numerical_gradient(lambda t: t, [[1.0]])
