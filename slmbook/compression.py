r"""Compressors as a yardstick: how many bits per character a general-purpose compressor needs.

A language model with loss :math:`\ell` nats per character could drive an
arithmetic coder that stores the text in :math:`\ell / \ln 2` bits per
character. So the standard library's compressors give an honest,
assumption-free reference point for a model's bits per character.

To compare fairly with a model that has read the training text, the
compressor is given the training text too: the *conditional* cost of the
validation text is the extra compressed size when it is appended to the
training text,

.. math::

    \text{bits/char} = \frac{8\,\big(|C(\text{train} + \text{val})| - |C(\text{train})|\big)}
                            {\#\text{chars(val)}},

and the *alone* cost is :math:`8\,|C(\text{val})| / \#\text{chars(val)}`.

How much of the training text each compressor can actually use differs:

- zlib (DEFLATE, level 9) looks back at most 32 KiB, so it sees only the
  end of the training text;
- bz2 (level 9) compresses blocks of 900 kB independently, so it uses the
  training text only while train + val fit in one block (the default
  corpus, about 470 kB, does);
- lzma (xz, preset 9) has a 64 MiB dictionary and sees all of it
  (``"lzma-extreme"`` adds ``PRESET_EXTREME``: slower, slightly smaller).

Taught in chapter 4, "Computing the loss" (book/04_loss.ipynb).
"""

from __future__ import annotations

import bz2
import lzma
import zlib
from collections.abc import Callable

__all__ = ["COMPRESSORS", "compressed_size", "compressor_bits_per_char"]

#: The compressors, by name: each maps bytes to compressed bytes at its strongest setting.
COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    "zlib": lambda data: zlib.compress(data, 9),
    "bz2": lambda data: bz2.compress(data, 9),
    "lzma": lambda data: lzma.compress(data, preset=9),
    # opt-in: slower, a few percent smaller
    "lzma-extreme": lambda data: lzma.compress(data, preset=9 | lzma.PRESET_EXTREME),
}


def compressed_size(text: str, method: str) -> int:
    """Size in bytes of ``text`` (UTF-8) compressed by ``method``.

    Parameters
    ----------
    text:
        Any string.
    method:
        A name from :data:`COMPRESSORS`: ``"zlib"``, ``"bz2"``, ``"lzma"`` or
        ``"lzma-extreme"``.

    See chapter 4, "Computing the loss" (book/04_loss.ipynb).
    """
    if method not in COMPRESSORS:
        raise ValueError(f"unknown compressor {method!r}; choose one of {sorted(COMPRESSORS)}")
    return len(COMPRESSORS[method](text.encode("utf-8")))


def compressor_bits_per_char(
    train_text: str,
    val_text: str,
    *,
    methods: tuple[str, ...] = ("zlib", "bz2", "lzma"),
) -> dict[str, dict[str, float]]:
    """Bits per character of the validation text for each compressor.

    Parameters
    ----------
    train_text:
        The text the compressor may read first (the training split).
    val_text:
        The text being measured (the validation split); must not be empty.
    methods:
        Which compressors to run, names from :data:`COMPRESSORS` (add
        ``"lzma-extreme"`` for xz's extreme preset).

    Returns
    -------
    dict
        ``{name: {"conditional": float, "alone": float}}``, bits per character
        of ``val_text``: ``conditional`` is
        ``(size(train + val) - size(train)) * 8 / len(val)`` and ``alone`` is
        ``size(val) * 8 / len(val)``. Characters, not bytes: a non-ASCII
        character takes several UTF-8 bytes but counts once.

    Notes
    -----
    The conditional cost can be slightly negative or optimistic on tiny
    texts, where the compressors' fixed overheads (headers, block tables)
    dominate; it is meant for texts of thousands of characters or more.

    See chapter 4, "Computing the loss" (book/04_loss.ipynb).
    """
    if not isinstance(train_text, str) or not isinstance(val_text, str):
        raise TypeError(
            f"train_text and val_text must be str, got {type(train_text).__name__} and "
            f"{type(val_text).__name__}; decode token ids first"
        )
    if not val_text:
        raise ValueError("val_text is empty: bits per character of nothing is undefined")
    unknown = [m for m in methods if m not in COMPRESSORS]
    if unknown:
        raise ValueError(f"unknown compressor(s) {unknown}; choose from {sorted(COMPRESSORS)}")
    n_chars = len(val_text)
    result: dict[str, dict[str, float]] = {}
    for method in methods:
        both = compressed_size(train_text + val_text, method)
        train_only = compressed_size(train_text, method)
        alone = compressed_size(val_text, method)
        result[method] = {
            "conditional": (both - train_only) * 8 / n_chars,
            "alone": alone * 8 / n_chars,
        }
    return result
