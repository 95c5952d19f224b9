"""Reproducibility: one call seeds every random number generator the book uses.

Taught in chapter 1, "The data: X and Y" (book/01_data.ipynb).
"""

from __future__ import annotations

import random

import numpy as np
import torch


def set_seed(seed: int) -> torch.Generator:
    """Seed Python's, NumPy's and torch's global generators.

    Parameters
    ----------
    seed:
        A non-negative integer.

    Returns
    -------
    torch.Generator
        A fresh CPU generator seeded with ``seed``, for functions that take an
        explicit ``generator=`` argument (such as :func:`slmbook.data.get_batch`).

    See chapter 1, "The data: X and Y".
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 (seeds the legacy global generator readers use)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)
