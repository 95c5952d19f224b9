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


@pytest.mark.parametrize("seed", [-1, 1.5, "3", True])
def test_set_seed_rejects_non_integers(seed):
    with pytest.raises(ValueError, match="seed must be a non-negative int"):
        slmbook.set_seed(seed)
