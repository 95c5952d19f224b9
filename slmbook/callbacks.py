"""What the training loop records and the hooks it calls.

:class:`History` holds everything :func:`slmbook.training.train` measures
(one entry per step, or per evaluation); :class:`Callback` is the base of the
hooks it calls after every step and every evaluation; :class:`SampleCallback`
writes a sample at each evaluation; :class:`EarlyStopping` watches the
validation loss and keeps the best weights.

Taught in chapter 7, "Iterating" (book/07_iterate.ipynb).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from slmbook._checks import finite_float, positive_int
from slmbook.sampling import generate

__all__ = ["Callback", "EarlyStopping", "History", "SampleCallback", "as_callback"]


@dataclass
class History:
    """Everything measured during training, one entry per step or per evaluation.

    Attributes
    ----------
    steps, train_loss, lr, tokens, time:
        Per step: the step number (from 1), the training loss of that step's
        batches (whatever ``loss_fn`` returns; nats per target token by
        default), the learning rate used, the tokens seen so far and the
        seconds elapsed since training began. A batch ``(X, Y)`` counts the
        tokens of X; any other batch its ``num_tokens`` attribute if it has
        one, else the number of elements of its first tensor.
    eval_steps, eval_train_loss, eval_val_loss:
        Per evaluation: the step, and the loss over fixed training and
        validation batches (the same batches at every evaluation).
    samples:
        ``[step, text]`` pairs written by :class:`SampleCallback`.
    stop_reason:
        ``"max_steps"``, ``"early_stopping"``, ``"time_limit"``,
        ``"interrupted"`` (Ctrl-C) or ``"terminated"`` (SIGTERM).
    dtype:
        The precision of the forward passes (what ``dtype="auto"`` chose).

    Examples
    --------
    >>> h = History(eval_steps=[10, 20], eval_val_loss=[2.5, 2.1])
    >>> h.best_step
    20

    See chapter 7, "Iterating" (book/07_iterate.ipynb).
    """

    steps: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    time: list[float] = field(default_factory=list)
    eval_steps: list[int] = field(default_factory=list)
    eval_train_loss: list[float] = field(default_factory=list)
    eval_val_loss: list[float] = field(default_factory=list)
    samples: list[list] = field(default_factory=list)
    stop_reason: str = ""
    dtype: str = ""

    def __repr__(self) -> str:
        last = f", val_loss={self.eval_val_loss[-1]:.4f}" if self.eval_val_loss else ""
        return f"History(steps={len(self.steps)}{last}, stop_reason={self.stop_reason!r})"

    @property
    def best_step(self) -> int | None:
        """The step of the lowest validation loss (None before any evaluation)."""
        if not self.eval_val_loss:
            return None
        return self.eval_steps[min(range(len(self.eval_val_loss)), key=self.eval_val_loss.__getitem__)]

    def to_dict(self) -> dict[str, Any]:
        """Plain lists and numbers (JSON-safe)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> History:
        """The inverse of :meth:`to_dict`."""
        return cls(**{k: list(v) if isinstance(v, (list, tuple)) else v for k, v in d.items()})

    def plot(self, ax: Any = None, *, title: str = "Training and validation loss") -> Any:
        """Draw the per-step training loss and the evaluated losses; return the Axes."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(7, 4))
        ax.plot(self.steps, self.train_loss, color="tab:blue", alpha=0.25, lw=1,
                label="train (one batch)")
        ax.plot(self.eval_steps, self.eval_train_loss, "o-", color="tab:blue", ms=3,
                label="train (evaluated)")
        ax.plot(self.eval_steps, self.eval_val_loss, "o-", color="tab:orange", ms=3,
                label="validation")
        ax.set(xlabel="step", ylabel="loss (nats per token)", title=title)
        ax.legend()
        return ax


class Callback:
    """Hooks called by :func:`slmbook.training.train`; override the ones you need.

    A plain function ``fn(history, model)`` passed in ``callbacks`` is called
    like :meth:`on_eval` (see :func:`as_callback`).

    See chapter 7, "Iterating" (book/07_iterate.ipynb).
    """

    def on_step(self, history: History, model: nn.Module) -> None:
        """After every optimisation step (``history.steps[-1]`` is the step)."""

    def on_eval(self, history: History, model: nn.Module) -> None:
        """After every evaluation (``history.eval_val_loss[-1]`` is the new value)."""


class _EvalFunction(Callback):
    def __init__(self, fn: Callable[[History, nn.Module], None]) -> None:
        self.fn = fn

    def __repr__(self) -> str:
        return f"_EvalFunction({self.fn!r})"

    def on_eval(self, history: History, model: nn.Module) -> None:
        self.fn(history, model)


def as_callback(hook: Callback | Callable[[History, nn.Module], None]) -> Callback:
    """``hook`` itself if it is a :class:`Callback`, else a Callback calling it after each evaluation.

    >>> as_callback(lambda history, model: None).on_step(History(), None)

    See chapter 7, "Iterating" (book/07_iterate.ipynb).
    """
    if isinstance(hook, Callback):
        return hook
    if not callable(hook):
        raise TypeError(f"callbacks must be Callback objects or functions fn(history, model), "
                        f"got {hook!r}")
    return _EvalFunction(hook)


class SampleCallback(Callback):
    """Generate a sample at every evaluation and store it in ``history.samples``.

    The same seed is used every time, so the samples differ only because the
    model does. Sampling uses its own generator and leaves training's random
    state alone. ``echo=True`` also prints each sample (above the progress bar).

    See chapter 7, "Iterating" (book/07_iterate.ipynb).
    """

    def __init__(self, tokenizer: Any, prompt: str = "\n", max_new_tokens: int = 100, *,
                 temperature: float = 1.0, top_k: int | None = None, seed: int = 0,
                 echo: bool = False) -> None:
        self.tokenizer, self.prompt = tokenizer, prompt
        self.max_new_tokens = positive_int("max_new_tokens", max_new_tokens)
        self.temperature, self.top_k, self.seed, self.echo = temperature, top_k, seed, echo

    def __repr__(self) -> str:
        return f"SampleCallback(prompt={self.prompt!r}, max_new_tokens={self.max_new_tokens})"

    def on_eval(self, history: History, model: nn.Module) -> None:
        text = generate(model, self.tokenizer, self.prompt, self.max_new_tokens,
                        temperature=self.temperature, top_k=self.top_k,
                        generator=torch.Generator().manual_seed(self.seed))
        step = history.steps[-1] if history.steps else 0
        history.samples.append([step, text])
        if self.echo:
            from tqdm.auto import tqdm

            tqdm.write(f"--- sample at step {step} ---\n{text}\n")


class EarlyStopping:
    """Stop when the validation loss has not improved for ``patience`` evaluations.

    An evaluation improves when its validation loss is below the best so far
    by more than ``min_delta``. With ``restore_best=True`` the model's weights
    at the best evaluation are kept (on the CPU) and put back when training
    ends, whether or not it stopped early.

    Examples
    --------
    >>> es = EarlyStopping(patience=1, restore_best=False)
    >>> es.update(2.0, None, step=10), es.update(2.5, None, step=20)
    (False, True)

    See chapter 7, "Iterating" (book/07_iterate.ipynb).
    """

    def __init__(self, patience: int = 3, min_delta: float = 0.0, *,
                 restore_best: bool = True) -> None:
        self.patience = positive_int("patience", patience)
        self.min_delta = finite_float("min_delta", min_delta)
        if self.min_delta < 0:
            raise ValueError(f"min_delta must be >= 0, got {min_delta!r}")
        self.restore_best = bool(restore_best)
        self.best_loss, self.best_step, self.bad_evals = math.inf, -1, 0
        self.best_state: dict[str, torch.Tensor] | None = None

    def __repr__(self) -> str:
        return (f"EarlyStopping(patience={self.patience}, min_delta={self.min_delta}, "
                f"best_loss={self.best_loss:.4f}, best_step={self.best_step})")

    def update(self, val_loss: float, model: nn.Module, step: int) -> bool:
        """Record one evaluation; return True when training should stop."""
        if val_loss < self.best_loss - self.min_delta:
            self.best_loss, self.best_step, self.bad_evals = val_loss, step, 0
            if self.restore_best:
                self.best_state = {k: v.detach().to("cpu", copy=True)
                                   for k, v in model.state_dict().items()}
        else:
            self.bad_evals += 1
        return self.bad_evals >= self.patience

    def restore(self, model: nn.Module) -> None:
        """Put the best weights back into ``model`` (if they were kept)."""
        if self.restore_best and self.best_state is not None:
            model.load_state_dict(self.best_state)

    def state_dict(self) -> dict[str, Any]:
        """The state a checkpoint stores to resume exactly."""
        return {"best_loss": self.best_loss, "best_step": self.best_step,
                "bad_evals": self.bad_evals, "best_state": self.best_state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """The inverse of :meth:`state_dict`."""
        self.best_loss, self.best_step = state["best_loss"], state["best_step"]
        self.bad_evals, self.best_state = state["bad_evals"], state["best_state"]
