"""Where training runs and in which precision: ``device`` and ``dtype`` of a TrainConfig.

:func:`resolve_device` turns ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"mps"``
into a :class:`torch.device` (``"auto"``: CUDA if present, else the CPU; MPS
only when asked, with a warning that its results are not reproducible bit for
bit). :func:`autocast` is the mixed-precision context of the forward pass:
matrix products in bfloat16 or float16, the weights, gradients and optimizer
moments staying float32. :func:`grad_scaler` is the gradient scaler that
float16 needs on CUDA (its small range would flush small gradients to zero).

On a CPU, whether bfloat16 autocast is faster depends on the CPU: with
bfloat16 instructions (AVX-512 BF16, AMX) it was 1.2 to 1.4 times faster
than float32 at the command's default size (an AMD EPYC; see
benchmarks/training/), but slower on an Intel Xeon with AMX at that size;
without them every operand is converted and nothing is gained. So
``dtype="auto"`` measures instead of guessing: where the device computes in
bfloat16 natively (:func:`has_native_bfloat16`), :func:`choose_dtype` times a
few forward and backward passes in each precision and keeps bfloat16 only if
it is at least :data:`AUTO_SPEEDUP` times faster. ``slmbook train`` uses
``"auto"``; ``train()`` keeps float32, exact and repeatable bit for bit on any
CPU.

Taught in appendix A, "Beyond one machine" (book/A_distributed.ipynb).
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable
from typing import Any

import torch

__all__ = ["AUTO_SPEEDUP", "DEVICES", "DTYPES", "autocast", "best_seconds", "choose_dtype",
           "grad_scaler", "has_native_bfloat16", "resolve_device"]

DEVICES = ("auto", "cpu", "cuda", "mps")
"""The names ``TrainConfig.device`` accepts (``None``: the model's own device)."""

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
"""The precisions ``TrainConfig.dtype`` names (it also accepts ``"auto"``), and the dtype
of the autocast products."""

AUTO_SPEEDUP = 1.05
"""How much faster bfloat16 must measure for ``dtype="auto"`` to choose it over float32."""


def check_device(name: str | None) -> str | None:
    """``name`` if it is one of :data:`DEVICES` or ``None``, else a ``ValueError``."""
    if name is not None and name not in DEVICES:
        raise ValueError(f"device must be one of {list(DEVICES)} or None (the model's own "
                         f"device), got {name!r}")
    return name


def check_dtype(name: str, *, allow_auto: bool = True) -> str:
    """``name`` if it is one of :data:`DTYPES` (or ``"auto"``), else a ``ValueError``."""
    if name == "auto" and allow_auto:
        return name
    if name not in DTYPES:
        choices = [*DTYPES, "auto"] if allow_auto else list(DTYPES)
        raise ValueError(f"dtype must be one of {choices}, got {name!r}")
    return name


def has_native_bfloat16(device: torch.device) -> bool:
    """Whether ``device`` multiplies bfloat16 matrices natively.

    A CUDA GPU that supports bfloat16, or a CPU with AVX-512 BF16 or AMX
    instructions. Elsewhere (MPS, older CPUs) bfloat16 autocast only adds
    conversions, and ``dtype="auto"`` takes float32 without measuring.

    See appendix A, "Beyond one machine" (book/A_distributed.ipynb).
    """
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        cpu = getattr(torch, "cpu", None)
        checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)
    return False


def best_seconds(seconds: Callable[[str], float], dtypes: tuple[str, ...] = ("float32", "bfloat16"),
                 *, rounds: int = 3) -> dict[str, float]:
    """The shortest of ``rounds`` calls of ``seconds(dtype)`` for each of ``dtypes``.

    The dtypes take turns, so that a machine growing busier slows them all
    alike, after one untimed warm-up call each.

    Examples
    --------
    >>> best_seconds({"float32": 2.0, "bfloat16": 1.0}.get)
    {'float32': 2.0, 'bfloat16': 1.0}

    See appendix A, "Beyond one machine" (book/A_distributed.ipynb).
    """
    best = dict.fromkeys(dtypes, math.inf)
    for i in range(rounds + 1):
        for dtype in dtypes:
            t = seconds(dtype)
            if i:
                best[dtype] = min(best[dtype], t)
    return best


def choose_dtype(device: torch.device, seconds: Callable[[str], float], *, rounds: int = 3,
                 combine: Callable[[list[float]], list[float]] | None = None
                 ) -> tuple[str, float | None]:
    """The precision ``dtype="auto"`` trains in, and the speed-up measured for bfloat16.

    ``seconds(dtype)`` runs one forward and backward pass in ``dtype`` and
    returns how long it took. Where :func:`has_native_bfloat16` is false the
    answer is ``("float32", None)`` without measuring. Otherwise
    :func:`best_seconds` times both precisions, and bfloat16 is chosen when
    the best float32 time is at least :data:`AUTO_SPEEDUP` times the best
    bfloat16 time. ``combine`` turns this
    process's two times into the ones to compare (the sums over all
    processes, so that every rank decides alike).

    Examples
    --------
    >>> cpu = torch.device("cpu")
    >>> chosen = choose_dtype(cpu, {"float32": 2.0, "bfloat16": 1.0}.get)
    >>> chosen == (("bfloat16", 2.0) if has_native_bfloat16(cpu) else ("float32", None))
    True

    See appendix A, "Beyond one machine" (book/A_distributed.ipynb).
    """
    if not has_native_bfloat16(device):
        return "float32", None
    best = best_seconds(seconds, ("float32", "bfloat16"), rounds=rounds)
    t32, t16 = (combine or (lambda ts: ts))([best["float32"], best["bfloat16"]])
    speedup = t32 / t16 if t16 > 0 else math.inf
    return ("bfloat16" if speedup >= AUTO_SPEEDUP else "float32"), speedup


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
    if check_dtype(dtype, allow_auto=False) == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=DTYPES[dtype])


def grad_scaler(device: torch.device, dtype: str) -> torch.amp.GradScaler | None:
    """A gradient scaler for float16 on CUDA; ``None`` elsewhere (bfloat16 needs none).

    On a CPU, float16 runs without one and warns: bfloat16 is the safer choice there.

    See appendix A, "Beyond one machine" (book/A_distributed.ipynb).
    """
    if check_dtype(dtype, allow_auto=False) != "float16":
        return None
    if device.type == "cuda":
        return torch.amp.GradScaler("cuda")
    warnings.warn(f"dtype='float16' on {device.type} runs without a gradient scaler, so small "
                  "gradients may flush to zero; prefer dtype='bfloat16'", stacklevel=5)
    return None
