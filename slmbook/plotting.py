"""Plots the chapters share. Each function draws on a matplotlib Axes and returns it.

Functions take an optional ``ax``; when it is ``None`` a new figure is created.
"""

from __future__ import annotations

from collections import Counter

import matplotlib.pyplot as plt
import torch


def _char_label(c: str) -> str:
    """A visible label for a character: '␣' for a space, escapes for other whitespace."""
    if c == " ":
        return "␣"
    return repr(c)[1:-1] if c.isspace() or not c.isprintable() else c


def _axes(ax: plt.Axes | None, figsize: tuple[float, float] = (8, 4)) -> plt.Axes:
    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    return ax


def plot_char_frequencies(text: str, *, top: int = 40, ax: plt.Axes | None = None) -> plt.Axes:
    """Bar chart of the ``top`` most frequent characters of ``text``, as percentages.

    See chapter 1, "The data: X and Y" (book/01_data.ipynb).
    """
    if not text:
        raise ValueError("text is empty: nothing to count")
    ax = _axes(ax, (10, 3.5))
    common = Counter(text).most_common(top)
    labels = [_char_label(c) for c, _ in common]
    ax.bar(range(len(common)), [100 * n / len(text) for _, n in common], color="tab:blue")
    ax.set_xticks(range(len(common)), labels, fontfamily="monospace")
    ax.set_ylabel("% of all characters")
    ax.set_title(f"The {len(common)} most frequent characters")
    return ax


def plot_bigram_heatmap(
    probs: torch.Tensor, labels: list[str], *, ax: plt.Axes | None = None
) -> plt.Axes:
    """Heat map of a (K, K) next-token probability matrix: row = current, column = next.

    See chapter 1, "The data: X and Y" (book/01_data.ipynb).
    """
    if probs.ndim != 2 or probs.shape[0] != probs.shape[1] or probs.shape[0] != len(labels):
        raise ValueError(
            f"probs must be (K, K) with K = len(labels) = {len(labels)}, got {tuple(probs.shape)}"
        )
    ax = _axes(ax, (7, 6))
    image = ax.imshow(probs.numpy(), cmap="Blues")
    shown = [_char_label(c) for c in labels]
    ax.set_xticks(range(len(labels)), shown, fontfamily="monospace", fontsize=8)
    ax.set_yticks(range(len(labels)), shown, fontfamily="monospace", fontsize=8)
    ax.set_xlabel("next character")
    ax.set_ylabel("current character")
    ax.figure.colorbar(image, ax=ax, label="P(next | current)")
    return ax
