"""What a checkpoint file may hold, checked on the way in and on the way out.

:func:`plain` keeps only what ``torch.load(weights_only=True)`` can read back
(tensors, numbers, strings, lists, dicts), so that a checkpoint never needs
to run code to load; :func:`check_payload` refuses a loaded payload whose
fields have the wrong types before anything is built from it.

See chapter 7, "Iterating" (book/07_iterate.ipynb).
"""

from __future__ import annotations

import numbers
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

__all__ = ["check_payload", "plain"]


def plain(obj: Any, where: str) -> Any:
    """``obj`` with only the types ``torch.load(weights_only=True)`` reads back, or a TypeError.

    ``where`` names ``obj`` in the error (e.g. ``"checkpoint['meta']"``).

    >>> plain({"n": 3, "ratio": 0.5}, "meta")
    {'n': 3, 'ratio': 0.5}

    See chapter 7, "Iterating" (book/07_iterate.ipynb).
    """
    if obj is None or isinstance(obj, (torch.Tensor, bool)) or type(obj) in (str, int, float):
        return obj
    if isinstance(obj, dict):
        items = ((k, plain(v, f"{where}[{k!r}]")) for k, v in obj.items())
        if not isinstance(obj, OrderedDict):
            return dict(items)
        copy = OrderedDict(items)
        if hasattr(obj, "_metadata"):  # a state_dict's module versions, as torch.save keeps them
            copy._metadata = obj._metadata
        return copy
    if isinstance(obj, (list, tuple)):
        items = [plain(v, f"{where}[{i}]") for i, v in enumerate(obj)]
        return items if isinstance(obj, list) else tuple(items)
    for kind in (str, bool, numbers.Integral, numbers.Real):  # e.g. numpy scalars
        if isinstance(obj, kind):
            return (float if kind is numbers.Real else int if kind is numbers.Integral else kind)(obj)
    raise TypeError(
        f"{where} is a {type(obj).__name__}, which a safe checkpoint cannot hold; store only "
        "tensors, numbers, strings, lists and dicts (convert it, e.g. str(path))")


_REQUIRED = {"format_version": int, "model_class": str, "config": (dict, type(None)),
             "model": dict, "step": int, "meta": dict}
_OPTIONAL = {"optimizer": dict, "scheduler": dict, "tokenizer": dict, "rng": dict,
             "history": dict, "training_state": dict}


def check_payload(path: Path, payload: dict[str, Any], latest: int) -> None:
    """Refuse a payload whose fields have the wrong types, before anything is built from it.

    ``latest`` is the newest format version this slmbook reads.

    See chapter 7, "Iterating" (book/07_iterate.ipynb).
    """
    where = f"checkpoint {str(path)!r}"
    missing = [k for k in _REQUIRED if k not in payload]
    if missing:
        raise ValueError(f"{where} is incomplete (missing {missing}); re-save it with "
                         "slmbook.checkpoints.save")
    version = payload["format_version"]
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"{where} has a malformed format version {version!r} (expected an "
                         f"int from 1 to {latest}); the file is damaged or was edited")
    if version > latest:
        raise ValueError(f"{where} has format version {version}, newer than this slmbook's "
                         f"{latest}; upgrade slmbook to read it")
    for key, kind in [*_REQUIRED.items(), *_OPTIONAL.items()]:
        value = payload.get(key)
        if (value is not None or key in _REQUIRED) and (
                not isinstance(value, kind) or isinstance(value, bool)):
            raise ValueError(f"{where}: field {key!r} is a {type(value).__name__}, expected "
                             f"{getattr(kind, '__name__', 'dict or None')}; the file is damaged "
                             "or was edited")
    if payload["step"] < 0:
        raise ValueError(f"{where}: step is {payload['step']}, expected >= 0")
    if not all(isinstance(v, torch.Tensor) for v in payload["model"].values()):
        raise ValueError(f"{where}: the model state holds values that are not tensors")
    config = payload["config"] or {}
    bad = {k: v for k, v in config.items()
           if not isinstance(k, str) or not isinstance(v, (int, float, str, bool, type(None)))}
    if bad:
        raise ValueError(f"{where}: the model configuration holds malformed entries {bad}")
