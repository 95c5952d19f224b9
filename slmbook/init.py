"""Where the parameters θ start: initialization schemes, parameter counts, activations.

Every scheme sets the weight matrices of ``nn.Linear`` and ``nn.Embedding`` layers;
in every scheme biases start at zero and LayerNorm starts as the identity
(weight 1, bias 0). A weight shared by two layers (GPT's tied embedding and output
head) is initialised once.

=========== ===================================================================
scheme      each weight matrix W (fan_in = W.shape[1], fan_out = W.shape[0])
=========== ===================================================================
zeros       W = 0: every hidden unit computes the same thing (symmetry)
constant    W = value: also symmetric
normal      W ~ N(0, std²)
xavier      W ~ N(0, 2 / (fan_in + fan_out))        Glorot and Bengio, 2010
kaiming     W ~ N(0, 2 / fan_in)                    He et al., 2015
gpt2        W ~ N(0, std²), and the residual projections (``*.c_proj``) use
            std / sqrt(2 * n_layer) so the residual stream does not grow with depth
=========== ===================================================================

Taught in chapter 2, "Parameters and initialization" (book/02_parameters.ipynb).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from slmbook._checks import positive_float
from slmbook.inference import forward_with_hooks

__all__ = [
    "INIT_SCHEMES",
    "ActivationStats",
    "activation_stats",
    "count_parameters",
    "init_weights",
    "parameter_table",
]

INIT_SCHEMES = ("zeros", "constant", "normal", "xavier", "kaiming", "gpt2")


def _n_layer(model: nn.Module) -> int:
    """Depth used by the GPT-2 residual scaling: config.n_layer, else c_proj count / 2."""
    n_layer = getattr(getattr(model, "config", None), "n_layer", None)
    if n_layer is None:
        n_proj = sum(1 for name, _ in model.named_modules() if name.endswith("c_proj"))
        n_layer = max(1, n_proj // 2)
    return n_layer


def _init_matrix(
    w: torch.Tensor, scheme: str, std: float, value: float, g: torch.Generator | None
) -> None:
    if scheme == "zeros":
        nn.init.zeros_(w)
    elif scheme == "constant":
        nn.init.constant_(w, value)
    elif scheme in ("normal", "gpt2"):
        nn.init.normal_(w, mean=0.0, std=std, generator=g)
    elif scheme == "xavier":
        nn.init.xavier_normal_(w, generator=g)
    else:  # kaiming
        nn.init.kaiming_normal_(w, mode="fan_in", nonlinearity="relu", generator=g)


@torch.no_grad()
def init_weights(
    model: nn.Module,
    scheme: str = "gpt2",
    *,
    std: float = 0.02,
    value: float = 0.01,
    generator: torch.Generator | None = None,
) -> nn.Module:
    """Re-initialise every parameter of ``model`` in place with one scheme.

    Parameters
    ----------
    model:
        Any module; ``nn.Linear``, ``nn.Embedding`` and ``nn.LayerNorm`` layers are set.
    scheme:
        One of ``INIT_SCHEMES``: "zeros", "constant", "normal", "xavier", "kaiming",
        "gpt2" (see the module docstring).
    std:
        Standard deviation for "normal" and "gpt2".
    value:
        The value every weight takes under "constant".
    generator:
        Draw the random numbers from this ``torch.Generator`` (reproducible);
        ``None`` uses torch's global generator.

    Returns
    -------
    The same ``model``, for chaining.

    See chapter 2, "Parameters and initialization" (book/02_parameters.ipynb).
    """
    if scheme not in INIT_SCHEMES:
        raise ValueError(f"unknown init scheme {scheme!r}; choose one of {', '.join(INIT_SCHEMES)}")
    std = positive_float("std", std)
    residual_std = std / math.sqrt(2 * _n_layer(model))
    seen: set[int] = set()
    for name, module in model.named_modules():
        if isinstance(module, nn.LayerNorm):
            if module.weight is not None:
                nn.init.ones_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
            continue
        if not isinstance(module, (nn.Linear, nn.Embedding)):
            continue
        if id(module.weight) not in seen:
            seen.add(id(module.weight))
            is_residual = scheme == "gpt2" and name.endswith("c_proj")
            s = residual_std if is_residual else std
            _init_matrix(module.weight, scheme, s, value, generator)
        bias = getattr(module, "bias", None)
        if bias is not None:
            nn.init.zeros_(bias)
    return model


def _layer_key(module_name: str) -> str:
    """'transformer.h.3.attn.c_attn' -> 'transformer.h.3'; other names stay whole."""
    match = re.match(r"^(.*?\.\d+)(\.|$)", module_name)
    return match.group(1) if match else module_name


def count_parameters(model: nn.Module, *, by: str = "module") -> dict[str, int]:
    """Count parameters, each shared (tied) tensor once.

    Parameters
    ----------
    model:
        Any module.
    by:
        "module": one entry per module that holds parameters (for GPT,
        ``transformer.h.0.attn.c_attn`` and so on); "layer": modules grouped by the
        first numbered part of their name (``transformer.h.0`` = a whole block).

    Returns
    -------
    dict name -> number of parameters, in the model's order, plus a final ``"total"``.
    A module whose weight was already counted (GPT's ``lm_head``, tied to
    ``transformer.wte``) appears with the parameters it adds, possibly 0.
    ``total`` equals ``sum(p.numel() for p in model.parameters())``.

    See chapter 2, "Parameters and initialization" (book/02_parameters.ipynb).
    """
    if by not in ("module", "layer"):
        raise ValueError(f"by must be 'module' or 'layer', got {by!r}")
    counts: dict[str, int] = {}
    seen: set[int] = set()
    for name, module in model.named_modules():
        params = list(module.parameters(recurse=False))
        if not params:
            continue
        key = _layer_key(name) if by == "layer" else name
        new = sum(p.numel() for p in params if id(p) not in seen)
        seen.update(id(p) for p in params)
        counts[key] = counts.get(key, 0) + new
    counts["total"] = sum(v for v in counts.values())
    return counts


def parameter_table(model: nn.Module, *, by: str = "layer") -> str:
    """:func:`count_parameters` as a Markdown table (name, parameters, share of the total).

    Display it in a notebook with ``IPython.display.Markdown(parameter_table(model))``.

    See chapter 2, "Parameters and initialization" (book/02_parameters.ipynb).
    """
    counts = count_parameters(model, by=by)
    total = counts["total"]
    rows = ["| module | parameters | share |", "|:--|--:|--:|"]
    for name, n in counts.items():
        share = 100 * n / total if total else 0.0
        shown = f"**{name}**" if name == "total" else f"`{name}`"
        rows.append(f"| {shown} | {n:,} | {share:.1f}% |")
    return "\n".join(rows)


@dataclass
class ActivationStats:
    """Summary of one layer's output: mean, std and a subsample for a histogram."""

    name: str
    mean: float
    std: float
    samples: torch.Tensor  # (S,) float32, evenly strided over the flattened output

    def __repr__(self) -> str:
        return f"ActivationStats({self.name!r}, mean={self.mean:.4g}, std={self.std:.4g})"


