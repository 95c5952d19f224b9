"""Checkpoints: everything needed to use or resume a model, in one safe file.

A checkpoint holds the model's configuration and weights, and optionally the
optimizer's and the learning-rate schedule's state, the step reached, the
random-number generators' states, the tokenizer, the training history and
free-form metadata (the slmbook and torch versions are always recorded).

Two promises:

* **Writes are atomic.** The file is written to a temporary file in the same
  folder, flushed to disk, then renamed over the target (``os.replace``). A
  crash in the middle of a save leaves the previous checkpoint untouched.
* **Loading never runs code.** Files are read with
  ``torch.load(weights_only=True)``, which only rebuilds tensors and plain
  Python containers; a pickle that would call a function is refused with a
  clear error. A truncated, corrupt or foreign file also raises a
  ``ValueError`` that names the file.

Taught in chapter 7, "Iterating" (book/07_iterate.ipynb).
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import numbers
import os
import random
import tempfile
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = [
    "FORMAT",
    "Checkpoint",
    "capture_rng_states",
    "load",
    "pretrained",
    "restore_rng_states",
    "save",
]

FORMAT = "slmbook-checkpoint"  # the marker every slmbook checkpoint carries
FORMAT_VERSION = 1
_REGENERATE = "python scripts/train_pretrained.py"  # writes slmbook/assets/pretrained.pt


def capture_rng_states(generator: torch.Generator | None = None) -> dict[str, Any]:
    """The states of Python's, NumPy's and torch's generators, as plain data.

    ``generator`` (for example the one that draws training batches) is saved
    too when given. Everything is a tensor, int or list, so that
    ``torch.load(weights_only=True)`` can read it back.
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
    """Put back the generator states saved by :func:`capture_rng_states`."""
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


def _config_dict(model: nn.Module) -> dict[str, Any] | None:
    config = getattr(model, "config", None)
    return dataclasses.asdict(config) if dataclasses.is_dataclass(config) else None


def save(
    path: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    *,
    scheduler: Any | None = None,
    step: int = 0,
    tokenizer: Any | None = None,
    generator: torch.Generator | None = None,
    history: Any | None = None,
    training_state: dict[str, Any] | None = None,
    **meta: Any,
) -> Path:
    """Write a checkpoint atomically.

    Parameters
    ----------
    path:
        The file to write (missing parent folders are created).
    model:
        The model; its ``config`` dataclass (if any) and ``state_dict()`` are saved.
    optimizer, scheduler:
        Saved through their ``state_dict()`` when given.
    step:
        The number of optimisation steps completed.
    tokenizer:
        Saved through its ``to_dict()`` (a :class:`slmbook.tokenizers.Tokenizer`).
    generator:
        The batch generator, whose state is saved with the global RNG states.
    history:
        A :class:`slmbook.training.History` (saved through ``to_dict()``) or a dict.
    training_state:
        Extra state the training loop needs to resume (plain data and tensors).
    **meta:
        Free-form metadata (str, numbers, lists, dicts), for example ``corpus_hash``.

    Returns
    -------
    Path
        The path written.

    Raises
    ------
    OSError
        If the folder cannot be created or written; the previous file, if
        any, is left as it was.
    TypeError
        If ``meta`` (or another field) holds an object that a safe load could
        not read back, such as a ``Path``; the message names the field.

    See chapter 7, "Iterating" (book/07_iterate.ipynb).
    """
    from slmbook import __version__

    path = Path(path)
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model_class": type(model).__name__,
        "config": _config_dict(model),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "optimizer_class": type(optimizer).__name__ if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "step": int(step),
        "tokenizer": tokenizer.to_dict() if tokenizer is not None else None,
        "rng": capture_rng_states(generator),
        "history": history.to_dict() if hasattr(history, "to_dict") else history,
        "training_state": training_state,
        "meta": {"slmbook_version": __version__, "torch_version": str(torch.__version__), **meta},
    }
    payload = _plain(payload, "checkpoint")
    check_writable(path)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # honours the umask
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # atomic on POSIX and Windows
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def _plain(obj: Any, where: str) -> Any:
    """``obj`` with only the types ``torch.load(weights_only=True)`` reads back, or a TypeError."""
    if obj is None or isinstance(obj, (torch.Tensor, bool)) or type(obj) in (str, int, float):
        return obj
    if isinstance(obj, dict):
        items = ((k, _plain(v, f"{where}[{k!r}]")) for k, v in obj.items())
        if not isinstance(obj, OrderedDict):
            return dict(items)
        copy = OrderedDict(items)
        if hasattr(obj, "_metadata"):  # a state_dict's module versions, as torch.save keeps them
            copy._metadata = obj._metadata
        return copy
    if isinstance(obj, (list, tuple)):
        items = [_plain(v, f"{where}[{i}]") for i, v in enumerate(obj)]
        return items if isinstance(obj, list) else tuple(items)
    for kind in (str, bool, numbers.Integral, numbers.Real):  # e.g. numpy scalars
        if isinstance(obj, kind):
            return (float if kind is numbers.Real else int if kind is numbers.Integral else kind)(obj)
    raise TypeError(
        f"{where} is a {type(obj).__name__}, which a safe checkpoint cannot hold; store only "
        "tensors, numbers, strings, lists and dicts (convert it, e.g. str(path))")


