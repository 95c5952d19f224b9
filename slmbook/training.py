"""The training loop: forward, loss, backward, update, again and again.

:func:`train` repeats the four steps of chapters 3 to 6 on batches drawn
from the training data, evaluates the training and validation loss every
``eval_every`` steps, and records everything in a :class:`History`. Around
that core it offers what a real run needs: a learning-rate schedule,
gradient clipping and accumulation, a progress bar, callbacks (for example
:class:`SampleCallback`, which writes a sample at every evaluation),
:class:`EarlyStopping`, and checkpoints that make a run resumable exactly.

Data can be a stream of token ids (random windows are drawn, as in chapter 1)
or any source of ``(X, Y)`` batches: a callable ``fn(generator) -> (X, Y)``
or an iterable of batches. Targets equal to ``-100`` are not scored, so a
batch can ask the model to predict only some positions (an answer, say).

Taught in chapter 7, "Iterating" (book/07_iterate.ipynb).
"""

from __future__ import annotations

import contextlib
import itertools
import math
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from slmbook import checkpoints
from slmbook.data import get_batch

__all__ = [
    "IGNORE_INDEX",
    "Callback",
    "EarlyStopping",
    "History",
    "SampleCallback",
    "make_optimizer",
    "train",
]

IGNORE_INDEX = -100  # targets with this value are not scored (torch's convention)
Batch = tuple[torch.Tensor, torch.Tensor]
BatchSource = torch.Tensor | Callable[[torch.Generator], Batch] | Iterable[Batch]