def _default_modules(model: nn.Module) -> list[str]:
    """GPT: the embeddings' sum is not a module, so: every block, then the logits."""
    names = [n for n, _ in model.named_modules() if re.fullmatch(r".*\.h\.\d+", n)]
    if names:
        return [*names, "lm_head"] if hasattr(model, "lm_head") else names
    return [n for n, m in model.named_modules() if n and not list(m.children())]


def activation_stats(
    model: nn.Module,
    idx: torch.Tensor,
    *,
    modules: Sequence[str] | None = None,
    max_samples: int = 4096,
) -> dict[str, ActivationStats]:
    """Run ``model`` on ``idx`` once and summarise what chosen layers output.

    Parameters
    ----------
    model:
        The model (run in eval mode; its train/eval mode is restored).
    idx:
        (B, T) int64 input ids.
    modules:
        Module names (as in ``model.named_modules()``) to record. Default for GPT:
        each block's output (the residual stream after block l) and ``lm_head``
        (the logits); for other models, every leaf module.
    max_samples:
        Keep at most this many values per layer for histograms.

    Returns
    -------
    dict module name -> :class:`ActivationStats`, in the order given.

    See chapter 2, "Parameters and initialization" (book/02_parameters.ipynb).
    """
    names = list(modules) if modules is not None else _default_modules(model)
    lookup = dict(model.named_modules())
    missing = [n for n in names if n not in lookup]
    if missing:
        raise ValueError(f"no module named {missing[0]!r} in {type(model).__name__}")
    outputs: dict[str, torch.Tensor] = {}

    def hook_for(name: str):
        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            outputs[name] = output.detach().float().flatten()

        return hook

    forward_with_hooks(model, idx, [(lookup[n], hook_for(n)) for n in names])
    stats = {}
    for name in names:
        flat = outputs[name]
        step = max(1, math.ceil(flat.numel() / max_samples))
        stats[name] = ActivationStats(
            name, flat.mean().item(), flat.std().item(), flat[::step].clone()
        )
    return stats
