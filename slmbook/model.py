"""The model whose parameters θ the book optimises: a small GPT, and a neural bigram.

``GPT`` is a decoder-only transformer in the shape of GPT-2 (Radford et al., 2019):

    ids (B, T) -> token embedding + position embedding   (B, T, C)
               -> n_layer blocks, each  x = x + attn(ln_1(x));  x = x + mlp(ln_2(x))
               -> final LayerNorm -> lm_head                (B, T, V) logits

Its parameter names are GPT-2's (``transformer.wte``, ``transformer.h.0.attn.c_attn``,
...), its GELU uses the tanh approximation and its LayerNorm eps is 1e-5, so that
public GPT-2 weights load by matching names (see :meth:`GPT.from_pretrained`).
The output head shares its weight with the token embedding ("weight tying").

Taught in chapter 2, "Parameters and initialization" (book/02_parameters.ipynb),
and chapter 3, "The forward pass" (book/03_forward.ipynb).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from slmbook._checks import positive_int, token_ids, unit_interval
from slmbook.attention import ATTENTION_IMPLS, CausalSelfAttention
from slmbook.init import init_weights

__all__ = ["GPT", "MLP", "Bigram", "BigramConfig", "Block", "GPTConfig"]


@dataclass
class GPTConfig:
    """Everything that fixes the shape of a :class:`GPT` (validated on construction).

    See chapter 2, "Parameters and initialization" (book/02_parameters.ipynb).
    """

    vocab_size: int  # V: number of distinct tokens; set by the tokenizer
    block_size: int = 64  # T_max: the longest context the model ever sees
    n_layer: int = 4  # transformer blocks stacked; depth
    n_head: int = 4  # attention heads per block, each of width n_embd // n_head
    n_embd: int = 128  # C: width of every token's vector (the residual stream)
    dropout: float = 0.0  # off by default: small models on small data rarely need it early
    bias: bool = True  # biases in Linear and LayerNorm, as in GPT-2
    attention: str = "fused"  # "fused" (fast) or "scratch" (step by step, same numbers)

    def __post_init__(self) -> None:
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            setattr(self, name, positive_int(name, getattr(self, name)))  # numpy ints -> int
        if self.n_embd % self.n_head != 0:
            raise ValueError(
                f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}; "
                "each head gets n_embd // n_head dimensions, so pick n_embd as a multiple of n_head"
            )
        self.dropout = unit_interval("dropout", self.dropout)
        if self.attention not in ATTENTION_IMPLS:
            raise ValueError(
                f"unknown attention implementation {self.attention!r}; "
                f"choose one of {', '.join(ATTENTION_IMPLS)}"
            )

    @property
    def head_size(self) -> int:
        """D: the width of one attention head."""
        return self.n_embd // self.n_head


class MLP(nn.Module):
    """Position-wise feed-forward network: C -> 4C -> GELU -> C."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU(approximate="tanh")
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: (B, T, C) -> (B, T, C)."""
        h = self.gelu(self.c_fc(x))  # (B, T, 4C)
        return self.dropout(self.c_proj(h))  # (B, T, C)


class Block(nn.Module):
    """One transformer block: attention then MLP, each on a pre-LayerNorm residual branch."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=1e-5, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=1e-5, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: (B, T, C) -> (B, T, C)."""
        x = x + self.attn(self.ln_1(x))  # (B, T, C): positions exchange information
        return x + self.mlp(self.ln_2(x))  # (B, T, C): each position thinks alone


