"""The data X and Y: a corpus, a train/validation split, and next-token batches.

A language model learns from pairs (X, Y) where Y is X shifted by one position:
for every prefix of a text, the target is the token that comes next.

Taught in chapter 1, "The data: X and Y" (book/01_data.ipynb).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TypeVar

import torch

from slmbook._checks import finite_float, positive_int, token_ids

__all__ = [
    "corpus_hash",
    "get_batch",
    "iter_batches",
    "load_corpus",
    "load_documents",
    "next_token_pairs",
    "train_val_split",
]

S = TypeVar("S", str, list, torch.Tensor)


def load_documents() -> dict[str, str]:
    """The default corpus as documents: topic name -> text.

    The Python reference documentation topics that ship inside CPython
    (``pydoc_data.topics``, the text behind ``help("with")``), so nothing is
    downloaded. Their number and length depend on the Python patch version
    (79 topics in 3.11).

    See chapter 1, "The data: X and Y" (book/01_data.ipynb).
    """
    from pydoc_data.topics import topics

    return {name: text.strip("\n") for name, text in topics.items()}


def load_corpus(name_or_path: str | Path | None = None) -> str:
    """Load the training text.

    Parameters
    ----------
    name_or_path:
        ``None`` or ``"pydoc"`` for the default corpus (every document of
        :func:`load_documents` joined by a blank line, about 465,000
        characters), or the path of any UTF-8 text file.

    Returns
    -------
    str
        The whole text.

    Raises
    ------
    TypeError
        If ``name_or_path`` is neither ``None``, a str nor a path.
    FileNotFoundError
        If the path does not exist.
    IsADirectoryError
        If the path is a folder.
    ValueError
        If the file is not valid UTF-8 or is empty.

    See chapter 1, "The data: X and Y" (book/01_data.ipynb).
    """
    if name_or_path is None or name_or_path == "pydoc":
        return "\n\n".join(load_documents().values())
    if not isinstance(name_or_path, str | Path):
        raise TypeError(
            f"name_or_path must be None, 'pydoc' or the path of a text file, got "
            f"{name_or_path!r} ({type(name_or_path).__name__})"
        )
    path = Path(name_or_path)
    if path.is_dir():
        raise IsADirectoryError(
            f"corpus path {str(path)!r} is a folder; pass the path of a UTF-8 text file inside it"
        )
    if not path.is_file():
        raise FileNotFoundError(
            f"corpus file {str(path)!r} does not exist; pass the path of a UTF-8 text file, "
            "or None for the default corpus"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(
            f"corpus file {str(path)!r} is not valid UTF-8 (byte {err.start}: "
            f"{err.object[err.start:err.start + 1]!r}); re-encode it as UTF-8, for example "
            f"with `iconv -t UTF-8`"
        ) from None
    if not text.strip():
        raise ValueError(f"corpus file {str(path)!r} is empty; give a file with some text in it")
    return text


def corpus_hash(text: str) -> str:
    """A short fingerprint (16 hex digits of SHA-256) of a text.

    Recorded in checkpoints and benchmark results, because the default corpus
    changes with the Python patch version.
    """
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def train_val_split(data: S, val_fraction: float = 0.1) -> tuple[S, S]:
    """Split a sequence into a training part and a validation part.

    The split is contiguous (the first ``1 - val_fraction`` for training, the
    rest for validation) rather than shuffled: neighbouring characters are
    strongly correlated, so a shuffled split would leak the validation text
    into training.

    Parameters
    ----------
    data:
        A string, a list or a 1-D tensor of token ids, shape (N,).
    val_fraction:
        The fraction kept for validation, strictly between 0 and 1.

    Returns
    -------
    (train, val)
        Two slices of ``data``, shapes (N - n_val,) and (n_val,).

    See chapter 1, "The data: X and Y" (book/01_data.ipynb).
    """
    val_fraction = finite_float("val_fraction", val_fraction)
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be strictly between 0 and 1, got {val_fraction!r}")
    n = len(data)
    n_val = round(n * val_fraction)
    if n_val == 0 or n_val == n:
        raise ValueError(
            f"cannot split {n} items with val_fraction={val_fraction}: one side would be empty; "
            "use more data or a different val_fraction"
        )
    return data[: n - n_val], data[n - n_val :]


def _as_ids(ids: torch.Tensor | Sequence[int]) -> torch.Tensor:
    """(N,) int64 token ids from a tensor or list of ints (floats and bools are refused)."""
    if not isinstance(ids, torch.Tensor) and not isinstance(ids, str | bytes):
        ids = list(ids)
    t = token_ids("ids", ids)
    if t.ndim != 1:
        raise ValueError(f"ids must be 1-D (N,), got shape {tuple(t.shape)}; flatten it first")
    return t


def next_token_pairs(
    ids: torch.Tensor | Sequence[int], block_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every window of ``block_size`` tokens and its targets, Y = X shifted by one.

    Parameters
    ----------
    ids:
        Token ids, shape (N,).
    block_size:
        The context length T.

    Returns
    -------
    (X, Y)
        Both of shape (N - T, T), int64: ``X[i] = ids[i : i + T]`` and
        ``Y[i] = ids[i + 1 : i + T + 1]``.

    See chapter 1, "The data: X and Y" (book/01_data.ipynb).
    """
    t = _as_ids(ids)
    _check_block(len(t), block_size)
    windows = t.unfold(0, block_size + 1, 1)  # (N - T, T + 1)
    return windows[:, :-1].contiguous(), windows[:, 1:].contiguous()


