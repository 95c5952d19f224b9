"""Tests of slmbook.losses: cross-entropy from scratch against torch's, in values and
gradients (random and extreme logits, every reduction, ignore_index, label smoothing),
perplexity and bit conversions, estimate_loss, and the error paths."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.testing import assert_close

from slmbook.losses import (
    bits_per_char,
    bits_per_token,
    cross_entropy,
    estimate_loss,
    log_softmax,
    logsumexp,
    perplexity,
)


def _torch_ce(logits, targets, **kw):
    """torch's cross-entropy on (..., V) logits, reshaped to its (N, V) convention."""
    out = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), **kw)
    return out.reshape(targets.shape) if kw.get("reduction") == "none" else out


def _compare(logits, targets, **kw):
    a = logits.clone().requires_grad_(True)
    b = logits.clone().requires_grad_(True)
    ours = cross_entropy(a, targets, **kw)
    theirs = _torch_ce(b, targets, **kw)
    assert_close(ours, theirs)
    weights = torch.randn_like(ours)  # a random upstream gradient, also for "none"
    (ours * weights).sum().backward()
    (theirs * weights).sum().backward()
    assert_close(a.grad, b.grad)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1, 1.0])
@pytest.mark.parametrize("scale", [1.0, 30.0, 1e4])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_equals_torch(reduction, label_smoothing, scale, dtype):
    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(3, 5, 11, generator=g) * scale).to(dtype)  # (B, T, V)
    targets = torch.randint(0, 11, (3, 5), generator=g)
    targets[0, :2] = -100  # some ignored positions
    _compare(logits, targets, reduction=reduction, label_smoothing=label_smoothing)


def test_torch_convention_and_custom_ignore_index():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(7, 4, generator=g, dtype=torch.float64)  # (N, V)
    targets = torch.tensor([0, 3, 2, 2, 1, 0, 3])
    _compare(logits, targets, ignore_index=2)
    _compare(logits, targets, ignore_index=2, reduction="sum", label_smoothing=0.3)


def test_extreme_logits_are_finite():
    logits = torch.tensor([[1e4, -1e4, 0.0], [-1e4, -1e4, 1e4]])
    targets = torch.tensor([1, 0])
    loss = cross_entropy(logits, targets)
    assert torch.isfinite(loss)
    assert_close(loss, torch.tensor(2e4))  # both rows: 1e4 - (-1e4)
    _compare(logits, targets)


def test_masked_minus_inf_logit_allowed():
    logits = torch.tensor([[0.0, float("-inf"), 1.0]])
    targets = torch.tensor([2])
    assert_close(cross_entropy(logits, targets), F.cross_entropy(logits, targets))


def test_uniform_logits_give_log_v():
    logits = torch.zeros(4, 9, 65)
    targets = torch.randint(0, 65, (4, 9))
    assert_close(cross_entropy(logits, targets), torch.tensor(math.log(65)))


def test_logsumexp_and_log_softmax_equal_torch():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(5, 6, generator=g, dtype=torch.float64) * 500
    assert_close(logsumexp(x), torch.logsumexp(x, dim=-1))
    assert_close(logsumexp(x, dim=0), torch.logsumexp(x, dim=0))
    assert_close(log_softmax(x), torch.log_softmax(x, dim=-1))
    row = torch.full((1, 3), float("-inf"))
    assert logsumexp(row).item() == float("-inf")


def test_all_ignored_batch():
    logits = torch.randn(2, 3, 5, requires_grad=True)
    targets = torch.full((2, 3), -100)
    total = cross_entropy(logits, targets, reduction="sum")
    assert total.item() == 0.0
    total.backward()
    assert_close(logits.grad, torch.zeros_like(logits))
    assert_close(cross_entropy(logits, targets, reduction="none"), torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"all 6 targets equal ignore_index=-100.*reduction='sum'"):
        cross_entropy(logits, targets)
    empty = torch.zeros(0, 5)
    assert cross_entropy(empty, torch.zeros(0, dtype=torch.long), reduction="sum").item() == 0.0
    with pytest.raises(ValueError, match=r"the batch is empty"):
        cross_entropy(empty, torch.zeros(0, dtype=torch.long))