def _check_ids(idx: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """``idx`` as (B, T) int64, or a clear error for non-tensor, non-integer or out-of-range ids.

    Other integer dtypes (``uint8``, ``int32``) are widened to int64, which loses nothing.
    """
    if not isinstance(idx, torch.Tensor):
        raise TypeError(
            f"idx must be a (B, T) tensor of token ids, got a {type(idx).__name__}; "
            "use torch.tensor([ids], device=...) for one sequence"
        )
    idx = token_ids("idx", idx)
    if idx.dim() != 2:
        raise ValueError(
            f"idx must be (B, T) token ids, got shape {tuple(idx.shape)}; "
            "use idx[None] for a single sequence"
        )
    if idx.numel() == 0:
        return idx
    lo, hi = idx.aminmax()
    if lo < 0 or hi >= vocab_size:
        bad = idx[(idx < 0) | (idx >= vocab_size)][0].item()
        raise ValueError(
            f"token id {bad} is outside the vocabulary [0, {vocab_size}); "
            f"encode with the tokenizer the model was built for (vocab_size={vocab_size})"
        )
    return idx


class GPT(nn.Module):
    """A decoder-only transformer language model with GPT-2's layout and names.

    Parameters
    ----------
    config:
        A :class:`GPTConfig`. The weights start from the GPT-2 scheme of
        :func:`slmbook.init.init_weights` (normal, std 0.02, residual projections
        scaled by 1/sqrt(2 n_layer), zero biases).

    See chapter 2, "Parameters and initialization" (book/02_parameters.ipynb).
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        if not isinstance(config, GPTConfig):
            raise TypeError(f"GPT needs a GPTConfig, got {type(config).__name__}")
        self.config = config
        self.transformer = nn.ModuleDict(
            {
                "wte": nn.Embedding(config.vocab_size, config.n_embd),  # token -> vector
                "wpe": nn.Embedding(config.block_size, config.n_embd),  # position -> vector
                "drop": nn.Dropout(config.dropout),
                "h": nn.ModuleList(Block(config) for _ in range(config.n_layer)),
                "ln_f": nn.LayerNorm(config.n_embd, eps=1e-5, bias=config.bias),
            }
        )
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # weight tying: one (V, C) matrix
        init_weights(self, "gpt2")

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Next-token logits for every position.

        Parameters
        ----------
        idx:
            (B, T) int64 token ids, ``0 <= id < vocab_size`` and ``T <= block_size``.

        Returns
        -------
        logits: (B, T, V)
            ``logits[b, t]`` scores every token as the one that follows ``idx[b, : t + 1]``;
            position ``t`` never sees positions after ``t`` (causal).

        See chapter 3, "The forward pass" (book/03_forward.ipynb).
        """
        idx = _check_ids(idx, self.config.vocab_size)
        T = idx.shape[1]
        if T > self.config.block_size:
            raise ValueError(
                f"sequence length {T} exceeds block_size={self.config.block_size}; "
                "crop the context to the last block_size tokens "
                "(slmbook.sampling.generate crops for you)"
            )
        pos = torch.arange(T, device=idx.device)  # (T,)
        tok_emb = self.transformer.wte(idx)  # (B, T, C)
        pos_emb = self.transformer.wpe(pos)  # (T, C), broadcast over the batch
        x = self.transformer.drop(tok_emb + pos_emb)  # (B, T, C)
        for block in self.transformer.h:
            x = block(x)  # (B, T, C)
        x = self.transformer.ln_f(x)  # (B, T, C)
        return self.lm_head(x)  # (B, T, V)

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path,
        *,
        dtype: torch.dtype | None = None,
        local_files_only: bool = False,
    ) -> GPT:
        """Load public GPT-2 weights (a name of ``slmbook.hub.GPT2_NAMES`` or a local folder).

        Builds a ``GPTConfig`` from the checkpoint's config, matches the
        parameters by name and transposes GPT-2's ``Conv1D`` matrices (the
        helpers of :mod:`slmbook.hub`), casts to ``dtype`` if given, and returns
        the model in eval mode. Its logits equal ``transformers``' on the same
        ids. ``local_files_only=True`` never touches the network.

        See chapter 8, "Starting from a pretrained model" (book/08_pretrained.ipynb).
        """
        from slmbook import hub

        hf_model = hub.load_hf_model(name_or_path, local_files_only=local_files_only)
        model = cls(GPTConfig(**hub.config_from_hf(hf_model.config)))
        state = hub.convert_state_dict(hf_model.state_dict(), model)
        del hf_model
        model.load_state_dict(state)
        if dtype is not None:
            model = model.to(dtype)
        return model.eval()


@dataclass
class BigramConfig:
    """Shape of a :class:`Bigram`: the vocabulary, and a default context for batching."""

    vocab_size: int  # V
    block_size: int = 64  # length of training windows; the model itself looks back 1 token

    def __post_init__(self) -> None:
        self.vocab_size = positive_int("vocab_size", self.vocab_size)
        self.block_size = positive_int("block_size", self.block_size)


class Bigram(nn.Module):
    """A neural bigram model: a (V, V) table of logits for the next token given this one.

    Trained by gradient descent, it learns the same thing as chapter 1's count-based
    :class:`slmbook.ngram.BigramCounts`: ``softmax(table[a])`` approaches P(next | a).
    Initialised like GPT's embeddings (normal, std 0.02), so the initial loss is ≈ ln V.

    See chapter 2, "Parameters and initialization" (book/02_parameters.ipynb).
    """

    def __init__(self, vocab_size: int, *, block_size: int = 64) -> None:
        super().__init__()
        self.config = BigramConfig(vocab_size, block_size)
        self.token_embedding = nn.Embedding(vocab_size, vocab_size)  # row a = logits after a
        init_weights(self, "normal", std=0.02)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """``idx``: (B, T) int64 -> logits (B, T, V). Any T works: one token of context."""
        idx = _check_ids(idx, self.config.vocab_size)
        return self.token_embedding(idx)  # (B, T, V)
