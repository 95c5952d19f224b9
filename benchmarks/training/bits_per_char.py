"""Validation bits per character after a fixed wall-clock budget, beside compressors.

For each budget (minutes), a fresh model of the default configuration (every
option's default is read from ``slmbook train``'s parser, so the benchmark
follows the command; ``--dtype auto`` is resolved once, by the calibration
run, and every budget trains in its choice) trains with a warmup-then-cosine
schedule sized to the budget (the number of steps is
estimated from a short calibration run) and a hard time limit; then the whole
validation split is scored (bits per character = loss in nats / ln 2, since
one token is one character). The standard-library compressors (zlib, bz2,
lzma) are measured on the same validation text, given the training text.

Run from the repository root, for example::

    python benchmarks/training/bits_per_char.py --threads 2 --minutes 1 2 5
"""

from __future__ import annotations

import argparse
import math
import time

import torch
from _common import HERE, environment, write_results

from slmbook.cli import build_parser
from slmbook.compression import compressor_bits_per_char
from slmbook.data import corpus_hash, load_corpus, train_val_split
from slmbook.losses import estimate_loss
from slmbook.model import GPT, GPTConfig
from slmbook.tokenizers import CharTokenizer
from slmbook.training import train


def make_model(args: argparse.Namespace, vocab: int) -> GPT:
    torch.manual_seed(args.seed)
    return GPT(GPTConfig(vocab_size=vocab, block_size=args.block_size, n_layer=args.n_layer,
                         n_head=args.n_head, n_embd=args.n_embd, dropout=args.dropout))


def steps_per_second(args: argparse.Namespace, train_ids, val_ids,
                     vocab: int) -> tuple[float, str]:
    h = train(make_model(args, vocab), train_ids, val_ids, max_steps=10_000,
              batch_size=args.batch_size, eval_every=10_000, eval_batches=1, progress=False,
              time_limit=args.calibration_seconds, seed=args.seed, lr=args.lr, dtype=args.dtype)
    skip = min(10, len(h.steps) // 2)  # the first steps are slower
    rate = (len(h.steps) - skip) / (h.time[-1] - h.time[skip - 1] if skip else h.time[-1])
    return rate, h.dtype  # "auto" is resolved once, here, and the budgets train in its choice


def run_budget(args, minutes: float, rate: float, train_ids, val_ids, vocab: int) -> dict:
    seconds = 60 * minutes
    eval_every = max(1, int(rate * args.eval_seconds))
    max_steps = max(2, int(rate * seconds * 0.97))  # the schedule ends just before the limit
    model = make_model(args, vocab)
    h = train(model, train_ids, val_ids, max_steps=max_steps, batch_size=args.batch_size,
              lr=args.lr, eval_every=eval_every, eval_batches=args.eval_batches,
              progress=False, time_limit=seconds, seed=args.seed, dtype=args.dtype)
    start = time.perf_counter()
    val_loss = estimate_loss(model, val_ids, batch_size=64)  # the whole split, in order
    return {"minutes": minutes, "dtype": h.dtype, "steps": len(h.steps),
            "planned_steps": max_steps,
            "train_seconds": h.time[-1], "tokens": h.tokens[-1],
            "tokens_per_s": h.tokens[-1] / h.time[-1], "stop_reason": h.stop_reason,
            "val_loss_nats": val_loss, "val_bits_per_char": val_loss / math.log(2),
            "full_eval_seconds": time.perf_counter() - start,
            "curve": {"step": h.eval_steps, "val_bits_per_char":
                      [x / math.log(2) for x in h.eval_val_loss]}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, nargs="+", default=[1, 2, 5],
                   help="training budgets in minutes (default: 1 2 5)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default: 2)")
    p.add_argument("--calibration-seconds", type=float, default=15.0,
                   help="length of the run that measures steps per second (default: 15)")
    p.add_argument("--eval-seconds", type=float, default=15.0,
                   help="evaluate roughly every this many seconds (default: 15)")
    p.add_argument("--eval-batches", type=int, default=10)
    cli = build_parser().parse_args(["train"])  # every default below is slmbook train's
    for name, kind in (("batch_size", int), ("block_size", int), ("n_layer", int),
                       ("n_head", int), ("n_embd", int), ("dropout", float), ("lr", float)):
        p.add_argument("--" + name.replace("_", "-"), type=kind, default=getattr(cli, name),
                       help="default: slmbook train's, %(default)g")
    p.add_argument("--dtype", default=cli.dtype, choices=["auto", "float32", "bfloat16"],
                   help="precision of the forward pass (TrainConfig.dtype; default: slmbook "
                   "train's, %(default)s)")
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--out", default=str(HERE / "results"),
                   help="folder for bits_per_char.json/.md")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    text = load_corpus()
    tok = CharTokenizer.fit(text)
    ids = torch.tensor(tok.encode(text))
    train_ids, val_ids = train_val_split(ids)
    train_text, val_text = train_val_split(text)
    compressors = compressor_bits_per_char(train_text, val_text)
    rate, chosen = steps_per_second(args, train_ids, val_ids, tok.vocab_size)
    requested, args.dtype = args.dtype, chosen
    runs = [run_budget(args, m, rate, train_ids, val_ids, tok.vocab_size) for m in args.minutes]
    result = {"environment": environment(corpus_hash(text)), "config": vars(args),
              "dtype_requested": requested, "calibrated_steps_per_s": rate, "compressors_bits_per_char": compressors,
              "runs": runs}
    best = min(v["conditional"] for v in compressors.values())
    md = ["| budget | precision | steps | tokens/s | val bits/char | vs best compressor |",
          "|---|---|---:|---:|---:|---:|"]
    md += [f"| {r['minutes']:g} min | {r['dtype']} | {r['steps']:,} | {r['tokens_per_s']:,.0f} | "
           f"{r['val_bits_per_char']:.3f} | {r['val_bits_per_char'] - best:+.3f} |" for r in runs]
    md.append("\nCompressors on the validation split, given the training text (bits/char): "
              + ", ".join(f"{k} {v['conditional']:.3f}" for k, v in compressors.items()) + ".")
    path = write_results("bits_per_char", result, "\n".join(md), args.out)
    print("\n".join(md))
    print(f"written {path}")


if __name__ == "__main__":
    main()
