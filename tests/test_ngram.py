"""slmbook.ngram: the count-based bigram model, checked against direct counting."""

import math

import pytest
import torch

from slmbook.ngram import BigramCounts, uniform_loss


def test_counts_and_probabilities_by_hand():
    model = BigramCounts.fit([0, 1, 0, 1, 1], vocab_size=3, smoothing=0.0)
    assert model.counts.tolist() == [[0, 2, 0], [1, 1, 0], [0, 0, 0]]
    probs = model.probs
    torch.testing.assert_close(probs[0], torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64))
    torch.testing.assert_close(probs[1], torch.tensor([0.5, 0.5, 0.0], dtype=torch.float64))
    torch.testing.assert_close(probs[2], torch.full((3,), 1 / 3, dtype=torch.float64))


def test_smoothing_adds_pseudo_counts():
    model = BigramCounts.fit([0, 1, 0, 1, 1], vocab_size=3, smoothing=1.0)
    torch.testing.assert_close(
        model.probs[0], torch.tensor([1 / 5, 3 / 5, 1 / 5], dtype=torch.float64)
    )
    torch.testing.assert_close(model.probs.sum(1), torch.ones(3, dtype=torch.float64))


def test_loss_is_the_mean_negative_log_likelihood():
    ids = [0, 1, 0, 1, 1]
    model = BigramCounts.fit(ids, vocab_size=2, smoothing=0.0)
    expected = -(math.log(1.0) + math.log(0.5) + math.log(1.0) + math.log(0.5)) / 4
    assert model.loss(ids) == pytest.approx(expected, rel=1e-12)


def test_loss_matches_torch_cross_entropy_on_log_probs():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 7, (500,), generator=g)
    model = BigramCounts.fit(ids, vocab_size=7)
    logits = model.probs.log()[ids[:-1]]  # (N - 1, V)
    expected = torch.nn.functional.cross_entropy(logits, ids[1:])
    assert model.loss(ids) == pytest.approx(float(expected), rel=1e-10)


def test_unseen_pair_without_smoothing_has_infinite_loss():
    model = BigramCounts.fit([0, 0, 0], vocab_size=2, smoothing=0.0)
    assert model.loss([1, 0]) == pytest.approx(math.log(2))  # row 1 unseen: uniform
    assert math.isinf(model.loss([0, 1]))


def test_uniform_loss_is_ln_v():
    assert uniform_loss(100) == pytest.approx(math.log(100))
    with pytest.raises(ValueError, match="vocab_size must be a positive int, got 0"):
        uniform_loss(0)


def test_sample_is_reproducible_and_in_range():
    model = BigramCounts.fit(torch.randint(0, 5, (200,), generator=torch.Generator().manual_seed(1)), 5)
    a = model.sample(0, 50, generator=torch.Generator().manual_seed(3))
    b = model.sample(0, 50, generator=torch.Generator().manual_seed(3))
    assert a == b and len(a) == 51 and all(0 <= i < 5 for i in a)


def test_errors_name_the_bad_value():
    with pytest.raises(ValueError, match=r"token id 9 is outside \[0, 5\)"):
        BigramCounts.fit([0, 9], vocab_size=5)
    with pytest.raises(ValueError, match="at least 2 tokens"):
        BigramCounts.fit([1], vocab_size=5)
    with pytest.raises(ValueError, match="smoothing must be >= 0, got -1"):
        BigramCounts(torch.zeros(2, 2), smoothing=-1)
    with pytest.raises(ValueError, match=r"start token 7 is outside \[0, 2\)"):
        BigramCounts(torch.ones(2, 2)).sample(7, 3)
