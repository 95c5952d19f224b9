"""The ``slmbook`` command: train a small GPT, generate text, answer questions, search files.

Examples::

    slmbook train                          # default corpus and model, a minute or two
    slmbook train --corpus my.txt --steps 500 --out runs/my.pt
    slmbook generate --checkpoint slmbook-run.pt --prompt "The with statement"
    slmbook ask "Which city does Zukra Tasror live in?" --show-passages
    slmbook search --docs notes/ README.md --index notes.idx "gradient clipping"

``python -m slmbook ...`` does the same. The options of ``train`` are
generated from :class:`slmbook.training.TrainConfig`, with its defaults
(except the seven in ``CLI_DEFAULTS``, each with its reason). Mistakes in the
arguments (an unknown option, a bad value, a missing or unreadable
checkpoint or file, an ``--out`` or ``--index`` that holds another file)
print a one-line message and exit with status 2. An interrupted training
saves a resumable checkpoint and exits with status 130 (Ctrl-C) or 143
(SIGTERM); a second Ctrl-C stops at once, also with 130, and leaves the
previous checkpoint intact. ``torchrun --nproc_per_node=N -m slmbook train``
trains on N processes (rank 0 alone prints and writes; see
:mod:`slmbook.distributed`). ``ask`` and ``search`` live in
:mod:`slmbook._commands`.

See appendix B, "The command line and performance" (book/B_cli_performance.ipynb).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import re
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from slmbook._commands import (
    UsageError,
    add_ask,
    add_search,
    ask,
    non_negative_int_arg,
    positive_float_arg,
    positive_int_arg,
    search,
    seed_arg,
)

__all__ = ["CLI_DEFAULTS", "build_parser", "main"]

_EPILOG_TRAIN = """\
The defaults (4 layers, 4 heads, width 128, context 64, batch 12, peak
learning rate 4e-3, 2000 steps) take a minute or two on 2 CPU cores. With
--dtype auto (the default) the run is in bfloat16 where a few timed passes
show it faster on this machine, else float32 (--dtype float32 repeats bit for
bit on any machine). Ctrl-C (or SIGTERM) stops at the end of the current step
and saves a checkpoint that --resume continues exactly, with the options
stored in it; an option given again replaces the stored one."""


# The only TrainConfig defaults the command sets differently, each for a reason (a test
# checks that every other option's default is TrainConfig's own):
CLI_DEFAULTS = {
    "max_steps": 2000,  # `slmbook train` alone trains for a minute or two on 2 cores
    # benchmarks/training/bits_per_char.py: better than train()'s 1e-3 after 45 s and 5 minutes
    "lr": 4e-3,
    "block_size": 64,  # the command builds the model: --block-size is its context and the windows'
    "checkpoint_path": "slmbook-run.pt",  # a command always leaves its result on disk
    "checkpoint_every": 500,  # a crash loses at most 500 steps of work
    "device": "auto",  # the command builds the model itself: on a GPU when there is one
    # benchmarks/training/throughput.py: bfloat16 autocast 1.1x-1.4x float32 on a CPU with bfloat16
    # instructions, slower elsewhere; "auto" times both on the first batch and keeps the faster
    "dtype": "auto",
}
_MACHINE = ("device",)  # where a run trains is this machine's business: --resume never restores it
_FLAGS = {"max_steps": ["--max-steps", "--steps"], "checkpoint_path": ["--out"],
          "progress": ["--no-progress"]}
_GROUP = {"block_size": "model", "checkpoint_path": "output", "checkpoint_every": "output",
          "progress": "output"}


class _Given(argparse.Action):
    """Store the value and remember that it was given (resuming keeps the others)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        setattr(namespace, self.dest, self.const if self.nargs == 0 else values)
        namespace.given = {*getattr(namespace, "given", ()), self.dest}


def _converter(annotation: str) -> Callable[[str], Any]:
    kind = int if annotation.startswith("int") else float if annotation.startswith("float") else str
    optional = "None" in annotation
    what = {int: "an integer", float: "a number", str: "a value"}[kind]

    def convert(text: str) -> Any:
        if optional and text.lower() == "none":
            return None
        try:
            return kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {what}{' or none' if optional else ''}, got {text!r}") from None

    return convert


