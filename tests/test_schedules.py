"""Tests for slmbook.schedules: warmup + cosine and constant learning rates.

Covers: values at known points (step 0, end of warmup, midpoint of the decay,
the end and beyond), lr_curve agreeing with the step functions, make_scheduler
driving a torch optimizer (and slmbook's) through the same curve, and bad
arguments raising ValueError.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from slmbook import optim
from slmbook.schedules import constant, lr_curve, make_scheduler, warmup_cosine

KW = dict(max_lr=1e-3, warmup_steps=10, max_steps=110, min_lr=1e-4)


def test_warmup_cosine_known_points():
    assert warmup_cosine(0, **KW) == pytest.approx(1e-4)  # max_lr / warmup
    assert warmup_cosine(4, **KW) == pytest.approx(5e-4)
    assert warmup_cosine(9, **KW) == pytest.approx(1e-3)  # end of warmup
    assert warmup_cosine(10, **KW) == pytest.approx(1e-3)  # start of the decay
    assert warmup_cosine(60, **KW) == pytest.approx(5.5e-4)  # midpoint: (max + min) / 2
    quarter = 1e-4 + 0.5 * 9e-4 * (1 + math.cos(math.pi / 4))
    assert warmup_cosine(35, **KW) == pytest.approx(quarter)
    assert warmup_cosine(110, **KW) == pytest.approx(1e-4)  # end
    assert warmup_cosine(10_000, **KW) == pytest.approx(1e-4)


def test_cosine_without_warmup_and_all_warmup():
    assert warmup_cosine(0, max_lr=1.0, warmup_steps=0, max_steps=4) == pytest.approx(1.0)
    assert warmup_cosine(2, max_lr=1.0, warmup_steps=0, max_steps=4) == pytest.approx(0.5)
    curve = lr_curve(max_lr=1.0, warmup_steps=4, max_steps=4, num_steps=6)
    np.testing.assert_allclose(curve, [0.25, 0.5, 0.75, 1.0, 0.0, 0.0])


def test_constant():
    assert constant(0, max_lr=0.1) == pytest.approx(0.1)
    assert constant(10**6, max_lr=0.1) == pytest.approx(0.1)
    assert constant(0, max_lr=0.1, warmup_steps=4) == pytest.approx(0.025)
    assert constant(4, max_lr=0.1, warmup_steps=4, max_steps=10) == pytest.approx(0.1)


def test_lr_curve_matches_the_step_function():
    curve = lr_curve("cosine", **KW)
    assert curve.shape == (110,) and curve.dtype == np.float64
    np.testing.assert_allclose(curve, [warmup_cosine(s, **KW) for s in range(110)])
    assert curve.max() == pytest.approx(1e-3) and curve.min() >= 1e-4
    assert np.all(np.diff(curve[10:]) <= 0)  # monotone decay after warmup
    np.testing.assert_allclose(lr_curve("constant", **KW, num_steps=3), [1e-4, 2e-4, 3e-4])


@pytest.mark.parametrize("cls", [torch.optim.SGD, optim.AdamW])
def test_make_scheduler_drives_any_optimizer(cls):
    w1, w2 = torch.zeros(2, requires_grad=True), torch.zeros(2, requires_grad=True)
    opt = cls([{"params": [w1], "lr": 0.1}, {"params": [w2], "lr": 0.01}])
    sched = make_scheduler(opt, "cosine", warmup_steps=5, max_steps=25, min_lr_ratio=0.1)
    seen = []
    for _ in range(30):
        seen.append([g["lr"] for g in opt.param_groups])
        (w1.sum() + w2.sum()).backward()
        opt.step()
        sched.step()
    seen = np.array(seen)
    expected = lr_curve(max_lr=0.1, warmup_steps=5, max_steps=25, min_lr=0.01, num_steps=30)
    np.testing.assert_allclose(seen[:, 0], expected, rtol=1e-12)
    np.testing.assert_allclose(seen[:, 1], expected / 10, rtol=1e-12)


def test_make_scheduler_constant():
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.5)
    sched = make_scheduler(opt, "constant", warmup_steps=2, max_steps=10)
    lrs = []
    for _ in range(4):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    np.testing.assert_allclose(lrs, [0.25, 0.5, 0.5, 0.5])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            dict(warmup_steps=20, max_steps=10),
            r"warmup_steps \(20\) must not exceed max_steps \(10\)",
        ),
        (dict(warmup_steps=-1, max_steps=10), "warmup_steps must be a non-negative int, got -1"),
        (dict(warmup_steps=0, max_steps=0), "max_steps must be a positive int, got 0"),
        (dict(warmup_steps=0, max_steps=10, max_lr=-1.0), "max_lr must be >= 0, got -1.0"),
        (dict(warmup_steps=0, max_steps=10, min_lr=-0.1), "min_lr must be >= 0, got -0.1"),
        (dict(warmup_steps=0, max_steps=10, min_lr=2.0), r"min_lr \(2.0\) must not exceed"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    kwargs = {"max_lr": 1.0, **kwargs}
    with pytest.raises(ValueError, match=match):
        warmup_cosine(0, **kwargs)
    with pytest.raises(ValueError, match=match):
        lr_curve(**kwargs)


def test_bad_step_name_and_ratio_raise():
    with pytest.raises(ValueError, match="step must be a non-negative int, got -3"):
        warmup_cosine(-3, max_lr=1.0, warmup_steps=0, max_steps=5)
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.5)
    with pytest.raises(ValueError, match="unknown schedule 'linear'"):
        make_scheduler(opt, "linear", warmup_steps=0, max_steps=5)
    with pytest.raises(ValueError, match="min_lr_ratio must be in"):
        make_scheduler(opt, warmup_steps=0, max_steps=5, min_lr_ratio=1.5)
    with pytest.raises(ValueError, match="warmup_steps"):
        make_scheduler(opt, warmup_steps=9, max_steps=5)
    with pytest.raises(ValueError, match="num_steps must be a non-negative int, got -1"):
        lr_curve(max_lr=1.0, warmup_steps=0, max_steps=5, num_steps=-1)