def test_error_paths():
    logits = torch.randn(2, 3, 5)
    with pytest.raises(ValueError, match=r"\(2, 3, 5\) do not match targets of shape \(2, 4\)"):
        cross_entropy(logits, torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"target 5 is outside \[0, V\) with V = 5"):
        cross_entropy(logits, torch.tensor([[0, 1, 5], [0, 0, 0]]))
    with pytest.raises(ValueError, match=r"target -1 is outside"):
        cross_entropy(logits, torch.tensor([[0, 1, -1], [0, 0, 0]]))
    bad = logits.clone()
    bad[1, 2, 3] = float("nan")
    with pytest.raises(ValueError, match=r"1 NaN value\(s\) out of 30"):
        cross_entropy(bad, torch.zeros(2, 3, dtype=torch.long))
    bad[1, 2, 3] = float("inf")
    with pytest.raises(ValueError, match=r"\+inf"):
        cross_entropy(bad, torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(TypeError, match=r"integer tensor.*targets.long\(\)"):
        cross_entropy(logits, torch.zeros(2, 3))
    with pytest.raises(TypeError, match=r"floating-point"):
        cross_entropy(torch.zeros(2, 3, 5, dtype=torch.long), torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"reduction must be one of .* got 'avg'"):
        cross_entropy(logits, torch.zeros(2, 3, dtype=torch.long), reduction="avg")
    with pytest.raises(ValueError, match=r"label_smoothing must be in \[0, 1\], got 1.5"):
        cross_entropy(logits, torch.zeros(2, 3, dtype=torch.long), label_smoothing=1.5)
    with pytest.raises(ValueError, match=r"label_smoothing must be a finite number, got nan"):
        cross_entropy(logits, torch.zeros(2, 3, dtype=torch.long), label_smoothing=float("nan"))


def test_perplexity_and_bits():
    assert perplexity(math.log(65)) == pytest.approx(65)
    assert_close(perplexity(torch.tensor(2.0)), torch.tensor(math.e**2))
    assert bits_per_token(math.log(2)) == pytest.approx(1.0)
    assert bits_per_token(math.log(256)) == pytest.approx(8.0)
    # 100 tokens at ln 2 nats each = 100 bits, spread over 400 characters
    assert bits_per_char(math.log(2), n_tokens=100, n_chars=400) == pytest.approx(0.25)
    with pytest.raises(ValueError, match=r"n_chars=0"):
        bits_per_char(1.0, n_tokens=10, n_chars=0)


class _Tiny(nn.Module):
    """A bigram-like model with dropout, so eval mode matters."""

    def __init__(self, vocab_size: int = 7, block_size: int = 4) -> None:
        super().__init__()
        self.config = type("Cfg", (), {"block_size": block_size})()
        self.emb = nn.Embedding(vocab_size, vocab_size)
        self.drop = nn.Dropout(0.5)

    def forward(self, idx):
        return self.drop(self.emb(idx))  # (B, T, V)


def test_estimate_loss_over_ids_matches_direct_computation():
    torch.manual_seed(0)
    model = _Tiny()
    ids = torch.randint(0, 7, (103,))
    loss = estimate_loss(model, ids, batch_size=5)
    n = (103 - 1) // 4 * 4  # targets covered by consecutive windows of 4
    with torch.no_grad():
        expected = F.cross_entropy(model.emb(ids[:n]), ids[1 : n + 1]).item()
    assert loss == pytest.approx(expected, rel=1e-6)
    assert model.training and model.drop.training  # mode restored
    model.drop.eval()
    estimate_loss(model, ids, block_size=8)
    assert model.training and not model.drop.training  # per-submodule modes restored


def test_estimate_loss_over_batches_weights_every_target_equally():
    torch.manual_seed(0)
    model = _Tiny().eval()
    x1, y1 = torch.randint(0, 7, (2, 4)), torch.randint(0, 7, (2, 4))
    x2, y2 = torch.randint(0, 7, (1, 4)), torch.randint(0, 7, (1, 4))
    y2[0, :3] = -100
    loss = estimate_loss(model, [(x1, y1), (x2, y2)])
    with torch.no_grad():
        logits = model(torch.cat([x1, x2]))
    expected = F.cross_entropy(logits.reshape(-1, 7), torch.cat([y1, y2]).reshape(-1)).item()
    assert loss == pytest.approx(expected, rel=1e-6)
    assert not model.training
    first = estimate_loss(model, [(x1, y1), (x2, y2)], max_batches=1)
    with torch.no_grad():
        assert first == pytest.approx(
            F.cross_entropy(model(x1).reshape(-1, 7), y1.reshape(-1)).item()
        )


def test_estimate_loss_errors_and_restores_mode_on_failure():
    model = _Tiny()
    with pytest.raises(ValueError, match=r"no target was scored"):
        estimate_loss(model, [(torch.zeros(1, 4, dtype=torch.long), torch.full((1, 4), -100))])
    with pytest.raises(ValueError, match=r"must be 1-D"):
        estimate_loss(model, torch.zeros(2, 5, dtype=torch.long))
    with pytest.raises(ValueError, match=r"max_batches must be a positive int"):
        estimate_loss(model, torch.zeros(20, dtype=torch.long), max_batches=0)
    with pytest.raises(ValueError, match=r"Sequential has no config.block_size"):
        estimate_loss(nn.Sequential(nn.Embedding(3, 3)), torch.zeros(20, dtype=torch.long))
    with pytest.raises(ValueError, match=r"target 9 is outside"):
        estimate_loss(model, [(torch.zeros(1, 4, dtype=torch.long), torch.full((1, 4), 9))])
    assert model.training