def _add_config_options(groups: dict[str, Any]) -> None:
    """One option per TrainConfig field: its help, its type, its default (or CLI_DEFAULTS')."""
    from slmbook.training import TrainConfig

    for f in dataclasses.fields(TrainConfig):
        default = CLI_DEFAULTS.get(f.name, f.default)
        flags = _FLAGS.get(f.name, ["--" + f.name.replace("_", "-")])
        group = groups[_GROUP.get(f.name, "training")]
        helptext = f.metadata["help"].replace("%", "%%")
        if f.name == "progress":
            group.add_argument(*flags, dest=f.name, action=_Given, nargs=0, const=False,
                               default=default, help="hide the progress bar")
            continue
        if f.name == "block_size":
            helptext = "context length of the model, and of the training windows, in characters"
        shown = "none" if default is None else default
        metavar = "PATH" if f.name == "checkpoint_path" else f.name.upper().split("_")[-1]
        group.add_argument(*flags, dest=f.name, action=_Given, type=_converter(f.type),
                           default=default, metavar=metavar,
                           help=f"{helptext} (default: {shown})")


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a small GPT on a text corpus and save a checkpoint",
                       description="Train a character-level GPT and save a checkpoint.",
                       epilog=_EPILOG_TRAIN, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(given=set())
    d = p.add_argument_group("data")
    d.add_argument("--corpus", metavar="PATH", default=None, action=_Given,
                   help="UTF-8 text file to train on (default: the Python reference docs "
                        "shipped with CPython, about 465,000 characters)")
    d.add_argument("--val-fraction", type=float, default=0.1, metavar="F",
                   help="fraction of the text, at its end, kept for validation (default: 0.1)")
    m = p.add_argument_group("model")
    m.add_argument("--n-layer", type=positive_int_arg, default=4, action=_Given,
                   help="transformer blocks (default: 4)")
    m.add_argument("--n-head", type=positive_int_arg, default=4, action=_Given,
                   help="attention heads per block; must divide --n-embd (default: 4)")
    m.add_argument("--n-embd", type=positive_int_arg, default=128, action=_Given,
                   help="width of each token's vector (default: 128)")
    m.add_argument("--dropout", type=float, default=0.0, action=_Given,
                   help="dropout rate in [0, 1) (default: 0)")
    t = p.add_argument_group("training")
    o = p.add_argument_group("output")
    _add_config_options({"model": m, "training": t, "output": o})
    t.add_argument("--threads", type=positive_int_arg, default=None,
                   help="torch CPU threads (default: torch's choice)")
    o.add_argument("--resume", metavar="PATH", default=None,
                   help="continue a run from its checkpoint, with its options; an option given "
                        "again replaces the stored one (a larger --steps extends the run)")
    o.add_argument("--force", action="store_true",
                   help="overwrite an existing checkpoint at --out (never a file that is not "
                        "a checkpoint)")
    o.add_argument("--sample-length", type=non_negative_int_arg, default=200, metavar="N",
                   help="characters per sample printed at each evaluation; 0 for none "
                        "(default: 200)")


