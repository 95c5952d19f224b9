"""Where the training loop's batches come from, and what a batch is.

A batch is any object a loss function understands: ``(X, Y)`` token ids for
next-token prediction, or for example a dataclass of padded variable-length
examples with a mask. :func:`to_device` moves every tensor inside one to the
model's device; :func:`next_token_loss` is the loss of an ``(X, Y)`` batch,
the default of :func:`slmbook.training.train`; :func:`count_tokens` says how many tokens it holds (for
``History.tokens`` and to weigh evaluation batches); :class:`BatchStream`
draws batches from token ids (random windows), a callable or an iterable.

See chapter 7, "Iterating" (book/07_iterate.ipynb).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from slmbook.data import get_batch, iter_batches
from slmbook.losses import IGNORE_INDEX

__all__ = ["BatchSource", "BatchStream", "count_tokens", "next_token_loss", "to_device"]

BatchSource = torch.Tensor | Callable[[torch.Generator], Any] | Iterable[Any]


def next_token_loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """The default ``loss_fn`` of :func:`train`: cross-entropy of ``model(X)`` against ``Y``.

    Parameters
    ----------
    model:
        Maps ``X: (B, T) int64`` to logits (B, T, V).
    batch:
        ``(X, Y)``, both (B, T) int64; targets equal to
        :data:`slmbook.losses.IGNORE_INDEX` (-100) are not scored.

    Returns
    -------
    torch.Tensor
        () the mean over the scored targets, in nats.

    Examples
    --------
    >>> model = nn.Embedding(5, 5)  # (B, T) -> (B, T, 5): logits from the current token only
    >>> x, y = torch.tensor([[0, 1, 2]]), torch.tensor([[1, 2, -100]])
    >>> next_token_loss(model, (x, y)).shape
    torch.Size([])

    See chapter 4, "Computing the loss" (book/04_loss.ipynb).
    """
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        raise TypeError(f"next_token_loss needs a batch (X, Y), got a {type(batch).__name__}; "
                        "pass loss_fn=... to train on other batches")
    x, y = batch
    logits = model(x)  # (B, T, V)
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1),
                           ignore_index=IGNORE_INDEX)


def to_device(batch: Any, device: torch.device | str) -> Any:
    """``batch`` with every tensor in it moved to ``device``.

    Tensors, and tuples, lists, dicts and dataclasses of them (recursively),
    are rebuilt with their tensors moved; any other object is returned as is.

    >>> to_device({"x": torch.zeros(2), "n": 3}, "cpu")
    {'x': tensor([0., 0.]), 'n': 3}

    See chapter 7, "Iterating" (book/07_iterate.ipynb).
    """
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, (tuple, list)):
        items = [to_device(v, device) for v in batch]
        if hasattr(batch, "_fields"):  # a named tuple
            return type(batch)(*items)
        return type(batch)(items) if type(batch) in (tuple, list) else items
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if dataclasses.is_dataclass(batch) and not isinstance(batch, type):
        return dataclasses.replace(batch, **{f.name: to_device(getattr(batch, f.name), device)
                                             for f in dataclasses.fields(batch) if f.init})
    return batch


def _first_tensor(batch: Any) -> torch.Tensor | None:
    if isinstance(batch, torch.Tensor):
        return batch
    if dataclasses.is_dataclass(batch) and not isinstance(batch, type):
        batch = [getattr(batch, f.name) for f in dataclasses.fields(batch)]
    values = batch.values() if isinstance(batch, dict) else batch
    if isinstance(values, (tuple, list, type({}.values()))):
        for v in values:
            found = _first_tensor(v)
            if found is not None:
                return found
    return None


def count_tokens(batch: Any) -> int:
    """How many tokens ``batch`` holds.

    For ``(X, Y)``, the elements of X; for any other batch its
    ``num_tokens`` attribute if it has one (say, the real tokens of padded
    examples), else the number of elements of its first tensor.

    >>> count_tokens((torch.zeros(4, 8), torch.zeros(4, 8)))
    32

    See chapter 7, "Iterating" (book/07_iterate.ipynb).
    """
    if isinstance(batch, (tuple, list)) and len(batch) == 2 and isinstance(batch[0], torch.Tensor):
        return batch[0].numel()
    if hasattr(batch, "num_tokens"):
        return int(batch.num_tokens)
    first = _first_tensor(batch)
    return 0 if first is None else first.numel()


class BatchStream:
    """Draws batches from token ids, a callable or an iterable, and counts them.

    ``data`` is a 1-D int64 tensor of token ids (N,), from which random
    ``(X, Y)`` windows of (``batch_size``, ``block_size``) are drawn with
    ``generator``; a callable ``fn(generator) -> batch``; or an iterable of
    batches, cycled. Every batch is moved to ``device``.

    See chapter 7, "Iterating" (book/07_iterate.ipynb).
    """

    def __init__(self, data: BatchSource, name: str, batch_size: int, block_size: int,
                 generator: torch.Generator, device: torch.device) -> None:
        self.data, self.name, self.generator, self.device = data, name, generator, device
        self.batch_size, self.block_size, self.consumed = batch_size, block_size, 0
        self._iter: Iterator[Any] | None = None
        if isinstance(data, torch.Tensor):
            if data.ndim != 1:
                raise ValueError(f"{name} must be 1-D token ids (N,), got shape {tuple(data.shape)}")
            if len(data) < block_size + 1:
                raise ValueError(
                    f"{name} has {len(data)} tokens, but a window of block_size={block_size} "
                    f"needs {block_size + 1}; the split is empty or too short: use more data, "
                    "a larger split fraction or a smaller block_size")
        elif not callable(data) and not isinstance(data, Iterable):
            raise TypeError(f"{name} must be token ids, a callable or an iterable of batches, "
                            f"got {type(data).__name__}")

    def __repr__(self) -> str:
        return f"BatchStream({self.name}, consumed={self.consumed})"

    def __call__(self) -> Any:
        """The next batch, on the device."""
        self.consumed += 1
        if isinstance(self.data, torch.Tensor):
            batch = get_batch(self.data, self.batch_size, self.block_size, self.generator)
        else:
            batch = self.data(self.generator) if callable(self.data) else self._next()
        return to_device(batch, self.device)

    def _next(self) -> Any:
        for _ in range(2):
            if self._iter is None:
                self._iter = iter(self.data)
            batch = next(self._iter, None)
            if batch is not None:
                return batch
            self._iter = None  # exhausted: start the next pass
        raise ValueError(f"{self.name} is an empty iterable: it yields no batches")

    def skip(self, n: int) -> None:
        """Fast-forward an iterable source by ``n`` batches (for resuming)."""
        if not isinstance(self.data, torch.Tensor) and not callable(self.data):
            for _ in range(n):
                self._next()
        self.consumed = n

    def steps_per_epoch(self, accum: int) -> int:
        """Steps of ``accum`` batches in one epoch (one pass over the data)."""
        if isinstance(self.data, torch.Tensor):
            return max(1, math.ceil(len(self.data) / (self.batch_size * self.block_size * accum)))
        if hasattr(self.data, "__len__"):
            return max(1, len(self.data) // accum)
        raise ValueError(f"epochs needs a sized {self.name} (token ids or a list of batches); "
                         "pass max_steps instead")

    def fixed_batches(self, n: int | None, seed: int) -> list[Any]:
        """The batches every evaluation uses (drawn once, on the model's device)."""
        g = torch.Generator().manual_seed(seed % 2**64)
        if isinstance(self.data, torch.Tensor):
            batches = (iter_batches(self.data, self.batch_size, self.block_size) if n is None else
                       (get_batch(self.data, self.batch_size, self.block_size, g) for _ in range(n)))
        elif callable(self.data):
            if n is None:
                raise ValueError(f"eval_batches=None needs token ids; {self.name} is a callable")
            batches = (self.data(g) for _ in range(n))
        else:
            batches = itertools.islice(self.data, n)
        batches = [to_device(b, self.device) for b in batches]
        if not batches:
            raise ValueError(f"{self.name} is an empty iterable: it yields no batches")
        return batches


