"""The count-based bigram model: the first language model of the book.

Count how often each token follows each other token, add a pseudo-count, and
normalise each row: P(next = j | current = i) = (C[i, j] + α) / Σ_j' (C[i, j'] + α).
It has no parameters to optimise, so it is the yardstick the trained models
have to beat.

Taught in chapter 1, "The data: X and Y" (book/01_data.ipynb).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from slmbook._checks import finite_float, positive_int, token_ids

__all__ = ["BigramCounts", "uniform_loss"]


class BigramCounts:
    """A bigram language model estimated by counting.

    Attributes
    ----------
    counts:
        (V, V) float64 tensor, ``counts[i, j]`` = how often token j follows token i.
    smoothing:
        The pseudo-count α added to every cell (Laplace smoothing when 1).

    Examples
    --------
    >>> model = BigramCounts.fit([0, 1, 0, 1, 1], vocab_size=2, smoothing=0.0)
    >>> model.probs
    tensor([[0.0000, 1.0000],
            [0.5000, 0.5000]], dtype=torch.float64)

    See chapter 1, "The data: X and Y" (book/01_data.ipynb).
    """

    def __init__(self, counts: torch.Tensor, smoothing: float = 1.0) -> None:
        if counts.ndim != 2 or counts.shape[0] != counts.shape[1]:
            raise ValueError(f"counts must be a square (V, V) matrix, got {tuple(counts.shape)}")
        if finite_float("smoothing", smoothing) < 0:
            raise ValueError(f"smoothing must be >= 0, got {smoothing!r}")
        self.counts = counts.to(torch.float64)
        self.smoothing = float(smoothing)

    @classmethod
    def fit(
        cls, ids: torch.Tensor | Sequence[int], vocab_size: int, smoothing: float = 1.0
    ) -> BigramCounts:
        """Count every adjacent pair (ids[t], ids[t + 1]) of a 1-D id sequence (N,)."""
        t = token_ids("ids", ids)
        if t.ndim != 1 or len(t) < 2:
            raise ValueError(f"ids must be 1-D with at least 2 tokens, got shape {tuple(t.shape)}")
        positive_int("vocab_size", vocab_size)
        if t.min() < 0 or t.max() >= vocab_size:
            bad = int(t.max() if t.max() >= vocab_size else t.min())
            raise ValueError(f"token id {bad} is outside [0, {vocab_size}); check vocab_size")
        flat = t[:-1] * vocab_size + t[1:]  # (N - 1,) pair index i * V + j
        counts = torch.bincount(flat, minlength=vocab_size * vocab_size)
        return cls(counts.view(vocab_size, vocab_size), smoothing)

    @property
    def vocab_size(self) -> int:
        return self.counts.shape[0]

    @property
    def probs(self) -> torch.Tensor:
        """(V, V) float64: row i is the distribution of the token after token i."""
        c = self.counts + self.smoothing
        total = c.sum(dim=1, keepdim=True)
        # A row never seen, without smoothing, has no information: make it uniform.
        return torch.where(total > 0, c / total.clamp_min(1e-300), 1.0 / self.vocab_size)

    def loss(self, ids: torch.Tensor | Sequence[int]) -> float:
        """Mean negative log-likelihood (nats per token) of ids[1:] given ids[:-1].

        ``inf`` if a pair has probability zero (only possible with ``smoothing=0``).
        """
        t = token_ids("ids", ids)
        if t.ndim != 1 or len(t) < 2:
            raise ValueError(f"ids must be 1-D with at least 2 tokens, got shape {tuple(t.shape)}")
        if t.min() < 0 or t.max() >= self.vocab_size:
            raise ValueError(f"ids must lie in [0, {self.vocab_size}); got one outside")
        p = self.probs[t[:-1], t[1:]]  # (N - 1,)
        return float(-torch.log(p).mean())

    def sample(
        self, start: int, length: int, generator: torch.Generator | None = None
    ) -> list[int]:
        """Sample ``length`` tokens after ``start`` by walking the bigram chain."""
        if not 0 <= start < self.vocab_size:
            raise ValueError(f"start token {start} is outside [0, {self.vocab_size})")
        probs = self.probs.to(torch.float32)
        out = [start]
        for _ in range(length):
            out.append(int(torch.multinomial(probs[out[-1]], 1, generator=generator)))
        return out

    def __repr__(self) -> str:
        return f"BigramCounts(vocab_size={self.vocab_size}, smoothing={self.smoothing})"


def uniform_loss(vocab_size: int) -> float:
    """The loss of a model that knows nothing: ln V nats per token."""
    return math.log(positive_int("vocab_size", vocab_size))