def _add_generate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="continue a prompt with a trained checkpoint",
                       description="Sample text from a checkpoint written by `slmbook train`.")
    p.add_argument("--checkpoint", metavar="PATH", required=True,
                   help="checkpoint file (from `slmbook train`)")
    p.add_argument("--prompt", default=None, help="text to continue (default: a newline)")
    p.add_argument("--max-new-tokens", type=positive_int_arg, default=300,
                   help="tokens (characters) to generate (default: 300)")
    p.add_argument("--temperature", type=positive_float_arg, default=0.8,
                   help="softmax temperature: lower is more conservative (default: 0.8)")
    p.add_argument("--top-k", type=positive_int_arg, default=None,
                   help="sample only among the k most likely tokens (default: all)")
    p.add_argument("--seed", type=seed_arg, default=0, help="random seed (default: 0)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``slmbook`` command."""
    parser = argparse.ArgumentParser(
        prog="slmbook", description="Train a small language model, generate text with one, "
                                    "answer questions with retrieval, or search your files.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_train(sub)
    _add_generate(sub)
    add_ask(sub)
    add_search(sub)
    return parser


def _report(history: Any, model: Any) -> None:
    from tqdm.auto import tqdm

    step, train_loss, val_loss = (history.eval_steps[-1], history.eval_train_loss[-1],
                                  history.eval_val_loss[-1])
    tqdm.write(f"step {step:>6}: train loss {train_loss:.4f}, val loss {val_loss:.4f} nats "
               f"({val_loss / math.log(2):.3f} bits/char)", file=sys.stdout)


def _train_config(args: argparse.Namespace, stored: dict[str, Any] | None) -> Any:
    """The TrainConfig of the options; when resuming, the stored one with the given options."""
    from slmbook.training import TrainConfig

    names = [f.name for f in dataclasses.fields(TrainConfig)]
    values = {name: getattr(args, name) for name in names}
    if stored is not None:
        if not isinstance(stored, dict):
            raise ValueError(f"--resume: {args.resume!r} holds a malformed training "
                             f"configuration (a {type(stored).__name__}, not a dict)")
        values = {**values, **{k: v for k, v in stored.items()
                               if k in values and k not in args.given and k not in _MACHINE}}
        try:
            TrainConfig(**{**values, "max_steps": values["max_steps"] or 1, "epochs": None})
        except (TypeError, ValueError) as err:
            raise ValueError(f"--resume: {args.resume!r} holds a malformed training "
                             f"configuration ({err}); give the options again, or start a new "
                             "run") from None
    for one, other in (("epochs", "max_steps"), ("max_steps", "epochs")):
        if one in args.given and other not in args.given:
            values[other] = None  # --epochs alone replaces the default (or stored) --steps
    try:
        return TrainConfig(**values)
    except (TypeError, ValueError) as err:
        found = [(m.start(), n) for n in names if (m := re.search(rf"\b{n}\b", str(err)))]
        name = min(found)[1] if found else None
        flag = _FLAGS.get(name, ["--" + name.replace("_", "-")])[0] if name else "option"
        raise UsageError(f"{flag}: {err}") from None


def _train(args: argparse.Namespace) -> int:
    import torch

    from slmbook import checkpoints
    from slmbook.callbacks import SampleCallback
    from slmbook.data import corpus_hash, load_corpus, train_val_split
    from slmbook.model import GPT, GPTConfig
    from slmbook.tokenizers import CharTokenizer
    from slmbook.training import train

    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)  # progress lines appear even when piped
    main = os.environ.get("RANK", "0") == "0"  # under torchrun, rank 0 alone prints
    ckpt = checkpoints.load(args.resume) if args.resume else None
    config = _train_config(args, ckpt and (ckpt.training_state or {}).get("config"))
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(config.seed)
    corpus = args.corpus
    if ckpt is not None and "corpus" not in args.given:
        corpus = None if ckpt.meta.get("corpus", "pydoc") == "pydoc" else ckpt.meta["corpus"]
    if corpus is not None and Path(corpus).is_dir():
        raise ValueError(f"--corpus: {str(corpus)!r} is a directory; give a UTF-8 text file")
    text = load_corpus(corpus)
    tokenizer = CharTokenizer.fit(text)
    ids = torch.tensor(tokenizer.encode(text), dtype=torch.long)
    train_ids, val_ids = train_val_split(ids, args.val_fraction)
    model_config = {"vocab_size": tokenizer.vocab_size, "block_size": config.block_size,
                    "n_layer": args.n_layer, "n_head": args.n_head, "n_embd": args.n_embd,
                    "dropout": args.dropout}
    if ckpt is not None and ckpt.config is not None:  # the stored model, unless an option differs
        model_config = {**model_config, **{k: v for k, v in ckpt.config.items()
                                           if k not in args.given and k != "vocab_size"}}
    model = GPT(GPTConfig(**model_config))
    n_params = sum(p.numel() for p in model.parameters())
    if main:
        print(f"corpus: {len(text):,} characters, vocabulary {tokenizer.vocab_size}, "
              f"hash {corpus_hash(text)}; model: {n_params:,} parameters", flush=True)
    callbacks = [_report]
    if args.sample_length > 0:
        prompt = "\n" if "\n" in text else text[0]
        callbacks.append(SampleCallback(tokenizer, prompt, args.sample_length, temperature=0.8,
                                        seed=config.seed, echo=True))
    if config.checkpoint_path is not None and not args.force:
        _check_out(config.checkpoint_path, args.resume)
    history = train(model, train_ids, val_ids, config, callbacks=callbacks,
                    resume_from=args.resume, tokenizer=tokenizer,
                    meta={"corpus_hash": corpus_hash(text), "corpus": str(corpus or "pydoc")})
    seconds = history.time[-1] if history.time else 0.0
    tokens = history.tokens[-1] if history.tokens else 0
    saved = config.checkpoint_file(history.steps[-1] if history.steps else 0)
    if main:
        print(f"stopped ({history.stop_reason}) after {len(history.steps)} steps, "
              f"{seconds:.0f} s, {tokens / max(seconds, 1e-9):,.0f} tokens/s in "
              f"{history.dtype}; checkpoint: {saved}")
    if history.stop_reason in ("interrupted", "terminated"):
        if main:
            print(f"{history.stop_reason}: resume with --resume {saved}", file=sys.stderr)
        return 130 if history.stop_reason == "interrupted" else 143  # 128 + SIGINT / SIGTERM
    return 0


def _check_out(out: str | Path, resume: str | None) -> None:
    """Refuse to replace another run's checkpoint at ``--out`` (unless ``--force``)."""
    from slmbook import checkpoints

    pattern = Path(out)
    files = (sorted(pattern.parent.glob(pattern.name.replace("{step}", "*")))
             if "{step}" in pattern.name else [pattern])
    resumed = Path(resume).resolve() if resume else None
    if resumed is not None and resumed in [f.resolve() for f in files]:
        return  # continuing that run
    taken = [f for f in files if f.is_file() and checkpoints.is_checkpoint(f)]
    if taken:
        raise ValueError(
            f"--out: {str(taken[0])!r} already holds a checkpoint; continue it with --resume "
            f"{taken[0]}, overwrite it with --force, or choose another --out")


def _generate(args: argparse.Namespace) -> int:
    import torch

    from slmbook import checkpoints
    from slmbook.sampling import generate

    ckpt = checkpoints.load(args.checkpoint)
    if ckpt.tokenizer is None:
        raise ValueError(f"checkpoint {args.checkpoint!r} has no tokenizer; it cannot decode text")
    model = ckpt.build_model()
    prompt = "\n" if args.prompt is None else args.prompt
    try:
        ckpt.tokenizer.encode(prompt)
    except ValueError as err:
        if args.prompt is not None:
            raise ValueError(f"--prompt: {err}") from None
        first = ckpt.tokenizer.decode([0])
        raise ValueError(f"the default prompt, a newline, is not in this model's vocabulary "
                         f"(its training text had none); give one with --prompt, e.g. "
                         f"--prompt {first!r}") from None
    text = generate(model, ckpt.tokenizer, prompt, args.max_new_tokens,
                    temperature=args.temperature, top_k=args.top_k,
                    generator=torch.Generator().manual_seed(args.seed))
    print(text)
    return 0


_COMMANDS = {"train": _train, "generate": _generate, "ask": ask, "search": search}


def _note(message: Any, category: Any, filename: str, lineno: int, file: Any = None,
          line: Any = None) -> None:
    print(f"slmbook: note: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``slmbook`` command with ``argv`` (default: ``sys.argv[1:]``); return the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    sub = parser._subparsers._group_actions[0].choices[args.command]
    flag, path = {"train": ("--resume", getattr(args, "resume", None)),
                  "generate": ("--checkpoint", getattr(args, "checkpoint", None))}.get(
        args.command, ("", None))
    if path is not None and Path(path).is_dir():
        sub.error(f"{flag}: {path!r} is a directory; give the checkpoint file in it")
    if path is not None and not Path(path).is_file():
        hint = "" if args.command == "train" else "; train one with `slmbook train --out PATH`"
        sub.error(f"{flag}: checkpoint {path!r} does not exist{hint}")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = _note  # the library's warnings, as one-line notes
        try:
            return _COMMANDS[args.command](args)
        except UsageError as err:
            sub.error(str(err))
        except KeyboardInterrupt:
            print(f"slmbook {args.command}: interrupted again: stopped at once (a checkpoint "
                  "being written was abandoned; the previous one on disk is intact)",
                  file=sys.stderr)
            return 130
        except (ValueError, OSError, TypeError, FloatingPointError) as err:
            print(f"slmbook {args.command}: error: {err}", file=sys.stderr)
            return 2
    return 2
