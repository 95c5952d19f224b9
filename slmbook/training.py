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
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slmbook import _files, devices
from slmbook import distributed as ddp
from slmbook._checks import (
    finite_float,
    model_device,
    non_negative_int,
    positive_float,
    positive_int,
    unit_interval,
)
from slmbook._run import Run
from slmbook.batches import BatchSource, next_token_loss, to_device
from slmbook.callbacks import Callback, EarlyStopping, History, as_callback
from slmbook.resuming import stop_signals
from slmbook.schedules import SCHEDULES

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
    device: str | None = field(default=None, metadata={
        "help": "'auto' (CUDA if present, else CPU), 'cpu', 'cuda' or 'mps' (not bit for bit "
                "reproducible): the model is moved there (None: train where the model is)"})
    dtype: str = field(default="float32", metadata={
        "help": "precision of the forward pass: 'float32', or 'bfloat16' / 'float16' by "
                "autocast (float16 with a gradient scaler on CUDA), or 'auto': bfloat16 where "
                "a few timed passes show it faster on this machine, else float32; float32 "
                "repeats bit for bit"})

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
        devices.check_device(self.device)
        devices.check_dtype(self.dtype)

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
        If ``checkpoint_path`` cannot be written, is not a checkpoint, is
        locked by another live run, or its disk lacks the space (all checked
        before training).
    FloatingPointError
        If the loss becomes NaN or infinite; the parameters are not updated
        with it and the last checkpoint on disk is kept.

    Notes
    -----
    **Ctrl-C** (SIGINT, or "interrupt the kernel" in Jupyter) and SIGTERM stop
    training cleanly at the end of the current step: a checkpoint is written
    (when ``checkpoint_path`` is set) and the history is returned with
    ``stop_reason`` ``"interrupted"`` or ``"terminated"``; resume with
    ``resume_from``. A second signal aborts at once with ``KeyboardInterrupt``
    (the checkpoint on disk stays the last complete one).

    **Checkpoints** are never written over a file that is not one; a lock
    beside ``checkpoint_path`` keeps a second run from writing it at the same
    time; free space is checked before training. **Resuming** with other
    options refuses another corpus or schedule, applies a new ``lr`` with a
    warning, and keeps the schedule's length when ``max_steps`` grows
    (:mod:`slmbook.resuming`).

    **Several processes**: called in every worker of ``torchrun
    --nproc_per_node=W`` (:mod:`slmbook.distributed`), ``train`` joins the
    process group, wraps the model in ``DistributedDataParallel`` and gives
    each rank ``batch_size / W`` rows of the same global batch (``batch_size``
    is the global batch), so that W processes compute the update of one, up
    to float rounding. Losses, evaluations and the decision to stop are
    shared by all ranks; rank 0 alone calls the callbacks, shows progress and
    writes checkpoints, which load in one process as in W. ``device`` and
    ``dtype`` choose where and in which precision the forward pass runs
    (:mod:`slmbook.devices`).

    See chapter 7, "Iterating" (book/07_iterate.ipynb).
    """
    config = _configure(config, overrides)
    if config.device is not None:  # under torchrun, LOCAL_RANK picks this process's GPU
        model.to(devices.resolve_device(config.device, int(os.environ.get("LOCAL_RANK", 0))))
    with ddp.process_group(model_device(model)) as ctx:
        history = _loop(model, train_data, val_data, config, optimizer, loss_fn, callbacks,
                        early_stopping, resume_from, tokenizer, meta, ctx)
    if early_stopping is not None:
        early_stopping.restore(model)
    return history


def _loop(model: nn.Module, train_data: BatchSource, val_data: BatchSource | None,
          config: TrainConfig, optimizer: torch.optim.Optimizer | None, loss_fn: LossFn | None,
          callbacks: Sequence[Callback | Callable], early_stopping: EarlyStopping | None,
          resume_from: str | Path | None, tokenizer: Any, meta: dict[str, Any] | None,
          ctx: ddp.Context) -> History:
    own = optimizer is None  # config.lr and weight_decay apply to slmbook's own AdamW only
    optimizer = optimizer or make_optimizer(model, lr=config.lr, weight_decay=config.weight_decay)
    run = Run(model, train_data, val_data, config, optimizer, own, loss_fn or next_token_loss,
              early_stopping, tokenizer, meta, ctx)
    hooks = [as_callback(cb) for cb in callbacks]
    step_hooks = hooks if ctx.is_main else []  # rank 0 alone logs, samples and shows progress
    from tqdm.auto import tqdm

    with contextlib.ExitStack() as stack:
        if config.checkpoint_path is not None and ctx.is_main:  # one run at a time writes them
            stack.enter_context(_files.locked(Path(str(config.checkpoint_path))))
        if resume_from is not None:
            run.resume(resume_from)
        signalled = stack.enter_context(stop_signals(grace=2.0 if ctx.active else 0.0))
        bar = stack.enter_context(tqdm(total=run.max_steps, initial=run.step, desc="training",
                                       disable=not (config.progress and ctx.is_main)))
        history, stop = run.history, None
        model.train()
        start, offset = time.perf_counter(), (history.time[-1] if history.time else 0.0)
        while run.step < run.max_steps and stop is None:
            run.take_step(lambda: offset + time.perf_counter() - start)  # chapters 3 to 6
            bar.update(1)
            for hook in step_hooks:
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
            stop = ddp.agree(stop, ctx)  # every rank stops at the same step, for one reason
        if history.steps and stop in ("time_limit", None) and history.eval_steps[-1:] != [run.step]:
            run.evaluate(hooks)  # the final figures, when the last step was not evaluated
        history.stop_reason = stop or "max_steps"
        if config.checkpoint_path is not None:
            run.save()
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


