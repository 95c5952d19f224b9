"""Lists of strings stored as plain numpy arrays, so that saved files need no pickle.

A list of strings becomes one ``uint8`` array of their UTF-8 bytes and one
``int64`` array of offsets: string ``i`` is ``bytes[offsets[i]:offsets[i + 1]]``.
Any length, any character, and ``numpy.load(..., allow_pickle=False)`` reads it.

>>> data, offsets = pack_strings(["ab", "", "é"])
>>> offsets.tolist()
[0, 2, 2, 4]
>>> unpack_strings(data, offsets)
['ab', '', 'é']
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

__all__ = ["pack_named", "pack_strings", "unpack_strings"]


def pack_strings(strings: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Strings as one UTF-8 byte array ``(n_bytes,) uint8`` plus offsets ``(n + 1,) int64``."""
    encoded = [s.encode("utf-8") for s in strings]
    offsets = np.cumsum([0] + [len(e) for e in encoded], dtype=np.int64)
    return np.frombuffer(b"".join(encoded), dtype=np.uint8), offsets


def pack_named(name: str, strings: Sequence[str]) -> dict[str, np.ndarray]:
    """``{name_bytes: ..., name_offsets: ...}``, ready for ``numpy.savez(**...)``."""
    data, offsets = pack_strings(strings)
    return {f"{name}_bytes": data, f"{name}_offsets": offsets}


def unpack_strings(data: np.ndarray, offsets: np.ndarray) -> list[str]:
    """The strings that :func:`pack_strings` packed (raises ``UnicodeDecodeError`` if corrupt)."""
    raw = data.tobytes()
    return [raw[a:b].decode("utf-8") for a, b in itertools.pairwise(offsets.tolist())]
