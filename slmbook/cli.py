"""The ``slmbook`` command: train a small GPT, or generate text from a checkpoint.

Examples::

    slmbook train                          # default corpus and model, about two minutes
    slmbook train --corpus my.txt --steps 500 --out runs/my.pt
    slmbook generate --checkpoint slmbook-run.pt --prompt "The with statement"

``python -m slmbook ...`` does the same. Mistakes in the arguments (an
unknown option, a missing or unreadable checkpoint) print a one-line message
and exit with status 2; an interrupted training (Ctrl-C) saves a resumable
checkpoint and exits with status 130.

Taught in chapter 7, "Iterating" (book/07_iterate.ipynb).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["build_parser", "main"]

_EPILOG_TRAIN = """\
The defaults (4 layers, 4 heads, width 128, context 64, batch 12, 2000 steps)
take about two minutes on 2 CPU cores. Ctrl-C stops at the end of the current
step and saves a checkpoint that --resume continues exactly."""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value}")
    return value


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a small GPT on a text corpus and save a checkpoint",
                       description="Train a character-level GPT and save a checkpoint.",
                       epilog=_EPILOG_TRAIN, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = p.add_argument_group("data")
    d.add_argument("--corpus", metavar="PATH", default=None,
                   help="UTF-8 text file to train on (default: the Python reference docs "
                        "shipped with CPython, about 465,000 characters)")
    d.add_argument("--val-fraction", type=float, default=0.1, metavar="F",
                   help="fraction of the text, at its end, kept for validation (default: 0.1)")
    m = p.add_argument_group("model")
    m.add_argument("--n-layer", type=_positive_int, default=4, help="transformer blocks (default: 4)")
    m.add_argument("--n-head", type=_positive_int, default=4,
                   help="attention heads per block; must divide --n-embd (default: 4)")
    m.add_argument("--n-embd", type=_positive_int, default=128,
                   help="width of each token's vector (default: 128)")
    m.add_argument("--block-size", type=_positive_int, default=64,
                   help="context length in characters (default: 64)")
    m.add_argument("--dropout", type=float, default=0.0, help="dropout rate in [0, 1) (default: 0)")
    t = p.add_argument_group("training")
    t.add_argument("--steps", type=_positive_int, default=2000,
                   help="optimisation steps (default: 2000)")
    t.add_argument("--batch-size", type=_positive_int, default=12,
                   help="windows per step (default: 12)")
    t.add_argument("--lr", type=_positive_float, default=1e-3,
                   help="peak learning rate of AdamW (default: 1e-3)")
    t.add_argument("--weight-decay", type=float, default=0.1,
                   help="AdamW weight decay on matrices (default: 0.1)")
    t.add_argument("--schedule", choices=["cosine", "constant"], default="cosine",
                   help="learning-rate schedule after warmup (default: cosine)")
    t.add_argument("--warmup-steps", type=_positive_int, default=None,
                   help="linear warmup steps (default: min(100, steps / 10))")
    t.add_argument("--grad-clip", type=_positive_float, default=1.0,
                   help="maximal gradient norm (default: 1.0)")
    t.add_argument("--eval-every", type=_positive_int, default=250,
                   help="evaluate and print a sample every N steps (default: 250)")
    t.add_argument("--eval-batches", type=_positive_int, default=20,
                   help="batches per evaluation (default: 20)")
    t.add_argument("--time-limit", type=_positive_float, default=None, metavar="SECONDS",
                   help="stop after this many seconds even if --steps is not reached")
    t.add_argument("--seed", type=int, default=1337, help="random seed (default: 1337)")
    t.add_argument("--threads", type=_positive_int, default=None,
                   help="torch CPU threads (default: torch's choice)")
    o = p.add_argument_group("output")
    o.add_argument("--out", metavar="PATH", default="slmbook-run.pt",
                   help="checkpoint file to write (default: slmbook-run.pt)")
    o.add_argument("--checkpoint-every", type=_positive_int, default=500,
                   help="also save every N steps (default: 500)")
    o.add_argument("--resume", metavar="PATH", default=None,
                   help="continue a run from its checkpoint; give the same options as the "
                        "first run (a larger --steps extends it)")
    o.add_argument("--sample-length", type=int, default=200, metavar="N",
                   help="characters per sample printed at each evaluation; 0 for none "
                        "(default: 200)")
    o.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _add_generate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="continue a prompt with a trained checkpoint",
                       description="Sample text from a checkpoint written by `slmbook train`.")
    p.add_argument("--checkpoint", metavar="PATH", required=True,
                   help="checkpoint file (from `slmbook train`)")
    p.add_argument("--prompt", default="\n", help="text to continue (default: a newline)")
    p.add_argument("--max-new-tokens", type=_positive_int, default=300,
                   help="tokens (characters) to generate (default: 300)")
    p.add_argument("--temperature", type=_positive_float, default=0.8,
                   help="softmax temperature: lower is more conservative (default: 0.8)")
    p.add_argument("--top-k", type=_positive_int, default=None,
                   help="sample only among the k most likely tokens (default: all)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``slmbook`` command."""
    parser = argparse.ArgumentParser(
        prog="slmbook", description="Train a small language model, or generate text with one.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_train(sub)
    _add_generate(sub)
    return parser


def _report(history: Any, model: Any) -> None:
    from tqdm.auto import tqdm

    step, train_loss, val_loss = (history.eval_steps[-1], history.eval_train_loss[-1],
                                  history.eval_val_loss[-1])
    tqdm.write(f"step {step:>6}: train loss {train_loss:.4f}, val loss {val_loss:.4f} nats "
               f"({val_loss / math.log(2):.3f} bits/char)", file=sys.stdout)


def _train(args: argparse.Namespace) -> int:
    import torch

    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)  # progress lines appear even when piped

    from slmbook.callbacks import SampleCallback
    from slmbook.data import corpus_hash, load_corpus, train_val_split
    from slmbook.model import GPT, GPTConfig
    from slmbook.tokenizers import CharTokenizer
    from slmbook.training import train

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    text = load_corpus(args.corpus)
    tokenizer = CharTokenizer.fit(text)
    ids = torch.tensor(tokenizer.encode(text), dtype=torch.long)
    train_ids, val_ids = train_val_split(ids, args.val_fraction)
    config = GPTConfig(vocab_size=tokenizer.vocab_size, block_size=args.block_size,
                       n_layer=args.n_layer, n_head=args.n_head, n_embd=args.n_embd,
                       dropout=args.dropout)
    model = GPT(config)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"corpus: {len(text):,} characters, vocabulary {tokenizer.vocab_size}, "
          f"hash {corpus_hash(text)}; model: {n_params:,} parameters", flush=True)
    callbacks = [_report]
    if args.sample_length > 0:
        prompt = "\n" if "\n" in text else text[0]
        callbacks.append(SampleCallback(tokenizer, prompt, args.sample_length, temperature=0.8,
                                        seed=args.seed, echo=True))
    history = train(
        model, train_ids, val_ids, max_steps=args.steps, batch_size=args.batch_size,
        lr=args.lr, weight_decay=args.weight_decay, schedule=args.schedule,
        warmup_steps=args.warmup_steps, grad_clip=args.grad_clip, eval_every=args.eval_every,
        eval_batches=args.eval_batches, callbacks=callbacks, checkpoint_path=args.out,
        checkpoint_every=args.checkpoint_every, resume_from=args.resume, tokenizer=tokenizer,
        seed=args.seed, time_limit=args.time_limit, progress=not args.no_progress,
        meta={"corpus_hash": corpus_hash(text), "corpus": str(args.corpus or "pydoc")})
    seconds = history.time[-1] if history.time else 0.0
    tokens = history.tokens[-1] if history.tokens else 0
    print(f"stopped ({history.stop_reason}) after {len(history.steps)} steps, "
          f"{seconds:.0f} s, {tokens / max(seconds, 1e-9):,.0f} tokens/s; "
          f"checkpoint: {args.out}")
    if history.stop_reason == "interrupted":
        print(f"interrupted: resume with --resume {args.out}", file=sys.stderr)
        return 130
    return 0


def _generate(args: argparse.Namespace) -> int:
    import torch

    from slmbook import checkpoints
    from slmbook.sampling import generate

    ckpt = checkpoints.load(args.checkpoint)
    if ckpt.tokenizer is None:
        raise ValueError(f"checkpoint {args.checkpoint!r} has no tokenizer; it cannot decode text")
    model = ckpt.build_model()
    text = generate(model, ckpt.tokenizer, args.prompt, args.max_new_tokens,
                    temperature=args.temperature, top_k=args.top_k,
                    generator=torch.Generator().manual_seed(args.seed))
    print(text)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``slmbook`` command with ``argv`` (default: ``sys.argv[1:]``); return the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "train" and args.resume and not Path(args.resume).is_file():
        parser.error(f"--resume: checkpoint {args.resume!r} does not exist")
    if args.command == "generate" and not Path(args.checkpoint).is_file():
        parser.error(f"--checkpoint: checkpoint {args.checkpoint!r} does not exist; "
                     "train one with `slmbook train --out PATH`")
    try:
        return _train(args) if args.command == "train" else _generate(args)
    except (ValueError, OSError, TypeError) as err:
        print(f"slmbook {args.command}: error: {err}", file=sys.stderr)
        return 2
