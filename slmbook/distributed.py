"""Data parallelism: the same ``train()`` on several processes, under ``torchrun``.

Each of W processes (ranks) holds the whole model. Every step, all ranks draw
the same global batch of B rows from the same seeded generator and each keeps
its own B/W rows (:func:`shard`); the model, wrapped in
:class:`~torch.nn.parallel.DistributedDataParallel` (:func:`wrap`), averages
the gradients of all ranks by an all-reduce during the backward pass, so
every rank applies the same update: the one a single process would compute on
the whole batch, up to float rounding. Losses are averaged across ranks
(:func:`all_mean`, :func:`all_sums`), the decision to stop is shared
(:func:`agree`), and rank 0 alone writes checkpoints, logs and progress.

:func:`process_group` joins the group that ``torchrun`` describes in the
environment (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``...), with the gloo
backend on CPUs and NCCL on GPUs; outside ``torchrun`` it does nothing and
:func:`context` is one process of rank 0.

Taught in appendix A, "Beyond one machine" (book/A_distributed.ipynb).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["Context", "agree", "all_mean", "all_sums", "context", "launch", "process_group", "shard",
           "wrap"]


@dataclass(frozen=True)
class Context:
    """This process's place in the group: ``rank`` of ``world_size``, its GPU ``local_rank``.

    Examples
    --------
    >>> Context().is_main, Context(rank=1, world_size=2).is_main
    (True, False)

    See appendix A, "Beyond one machine" (book/A_distributed.ipynb).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Whether this process writes (rank 0)."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        """Whether there is more than one process."""
        return self.world_size > 1


def context() -> Context:
    """The group this process belongs to (one process of rank 0 outside ``torchrun``).

    See appendix A, "Beyond one machine" (book/A_distributed.ipynb).
    """
    if dist.is_available() and dist.is_initialized():
        return Context(dist.get_rank(), dist.get_world_size(),
                       int(os.environ.get("LOCAL_RANK", dist.get_rank())))
    return Context()


def _launched() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "MASTER_ADDR" in os.environ


@contextlib.contextmanager
def process_group(device: torch.device | None = None) -> Iterator[Context]:
    """Join the process group ``torchrun`` set up (if it did and nobody joined yet); leave it after.

    The backend is NCCL when ``device`` is a CUDA device, gloo otherwise. A
    group already initialized by the caller is used as it is, and kept.

    See appendix A, "Beyond one machine" (book/A_distributed.ipynb).
    """
    created = False
    if _launched() and not dist.is_initialized():
        if not dist.is_available():
            raise RuntimeError("WORLD_SIZE > 1, but this torch build has no torch.distributed")
        backend = "nccl" if device is not None and device.type == "cuda" else "gloo"
        if device is not None and device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend)
        created = True
    try:
        yield context()
    finally:
        if created and dist.is_initialized():
            dist.destroy_process_group()


def wrap(model: nn.Module, ctx: Context) -> nn.Module:
    """``model`` in :class:`DistributedDataParallel` when several processes train, else itself.

    DDP broadcasts rank 0's weights to every rank at once, so all start equal.

    See appendix A, "Beyond one machine" (book/A_distributed.ipynb).
    """
    if not ctx.active:
        return model
    from torch.nn.parallel import DistributedDataParallel

    device = next(model.parameters()).device
    ids = [device] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def _rows(batch: Any) -> int | None:
    if isinstance(batch, torch.Tensor):
        return batch.shape[0] if batch.ndim else None
    if dataclasses.is_dataclass(batch) and not isinstance(batch, type):
        batch = [getattr(batch, f.name) for f in dataclasses.fields(batch)]
    values = batch.values() if isinstance(batch, dict) else batch
    if isinstance(values, (tuple, list, type({}.values()))):
        for v in values:
            if (n := _rows(v)) is not None:
                return n
    return None


def _slice(batch: Any, rows: int, lo: int, hi: int) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch[lo:hi] if batch.ndim and batch.shape[0] == rows else batch
    if isinstance(batch, (tuple, list)):
        items = [_slice(v, rows, lo, hi) for v in batch]
        if hasattr(batch, "_fields"):
            return type(batch)(*items)
        return type(batch)(items) if type(batch) in (tuple, list) else items
    if isinstance(batch, dict):
        return {k: _slice(v, rows, lo, hi) for k, v in batch.items()}
    if dataclasses.is_dataclass(batch) and not isinstance(batch, type):
        changes = {f.name: _slice(getattr(batch, f.name), rows, lo, hi)
                   for f in dataclasses.fields(batch) if f.init}
        targets = changes.get("targets")
        if isinstance(changes.get("num_tokens"), int) and isinstance(targets, torch.Tensor):
            from slmbook.losses import IGNORE_INDEX  # a stored count: recount this shard's

            changes["num_tokens"] = int((targets != IGNORE_INDEX).sum())
        return dataclasses.replace(batch, **changes)
    return batch


def shard(batch: Any, ctx: Context) -> Any:
    """This rank's rows of a global ``batch``: rows ``[r B/W, (r+1) B/W)`` of every (B, ...) tensor.

    Tensors whose first dimension is the batch's B are cut; anything else
    (scalars, other tensors, strings) is kept whole. A dataclass with an int
    ``num_tokens`` field and a ``targets`` tensor gets the shard's count of
    targets that are not ``IGNORE_INDEX`` (-100). B must be a multiple of W.

    Examples
    --------
    >>> x = torch.arange(8).reshape(4, 2)
    >>> shard((x, x), Context(rank=1, world_size=2))[0]
    tensor([[4, 5],
            [6, 7]])

    See appendix A, "Beyond one machine" (book/A_distributed.ipynb).
    """
    if not ctx.active:
        return batch
    rows = _rows(batch)
    if rows is None:
        raise TypeError(f"a batch of {type(batch).__name__} holds no tensor to split across "
                        f"{ctx.world_size} processes")
    if rows % ctx.world_size:
        raise ValueError(f"a batch of {rows} rows cannot be split evenly across "
                         f"{ctx.world_size} processes; make the global batch size a multiple "
                         f"of {ctx.world_size}")
    per = rows // ctx.world_size
    return _slice(batch, rows, ctx.rank * per, (ctx.rank + 1) * per)


def _tensor(values: Sequence[float]) -> torch.Tensor:
    device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    return torch.tensor(list(values), dtype=torch.float64, device=device)


def all_sums(values: Sequence[float], ctx: Context) -> list[float]:
    """The sums over all ranks of each of ``values`` (``values`` itself for one process).

    See appendix A, "Beyond one machine" (book/A_distributed.ipynb).
    """
    if not ctx.active:
        return [float(v) for v in values]
    t = _tensor(values)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def all_mean(value: float, ctx: Context) -> float:
    """The mean of ``value`` over all ranks.

    See appendix A, "Beyond one machine" (book/A_distributed.ipynb).
    """
    return all_sums([value], ctx)[0] / ctx.world_size


_ORDER = (None, "time_limit", "early_stopping", "terminated", "interrupted")


def agree(reason: str | None, ctx: Context) -> str | None:
    """One stop reason for all ranks: the most urgent any rank has (a signal beats a time limit).

    See appendix A, "Beyond one machine" (book/A_distributed.ipynb).
    """
    if not ctx.active:
        return reason
    t = _tensor([_ORDER.index(reason)])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return _ORDER[int(t.item())]


def no_sync(model: nn.Module, last: bool) -> contextlib.AbstractContextManager[Any]:
    """Skip DDP's gradient all-reduce on all but the ``last`` micro-batch of an accumulation."""
    if last or not hasattr(model, "no_sync"):
        return contextlib.nullcontext()
    return model.no_sync()


def launch(argv: Sequence[str], nproc: int = 2, *, timeout: float = 300,
           env: dict[str, str] | None = None) -> Any:
    """Run ``torchrun --standalone --nproc_per_node=nproc argv...`` and wait for it.

    ``argv`` is what follows torchrun's own options: a script and its
    arguments, or ``["-m", "slmbook", "train", ...]``. The run gets its own
    process group, killed whole if it outlives ``timeout`` seconds (or if the
    caller is interrupted), so no worker is left behind. Each worker runs with
    one torch thread unless ``env`` says otherwise.

    Returns
    -------
    subprocess.CompletedProcess
        With ``returncode``, and ``stdout`` and ``stderr`` as text.

    See appendix A, "Beyond one machine" (book/A_distributed.ipynb).
    """
    import signal
    import subprocess
    import sys

    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={nproc}", *argv]
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except BaseException:  # a timeout, or Ctrl-C in the caller: no orphaned worker
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return subprocess.CompletedProcess(command, proc.returncode, out, err)
