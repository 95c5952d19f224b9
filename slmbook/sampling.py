"""Sampling text from a language model: temperature, top-k, a reproducible generator.

One step of generation: run the model on the (cropped) context, take the logits of the
last position, divide them by the temperature, keep only the ``top_k`` largest, turn
them into probabilities with softmax, draw one token, append it, repeat.

    temperature < 1  sharpens the distribution (towards always taking the likeliest token)
    temperature > 1  flattens it (towards uniform noise)

Taught in chapter 3, "The forward pass" (book/03_forward.ipynb), and used in
chapter 7, "Iterating" (book/07_iterate.ipynb).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from slmbook._checks import (
    finite_float,
    model_block_size,
    model_device,
    non_negative_int,
    positive_int,
    token_ids,
)
from slmbook.inference import evaluating

__all__ = ["generate", "generate_ids", "next_token_probs"]


def _check_sampling(temperature: float, top_k: int | None) -> tuple[float, int | None]:
    temperature = finite_float("temperature", temperature)
    if temperature <= 0:
        raise ValueError(
            f"temperature must be > 0, got {temperature!r}; "
            "use a small value such as 0.1 for nearly greedy sampling"
        )
    return temperature, positive_int("top_k", top_k, allow_none=True)


def _scale_logits(logits: torch.Tensor, temperature: float, top_k: int | None) -> torch.Tensor:
    """(B, V) logits -> (B, V) logits divided by temperature, -inf outside the top k.

    The largest logit is subtracted first, so the scaled logits are <= 0 with
    a 0 at the maximum: a tiny temperature (1e-45) sends the others to -inf
    instead of overflowing, and sampling becomes greedy, as its limit should.
    """
    logits = logits - logits.amax(dim=-1, keepdim=True)  # (B, V), max 0
    logits = logits / temperature  # (B, V)
    # a temperature below the dtype's smallest number (5e-324 in float32) divides by 0: 0 / 0
    # at the maxima is NaN, which is 0 in the limit
    logits = torch.where(torch.isnan(logits), 0.0, logits)  # (B, V)
    if top_k is not None and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (B, 1): k-th largest
        logits = logits.masked_fill(logits < kth, float("-inf"))  # (B, V)
    return logits


def _probs(logits: torch.Tensor, temperature: float, top_k: int | None) -> torch.Tensor:
    """(B, V) logits -> (B, V) sampling probabilities; a clear error if the logits are NaN."""
    if torch.isnan(logits).any():
        raise ValueError(
            "the model's logits contain NaN, so there is nothing to sample from; its weights "
            "are probably NaN or inf (a diverged training run): load an earlier checkpoint"
        )
    return torch.softmax(_scale_logits(logits, temperature, top_k), dim=-1)  # (B, V)


def _context(idx: torch.Tensor) -> torch.Tensor:
    """(B, T) int64 ids with T >= 1, or a clear error."""
    if not isinstance(idx, torch.Tensor):
        raise TypeError(
            f"idx must be a (B, T) tensor of token ids, got a {type(idx).__name__}; "
            "use torch.tensor([ids], device=...) for one sequence"
        )
    idx = token_ids("idx", idx)
    if idx.dim() != 2 or idx.size(1) == 0:
        raise ValueError(
            f"idx must be (B, T) token ids with T >= 1, got shape {tuple(idx.shape)}; "
            "use idx[None] for a single sequence"
        )
    return idx


def _check_vocabularies(model: nn.Module, tokenizer: Any) -> None:
    """A clear error, before any sampling, if the tokenizer is not the model's."""
    model_vocab = getattr(getattr(model, "config", None), "vocab_size", None)
    tok_vocab = getattr(tokenizer, "vocab_size", None)
    if isinstance(model_vocab, int) and isinstance(tok_vocab, int) and model_vocab != tok_vocab:
        raise ValueError(
            f"the tokenizer has {tok_vocab} tokens but the model predicts {model_vocab}: they "
            "were not trained together; use the tokenizer saved with the model's checkpoint"
        )


