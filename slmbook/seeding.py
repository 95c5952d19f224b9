"""Reproducibility: one call seeds every random number generator the book uses.

Taught in chapter 1, "The data: X and Y" (book/01_data.ipynb).
"""

from __future__ import annotations

import random

import numpy as np
import torch

from slmbook._checks import non_negative_int

MAX_SEED = 2**64 - 1
"""The largest seed torch accepts (``torch.manual_seed`` keeps 64 bits)."""


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

    See chapter 1, "The data: X and Y" (book/01_data.ipynb).
    """
    seed = non_negative_int("seed", seed)
    if seed > MAX_SEED:
        raise ValueError(
            f"seed must be at most 2**64 - 1 (torch keeps 64 bits), got {seed}; "
            "use seed % 2**64 or a smaller number"
        )
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 (seeds the legacy global generator readers use)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)