def _check_block(n: int, block_size: int) -> None:
    positive_int("block_size", block_size)
    if n < block_size + 1:
        raise ValueError(
            f"block_size={block_size} needs at least {block_size + 1} tokens, but the data has "
            f"only {n}; use a smaller block_size or more data"
        )


def get_batch(
    ids: torch.Tensor | Sequence[int],
    batch_size: int,
    block_size: int,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample a random batch of next-token pairs.

    Parameters
    ----------
    ids:
        Token ids of one split, shape (N,).
    batch_size:
        B, the number of windows.
    block_size:
        T, the context length.
    generator:
        A seeded ``torch.Generator`` for reproducible batches.

    Returns
    -------
    (X, Y)
        Both (B, T) int64, with ``Y[:, t] == X[:, t + 1]`` for t < T - 1: Y is X
        shifted by one.

    See chapter 1, "The data: X and Y" (book/01_data.ipynb).
    """
    t = _as_ids(ids)
    _check_block(len(t), block_size)
    positive_int("batch_size", batch_size)
    starts = torch.randint(len(t) - block_size, (batch_size,), generator=generator)  # (B,)
    offsets = torch.arange(block_size + 1)  # (T + 1,)
    windows = t[starts[:, None] + offsets]  # (B, T + 1)
    return windows[:, :-1], windows[:, 1:]


def iter_batches(
    ids: torch.Tensor | Sequence[int], batch_size: int, block_size: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Consecutive, non-overlapping windows covering a split, in order.

    Deterministic, so an evaluation over it is exact and repeatable: every
    token of ``ids`` except the last ``(N - 1) % T`` is a target exactly once.

    Yields
    ------
    (X, Y)
        Both (b, T) int64 with b <= ``batch_size`` (the last batch may be smaller).

    See chapter 1, "The data: X and Y" (book/01_data.ipynb).
    """
    t = _as_ids(ids)
    _check_block(len(t), block_size)
    positive_int("batch_size", batch_size)
    n_windows = (len(t) - 1) // block_size
    x = t[: n_windows * block_size].view(n_windows, block_size)  # (W, T)
    y = t[1 : n_windows * block_size + 1].view(n_windows, block_size)  # (W, T)
    for i in range(0, n_windows, batch_size):
        yield x[i : i + batch_size], y[i : i + batch_size]
