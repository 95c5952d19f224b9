"""Argument checks shared by every module, with one message style.

Each check returns the value it accepted (so a caller can write
``n = positive_int("n", n)``) and raises an exception whose message names the
argument, shows the bad value and says what would be accepted::

    >>> positive_int("batch_size", 12)
    12
    >>> positive_int("batch_size", 0)
    Traceback (most recent call last):
    ...
    ValueError: batch_size must be a positive int, got 0

``bool`` is rejected wherever an ``int`` is expected (``True`` is an ``int`` in
Python, but ``k=True`` is always a mistake), and so are floats, even whole ones
(``2.0`` steps usually means a computation went wrong upstream).
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import torch
from torch import nn

__all__ = [
    "finite_float",
    "model_block_size",
    "model_device",
    "non_negative_int",
    "positive_float",
    "positive_int",
    "token_ids",
    "unit_interval",
]


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def positive_int(name: str, value: Any, *, allow_none: bool = False) -> Any:
    """``value`` if it is an int >= 1 (or ``None`` when ``allow_none``), else an error.

    Raises ``TypeError`` for a value that is not an int at all (a string, a
    float, a bool) and ``ValueError`` for an int below 1.
    """
    if value is None and allow_none:
        return None
    if not _is_int(value):
        raise TypeError(f"{name} must be a positive int{' or None' if allow_none else ''}, "
                        f"got {value!r} ({type(value).__name__})")
    if value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def non_negative_int(name: str, value: Any, *, allow_none: bool = False) -> Any:
    """``value`` if it is an int >= 0 (or ``None`` when ``allow_none``), else an error."""
    if value is None and allow_none:
        return None
    if not _is_int(value):
        raise TypeError(f"{name} must be a non-negative int{' or None' if allow_none else ''}, "
                        f"got {value!r} ({type(value).__name__})")
    if value < 0:
        raise ValueError(f"{name} must be a non-negative int, got {value!r}")
    return int(value)


def finite_float(name: str, value: Any, *, allow_none: bool = False) -> Any:
    """``float(value)`` if it is a finite real number (not a bool), else an error."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a finite number{' or None' if allow_none else ''}, "
                        f"got {value!r} ({type(value).__name__})")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return value


def positive_float(name: str, value: Any, *, allow_none: bool = False,
                   max_value: float | None = None) -> Any:
    """``float(value)`` if it is finite and > 0 (and <= ``max_value`` if given), else an error.

    >>> positive_float("lr", 3e-4)
    0.0003
    >>> positive_float("temperature", float("inf"))
    Traceback (most recent call last):
    ...
    ValueError: temperature must be a finite number, got inf
    """
    if value is None and allow_none:
        return None
    value = finite_float(name, value)
    if value <= 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    if max_value is not None and value > max_value:
        raise ValueError(f"{name} must be at most {max_value!r}, got {value!r}")
    return value


def unit_interval(name: str, value: Any, *, closed_right: bool = False) -> float:
    """``float(value)`` if ``0 <= value < 1`` (``<= 1`` with ``closed_right``), else an error."""
    value = finite_float(name, value)
    upper_ok = value <= 1 if closed_right else value < 1
    if not (0 <= value and upper_ok):
        interval = "[0, 1]" if closed_right else "[0, 1)"
        raise ValueError(f"{name} must be in {interval}, got {value!r}")
    return value


def model_device(model: nn.Module) -> torch.device:
    """The device of ``model``'s first parameter (CPU for a model without parameters)."""
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def model_block_size(model: nn.Module) -> int | None:
    """``model.config.block_size`` (the longest context it accepts), or ``None`` if it has none."""
    return getattr(getattr(model, "config", None), "block_size", None)


def token_ids(name: str, value: Any, *, ndim: int | None = None) -> torch.Tensor:
    """``value`` as an int64 tensor of token ids, or an error naming what is wrong.

    Accepts a tensor, a numpy array or a (nested) list of Python ints, of any
    integer dtype (``uint8``, ``int32``, ... are widened to int64, which
    loses nothing). Refuses floats (``2.7`` is not a token; casting would
    silently truncate it), bools and complex numbers, and, when ``ndim`` is
    given, any other number of dimensions. The values themselves (negative,
    too large) are left to the caller, who knows the vocabulary.

    >>> token_ids("ids", [1, 2, 3])
    tensor([1, 2, 3])
    >>> token_ids("ids", torch.tensor([1.0, 2.0]))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    TypeError: ids must be integer token ids, got dtype torch.float32; ...
    """
    if isinstance(value, (str, bytes)):
        raise TypeError(f"{name} must be token ids (ints), got a {type(value).__name__}; "
                        "encode text with a tokenizer first")
    if not isinstance(value, torch.Tensor):
        try:
            value = torch.as_tensor(value)
        except (TypeError, ValueError, RuntimeError) as err:
            raise TypeError(f"{name} must be token ids (a tensor or a list of ints), got "
                            f"{type(value).__name__} ({err})") from None
    if value.dtype == torch.bool or value.is_floating_point() or value.is_complex():
        raise TypeError(
            f"{name} must be integer token ids, got dtype {value.dtype}; token ids are whole "
            "numbers: convert them deliberately (e.g. ids.round().long()) if they are"
        )
    if ndim is not None and value.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dimension(s), got shape {tuple(value.shape)}")
    return value.long()
