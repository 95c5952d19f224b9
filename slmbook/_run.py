"""One training run's state and steps, driven by :func:`slmbook.training.train`.

:class:`Run` holds the data streams, the optimizer and schedule, the step
reached and the history; it takes one step, evaluates, saves a checkpoint
and resumes from one. ``train`` is the loop around it.

See chapter 7, "Iterating" (book/07_iterate.ipynb).
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from slmbook import _files, checkpoints, devices
from slmbook import distributed as ddp
from slmbook._checks import model_block_size, model_device, positive_int
from slmbook.batches import BatchSource, BatchStream, count_tokens
from slmbook.callbacks import Callback, EarlyStopping, History
from slmbook.inference import evaluating
from slmbook.resuming import apply_changes, check_same_run
from slmbook.schedules import make_scheduler

if TYPE_CHECKING:
    from slmbook.training import TrainConfig

__all__ = ["Run"]

LossFn = Callable[[nn.Module, Any], torch.Tensor]


class Run:
    """The state of one training run: data sources, optimizer, schedule, step, history."""

    def __init__(self, model: nn.Module, train_data: BatchSource, val_data: BatchSource | None,
                 config: TrainConfig, optimizer: torch.optim.Optimizer, own_optimizer: bool,
                 loss_fn: LossFn, early_stopping: EarlyStopping | None, tokenizer: Any,
                 meta: Any, ctx: ddp.Context | None = None) -> None:
        if early_stopping is not None and val_data is None:
            raise ValueError("early_stopping needs val_data: it watches the validation loss")
        self.model, self.config, self.loss_fn, self.early_stopping = (
            model, config, loss_fn, early_stopping)
        self.tokenizer, self.meta = tokenizer, dict(meta or {})
        self.ctx = ctx or ddp.Context()
        if isinstance(train_data, torch.Tensor) and config.batch_size % self.ctx.world_size:
            raise ValueError(f"batch_size={config.batch_size} is the global batch: it must be a "
                             f"multiple of the {self.ctx.world_size} processes, each taking "
                             f"batch_size / {self.ctx.world_size} rows")
        block_size = positive_int("block_size", config.block_size or model_block_size(model))
        self.device = device = model_device(model)
        self.forward_model = ddp.wrap(model, self.ctx)  # DDP averages the gradients of all ranks
        self.generator = torch.Generator().manual_seed(config.seed)
        stream = (config.batch_size, block_size, self.generator, device)
        self.draw = BatchStream(train_data, "train_data", *stream)
        val = None if val_data is None else BatchStream(val_data, "val_data", *stream)
        self.max_steps = config.max_steps or max(1, round(
            config.epochs * self.draw.steps_per_epoch(config.grad_accum_steps)))
        self.eval_train = self.draw.fixed_batches(config.eval_batches or 20, config.seed + 1)
        self.eval_val = None if val is None else val.fixed_batches(config.eval_batches,
                                                                   config.seed + 2)
        self.auto_dtype = config.dtype == "auto"
        if self.auto_dtype:  # measured here, on a training batch, in every process alike
            dtype, _ = devices.choose_dtype(
                device, self._probe_seconds, combine=lambda ts: ddp.all_sums(ts, self.ctx))
        self._set_dtype(dtype if self.auto_dtype else config.dtype)
        self.optimizer, self.own_optimizer = optimizer, own_optimizer  # own: config.lr applies
        self.schedule_steps = self.max_steps  # the horizon of the schedule (kept on resume)
        self.scheduler = self._scheduler(config.schedule)
        self.step, self.history, self.last_saved = 0, History(), None
        self.history.dtype = self.config.dtype
        if config.checkpoint_path is not None and self.ctx.is_main:  # fail now, not after
            checkpoints.check_writable(self._path(0))
            _files.check_free_space(self._path(0), _checkpoint_bytes(
                model, self.optimizer, early_stopping))

    def _set_dtype(self, dtype: str) -> None:
        """Train the forward passes in ``dtype`` (a concrete one, never ``"auto"``)."""
        self.config = dataclasses.replace(self.config, dtype=dtype)  # checkpoints store it
        self.amp = lambda: devices.autocast(self.device, dtype)
        self.scaler = devices.grad_scaler(self.device, dtype)

    def _probe_seconds(self, dtype: str) -> float:
        """Seconds of one forward and backward pass in ``dtype`` that change nothing.

        The first evaluation batch stands in for a training batch (same size,
        not drawn from the training stream); gradients, buffers, random
        states and the train/eval mode are put back afterwards.
        """
        model, batch = self.model, self.eval_train[0]
        params, buffers = list(model.parameters()), [b.clone() for b in model.buffers()]
        grads, training = [p.grad for p in params], model.training
        cuda = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):
            for p in params:
                p.grad = None
            model.train()
            _synchronize(self.device)
            start = time.perf_counter()
            with devices.autocast(self.device, dtype):
                loss = self.loss_fn(model, batch)
            loss.backward()
            _synchronize(self.device)
            seconds = time.perf_counter() - start
        model.train(training)
        with torch.no_grad():
            for b, saved in zip(model.buffers(), buffers, strict=True):
                b.copy_(saved)
        for p, g in zip(params, grads, strict=True):
            p.grad = g
        return seconds

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
        loss, tokens = self._forward_backward()
        loss = ddp.all_mean(loss, self.ctx)  # the same number, and decision, on every rank
        if not math.isfinite(loss):
            raise FloatingPointError(self.non_finite_message(loss))
        _update(self.model, self.optimizer, self.scheduler, self.config.grad_clip, self.scaler)
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
        h.eval_train_loss.append(self._mean_loss(self.eval_train))
        val = math.nan if self.eval_val is None else self._mean_loss(self.eval_val)
        h.eval_val_loss.append(val)
        for hook in hooks if self.ctx.is_main else ():  # rank 0 alone logs and samples
            hook.on_eval(h, self.model)
        es = self.early_stopping  # every rank sees the same reduced loss, so decides alike
        if es is not None and es.update(val, self.model, self.step):
            return "early_stopping"
        return None

    def _forward_backward(self) -> tuple[float, int]:
        """Accumulate the gradient of the mean loss over ``grad_accum_steps`` global batches.

        Each rank computes its shard of every batch; DDP all-reduces (averages)
        the gradients on the last micro-batch only. A shard's loss is weighted
        by W times its share of the batch's tokens (:func:`count_tokens`: 1
        for equal windows), so that the average is the whole batch's loss, as
        in one process, when shards hold unequal numbers of tokens. Returns
        this rank's weighted loss and the tokens of the global batches.
        """
        accum, total, tokens = self.config.grad_accum_steps, 0.0, 0
        for i in range(accum):
            batch = self.draw()
            part, n = ddp.shard(batch, self.ctx), count_tokens(batch)
            tokens += n
            share = self._share(part, n)
            with ddp.no_sync(self.forward_model, last=i == accum - 1):
                with self.amp():
                    loss = self.loss_fn(self.forward_model, part) * share  # ()
                scaled = loss / accum
                (self.scaler.scale(scaled) if self.scaler else scaled).backward()
            total += loss.item() / accum
        return total, tokens

    def _share(self, part: Any, n: int) -> float:
        """W times the shard's share of the global batch's ``n`` tokens (1.0 in one process)."""
        if not self.ctx.active or not n:
            return 1.0
        own = count_tokens(part)
        if own == n:  # a count stored with the batch, not recounted for the shard
            if not getattr(self, "_warned", False):
                self._warned = True
                warnings.warn(f"a {type(part).__name__} batch reports the same num_tokens for "
                              "its shard as for the whole batch, so the ranks are weighted "
                              "equally (exact only when they hold as many tokens); compute "
                              "num_tokens from the batch's tensors", stacklevel=2)
            return 1.0
        return self.ctx.world_size * own / n

    def _mean_loss(self, batches: Sequence[Any]) -> float:
        """The loss over fixed batches, each weighted by its tokens, summed over all ranks."""
        total, weight = 0.0, 0
        with evaluating(self.model):
            for batch in batches:
                part = ddp.shard(batch, self.ctx)
                n = max(count_tokens(part), 1)
                with self.amp():
                    total += float(self.loss_fn(self.model, part)) * n
                weight += n
        total, weight = ddp.all_sums([total, weight], self.ctx)
        return total / weight if weight else math.nan

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
                 "early_stopping": es.state_dict() if es is not None else None,
                 "world_size": self.ctx.world_size,
                 "grad_scaler": self.scaler.state_dict() if self.scaler else None}
        if not self.ctx.is_main:  # rank 0 alone writes; the others hold the same state
            self.last_saved = self._path(self.step)
            return
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
        if self.auto_dtype and stored.get("dtype") in devices.DTYPES:
            self._set_dtype(stored["dtype"])  # "auto" continues in the precision it chose
        check_same_run(path, ckpt.meta, self.meta, stored, self.config.to_dict())
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
                f"over {self.max_steps} steps", stacklevel=4)
        if self.own_optimizer:
            apply_changes(path, self.optimizer, self.scheduler, stored, self.config)
        if ckpt.rng is not None:
            checkpoints.restore_rng_states(ckpt.rng, self.generator)
        self.step, self.last_saved = ckpt.step, Path(path)
        self.history = History.from_dict(ckpt.history) if ckpt.history else History()
        self.history.dtype = self.config.dtype
        self.draw.skip(state.get("batches_consumed", 0))
        if self.early_stopping is not None and state.get("early_stopping") is not None:
            self.early_stopping.load_state_dict(state["early_stopping"])
        if self.scaler is not None and state.get("grad_scaler"):
            self.scaler.load_state_dict(state["grad_scaler"])


def _synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously), so that timings are real."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _checkpoint_bytes(model: nn.Module, optimizer: torch.optim.Optimizer,
                      early_stopping: EarlyStopping | None) -> int:
    """About how large a checkpoint of this run will be: weights, optimizer moments, margin."""
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    trainable = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    moments = 2 if "adam" in type(optimizer).__name__.lower() else 1
    kept = weights if early_stopping is not None and early_stopping.restore_best else 0
    return weights + moments * trainable + kept + 2**16


def _update(model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
            grad_clip: float | None, scaler: Any = None) -> None:
    """Clip the (all-reduced, hence global) gradient norm and step; float16 through ``scaler``."""
    if scaler is not None:
        scaler.unscale_(optimizer)
    if grad_clip is not None:
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        if not torch.isfinite(norm) and scaler is None:  # a scaler skips such steps itself
            raise FloatingPointError(
                f"the gradient norm is {norm.item()}; training stopped before updating the "
                "parameters (the last checkpoint on disk is kept). Lower the learning rate")
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if scheduler is not None:
        scheduler.step()