def check_writable(path: str | Path) -> None:
    """Raise a clear ``OSError`` unless a checkpoint can be written at ``path``.

    Creates missing parent folders, then writes and deletes a probe file.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"checkpoint path {str(path)!r} is a directory; give a file name")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".probe")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise OSError(
            f"cannot write checkpoint {str(path)!r}: folder {str(path.parent)!r} is not "
            f"writable ({err.strerror or err}); choose another path"
        ) from err


def _fsync_dir(folder: Path) -> None:
    try:  # makes the rename itself durable; not possible on every platform
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@dataclass
class Checkpoint:
    """The contents of a checkpoint file, as returned by :func:`load`.

    Attributes mirror the arguments of :func:`save`; state dicts are kept as
    loaded (use :meth:`build_model` or :meth:`restore` to apply them).
    """

    path: Path
    model_class: str
    config: dict[str, Any] | None
    model_state: dict[str, torch.Tensor]
    optimizer_state: dict[str, Any] | None = None
    scheduler_state: dict[str, Any] | None = None
    step: int = 0
    tokenizer: Any | None = None
    rng: dict[str, Any] | None = None
    history: dict[str, Any] | None = None
    training_state: dict[str, Any] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        return (
            f"Checkpoint(path={str(self.path)!r}, model_class={self.model_class!r}, "
            f"step={self.step}, config={self.config})"
        )

    def build_model(self) -> nn.Module:
        """A new :class:`slmbook.model.GPT` with the saved config and weights, in eval mode."""
        if self.model_class != "GPT" or self.config is None:
            raise ValueError(
                f"checkpoint {str(self.path)!r} holds a {self.model_class} without a GPTConfig; "
                "build that model yourself and call checkpoint.restore(model)"
            )
        from slmbook.model import GPT, GPTConfig

        model = GPT(GPTConfig(**self.config))
        self.restore(model)
        return model.eval()

    def restore(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        scheduler: Any | None = None,
    ) -> None:
        """Load the saved states into existing objects (the config must match)."""
        config = _config_dict(model)
        if self.config is not None and config is not None and config != self.config:
            diff = {k: (self.config.get(k), config.get(k)) for k in config
                    if self.config.get(k) != config.get(k)}
            raise ValueError(
                f"checkpoint {str(self.path)!r} was saved from a model with a different "
                f"configuration: {{name: (saved, yours)}} = {diff}; build the model with "
                "the checkpoint's config (checkpoint.config) or use checkpoint.build_model()"
            )
        try:
            model.load_state_dict(self.model_state)
        except RuntimeError as err:
            raise ValueError(
                f"checkpoint {str(self.path)!r} does not fit this {type(model).__name__}: {err}"
            ) from None
        if optimizer is not None:
            if self.optimizer_state is None:
                raise ValueError(f"checkpoint {str(self.path)!r} holds no optimizer state")
            optimizer.load_state_dict(self.optimizer_state)
        if scheduler is not None:
            if self.scheduler_state is None:
                raise ValueError(f"checkpoint {str(self.path)!r} holds no scheduler state")
            scheduler.load_state_dict(self.scheduler_state)


_REQUIRED = ("format_version", "model_class", "config", "model", "step", "meta")


def load(path: str | Path, *, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Read a checkpoint written by :func:`save`, without running any code from it.

    Parameters
    ----------
    path:
        The checkpoint file.
    map_location:
        Where to put the tensors (default: CPU).

    Returns
    -------
    Checkpoint
        Its ``tokenizer`` is rebuilt (a :class:`slmbook.tokenizers.Tokenizer`)
        when one was saved.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        If the file is truncated or corrupt, is not an slmbook checkpoint, or
        contains objects other than tensors and plain data (a pickle that
        could run code is refused, never executed).

    See chapter 7, "Iterating" (book/07_iterate.ipynb).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        text = str(err)
        if "weights_only" in text or "Unsupported global" in text or "Unpickler" in text:
            reason = ("it contains Python objects other than tensors and plain data, which could "
                      "run code when loaded; it was NOT loaded. Only load files you trust, and "
                      "re-save them with slmbook.checkpoints.save")
        else:
            reason = f"the file is truncated, corrupt or not a torch file ({type(err).__name__})"
        raise ValueError(f"cannot load checkpoint {str(path)!r}: {reason}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(
            f"{str(path)!r} is a torch file but not an slmbook checkpoint (no "
            f"format={FORMAT!r} marker); save checkpoints with slmbook.checkpoints.save"
        )
    missing = [k for k in _REQUIRED if k not in payload]
    if missing or payload["format_version"] > FORMAT_VERSION:
        raise ValueError(
            f"checkpoint {str(path)!r} is incomplete or from a newer slmbook (missing "
            f"{missing}, format version {payload.get('format_version')}); upgrade slmbook"
        )
    tokenizer = None
    if payload.get("tokenizer") is not None:
        from slmbook.tokenizers import Tokenizer

        tokenizer = Tokenizer.from_dict(payload["tokenizer"])
    return Checkpoint(
        path=path, model_class=payload["model_class"], config=payload["config"],
        model_state=payload["model"], optimizer_state=payload.get("optimizer"),
        scheduler_state=payload.get("scheduler"), step=payload["step"], tokenizer=tokenizer,
        rng=payload.get("rng"), history=payload.get("history"),
        training_state=payload.get("training_state"), meta=payload["meta"],
    )


def pretrained() -> tuple[nn.Module, Any]:
    """The small GPT shipped with slmbook, and its tokenizer.

    Loads ``slmbook/assets/pretrained.pt`` (trained on the default corpus by
    ``scripts/train_pretrained.py``).

    Returns
    -------
    (model, tokenizer)
        A :class:`slmbook.model.GPT` in eval mode and its
        :class:`slmbook.tokenizers.Tokenizer`.

    Raises
    ------
    FileNotFoundError
        If the file is missing from the installation.
    ValueError
        If the file is damaged.

    See chapter 8, "Starting from a pretrained model" (book/08_pretrained.ipynb).
    """
    resource = importlib.resources.files("slmbook") / "assets" / "pretrained.pt"
    fix = f"regenerate it with `{_REGENERATE}` from the repository root, or reinstall slmbook"
    if not resource.is_file():
        raise FileNotFoundError(f"the pretrained checkpoint {resource} is missing; {fix}")
    with importlib.resources.as_file(resource) as file:
        try:
            ckpt = load(file)
            model = ckpt.build_model()
        except ValueError as err:
            raise ValueError(f"the pretrained checkpoint is damaged: {err}; {fix}") from None
    if ckpt.tokenizer is None:
        raise ValueError(f"the pretrained checkpoint {resource} has no tokenizer; {fix}")
    return model, ckpt.tokenizer
