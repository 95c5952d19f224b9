"""Where training runs and in which precision: ``device`` and ``dtype`` of a TrainConfig.

:func:`resolve_device` turns ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"mps"``
into a :class:`torch.device` (``"auto"``: CUDA if present, else the CPU; MPS
only when asked, with a warning that its results are not reproducible bit for
bit). :func:`autocast` is the mixed-precision context of the forward pass:
matrix products in bfloat16 or float16, the weights, gradients and optimizer
moments staying float32. :func:`grad_scaler` is the gradient scaler that
float16 needs on CUDA (its small range would flush small gradients to zero).

On a CPU, whether bfloat16 autocast is faster depends on the CPU: with
bfloat16 instructions (AVX-512 BF16, AMX) it was 1.3 to 1.4 times faster
than float32 at the command's default size (one thread, an AMD EPYC);
without them every operand is converted and nothing is gained. float32 stays
the default: exact, and repeatable bit for bit on any CPU.

Taught in appendix A, "Beyond one machine" (book/A_distributed.ipynb).
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Any

import torch

__all__ = ["DEVICES", "DTYPES", "autocast", "grad_scaler", "resolve_device"]

DEVICES = ("auto", "cpu", "cuda", "mps")
"""The names ``TrainConfig.device`` accepts (``None``: the model's own device)."""

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
"""The names ``TrainConfig.dtype`` accepts, and the dtype of the autocast products."""


def check_device(name: str | None) -> str | None:
    """``name`` if it is one of :data:`DEVICES` or ``None``, else a ``ValueError``."""
    if name is not None and name not in DEVICES:
        raise ValueError(f"device must be one of {list(DEVICES)} or None (the model's own "
                         f"device), got {name!r}")
    return name


def check_dtype(name: str) -> str:
    """``name`` if it is one of :data:`DTYPES`, else a ``ValueError``."""
    if name not in DTYPES:
        raise ValueError(f"dtype must be one of {list(DTYPES)}, got {name!r}")
    return name


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """The device ``name`` stands for on this machine (``local_rank``: the GPU of this process).

    Examples
    --------
    >>> resolve_device("cpu")
    device(type='cpu')

    See appendix A, "Beyond one machine" (book/A_distributed.ipynb).
    """
    check_device(name)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device='cuda', but torch sees no CUDA GPU here (torch "
                             f"{torch.__version__}); use device='auto' or 'cpu'")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    if name == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise ValueError("device='mps', but this machine has no Apple GPU available to "
                             "torch; use device='auto' or 'cpu'")
        warnings.warn("training on MPS: results are not reproducible bit for bit (its kernels "
                      "are not deterministic), so a resumed run differs slightly", stacklevel=3)
    return torch.device(name)


def autocast(device: torch.device, dtype: str) -> contextlib.AbstractContextManager[Any]:
    """The autocast context of the forward pass (a no-op for ``"float32"``).

    Examples
    --------
    >>> with autocast(torch.device("cpu"), "bfloat16"):
    ...     (torch.ones(2, 2) @ torch.ones(2, 2)).dtype
    torch.bfloat16

    See appendix A, "Beyond one machine" (book/A_distributed.ipynb).
    """
    if check_dtype(dtype) == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=DTYPES[dtype])


def grad_scaler(device: torch.device, dtype: str) -> torch.amp.GradScaler | None:
    """A gradient scaler for float16 on CUDA; ``None`` elsewhere (bfloat16 needs none).

    On a CPU, float16 runs without one and warns: bfloat16 is the safer choice there.

    See appendix A, "Beyond one machine" (book/A_distributed.ipynb).
    """
    if check_dtype(dtype) != "float16":
        return None
    if device.type == "cuda":
        return torch.amp.GradScaler("cuda")
    warnings.warn(f"dtype='float16' on {device.type} runs without a gradient scaler, so small "
                  "gradients may flush to zero; prefer dtype='bfloat16'", stacklevel=5)
    return None