def next_token_probs(
    model: nn.Module,
    idx: torch.Tensor,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
) -> torch.Tensor:
    """The distribution the model samples the next token from.

    Parameters
    ----------
    model:
        A model mapping (B, T) ids to (B, T, V) logits (with ``model.config.block_size``).
    idx:
        (B, T) int64 context; only the last ``block_size`` tokens are used.
    temperature, top_k:
        As in :func:`generate_ids`.

    Returns
    -------
    probs: (B, V), each row sums to 1.

    See chapter 3, "The forward pass" (book/03_forward.ipynb).
    """
    temperature, top_k = _check_sampling(temperature, top_k)
    idx = _context(idx)
    with evaluating(model):
        block_size = model_block_size(model)
        context = idx if block_size is None else idx[:, -block_size:]  # (B, <= block_size)
        logits = model(context)[:, -1, :]  # (B, V): scores for the token after the context
    return _probs(logits, temperature, top_k)  # (B, V)


def generate_ids(
    model: nn.Module,
    idx: torch.Tensor,
    max_new_tokens: int,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Extend each sequence in ``idx`` by ``max_new_tokens`` sampled tokens.

    Parameters
    ----------
    model:
        A model mapping (B, T) ids to (B, T, V) logits; it runs in eval mode without
        gradients, and its train/eval mode is restored afterwards.
    idx:
        (B, T) int64 context, T >= 1. The model sees only the last
        ``model.config.block_size`` tokens (the context is cropped, never rejected).
    max_new_tokens:
        Number of tokens to append (>= 0).
    temperature:
        Divides the logits; a finite number > 0. Below 1 sharpens, above 1
        flattens; a tiny value (1e-45) samples greedily.
    top_k:
        Sample only among the ``top_k`` likeliest tokens (>= 1); ``None`` keeps all.
    generator:
        A ``torch.Generator`` on the model's device: the same seed gives the same text.

    Returns
    -------
    (B, T + max_new_tokens) int64: the context followed by the sampled tokens.

    See chapter 3, "The forward pass" (book/03_forward.ipynb).
    """
    temperature, top_k = _check_sampling(temperature, top_k)
    max_new_tokens = non_negative_int("max_new_tokens", max_new_tokens)
    idx = _context(idx)
    block_size = model_block_size(model)
    with evaluating(model):
        for _ in range(max_new_tokens):
            context = idx if block_size is None else idx[:, -block_size:]  # (B, <= block_size)
            logits = model(context)[:, -1, :]  # (B, V)
            probs = _probs(logits, temperature, top_k)  # (B, V)
            nxt = torch.multinomial(probs, num_samples=1, generator=generator)  # (B, 1)
            idx = torch.cat([idx, nxt], dim=1)  # (B, T + 1)
    return idx


def generate(
    model: nn.Module,
    tokenizer: Any,
    prompt: str,
    max_new_tokens: int = 100,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
    include_prompt: bool = True,
) -> str:
    """Continue ``prompt`` with text sampled from ``model``.

    Parameters
    ----------
    model:
        A language model (e.g. :class:`slmbook.model.GPT`).
    tokenizer:
        Has ``encode(str) -> list[int]`` and ``decode(list[int]) -> str`` (the one the
        model was trained with).
    prompt:
        Non-empty text to continue; longer than the block size is fine (cropped).
    max_new_tokens, temperature, top_k, generator:
        As in :func:`generate_ids`.
    include_prompt:
        Return the prompt followed by the continuation (default), or only the continuation.

    Returns
    -------
    str

    See chapter 3, "The forward pass" (book/03_forward.ipynb).
    """
    _check_vocabularies(model, tokenizer)
    ids = tokenizer.encode(prompt)
    if len(ids) == 0:
        raise ValueError("prompt encodes to no tokens; give at least one character to continue")
    idx = torch.tensor([ids], dtype=torch.long, device=model_device(model))  # (1, T)
    out = generate_ids(
        model, idx, max_new_tokens, temperature=temperature, top_k=top_k, generator=generator
    )
    new = out[0].tolist() if include_prompt else out[0, len(ids) :].tolist()
    return tokenizer.decode(new)
