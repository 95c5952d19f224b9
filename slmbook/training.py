"""The training loop: forward, loss, backward, update, again and again.

:func:`train` repeats the four steps of chapters 3 to 6 on batches drawn
from the training data, evaluates the training and validation loss every
``eval_every`` steps, and records everything in a
:class:`~slmbook.callbacks.History`. Its hyperparameters live in one
dataclass, :class:`TrainConfig` (keyword arguments of ``train`` override its
fields). Around that core it offers what a real run needs: a learning-rate
schedule, gradient clipping and accumulation, a progress bar, callbacks,
early stopping, and checkpoints that make a run resumable exactly.

Any model and any loss train through the same loop: a batch may be any
object, and ``loss_fn(model, batch)`` turns it into a scalar loss. The
default, :func:`next_token_loss`, is the cross-entropy of ``model(X)``
against ``Y`` for a batch ``(X, Y)``; the reader of chapter 10 and the joint
retriever-reader training of chapter 11 pass their own.

Taught in chapter 7, "Iterating" (book/07_iterate.ipynb).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from slmbook import _files, checkpoints
from slmbook._checks import (
    finite_float,
    model_block_size,
    model_device,
    non_negative_int,
    positive_float,
    positive_int,
    unit_interval,
)
from slmbook.batches import BatchSource, BatchStream, count_tokens, to_device
from slmbook.callbacks import Callback, EarlyStopping, History, as_callback
from slmbook.inference import evaluating
from slmbook.losses import IGNORE_INDEX
from slmbook.schedules import SCHEDULES, make_scheduler

__all__ = ["TrainConfig", "make_optimizer", "next_token_loss", "to_device", "train"]

LossFn = Callable[[nn.Module, Any], torch.Tensor]
MAX_LR = 10.0  # any larger rate makes every optimizer here diverge at the first step


@dataclass(frozen=True)
class TrainConfig:
    """Every hyperparameter of :func:`train`, validated, each with its reason.

    These are the only defaults: the ``slmbook train`` command builds its
    options from these fields (the help text is each field's ``metadata``).
    ``train(..., lr=3e-4)`` or ``dataclasses.replace(config, lr=3e-4)``
    change one field. Every checkpoint stores :meth:`to_dict`.

    Examples
    --------
    >>> TrainConfig(max_steps=300).lr
    0.001
    >>> TrainConfig(max_steps=0)
    Traceback (most recent call last):
    ...
    ValueError: max_steps must be a positive int, got 0

    See chapter 7, "Iterating" (book/07_iterate.ipynb).
    """

    max_steps: int | None = field(default=None, metadata={
        "help": "optimisation steps to take (give this or epochs)"})
    epochs: float | None = field(default=None, metadata={
        "help": "passes over the training data: as many tokens as the training ids hold, or "
                "one pass over a sized iterable (give this or max_steps)"})
    batch_size: int = field(default=12, metadata={
        "help": "windows per batch drawn from token ids; 12 keeps a step fast on a CPU"})
    block_size: int | None = field(default=None, metadata={
        "help": "length of the windows drawn from token ids (None: the model's "
                "config.block_size, the longest context it accepts)"})
    lr: float = field(default=1e-3, metadata={
        "help": f"peak learning rate of the default AdamW (at most {MAX_LR}); 1e-3 suits small "
                "GPTs"})
    weight_decay: float = field(default=0.1, metadata={
        "help": "AdamW weight decay on matrices (not biases or gains), against overfitting"})
    schedule: str | Any | None = field(default="cosine", metadata={
        "help": "learning rate after the warmup: 'cosine' (decays to min_lr_ratio * lr) or "
                "'constant'; None: no schedule; or a torch scheduler built on optimizer="})
    warmup_steps: int | None = field(default=None, metadata={
        "help": "linear warmup steps, which keep the first noisy updates small (None: "
                "min(100, steps // 10))"})
    min_lr_ratio: float = field(default=0.1, metadata={
        "help": "the cosine schedule ends at lr * min_lr_ratio, in [0, 1]"})
    eval_every: int = field(default=250, metadata={
        "help": "evaluate every N steps and after the last one (an evaluation costs about "
                "2 * eval_batches forward passes)"})
    eval_batches: int | None = field(default=20, metadata={
        "help": "fixed batches per evaluation, the same each time so that evaluations compare "
                "(None: the whole validation split, in order)"})
    grad_clip: float | None = field(default=1.0, metadata={
        "help": "maximal gradient norm, against rare huge steps (None: no clipping)"})
    grad_accum_steps: int = field(default=1, metadata={
        "help": "batches whose gradients add up to one step: a larger batch in the same memory"})
    seed: int = field(default=0, metadata={
        "help": "seed of the batch generator, so that a run repeats exactly; evaluation "
                "batches come from seed + 1 and seed + 2"})
    time_limit: float | None = field(default=None, metadata={
        "help": "stop after this many seconds of this run (None: no limit)"})
    checkpoint_path: str | Path | None = field(default=None, metadata={
        "help": "checkpoint written every checkpoint_every steps and at the end, to resume "
                "or reuse the model; '{step}' in it keeps one file per save (None: none)"})
    checkpoint_every: int | None = field(default=None, metadata={
        "help": "steps between checkpoints, the most work a crash can lose (None: only at "
                "the end)"})
    progress: bool = field(default=True, metadata={"help": "show a progress bar"})

    def __post_init__(self) -> None:
        positive_int("max_steps", self.max_steps, allow_none=True)
        positive_float("epochs", self.epochs, allow_none=True)
        if (self.max_steps is None) == (self.epochs is None):
            raise ValueError("give exactly one of max_steps and epochs, got "
                             f"max_steps={self.max_steps!r}, epochs={self.epochs!r}")
        for name in ("batch_size", "eval_every", "grad_accum_steps"):
            positive_int(name, getattr(self, name))
        for name in ("block_size", "eval_batches", "checkpoint_every"):
            positive_int(name, getattr(self, name), allow_none=True)
        non_negative_int("warmup_steps", self.warmup_steps, allow_none=True)
        positive_float("lr", self.lr, max_value=MAX_LR)
        if finite_float("weight_decay", self.weight_decay) < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        unit_interval("min_lr_ratio", self.min_lr_ratio, closed_right=True)
        positive_float("grad_clip", self.grad_clip, allow_none=True)
        positive_float("time_limit", self.time_limit, allow_none=True)
        if non_negative_int("seed", self.seed) >= 2**64:
            raise ValueError(f"seed must be below 2**64 (torch's generators hold 64 bits), "
                             f"got {self.seed!r}")
        if isinstance(self.schedule, str) and self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; choose one of "
                             f"{sorted(SCHEDULES)} or None")
        if self.schedule is not None and not isinstance(self.schedule, str) and not all(
                hasattr(self.schedule, a) for a in ("step", "state_dict", "optimizer")):
            raise ValueError(f"schedule must be a name {sorted(SCHEDULES)}, None, or a torch "
                             f"scheduler built on optimizer=, got {self.schedule!r}")
        if self.checkpoint_every is not None and self.checkpoint_path is None:
            raise ValueError("checkpoint_every needs checkpoint_path: give the file to write")
        if not isinstance(self.progress, bool):
            raise TypeError(f"progress must be True or False, got {self.progress!r}")

    def checkpoint_file(self, step: int) -> Path | None:
        """The file the checkpoint of ``step`` goes to (``{step}`` in the path filled in)."""
        if self.checkpoint_path is None:
            return None
        return Path(str(self.checkpoint_path).replace("{step}", str(step)))

    def to_dict(self) -> dict[str, Any]:
        """The fields as plain data (a scheduler object as its class name, a path as a str)."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        if d["schedule"] is not None and not isinstance(d["schedule"], str):
            d["schedule"] = f"<{type(d['schedule']).__name__}>"
        if d["checkpoint_path"] is not None:
            d["checkpoint_path"] = str(d["checkpoint_path"])
        return d


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


def next_token_loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """The default ``loss_fn`` of :func:`train`: cross-entropy of ``model(X)`` against ``Y``.

    Parameters
    ----------
    model:
        Maps ``X: (B, T) int64`` to logits (B, T, V).
    batch:
        ``(X, Y)``, both (B, T) int64; targets equal to
        :data:`slmbook.losses.IGNORE_INDEX` (-100) are not scored.

    Returns
    -------
    torch.Tensor
        () the mean over the scored targets, in nats.

    Examples
    --------
    >>> model = nn.Embedding(5, 5)  # (B, T) -> (B, T, 5): logits from the current token only
    >>> x, y = torch.tensor([[0, 1, 2]]), torch.tensor([[1, 2, -100]])
    >>> next_token_loss(model, (x, y)).shape
    torch.Size([])

    See chapter 4, "Computing the loss" (book/04_loss.ipynb).
    """
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        raise TypeError(f"next_token_loss needs a batch (X, Y), got a {type(batch).__name__}; "
                        "pass loss_fn=... to train on other batches")
    x, y = batch
    logits = model(x)  # (B, T, V)
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1),
                           ignore_index=IGNORE_INDEX)


