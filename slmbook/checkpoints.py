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
import errno
import importlib.resources
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slmbook import _files
from slmbook._payload import check_payload, plain
from slmbook.resuming import capture_rng_states, restore_rng_states

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
    force: bool = False,
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
    force:
        Replace ``path`` even if it is not an slmbook checkpoint (by default
        such a file is refused, never destroyed).
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
    from slmbook._version import __version__

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
    payload = plain(payload, "checkpoint")
    check_writable(path, force=force)
    try:
        return _files.atomic_write(path, lambda f: torch.save(payload, f))
    except OSError as err:  # a full disk, a quota, a folder removed meanwhile
        raise type(err)(err.errno, f"cannot write checkpoint {str(path)!r}: "
                        f"{err.strerror or err}; the previous file, if any, is kept") from err


def is_checkpoint(path: str | Path) -> bool:
    """Whether ``path`` is a file written by :func:`save` (checked without loading it)."""
    try:
        with zipfile.ZipFile(path) as archive:
            pickles = [n for n in archive.namelist() if n.endswith("data.pkl")]
            return bool(pickles) and FORMAT.encode() in archive.read(pickles[0])
    except (OSError, zipfile.BadZipFile, ValueError):
        return False


def check_writable(path: str | Path, *, force: bool = False) -> None:
    """Raise a clear ``OSError`` unless a checkpoint can be written at ``path``.

    Refuses a folder, and a file that is not an slmbook checkpoint (it would
    be destroyed); creates missing parent folders, then writes and deletes a
    probe file. ``force=True`` accepts a file that is not a checkpoint.

    See chapter 7, "Iterating" (book/07_iterate.ipynb).
    """
    path = _files.resolve_link(Path(path))
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, f"checkpoint path {str(path)!r} is a directory; "
                                "give a file name, e.g. runs/model.pt")
    if (not force and path.exists() and (not path.is_file() or path.stat().st_size)
            and not is_checkpoint(path)):
        raise FileExistsError(
            errno.EEXIST, f"{str(path)!r} exists and is not an slmbook checkpoint; saving "
            "there would destroy it. Choose another checkpoint path, or move that file away")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        probe = _files.hidden_name(path, f"{os.getpid()}.probe")
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
        os.unlink(probe)
    except OSError as err:
        raise OSError(
            err.errno, f"cannot write checkpoint {str(path)!r}: folder {str(path.parent)!r} is "
            f"not writable ({err.strerror or err}); choose another path") from err


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

        try:
            config = GPTConfig(**self.config)
        except (TypeError, ValueError) as err:
            raise ValueError(f"checkpoint {str(self.path)!r} holds an invalid model "
                             f"configuration ({err}); it cannot be used") from None
        with torch.device("meta"):  # the shapes the config implies, without allocating them
            expected = {k: tuple(v.shape) for k, v in GPT(config).state_dict().items()}
        stored = {k: tuple(v.shape) for k, v in self.model_state.items()}
        if stored != expected:
            diff = {k: (stored.get(k), expected.get(k)) for k in {*stored, *expected}
                    if stored.get(k) != expected.get(k)}
            raise ValueError(
                f"checkpoint {str(self.path)!r}: its weights do not have the shapes its "
                f"configuration implies ({{name: (stored, expected)}} = "
                f"{dict(sorted(diff.items())[:3])}); the file is damaged or was edited")
        model = GPT(config)
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
        bad = [k for k, v in self.model_state.items()
               if v.is_floating_point() and not torch.isfinite(v).all()]
        if bad:
            raise ValueError(
                f"checkpoint {str(self.path)!r} holds NaN or infinite weights (in {bad[:3]}); "
                "the run that wrote it had diverged: use an earlier checkpoint")
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
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, f"checkpoint {str(path)!r} is a directory; give "
                                "the checkpoint file in it")
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
    check_payload(path, payload, FORMAT_VERSION)
    tokenizer = None
    if payload.get("tokenizer") is not None:
        from slmbook.tokenizers import Tokenizer

        try:
            tokenizer = Tokenizer.from_dict(payload["tokenizer"])
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"checkpoint {str(path)!r} holds a malformed tokenizer "
                             f"({type(err).__name__}: {err})") from None
        vocab = (payload["config"] or {}).get("vocab_size")
        if isinstance(vocab, int) and tokenizer.vocab_size != vocab:
            raise ValueError(
                f"checkpoint {str(path)!r}: its tokenizer has {tokenizer.vocab_size} tokens but "
                f"its model's vocabulary is {vocab}; they were not trained together. Save the "
                "model with the tokenizer it was trained with")
    return Checkpoint(
        path=path, model_class=payload["model_class"], config=payload["config"],
        model_state=payload["model"], optimizer_state=payload.get("optimizer"),
        scheduler_state=payload.get("scheduler"), step=payload["step"], tokenizer=tokenizer,
        rng=payload.get("rng"), history=payload.get("history"),
        training_state=payload.get("training_state"), meta=payload["meta"],
    )


def pretrained(name: str = "lm") -> tuple[nn.Module, Any]:
    """The small GPT shipped with slmbook, and its tokenizer.

    Loads ``slmbook/assets/pretrained.pt`` (trained on the default corpus by
    ``scripts/train_pretrained.py``). ``name="reader"`` loads chapter 10's
    reader instead (:func:`slmbook.rag.pretrained_reader`).

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
    if name not in ("lm", "reader"):
        raise ValueError(f"name={name!r} is unknown; use 'lm' (chapter 8) or 'reader' (chapter 10)")
    file_name, script = (("pretrained.pt", _REGENERATE) if name == "lm" else
                         ("reader.pt", "python scripts/train_reader.py"))
    resource = importlib.resources.files("slmbook") / "assets" / file_name
    fix = f"regenerate it with `{script}` from the repository root, or reinstall slmbook"
    if not resource.is_file():
        raise FileNotFoundError(f"the pretrained checkpoint {resource} is missing; {fix}")
    with importlib.resources.as_file(resource) as file:
        try:
            ckpt = load(file)
            model = ckpt.build_model()
        except ValueError as err:
            raise ValueError(f"the pretrained checkpoint is damaged: {err}; {fix}") from None
    if name == "reader":  # its prompt format lives in its tokenizer (chapter 10)
        from slmbook.reader import ReaderTokenizer

        return model, ReaderTokenizer()
    if ckpt.tokenizer is None:
        raise ValueError(f"the pretrained checkpoint {resource} has no tokenizer; {fix}")
    return model, ckpt.tokenizer
