"""Running a model for measurement rather than training.

Evaluation, sampling and the inspection tools of chapters 2 and 3 all run the
model the same way: in eval mode (dropout off), without recording gradients,
and leaving the model as they found it.

See chapter 3, "The forward pass" (book/03_forward.ipynb).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

__all__ = ["evaluating", "forward_with_hooks"]


@contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode and ``torch.no_grad()`` inside the block, the previous modes restored after.

    Every submodule's own train/eval flag is put back as it was, even if the
    block raises, so a model that was half-frozen in eval mode stays so.

    Examples
    --------
    >>> model = nn.Dropout(0.5)
    >>> with evaluating(model):
    ...     model.training
    False
    >>> model.training
    True

    See chapter 3, "The forward pass" (book/03_forward.ipynb).
    """
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        for module, was_training in modes:
            module.training = was_training


Hook = Callable[[nn.Module, tuple, torch.Tensor], None]


def forward_with_hooks(
    model: nn.Module, idx: torch.Tensor, hooks: Sequence[tuple[nn.Module, Hook]]
) -> torch.Tensor:
    """Run ``model(idx)`` under :func:`evaluating` with forward hooks attached.

    Each ``(module, hook)`` pair is registered with ``register_forward_hook``
    and removed afterwards, even if the forward pass raises. Returns the
    model's output. Used to look inside a model (attention maps, activation
    statistics) without changing it.

    See chapter 2, "Parameters and initialization" (book/02_parameters.ipynb).
    """
    handles = [module.register_forward_hook(hook) for module, hook in hooks]
    try:
        with evaluating(model):
            return model(idx)
    finally:
        for handle in handles:
            handle.remove()
