"""Tests of slmbook.backprop: the hand-derived gradients of softmax-cross-entropy (probabilities
minus one-hot, with mean/sum, ignore_index and label smoothing) and of a linear layer, compared
with torch autograd, and the error paths."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from slmbook.backprop import linear_backward, linear_forward, softmax_cross_entropy_backward
from slmbook.losses import cross_entropy


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
def test_softmax_cross_entropy_gradient_equals_autograd(reduction, label_smoothing):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 6, 9, generator=g, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 9, (2, 6), generator=g)
    targets[1, 4:] = -100
    loss = cross_entropy(logits, targets, reduction=reduction, label_smoothing=label_smoothing)
    (expected,) = torch.autograd.grad(loss, logits)
    ours = softmax_cross_entropy_backward(
        logits, targets, reduction=reduction, label_smoothing=label_smoothing
    )
    assert_close(ours, expected)
    assert_close(ours[1, 4:], torch.zeros(2, 9, dtype=torch.float64))  # ignored rows


def test_gradient_is_probabilities_minus_one_hot():
    logits = torch.tensor([[2.0, 1.0, 0.1]], dtype=torch.float64)
    targets = torch.tensor([0])
    grad = softmax_cross_entropy_backward(logits, targets)
    expected = torch.softmax(logits, -1) - torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64)
    assert_close(grad, expected)
    assert_close(grad.sum(), torch.tensor(0.0, dtype=torch.float64))  # rows sum to zero


def test_linear_layer_and_full_chain_equal_autograd():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 5, 4, generator=g, dtype=torch.float64, requires_grad=True)
    lin = torch.nn.Linear(4, 7).double()
    targets = torch.randint(0, 7, (2, 5), generator=g)
    logits = lin(x)
    assert_close(linear_forward(x, lin.weight, lin.bias), logits)
    F.cross_entropy(logits.reshape(-1, 7), targets.reshape(-1)).backward()

    dlogits = softmax_cross_entropy_backward(logits.detach(), targets)
    dx, dw, db = linear_backward(dlogits, x.detach(), lin.weight.detach())
    assert_close(dx, x.grad)
    assert_close(dw, lin.weight.grad)
    assert_close(db, lin.bias.grad)
    assert_close(linear_forward(x, lin.weight), logits - lin.bias)


def test_errors():
    logits = torch.randn(3, 4)
    with pytest.raises(ValueError, match=r"reduction must be 'mean' or 'sum'.*'none'"):
        softmax_cross_entropy_backward(logits, torch.zeros(3, dtype=torch.long), reduction="none")
    with pytest.raises(ValueError, match=r"all targets equal ignore_index=-100"):
        softmax_cross_entropy_backward(logits, torch.full((3,), -100))
    with pytest.raises(ValueError, match=r"target 4 is outside"):
        softmax_cross_entropy_backward(logits, torch.tensor([0, 4, 1]))
    targets = torch.zeros(3, dtype=torch.long)
    with pytest.raises(ValueError, match=r"label_smoothing must be in \[0, 1\], got 1\.5"):
        softmax_cross_entropy_backward(logits, targets, label_smoothing=1.5)
    with pytest.raises(ValueError, match=r"label_smoothing must be a finite number, got nan"):
        softmax_cross_entropy_backward(logits, targets, label_smoothing=float("nan"))
    with pytest.raises(ValueError, match=r"x has 4 features .* weight expects 5"):
        linear_forward(logits, torch.randn(2, 5), None)
    with pytest.raises(ValueError, match=r"grad_out of shape \(3, 3\) does not fit"):
        linear_backward(torch.randn(3, 3), logits, torch.randn(2, 4))
