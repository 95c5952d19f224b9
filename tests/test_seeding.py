"""slmbook.set_seed: one call makes Python, NumPy and torch reproducible."""

import random

import numpy as np
import pytest
import torch

import slmbook


def test_set_seed_reproduces_every_generator():
    g1 = slmbook.set_seed(7)
    first = (random.random(), np.random.rand(), torch.rand(1).item(), torch.rand(1, generator=g1).item())  # noqa: NPY002
    g2 = slmbook.set_seed(7)
    second = (random.random(), np.random.rand(), torch.rand(1).item(), torch.rand(1, generator=g2).item())  # noqa: NPY002
    assert first == second


@pytest.mark.parametrize("seed", [1.5, "3", True])
def test_set_seed_rejects_non_integers(seed):
    with pytest.raises(TypeError, match=rf"seed must be a non-negative int, got {seed!r}"):
        slmbook.set_seed(seed)


def test_set_seed_range():
    with pytest.raises(ValueError, match="seed must be a non-negative int, got -1"):
        slmbook.set_seed(-1)
    with pytest.raises(ValueError, match=r"seed must be at most 2\*\*64 - 1.*got 18446744073709551616"):
        slmbook.set_seed(2**64)  # torch would raise "Overflow when unpacking long"
    g = slmbook.set_seed(2**64 - 1)
    assert g.initial_seed() == 2**64 - 1
