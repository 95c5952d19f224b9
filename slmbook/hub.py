"""Loading public GPT-2 weights into slmbook's :class:`~slmbook.model.GPT`.

slmbook's GPT uses the same parameter names as OpenAI's GPT-2 as published
through Hugging Face ``transformers`` (``transformer.wte``,
``transformer.h.0.attn.c_attn``, ...), the same GELU (tanh approximation) and
the same LayerNorm epsilon. Loading GPT-2 is therefore three small steps:

1. translate the Hugging Face config into :class:`~slmbook.model.GPTConfig`'s
   arguments (``n_positions`` is our ``block_size``);
2. match the parameters by name, skipping the causal-mask buffers that old
   checkpoints store next to the weights (``attn.bias``, ``attn.masked_bias``);
3. transpose the four matrices that GPT-2 stores as ``Conv1D`` (input x output)
   where ``torch.nn.Linear`` stores (output x input), and check every shape.

:meth:`slmbook.model.GPT.from_pretrained` runs the three steps. This module
never imports :mod:`slmbook.model` (the model imports it), so there is no
import cycle. ``transformers`` is an optional dependency (``pip install
slmbook[hf]``) and is imported only inside :func:`load_hf_model`.

See chapter 8, "Starting from a pretrained model" (book/08_pretrained.ipynb).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

__all__ = ["GPT2_NAMES", "config_from_hf", "convert_state_dict", "load_hf_model"]

#: The public GPT-2 checkpoints (124M, 355M, 774M and 1.5B parameters).
GPT2_NAMES: tuple[str, ...] = ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl")

_HUB_ORG = "openai-community"
# GPT-2's Conv1D layers store weights as (in, out); nn.Linear stores (out, in).
_TRANSPOSED = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
# Causal-mask buffers, not parameters, present in older GPT-2 checkpoints.
_BUFFERS = (".attn.bias", ".attn.masked_bias")
# Hugging Face's names for the tanh approximation of GELU, the one slmbook uses.
_GELU_TANH = ("gelu_new", "gelu_pytorch_tanh")


def _import_transformers() -> Any:
    try:
        import transformers
    except ImportError:
        raise ImportError(
            "loading GPT-2 weights needs the optional dependency 'transformers'; install it "
            "with `pip install slmbook[hf]` (or `pip install transformers`)"
        ) from None
    return transformers


def _resolve(name_or_path: str | Path) -> str:
    """A local folder, or the Hugging Face Hub id of a known GPT-2 name."""
    path = Path(name_or_path)
    if path.is_dir():
        return str(path)
    name = str(name_or_path)
    short = name.removeprefix(f"{_HUB_ORG}/")
    if short in GPT2_NAMES:
        return f"{_HUB_ORG}/{short}"
    raise ValueError(
        f"unknown GPT-2 model {name!r}: it is neither a local folder nor one of "
        f"{', '.join(GPT2_NAMES)}; pass one of these names, or a folder written by "
        "transformers' `save_pretrained`"
    )


def config_from_hf(hf_config: Any) -> dict[str, Any]:
    """Translate a ``transformers.GPT2Config`` into the arguments of slmbook's ``GPTConfig``.

    ``n_positions`` becomes ``block_size``; ``n_embd``, ``n_layer``, ``n_head``
    and ``vocab_size`` keep their names; GPT-2 has biases (``bias=True``) and
    dropout is switched off (``dropout=0.0``), as for inference or fine-tuning.

    Raises
    ------
    ValueError
        If the checkpoint uses an activation other than GELU's tanh
        approximation, or a LayerNorm epsilon other than 1e-5, which slmbook's
        GPT would not reproduce.

    Examples
    --------
    >>> from types import SimpleNamespace
    >>> hf = SimpleNamespace(vocab_size=50257, n_positions=1024, n_layer=12, n_head=12, n_embd=768)
    >>> config_from_hf(hf)["block_size"]
    1024

    See chapter 8, "Starting from a pretrained model" (book/08_pretrained.ipynb).
    """
    activation = getattr(hf_config, "activation_function", "gelu_new")
    if activation not in _GELU_TANH:
        raise ValueError(
            f"activation_function={activation!r} is not supported: slmbook's GPT uses GELU with "
            f"the tanh approximation ({' or '.join(_GELU_TANH)} in transformers)"
        )
    eps = float(getattr(hf_config, "layer_norm_epsilon", 1e-5))
    if abs(eps - 1e-5) > 1e-12:
        raise ValueError(
            f"layer_norm_epsilon={eps} is not supported: slmbook's GPT uses GPT-2's 1e-5"
        )
    return {
        "vocab_size": hf_config.vocab_size,
        "block_size": hf_config.n_positions,
        "n_layer": hf_config.n_layer,
        "n_head": hf_config.n_head,
        "n_embd": hf_config.n_embd,
        "dropout": 0.0,
        "bias": True,
    }


def convert_state_dict(
    hf_state: Mapping[str, torch.Tensor], model: torch.nn.Module
) -> dict[str, torch.Tensor]:
    """Map a Hugging Face GPT-2 state dict onto ``model``'s parameter names.

    Parameters
    ----------
    hf_state:
        The state dict of a ``GPT2LMHeadModel`` (keys ``transformer.*`` and
        ``lm_head.weight``) or of a ``GPT2Model`` (the same keys without the
        ``transformer.`` prefix).
    model:
        The slmbook GPT that will receive the weights.

    Returns
    -------
    dict
        A state dict for ``model.load_state_dict``: the ``Conv1D`` matrices
        transposed to ``nn.Linear`` layout, mask buffers dropped, the output
        layer tied to ``transformer.wte.weight``.

    Raises
    ------
    ValueError
        If a parameter is missing or unexpected, if a shape differs (the message
        names the parameter and both shapes), or if the checkpoint's output
        layer is not tied to its token embedding.

    See chapter 8, "Starting from a pretrained model" (book/08_pretrained.ipynb).
    """
    target = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    lm_head = None
    for key, value in hf_state.items():
        if key == "lm_head.weight":
            lm_head = value
            continue
        if key.endswith(_BUFFERS):
            continue
        name = key if key.startswith("transformer.") else f"transformer.{key}"
        if name not in target:
            raise ValueError(
                f"unexpected parameter {key!r} in the GPT-2 checkpoint: slmbook's GPT has no "
                f"parameter {name!r}"
            )
        if name.endswith(_TRANSPOSED):
            value = value.t()
        if tuple(value.shape) != tuple(target[name].shape):
            raise ValueError(
                f"shape mismatch for {name!r}: the checkpoint has {tuple(value.shape)}"
                f"{' (after transposing its Conv1D weight)' if name.endswith(_TRANSPOSED) else ''}"
                f", slmbook's GPT expects {tuple(target[name].shape)}"
            )
        out[name] = value.detach().clone()
    if "transformer.wte.weight" in out:
        wte = out["transformer.wte.weight"]
        if lm_head is not None and (
            lm_head.shape != wte.shape or not torch.equal(lm_head, wte)
        ):
            raise ValueError(
                "the checkpoint's lm_head.weight is not tied to transformer.wte.weight; "
                "slmbook's GPT (like GPT-2) shares them"
            )
        out["lm_head.weight"] = wte
    missing = sorted(set(target) - set(out))
    if missing:
        raise ValueError(f"the GPT-2 checkpoint lacks parameters {missing}")
    return out


def load_hf_model(name_or_path: str | Path, *, local_files_only: bool = False) -> Any:
    """The ``transformers.GPT2LMHeadModel`` of a GPT-2 name or a local folder.

    Parameters
    ----------
    name_or_path:
        One of :data:`GPT2_NAMES` (``"gpt2"`` is the 124M model; downloaded
        once by ``transformers`` into its cache, so this needs internet the
        first time), optionally prefixed ``"openai-community/"``, or a local
        folder written by ``save_pretrained``.
    local_files_only:
        Never touch the network: load from the local folder or from
        ``transformers``' cache only (raises ``OSError`` if absent).

    Raises
    ------
    ImportError
        If ``transformers`` is not installed (``pip install slmbook[hf]``).
    ValueError
        For an unknown name.

    Examples
    --------
    >>> from slmbook.model import GPT
    >>> model = GPT.from_pretrained("gpt2")  # doctest: +SKIP

    See chapter 8, "Starting from a pretrained model" (book/08_pretrained.ipynb).
    """
    source = _resolve(name_or_path)
    transformers = _import_transformers()
    return transformers.GPT2LMHeadModel.from_pretrained(source, local_files_only=local_files_only)
