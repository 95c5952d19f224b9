"""Resuming a run: the random states that make it exact, and what a changed option does.

:func:`capture_rng_states` and :func:`restore_rng_states` save and put back
every generator a training step draws from, so that a resumed run repeats
the interrupted one bit for bit. When a run is resumed with different
options, :func:`check_same_run` and :func:`apply_changes` decide as a user
would expect:

* another corpus, or another schedule (``schedule``, ``warmup_steps``,
  ``min_lr_ratio``): refused, with what to do instead;
* another ``lr`` or ``weight_decay``: applied to the restored optimizer, with
  a warning;
* another ``batch_size``, ``block_size``, ``grad_accum_steps``,
  ``grad_clip`` or ``seed``: applied, with a warning that the run is no
  longer an exact continuation;
* a larger ``max_steps``: the schedule keeps its original length (the
  learning rate does not jump), see :func:`slmbook.training.train`.

See chapter 7, "Iterating" (book/07_iterate.ipynb).
"""

from __future__ import annotations

import contextlib
import random
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

__all__ = [
    "apply_changes",
    "capture_rng_states",
    "check_same_run",
    "restore_rng_states",
    "stop_signals",
]


def capture_rng_states(generator: torch.Generator | None = None) -> dict[str, Any]:
    """The states of Python's, NumPy's and torch's generators, as plain data.

    ``generator`` (for example the one that draws training batches) is saved
    too when given. Everything is a tensor, int or list, so that
    ``torch.load(weights_only=True)`` can read it back.

    See chapter 7, "Iterating" (book/07_iterate.ipynb).
    """
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002 (global state)
    states: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()  # dropout on the GPU
    if generator is not None:
        states["generator"] = generator.get_state()
    return states


def restore_rng_states(states: dict[str, Any], generator: torch.Generator | None = None) -> None:
    """Put back the generator states saved by :func:`capture_rng_states`.

    See chapter 7, "Iterating" (book/07_iterate.ipynb).
    """
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))  # noqa: NPY002
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        if len(states["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states["cuda"])
    if generator is not None and "generator" in states:
        generator.set_state(states["generator"])


_SCHEDULE_FIELDS = ("schedule", "warmup_steps", "min_lr_ratio")  # a resumed run keeps these
_INEXACT_FIELDS = ("batch_size", "block_size", "grad_accum_steps", "grad_clip", "seed", "dtype")


def check_same_run(path: Any, old_meta: dict, new_meta: dict, stored: dict, new: dict) -> None:
    """Refuse to resume on another corpus or schedule; warn when a change makes it inexact.

    ``stored`` and ``new`` are the checkpoint's and this run's
    ``TrainConfig.to_dict()``; the metas hold the corpus hashes.

    See chapter 7, "Iterating" (book/07_iterate.ipynb).
    """
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
                      "is no longer an exact continuation of the interrupted one", stacklevel=5)


def apply_changes(path: Any, optimizer: torch.optim.Optimizer, scheduler: Any,
                   stored: dict, config: Any) -> None:
    """A new ``lr`` or ``weight_decay`` replaces the restored optimizer's, with a warning.

    The learning rate is scaled in every parameter group and in the
    scheduler's base rates, so the schedule keeps its shape.

    See chapter 7, "Iterating" (book/07_iterate.ipynb).
    """
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
                      f"{old_wd:g}): the new values apply from the next step on", stacklevel=5)


_STOPS = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated"}


@contextlib.contextmanager
def stop_signals(grace: float = 0.0) -> Iterator[Callable[[], str | None]]:
    """Turn the first Ctrl-C or SIGTERM into a stop reason read between steps.

    The first SIGINT (Ctrl-C, "interrupt the kernel") or SIGTERM (sent by
    ``timeout``, docker, systemd, Slurm) makes the returned function answer
    ``"interrupted"`` or ``"terminated"``, so that the loop stops at the end
    of the step and saves a resumable checkpoint. A second signal raises
    ``KeyboardInterrupt`` at once, unless it comes within ``grace`` seconds of
    the first: under ``torchrun`` a Ctrl-C reaches each worker twice, from the
    terminal and passed on by the launcher, and counts once. The previous
    handlers are put back on exit.

    See chapter 7, "Iterating" (book/07_iterate.ipynb).
    """
    hits: list[int] = []
    first: list[float] = []  # when the first signal came
    if threading.current_thread() is not threading.main_thread():
        yield lambda: None  # signals only reach the main thread
        return

    def handler(signum: int, frame: Any) -> None:
        now = time.monotonic()
        if hits and now - first[0] < grace:
            return  # the same stop, delivered twice
        hits.append(signum)
        first.append(now)
        if len(hits) > 1:
            raise KeyboardInterrupt("a second stop signal: training aborted at once "
                                    "(the last checkpoint on disk is kept)")

    previous = {sig: signal.signal(sig, handler) for sig in _STOPS}
    try:
        yield lambda: _STOPS[hits[0]] if hits else None
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