@dataclass
class History:
    """Everything measured during training, one entry per step or per evaluation.

    Attributes
    ----------
    steps, train_loss, lr, tokens, time:
        Per step: the step number (from 1), the training loss of that step's
        batch (nats per target token), the learning rate used, the tokens
        seen so far and the seconds elapsed since training began.
    eval_steps, eval_train_loss, eval_val_loss:
        Per evaluation: the step, and the loss over fixed training and
        validation batches (the same batches at every evaluation).
    samples:
        ``[step, text]`` pairs written by :class:`SampleCallback`.
    stop_reason:
        ``"max_steps"``, ``"early_stopping"``, ``"time_limit"`` or ``"interrupted"``.

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
    """Hooks called by :func:`train`; override the ones you need.

    A plain function ``fn(history, model)`` passed in ``callbacks`` is called
    like :meth:`on_eval`.
    """

    def on_step(self, history: History, model: nn.Module) -> None:
        """After every optimisation step (``history.steps[-1]`` is the step)."""

    def on_eval(self, history: History, model: nn.Module) -> None:
        """After every evaluation (``history.eval_val_loss[-1]`` is the new value)."""


class SampleCallback(Callback):
    """Generate a sample at every evaluation and store it in ``history.samples``.

    The same seed is used every time, so the samples differ only because the
    model does. Sampling uses its own generator and leaves training's random
    state alone. ``echo=True`` also prints each sample (above the progress bar).
    """

    def __init__(self, tokenizer: Any, prompt: str = "\n", max_new_tokens: int = 100, *,
                 temperature: float = 1.0, top_k: int | None = None, seed: int = 0,
                 echo: bool = False) -> None:
        self.tokenizer, self.prompt, self.max_new_tokens = tokenizer, prompt, max_new_tokens
        self.temperature, self.top_k, self.seed, self.echo = temperature, top_k, seed, echo

    def __repr__(self) -> str:
        return f"SampleCallback(prompt={self.prompt!r}, max_new_tokens={self.max_new_tokens})"

    def on_eval(self, history: History, model: nn.Module) -> None:
        from slmbook.sampling import generate

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

    See chapter 7, "Iterating" (book/07_iterate.ipynb).
    """

    def __init__(self, patience: int = 3, min_delta: float = 0.0, *,
                 restore_best: bool = True) -> None:
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
            raise ValueError(f"patience must be a positive int, got {patience!r}")
        if not min_delta >= 0:
            raise ValueError(f"min_delta must be >= 0, got {min_delta!r}")
        self.patience, self.min_delta, self.restore_best = patience, float(min_delta), restore_best
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
        return {"best_loss": self.best_loss, "best_step": self.best_step,
                "bad_evals": self.bad_evals, "best_state": self.best_state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best_loss, self.best_step = state["best_loss"], state["best_step"]
        self.bad_evals, self.best_state = state["bad_evals"], state["best_state"]


def make_optimizer(model: nn.Module, *, lr: float = 1e-3, weight_decay: float = 0.1,
                   betas: tuple[float, float] = (0.9, 0.99)) -> torch.optim.Optimizer:
    """slmbook's AdamW, with weight decay on matrices only (not biases, LayerNorm gains).

    See chapter 6, "Updating the parameters" (book/06_update.ipynb).
    """
    from slmbook.optim import AdamW

    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    return AdamW([g for g in groups if g["params"]], lr=lr, betas=betas)


# ----------------------------------------------------------------------------- the loop


def train(
    model: nn.Module,
    train_data: BatchSource,
    val_data: BatchSource | None,
    *,
    max_steps: int | None = None,
    epochs: float | None = None,
    batch_size: int = 12,
    block_size: int | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    lr: float = 1e-3,
    weight_decay: float = 0.1,
    schedule: str | Any | None = "cosine",
    warmup_steps: int | None = None,
    min_lr_ratio: float = 0.1,
    eval_every: int = 100,
    eval_batches: int | None = 20,
    grad_clip: float | None = 1.0,
    grad_accum_steps: int = 1,
    early_stopping: EarlyStopping | None = None,
    callbacks: Sequence[Callback | Callable[[History, nn.Module], None]] = (),
    checkpoint_path: str | Path | None = None,
    checkpoint_every: int | None = None,
    resume_from: str | Path | None = None,
    tokenizer: Any | None = None,
    seed: int = 0,
    generator: torch.Generator | None = None,
    time_limit: float | None = None,
    progress: bool = True,
    meta: dict[str, Any] | None = None,
) -> History:
    """Train ``model`` on next-token prediction and return what was measured.

    Each step draws ``grad_accum_steps`` batches, computes the cross-entropy
    ``F.cross_entropy(logits.view(-1, V), Y.view(-1), ignore_index=-100)``,
    back-propagates, clips the gradient norm, updates the parameters and
    advances the schedule.

    Parameters
    ----------
    model:
        Maps ``X: (B, T) int64`` to logits (B, T, V); trained in place.
    train_data, val_data:
        Token ids, a 1-D int64 tensor (N,) from which random windows are
        drawn (:func:`slmbook.data.get_batch`); or a callable
        ``fn(generator) -> (X, Y)``; or an iterable of ``(X, Y)`` batches
        (cycled). X and Y are (B, T) int64; Y may hold ``-100`` (not scored).
        ``val_data=None`` skips validation.
    max_steps, epochs:
        How long to train: give exactly one. An epoch is as many tokens as
        the training ids hold (or one pass over a sized iterable).
    batch_size, block_size:
        B and T of the random windows (T defaults to ``model.config.block_size``).
    optimizer, lr, weight_decay:
        An optimizer, or ``None`` for :func:`make_optimizer` (slmbook's AdamW).
    schedule, warmup_steps, min_lr_ratio:
        ``"cosine"``, ``"constant"``, ``None`` (no schedule) or a torch
        learning-rate scheduler attached to ``optimizer``. Warmup defaults to
        ``min(100, steps // 10)``.
    eval_every, eval_batches:
        Evaluate every ``eval_every`` steps (and after the last step) on
        ``eval_batches`` fixed batches of each split (``None``: the whole
        validation split, deterministically).
    grad_clip, grad_accum_steps:
        Maximal gradient norm (``None``: no clipping); batches per step.
    early_stopping:
        An :class:`EarlyStopping`, updated with each validation loss. The
        returned model holds its best weights; the final checkpoint holds the
        last ones (so that it stays exactly resumable).
    callbacks:
        :class:`Callback` objects, or functions ``fn(history, model)`` called
        after each evaluation.
    checkpoint_path, checkpoint_every:
        Where to save a checkpoint every ``checkpoint_every`` steps and at the
        end; a ``{step}`` in the path keeps one file per step.
    resume_from:
        A checkpoint written by ``train``: model, optimizer, schedule, step,
        random states and history are restored, and the run continues exactly
        as if it had never stopped (same losses, bit for bit, on the CPU).
    tokenizer, meta:
        Stored in checkpoints (``meta`` as metadata, e.g. the corpus hash).
    seed, generator:
        Seed of the batch generator (or a generator to use); evaluation
        batches are drawn once from ``seed + 1``.
    time_limit:
        Stop after this many seconds (checked after each step).
    progress:
        Show a tqdm progress bar (notebook-aware).

    Returns
    -------
    History

    Raises
    ------
    ValueError
        For a bad argument (the message names it), for example
        ``max_steps <= 0`` or a validation split shorter than one window.
    OSError
        If ``checkpoint_path`` cannot be written (checked before training).
    FloatingPointError
        If the loss becomes NaN or infinite; the parameters are not updated
        with it and the last checkpoint on disk is kept.

    Notes
    -----
    **Ctrl-C** (SIGINT, or "interrupt the kernel" in Jupyter) stops training
    cleanly at the end of the current step: a checkpoint is written (when
    ``checkpoint_path`` is set) and the history is returned with
    ``stop_reason == "interrupted"``; resume with ``resume_from``. A second
    Ctrl-C aborts at once with ``KeyboardInterrupt``.

    See chapter 7, "Iterating" (book/07_iterate.ipynb).
    """
    run = _Run(model, train_data, val_data, max_steps=max_steps, epochs=epochs,
               batch_size=batch_size, block_size=block_size, optimizer=optimizer, lr=lr,
               weight_decay=weight_decay, schedule=schedule, warmup_steps=warmup_steps,
               min_lr_ratio=min_lr_ratio, eval_every=eval_every, eval_batches=eval_batches,
               grad_clip=grad_clip, grad_accum_steps=grad_accum_steps,
               early_stopping=early_stopping, checkpoint_path=checkpoint_path,
               checkpoint_every=checkpoint_every, tokenizer=tokenizer, seed=seed,
               generator=generator, time_limit=time_limit, meta=meta)
    if resume_from is not None:
        run.resume(resume_from)
    hooks = [cb if isinstance(cb, Callback) else _EvalFunction(cb) for cb in callbacks]
    history, stop = run.history, None
    from tqdm.auto import tqdm

    bar = tqdm(total=run.max_steps, initial=run.step, disable=not progress, desc="training")
    model.train()
    start = time.perf_counter() - (history.time[-1] if history.time else 0.0)
    with _sigint_flag() as interrupted, bar:
        while run.step < run.max_steps and stop is None:
            lr_now = run.optimizer.param_groups[0]["lr"]
            loss = _forward_backward(model, run.draw, grad_accum_steps)   # chapters 3 to 5
            if not math.isfinite(loss):
                raise FloatingPointError(run.non_finite_message(loss))
            _update(model, run.optimizer, run.scheduler, grad_clip)        # chapter 6
            run.step += 1
            history.steps.append(run.step)
            history.train_loss.append(loss)
            history.lr.append(lr_now)
            history.tokens.append((history.tokens[-1] if history.tokens else 0) + run.tokens_per_step)
            history.time.append(time.perf_counter() - start)
            bar.update(1)
            for hook in hooks:
                hook.on_step(history, model)
            if run.step % eval_every == 0 or run.step == run.max_steps:
                stop = run.evaluate(hooks)
                bar.set_postfix(train=f"{history.eval_train_loss[-1]:.3f}",
                                val=f"{history.eval_val_loss[-1]:.3f}" if val_data is not None else "-")
            if checkpoint_every and run.step % checkpoint_every == 0:
                run.save()
            if stop is None and interrupted():
                stop = "interrupted"
            if stop is None and time_limit is not None and history.time[-1] >= time_limit:
                stop = "time_limit"
    if history.steps and stop in ("time_limit", None) and history.eval_steps[-1:] != [run.step]:
        run.evaluate(hooks)  # the final figures, when the last step was not evaluated
    history.stop_reason = stop or "max_steps"
    if run.checkpoint_path is not None:
        run.save()
    if early_stopping is not None:
        early_stopping.restore(model)
    return history


def _forward_backward(model: nn.Module, draw: Callable[[], Batch], accum: int) -> float:
    """Accumulate the gradient of the mean loss over ``accum`` batches; return that loss."""
    total = 0.0
    for _ in range(accum):
        x, y = draw()  # (B, T), (B, T)
        logits = model(x)  # (B, T, V)
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), y.reshape(-1),
                               ignore_index=IGNORE_INDEX)
        (loss / accum).backward()
        total += loss.item() / accum
    return total