# ----------------------------------------------------------------------------- the loop


def train(model: nn.Module, train_data: BatchSource, val_data: BatchSource | None,
          config: TrainConfig | None = None, *, optimizer: torch.optim.Optimizer | None = None,
          loss_fn: LossFn | None = None, callbacks: Sequence[Callback | Callable] = (),
          early_stopping: EarlyStopping | None = None, resume_from: str | Path | None = None,
          tokenizer: Any | None = None, meta: dict[str, Any] | None = None,
          **overrides: Any) -> History:
    """Train ``model`` and return what was measured.

    Each step draws ``grad_accum_steps`` batches, computes ``loss_fn(model,
    batch)``, back-propagates, clips the gradient norm, updates the
    parameters and advances the schedule.

    Parameters
    ----------
    model:
        Trained in place; with the default loss it maps ``X: (B, T) int64``
        to logits (B, T, V).
    train_data, val_data:
        Token ids, a 1-D int64 tensor (N,) from which random ``(X, Y)``
        windows are drawn (:func:`slmbook.data.get_batch`); or a callable
        ``fn(generator) -> batch``; or an iterable of batches (cycled). A
        batch is any object ``loss_fn`` understands; its tensors are moved to
        the model's device (:func:`to_device`). ``val_data=None`` skips
        validation.
    config:
        A :class:`TrainConfig` (default: ``TrainConfig(**overrides)``).
    optimizer:
        An optimizer, or ``None`` for :func:`make_optimizer` (slmbook's AdamW
        with ``config.lr`` and ``config.weight_decay``).
    loss_fn:
        ``loss_fn(model, batch) -> () tensor``; default :func:`next_token_loss`.
        Evaluations average it over fixed batches, each weighted by its tokens
        (counted as for ``History.tokens``).
    callbacks:
        :class:`~slmbook.callbacks.Callback` objects, or functions
        ``fn(history, model)`` called after each evaluation.
    early_stopping:
        An :class:`~slmbook.callbacks.EarlyStopping`, updated with each
        validation loss. The returned model holds its best weights; the final
        checkpoint holds the last ones (so that it stays exactly resumable).
    resume_from:
        A checkpoint written by ``train``: model, optimizer, schedule, step,
        random states and history are restored, and the run continues exactly
        as if it had never stopped (same losses, bit for bit, on the CPU).
    tokenizer, meta:
        Stored in checkpoints (``meta`` as metadata, e.g. the corpus hash).
    **overrides:
        Fields of :class:`TrainConfig` to replace, e.g. ``max_steps=300``.

    Returns
    -------
    History

    Raises
    ------
    TypeError
        For a keyword that is not a :class:`TrainConfig` field.
    ValueError
        For a bad value (the message names it), e.g. ``max_steps=0`` or a
        validation split shorter than one window.
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
    config = _configure(config, overrides)
    run = _Run(model, train_data, val_data, config, optimizer, loss_fn or next_token_loss,
               early_stopping, tokenizer, meta)
    hooks = [as_callback(cb) for cb in callbacks]
    from tqdm.auto import tqdm

    with contextlib.ExitStack() as stack:
        if config.checkpoint_path is not None:  # one run at a time writes these files
            stack.enter_context(_files.locked(Path(str(config.checkpoint_path))))
        if resume_from is not None:
            run.resume(resume_from)
        signalled = stack.enter_context(_stop_signals())  # also covers the final save
        bar = stack.enter_context(tqdm(total=run.max_steps, initial=run.step, desc="training",
                                       disable=not config.progress))
        history, stop = run.history, None
        model.train()
        start, offset = time.perf_counter(), (history.time[-1] if history.time else 0.0)
        while run.step < run.max_steps and stop is None:
            run.take_step(lambda: offset + time.perf_counter() - start)  # chapters 3 to 6
            bar.update(1)
            for hook in hooks:
                hook.on_step(history, model)
            if run.step % config.eval_every == 0 or run.step == run.max_steps:
                stop = run.evaluate(hooks)
                bar.set_postfix(train=f"{history.eval_train_loss[-1]:.3f}",
                                val=f"{history.eval_val_loss[-1]:.3f}")
            if config.checkpoint_every and run.step % config.checkpoint_every == 0:
                run.save()
            stop = stop or signalled()
            limit = config.time_limit  # this run's time, not the resumed runs' before it
            if stop is None and limit is not None and time.perf_counter() - start >= limit:
                stop = "time_limit"
        if history.steps and stop in ("time_limit", None) and history.eval_steps[-1:] != [run.step]:
            run.evaluate(hooks)  # the final figures, when the last step was not evaluated
        history.stop_reason = stop or "max_steps"
        if config.checkpoint_path is not None:
            run.save()
    if early_stopping is not None:
        early_stopping.restore(model)
    return history


def _configure(config: TrainConfig | None, overrides: dict[str, Any]) -> TrainConfig:
    names = [f.name for f in dataclasses.fields(TrainConfig)]
    unknown = sorted(set(overrides) - set(names))
    if unknown:
        raise TypeError(f"train() got unknown keyword arguments {unknown}; the TrainConfig "
                        f"fields are {names}")
    if config is None:
        return TrainConfig(**overrides)
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    return dataclasses.replace(config, **overrides)


def _forward_backward(model: nn.Module, draw: Callable[[], Any], loss_fn: LossFn,
                      accum: int) -> tuple[float, int]:
    """Accumulate the gradient of the mean loss over ``accum`` batches; return it and the tokens."""
    total, tokens = 0.0, 0
    for _ in range(accum):
        batch = draw()
        loss = loss_fn(model, batch)  # ()
        (loss / accum).backward()
        total += loss.item() / accum
        tokens += count_tokens(batch)
    return total, tokens


def _mean_loss(model: nn.Module, batches: Sequence[Any], loss_fn: LossFn) -> float:
    """The loss over fixed batches, each weighted by its tokens."""
    total, weight = 0.0, 0
    with evaluating(model):
        for batch in batches:
            n = max(count_tokens(batch), 1)
            total += float(loss_fn(model, batch)) * n
            weight += n
    return total / weight if weight else math.nan


_STOPS = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated"}


@contextlib.contextmanager
def _stop_signals() -> Iterator[Callable[[], str | None]]:
    """Turn the first Ctrl-C or SIGTERM into a stop reason read between steps.

    A second signal raises ``KeyboardInterrupt`` at once. The previous
    handlers are put back on exit.
    """
    hits: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield lambda: None  # signals only reach the main thread
        return

    def handler(signum: int, frame: Any) -> None:
        hits.append(signum)
        if len(hits) > 1:
            raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, handler) for sig in _STOPS}
    try:
        yield lambda: _STOPS[hits[0]] if hits else None
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


class _Run:
    """The state of one training run: data sources, optimizer, schedule, step, history."""

    def __init__(self, model: nn.Module, train_data: BatchSource, val_data: BatchSource | None,
                 config: TrainConfig, optimizer: torch.optim.Optimizer | None, loss_fn: LossFn,
                 early_stopping: EarlyStopping | None, tokenizer: Any, meta: Any) -> None:
        if early_stopping is not None and val_data is None:
            raise ValueError("early_stopping needs val_data: it watches the validation loss")
        self.model, self.config, self.loss_fn, self.early_stopping = (
            model, config, loss_fn, early_stopping)
        self.tokenizer, self.meta = tokenizer, dict(meta or {})
        block_size = positive_int("block_size", config.block_size or model_block_size(model))
        device = model_device(model)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.draw = BatchStream(train_data, "train_data", config.batch_size, block_size, self.generator, device)
        val = (None if val_data is None else
               BatchStream(val_data, "val_data", config.batch_size, block_size, self.generator, device))
        self.max_steps = config.max_steps or max(1, round(
            config.epochs * self.draw.steps_per_epoch(config.grad_accum_steps)))
        self.eval_train = self.draw.fixed_batches(config.eval_batches or 20, config.seed + 1)
        self.eval_val = None if val is None else val.fixed_batches(config.eval_batches,
                                                                   config.seed + 2)
        self.own_optimizer = optimizer is None  # config.lr and weight_decay apply to it
        self.optimizer = optimizer or make_optimizer(model, lr=config.lr,
                                                     weight_decay=config.weight_decay)
        self.schedule_steps = self.max_steps  # the horizon of the schedule (kept on resume)
        self.scheduler = self._scheduler(config.schedule)
        self.step, self.history, self.last_saved = 0, History(), None
        if config.checkpoint_path is not None:  # fail now, not after the training
            checkpoints.check_writable(self._path(0))
            _files.check_free_space(self._path(0), _checkpoint_bytes(
                model, self.optimizer, early_stopping))

    def _scheduler(self, schedule: Any) -> Any:
        if schedule is None or not isinstance(schedule, str):
            if schedule is not None and schedule.optimizer is not self.optimizer:
                raise ValueError("schedule must be a name ('cosine', 'constant'), None, or a "
                                 "scheduler built on the optimizer passed as optimizer=")
            return schedule
        warmup = self.config.warmup_steps
        warmup = min(100, self.schedule_steps // 10) if warmup is None else warmup
        return make_scheduler(self.optimizer, schedule, warmup_steps=warmup,
                              max_steps=self.schedule_steps, min_lr_ratio=self.config.min_lr_ratio)

    def take_step(self, clock: Callable[[], float]) -> None:
        """One optimisation step, recorded in the history."""
        lr_now = self.optimizer.param_groups[0]["lr"]
        loss, tokens = _forward_backward(self.model, self.draw, self.loss_fn,
                                         self.config.grad_accum_steps)
        if not math.isfinite(loss):
            raise FloatingPointError(self.non_finite_message(loss))
        _update(self.model, self.optimizer, self.scheduler, self.config.grad_clip)
        self.step += 1
        h = self.history
        h.steps.append(self.step)
        h.train_loss.append(loss)
        h.lr.append(lr_now)
        h.tokens.append((h.tokens[-1] if h.tokens else 0) + tokens)
        h.time.append(clock())

    def evaluate(self, hooks: Sequence[Callback]) -> str | None:
        """Evaluate both splits, log, call the hooks; return "early_stopping" to stop."""
        h = self.history
        h.eval_steps.append(self.step)
        h.eval_train_loss.append(_mean_loss(self.model, self.eval_train, self.loss_fn))
        val = math.nan if self.eval_val is None else _mean_loss(self.model, self.eval_val,
                                                                self.loss_fn)
        h.eval_val_loss.append(val)
        for hook in hooks:
            hook.on_eval(h, self.model)
        es = self.early_stopping
        if es is not None and es.update(val, self.model, self.step):
            return "early_stopping"
        return None

    def non_finite_message(self, loss: float) -> str:
        kept = (f"the last good checkpoint is {str(self.last_saved)!r}" if self.last_saved
                else "no checkpoint was written")
        before = ("the model had already diverged in the earlier updates" if self.step else
                  "at the very first batch: check the model and the data")
        return (f"the training loss became {loss} at step {self.step + 1}, and training stopped "
                f"without updating the parameters with it ({before}; {kept}). Lower the "
                f"learning rate (lr={self.optimizer.param_groups[0]['lr']:.3g}), keep grad_clip "
                "on, or check the data for targets that are all -100")

    def _path(self, step: int) -> Path:
        return self.config.checkpoint_file(step)

    def save(self) -> None:
        if not all(torch.isfinite(p).all() for p in self.model.parameters()):
            raise FloatingPointError(
                f"the parameters hold NaN or infinite values at step {self.step}; the checkpoint "
                f"was not saved (the last good one, {str(self.last_saved)!r}, is kept)")
        es = self.early_stopping
        state = {"config": self.config.to_dict(), "max_steps": self.max_steps,
                 "schedule_steps": self.schedule_steps, "batches_consumed": self.draw.consumed,
                 "early_stopping": es.state_dict() if es is not None else None}
        self.last_saved = checkpoints.save(
            self._path(self.step), self.model, self.optimizer, scheduler=self.scheduler,
            step=self.step, tokenizer=self.tokenizer, generator=self.generator,
            history=self.history, training_state=state, **self.meta)

    def resume(self, path: str | Path) -> None:
        ckpt = checkpoints.load(path)
        if ckpt.step > self.max_steps:
            raise ValueError(f"checkpoint {str(path)!r} is at step {ckpt.step}, past "
                             f"max_steps={self.max_steps}; raise max_steps to continue")
        state = ckpt.training_state or {}
        stored = state.get("config") if isinstance(state.get("config"), dict) else {}
        _check_same_run(path, ckpt.meta, self.meta, stored, self.config.to_dict())
        horizon = state.get("schedule_steps", self.max_steps)
        if horizon != self.max_steps and isinstance(self.config.schedule, str):
            self.schedule_steps, self.scheduler = horizon, None
            self.scheduler = self._scheduler(self.config.schedule)  # the same curve as before
        ckpt.restore(self.model, self.optimizer, self.scheduler)
        if horizon < self.max_steps and self.config.schedule == "cosine":
            warnings.warn(
                f"max_steps is now {self.max_steps}, but the {self.config.schedule!r} schedule "
                f"keeps its original {horizon} steps (the learning rate does not jump); "
                f"steps past {horizon} run at its final rate. Start a new run for a schedule "
                f"over {self.max_steps} steps", stacklevel=3)
        if self.own_optimizer:
            _apply_changes(path, self.optimizer, self.scheduler, stored, self.config)
        if ckpt.rng is not None:
            checkpoints.restore_rng_states(ckpt.rng, self.generator)
        self.step, self.last_saved = ckpt.step, Path(path)
        self.history = History.from_dict(ckpt.history) if ckpt.history else History()
        self.draw.skip(state.get("batches_consumed", 0))
        if self.early_stopping is not None and state.get("early_stopping") is not None:
            self.early_stopping.load_state_dict(state["early_stopping"])


_SCHEDULE_FIELDS = ("schedule", "warmup_steps", "min_lr_ratio")  # a resumed run keeps these
_INEXACT_FIELDS = ("batch_size", "block_size", "grad_accum_steps", "grad_clip", "seed")


def _check_same_run(path: Any, old_meta: dict, new_meta: dict, stored: dict, new: dict) -> None:
    """Refuse to resume on another corpus or schedule; warn when a change makes it inexact."""
    old_hash, new_hash = old_meta.get("corpus_hash"), new_meta.get("corpus_hash")
    if old_hash and new_hash and old_hash != new_hash:
        raise ValueError(
            f"checkpoint {str(path)!r} was trained on another corpus (hash {old_hash}, this "
            f"run's is {new_hash}); resume with the same text, or start a new run from its "
            "weights (checkpoints.load(path).restore(model)) with another checkpoint path")
    for name in _SCHEDULE_FIELDS:
        if name in stored and stored[name] != new[name]:
            raise ValueError(
                f"checkpoint {str(path)!r} was trained with {name}={stored[name]!r}; resuming "
                f"with {name}={new[name]!r} would change the learning rate of the steps "
                f"already planned. Resume with {name}={stored[name]!r}, or start a new run "
                "from its weights with another checkpoint path")
    changed = [f"{n}={new[n]!r} (was {stored[n]!r})" for n in _INEXACT_FIELDS
               if n in stored and stored[n] != new[n]]
    if changed:
        warnings.warn(f"resuming {str(path)!r} with {', '.join(changed)}: applied, so the run "
                      "is no longer an exact continuation of the interrupted one", stacklevel=4)


def _apply_changes(path: Any, optimizer: torch.optim.Optimizer, scheduler: Any,
                   stored: dict, config: TrainConfig) -> None:
    """A new lr or weight_decay replaces the restored optimizer's (and says so)."""
    old_lr, old_wd = stored.get("lr", config.lr), stored.get("weight_decay", config.weight_decay)
    if old_lr != config.lr:
        ratio = config.lr / old_lr
        for group in optimizer.param_groups:
            group["lr"] *= ratio
            if "initial_lr" in group:
                group["initial_lr"] *= ratio
        if scheduler is not None and hasattr(scheduler, "base_lrs"):
            scheduler.base_lrs = [lr * ratio for lr in scheduler.base_lrs]
    if old_wd != config.weight_decay:
        for group in optimizer.param_groups:
            if group.get("weight_decay"):
                group["weight_decay"] = config.weight_decay
    if (old_lr, old_wd) != (config.lr, config.weight_decay):
        warnings.warn(f"resuming {str(path)!r} with lr={config.lr:g}, weight_decay="
                      f"{config.weight_decay:g} (the checkpoint's run used {old_lr:g}, "
                      f"{old_wd:g}): the new values apply from the next step on", stacklevel=4)


def _checkpoint_bytes(model: nn.Module, optimizer: torch.optim.Optimizer,
                      early_stopping: EarlyStopping | None) -> int:
    """About how large a checkpoint of this run will be: weights, optimizer moments, margin."""
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    trainable = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    moments = 2 if "adam" in type(optimizer).__name__.lower() else 1
    kept = weights if early_stopping is not None and early_stopping.restore_best else 0
    return weights + moments * trainable + kept + 2**16


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
