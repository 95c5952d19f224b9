"""Causal self-attention, written out step by step and through PyTorch's fused kernel.

For one head with queries ``q``, keys ``k`` and values ``v`` (each (T, d)):

    scores  = q k^T / sqrt(d)                    (T, T)  how much each position asks of each other
    scores[i, j] = -inf  for j > i               causal mask: position i never sees the future
    weights = softmax(scores, over j)            (T, T)  each row sums to 1
    out     = weights v                          (T, d)  a weighted average of the values

:func:`causal_attention_scratch` computes exactly these four lines;
:func:`causal_attention_fused` asks ``torch.nn.functional.scaled_dot_product_attention``
for the same result without ever storing the (T, T) matrix. The tests check that
both give the same outputs and gradients.

Taught in chapter 3, "The forward pass" (book/03_forward.ipynb).
"""

from __future__ import annotations

import math
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from slmbook.inference import forward_with_hooks

__all__ = [
    "ATTENTION_IMPLS",
    "CausalSelfAttention",
    "attention_maps",
    "causal_attention_fused",
    "causal_attention_scratch",
]

ATTENTION_IMPLS = ("fused", "scratch")


def causal_attention_scratch(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    dropout_p: float = 0.0,
    return_weights: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Causal scaled dot-product attention, one line per step.

    Parameters
    ----------
    q, k, v:
        (B, H, T, D) queries, keys and values (any leading dimensions work).
    dropout_p:
        Probability of zeroing an attention weight (training only; 0 disables it).
    return_weights:
        Also return the attention weights.

    Returns
    -------
    out: (B, H, T, D)
        The attended values; with ``return_weights`` also ``weights``: (B, H, T, T),
        each row a probability distribution over the positions it may see.

    See chapter 3, "The forward pass" (book/03_forward.ipynb).
    """
    T, D = q.shape[-2], q.shape[-1]
    scores = q @ k.transpose(-2, -1) / math.sqrt(D)  # (B, H, T, T)
    future = torch.ones(T, T, dtype=torch.bool, device=q.device).triu(diagonal=1)  # (T, T)
    scores = scores.masked_fill(future, float("-inf"))  # (B, H, T, T)
    weights = torch.softmax(scores, dim=-1)  # (B, H, T, T), rows sum to 1
    attended = F.dropout(weights, p=dropout_p) if dropout_p > 0 else weights
    out = attended @ v  # (B, H, T, D)
    return (out, weights) if return_weights else out


def causal_attention_fused(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, dropout_p: float = 0.0
) -> torch.Tensor:
    """The same computation as :func:`causal_attention_scratch`, by PyTorch's fused kernel.

    ``q, k, v``: (B, H, T, D); returns (B, H, T, D). Faster and lighter on memory,
    because the (T, T) weights are never materialised.

    See chapter 3, "The forward pass" (book/03_forward.ipynb).
    """
    return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)


class AttentionConfig(Protocol):
    """The fields of :class:`slmbook.model.GPTConfig` that attention reads.

    A protocol rather than ``GPTConfig`` itself, so that this module does not
    depend on :mod:`slmbook.model` (which builds its blocks from this one).
    """

    n_embd: int
    n_head: int
    dropout: float
    bias: bool
    attention: str


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with GPT-2's parameter names.

    ``c_attn`` projects each position to its query, key and value at once (C -> 3C);
    the heads attend independently; ``c_proj`` mixes the heads' outputs back (C -> C).
    ``config.attention`` picks the implementation: ``"fused"`` (default, fast) or
    ``"scratch"`` (the step-by-step version, same numbers).

    See chapter 3, "The forward pass" (book/03_forward.ipynb).
    """

    def __init__(self, config: AttentionConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.dropout = config.dropout
        self.attention = config.attention
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)

    def _heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries, keys and values split into heads: three (B, H, T, D) tensors."""
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)  # each (B, T, C)
        shape = (B, T, self.n_head, C // self.n_head)
        q = q.view(shape).transpose(1, 2)  # (B, H, T, D)
        k = k.view(shape).transpose(1, 2)  # (B, H, T, D)
        v = v.view(shape).transpose(1, 2)  # (B, H, T, D)
        return q, k, v

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: (B, T, C) -> (B, T, C)."""
        B, T, C = x.shape
        q, k, v = self._heads(x)  # (B, H, T, D) each
        p = self.dropout if self.training else 0.0
        if self.attention == "fused":
            y = causal_attention_fused(q, k, v, dropout_p=p)  # (B, H, T, D)
        else:
            y = causal_attention_scratch(q, k, v, dropout_p=p)  # (B, H, T, D)
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, T, C): heads side by side
        return self.resid_dropout(self.c_proj(y))  # (B, T, C)

    @torch.no_grad()
    def attention_weights(self, x: torch.Tensor) -> torch.Tensor:
        """The attention weights this layer uses on ``x`` (B, T, C): (B, H, T, T)."""
        q, k, v = self._heads(x)
        _, weights = causal_attention_scratch(q, k, v, return_weights=True)
        return weights

    def extra_repr(self) -> str:
        return f"n_head={self.n_head}, attention={self.attention!r}"


def attention_maps(model: nn.Module, idx: torch.Tensor) -> list[torch.Tensor]:
    """Run ``model`` on ``idx`` and collect every attention layer's weights.

    Parameters
    ----------
    model:
        Any module containing :class:`CausalSelfAttention` layers (a
        :class:`slmbook.model.GPT`), in the order they run.
    idx:
        (B, T) int64 token ids.

    Returns
    -------
    list of (B, H, T, T) tensors, one per attention layer; ``maps[l][b, h, i, j]`` is
    how much position ``i`` attends to position ``j`` in head ``h`` of layer ``l``.
    The model's own output is unchanged: forward hooks recompute the weights from
    each layer's input with :func:`causal_attention_scratch`.

    See chapter 3, "The forward pass" (book/03_forward.ipynb).
    """
    layers = [m for m in model.modules() if isinstance(m, CausalSelfAttention)]
    if not layers:
        raise ValueError(
            f"{type(model).__name__} has no CausalSelfAttention layers; "
            "attention maps need a transformer such as slmbook.model.GPT"
        )
    maps: list[torch.Tensor] = []

    def record(module: CausalSelfAttention, inputs: tuple, output: torch.Tensor) -> None:
        maps.append(module.attention_weights(inputs[0]))

    forward_with_hooks(model, idx, [(layer, record) for layer in layers])
    return maps