def _update(model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
            grad_clip: float | None) -> None:
    if grad_clip is not None:
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        if not torch.isfinite(norm):
            raise FloatingPointError(
                f"the gradient norm is {norm.item()}; training stopped before updating the "
                "parameters (the last checkpoint on disk is kept). Lower the learning rate")
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if scheduler is not None:
        scheduler.step()


class _EvalFunction(Callback):
    def __init__(self, fn: Callable[[History, nn.Module], None]) -> None:
        if not callable(fn):
            raise TypeError(f"callbacks must be Callback objects or functions, got {fn!r}")
        self.fn = fn

    def on_eval(self, history: History, model: nn.Module) -> None:
        self.fn(history, model)


@contextlib.contextmanager
def _sigint_flag() -> Iterator[Callable[[], bool]]:
    """Turn the first Ctrl-C into a flag read between steps; a second one interrupts."""
    hits: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False  # signals only reach the main thread
        return

    def handler(signum: int, frame: Any) -> None:
        hits.append(signum)
        if len(hits) > 1:
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield lambda: bool(hits)
    finally:
        signal.signal(signal.SIGINT, previous)


# ----------------------------------------------------------------------------- set-up


def _positive_int(name: str, value: Any, *, optional: bool = False) -> None:
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


class _Source:
    """Draws training batches from token ids, a callable or an iterable, and counts them."""

    def __init__(self, data: BatchSource, name: str, batch_size: int, block_size: int,
                 generator: torch.Generator, device: torch.device) -> None:
        self.data, self.name, self.generator, self.device = data, name, generator, device
        self.batch_size, self.block_size, self.consumed = batch_size, block_size, 0
        self._iter: Iterator[Batch] | None = None
        if isinstance(data, torch.Tensor):
            if data.ndim != 1:
                raise ValueError(f"{name} must be 1-D token ids (N,), got shape {tuple(data.shape)}")
            if len(data) < block_size + 1:
                raise ValueError(
                    f"{name} has {len(data)} tokens, but a window of block_size={block_size} "
                    f"needs {block_size + 1}; the split is empty or too short: use more data, "
                    "a larger split fraction or a smaller block_size")
        elif not callable(data) and not isinstance(data, Iterable):
            raise TypeError(f"{name} must be token ids, a callable or an iterable of (X, Y), "
                            f"got {type(data).__name__}")

    def __call__(self) -> Batch:
        self.consumed += 1
        if isinstance(self.data, torch.Tensor):
            x, y = get_batch(self.data, self.batch_size, self.block_size, self.generator)
        elif callable(self.data):
            x, y = self.data(self.generator)
        else:
            x, y = self._next()
        return x.to(self.device), y.to(self.device)

    def _next(self) -> Batch:
        for _ in range(2):
            if self._iter is None:
                self._iter = iter(self.data)
            batch = next(self._iter, None)
            if batch is not None:
                return batch
            self._iter = None  # exhausted: start the next pass
        raise ValueError(f"{self.name} is an empty iterable: it yields no (X, Y) batches")

    def skip(self, n: int) -> None:
        """Fast-forward an iterable source by ``n`` batches (for resuming)."""
        if not isinstance(self.data, torch.Tensor) and not callable(self.data):
            for _ in range(n):
                self._next()
        self.consumed = n

    def steps_per_epoch(self, accum: int) -> int:
        if isinstance(self.data, torch.Tensor):
            return max(1, math.ceil(len(self.data) / (self.batch_size * self.block_size * accum)))
        if hasattr(self.data, "__len__"):
            return max(1, len(self.data) // accum)
        raise ValueError(f"epochs needs a sized {self.name} (token ids or a list of batches); "
                         "pass max_steps instead")

    def fixed_batches(self, n: int | None, seed: int) -> Any:
        """The batches every evaluation uses (drawn once)."""
        g = torch.Generator().manual_seed(seed)
        if isinstance(self.data, torch.Tensor):
            if n is None:
                return self.data.to(self.device)
            return [tuple(t.to(self.device) for t in
                          get_batch(self.data, self.batch_size, self.block_size, g))
                    for _ in range(n)]
        if callable(self.data):
            if n is None:
                raise ValueError(f"eval_batches=None needs token ids; {self.name} is a callable")
            return [self.data(g) for _ in range(n)]
        batches = list(itertools.islice(self.data, n))
        if not batches:
            raise ValueError(f"{self.name} is an empty iterable: it yields no (X, Y) batches")
        return batches


class _Run:
    """The state of one training run: data sources, optimizer, schedule, step, history."""

    def __init__(self, model: nn.Module, train_data: BatchSource, val_data: BatchSource | None,
                 **opts: Any) -> None:
        self.model, self.opts = model, opts
        for name in ("batch_size", "eval_every", "grad_accum_steps"):
            _positive_int(name, opts[name])
        for name in ("max_steps", "eval_batches", "checkpoint_every", "warmup_steps"):
            _positive_int(name, opts[name], optional=True)
        if (opts["max_steps"] is None) == (opts["epochs"] is None):
            raise ValueError("give exactly one of max_steps and epochs, got "
                             f"max_steps={opts['max_steps']!r}, epochs={opts['epochs']!r}")
        if opts["epochs"] is not None and not opts["epochs"] > 0:
            raise ValueError(f"epochs must be > 0, got {opts['epochs']!r}")
        if opts["grad_clip"] is not None and not opts["grad_clip"] > 0:
            raise ValueError(f"grad_clip must be > 0 or None, got {opts['grad_clip']!r}")
        if opts["time_limit"] is not None and not opts["time_limit"] > 0:
            raise ValueError(f"time_limit must be > 0 seconds or None, got {opts['time_limit']!r}")
        if opts["early_stopping"] is not None and val_data is None:
            raise ValueError("early_stopping needs val_data: it watches the validation loss")
        block_size = opts["block_size"] or getattr(getattr(model, "config", None), "block_size", None)
        _positive_int("block_size", block_size)
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        self.generator = opts["generator"] or torch.Generator().manual_seed(opts["seed"])
        self.draw = _Source(train_data, "train_data", opts["batch_size"], block_size,
                            self.generator, device)
        val = (None if val_data is None else
               _Source(val_data, "val_data", opts["batch_size"], block_size, self.generator, device))
        self.max_steps = opts["max_steps"] or max(1, round(
            opts["epochs"] * self.draw.steps_per_epoch(opts["grad_accum_steps"])))
        self.tokens_per_step = opts["batch_size"] * block_size * opts["grad_accum_steps"]
        self.eval_train = self.draw.fixed_batches(opts["eval_batches"] or 20, opts["seed"] + 1)
        self.eval_val = None if val is None else val.fixed_batches(opts["eval_batches"], opts["seed"] + 2)
        self.batch_size, self.block_size = opts["batch_size"], block_size
        self.checkpoint_path = opts["checkpoint_path"]
        if self.checkpoint_path is not None:
            checkpoints.check_writable(self._path(0))
        elif opts["checkpoint_every"] is not None:
            raise ValueError("checkpoint_every needs checkpoint_path")
        self.optimizer = opts["optimizer"] or make_optimizer(
            model, lr=opts["lr"], weight_decay=opts["weight_decay"])
        self.scheduler = self._scheduler(opts["schedule"])
        self.step, self.history, self.last_saved = 0, History(), None

    def _scheduler(self, schedule: Any) -> Any:
        if schedule is None:
            return None
        if isinstance(schedule, str):
            from slmbook.schedules import make_scheduler

            warmup = self.opts["warmup_steps"]
            warmup = min(100, self.max_steps // 10) if warmup is None else warmup
            return make_scheduler(self.optimizer, schedule, warmup_steps=warmup,
                                  max_steps=self.max_steps, min_lr_ratio=self.opts["min_lr_ratio"])
        if getattr(schedule, "optimizer", None) is not self.optimizer:
            raise ValueError("schedule must be a name ('cosine', 'constant'), None, or a scheduler "
                             "built on the optimizer passed as optimizer=")
        return schedule

    def evaluate(self, hooks: Sequence[Callback]) -> str | None:
        """Evaluate both splits, log, call the hooks; return "early_stopping" to stop."""
        from slmbook.losses import estimate_loss

        kw = {"batch_size": self.batch_size, "block_size": self.block_size}
        h = self.history
        h.eval_steps.append(self.step)
        h.eval_train_loss.append(estimate_loss(self.model, self.eval_train, **kw))
        val = math.nan if self.eval_val is None else estimate_loss(self.model, self.eval_val, **kw)
        h.eval_val_loss.append(val)
        for hook in hooks:
            hook.on_eval(h, self.model)
        es = self.opts["early_stopping"]
        if es is not None and es.update(val, self.model, self.step):
            return "early_stopping"
        return None

    def non_finite_message(self, loss: float) -> str:
        kept = (f"the last good checkpoint is {str(self.last_saved)!r}" if self.last_saved
                else "no checkpoint was written")
        return (f"the training loss became {loss} at step {self.step + 1}; training stopped "
                f"before updating the parameters ({kept}). Lower the learning rate (lr="
                f"{self.optimizer.param_groups[0]['lr']:.3g}), keep grad_clip on, or check the "
                "data for targets that are all -100")

    def _path(self, step: int) -> Path:
        return Path(str(self.checkpoint_path).replace("{step}", str(step)))

    def save(self) -> None:
        if not all(torch.isfinite(p).all() for p in self.model.parameters()):
            raise FloatingPointError(
                f"the parameters hold NaN or infinite values at step {self.step}; the checkpoint "
                f"was not saved (the last good one, {str(self.last_saved)!r}, is kept)")
        es = self.opts["early_stopping"]
        state = {"batches_consumed": self.draw.consumed,
                 "early_stopping": es.state_dict() if es is not None else None}
        self.last_saved = checkpoints.save(
            self._path(self.step), self.model, self.optimizer, scheduler=self.scheduler,
            step=self.step, tokenizer=self.opts["tokenizer"], generator=self.generator,
            history=self.history, training_state=state, **(self.opts["meta"] or {}))

    def resume(self, path: str | Path) -> None:
        ckpt = checkpoints.load(path)
        ckpt.restore(self.model, self.optimizer, self.scheduler)
        if ckpt.rng is not None:
            checkpoints.restore_rng_states(ckpt.rng, self.generator)
        self.step, self.last_saved = ckpt.step, Path(path)
        if self.step > self.max_steps:
            raise ValueError(f"checkpoint {str(path)!r} is at step {self.step}, past "
                             f"max_steps={self.max_steps}; raise max_steps to continue")
        self.history = History.from_dict(ckpt.history) if ckpt.history else History()
        state = ckpt.training_state or {}
        self.draw.skip(state.get("batches_consumed", 0))
        es = self.opts["early_stopping"]
        if es is not None and state.get("early_stopping") is not None:
            es.load_state_dict(state["early_stopping"])
