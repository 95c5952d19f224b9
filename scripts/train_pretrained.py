"""Train the small GPT that ships with slmbook (``slmbook/assets/pretrained.pt``).

Rerun from the repository root to reproduce it (CPU, one thread, about ten
minutes on a quiet laptop core)::

    OMP_NUM_THREADS=1 python scripts/train_pretrained.py

What it does, all seeded:

* text: the default corpus (:func:`slmbook.data.load_corpus`), split with
  :func:`slmbook.data.train_val_split` (the last 10 % is validation). The
  model trains on the training split only, so the validation split stays
  text it has never seen: chapter 8 fine-tunes on it.
* tokenizer: a :class:`~slmbook.tokenizers.CharTokenizer` fitted on the whole
  corpus (the character set only, so every validation character has an id).
* model: the default :class:`~slmbook.model.GPTConfig` (4 layers, 4 heads,
  width 128, context 64; about 0.8M parameters, 3.3 MB in float32).
* training: :func:`slmbook.training.train` (AdamW, warmup + cosine schedule).

The checkpoint is written with :func:`slmbook.checkpoints.save`; the same
metadata (seed, configuration, steps, losses, corpus hash, versions, wall
time, command) is stored inside it and in ``pretrained.json`` beside it.
``check`` records one exactly reproducible measurement (the loss on a prefix
of the validation split) that ``tests/test_pretrained.py`` repeats, so the
file cannot silently go stale when the model code changes.

See chapter 8, "Starting from a pretrained model" (book/08_pretrained.ipynb).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import platform
import shlex
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

import slmbook
from slmbook import checkpoints
from slmbook.data import corpus_hash, load_corpus, train_val_split
from slmbook.losses import estimate_loss
from slmbook.model import GPT, GPTConfig
from slmbook.tokenizers import CharTokenizer
from slmbook.training import train

ASSETS = Path(__file__).resolve().parent.parent / "slmbook" / "assets"
VAL_FRACTION = 0.1
CHECK_CHARS = 16_384  # the prefix of the validation split the test re-measures
CHECK_BATCH = 64


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=2500, help="optimisation steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=12)
    p.add_argument("--lr", type=float, default=2e-3, help="peak learning rate")
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--out", type=Path, default=ASSETS / "pretrained.pt")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def check_loss(model: torch.nn.Module, tokenizer: Any, val_text: str) -> dict[str, Any]:
    """The exactly reproducible measurement that the test repeats (see ``check`` in the JSON)."""
    ids = torch.tensor(tokenizer.encode(val_text[:CHECK_CHARS]), dtype=torch.long)
    loss = estimate_loss(model, ids, batch_size=CHECK_BATCH, block_size=model.config.block_size)
    return {"split": "val", "chars": CHECK_CHARS, "batch_size": CHECK_BATCH,
            "block_size": model.config.block_size, "loss": loss}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    started = time.perf_counter()
    text = load_corpus()
    tokenizer = CharTokenizer.fit(text)
    train_text, val_text = train_val_split(text, VAL_FRACTION)
    train_ids = torch.tensor(tokenizer.encode(train_text), dtype=torch.long)
    val_ids = torch.tensor(tokenizer.encode(val_text), dtype=torch.long)

    slmbook.set_seed(args.seed)  # the initial weights come from torch's global generator
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size))
    history = train(model, train_ids, val_ids, max_steps=args.steps, batch_size=args.batch_size,
                    lr=args.lr, eval_every=args.eval_every, eval_batches=20, seed=args.seed,
                    progress=not args.no_progress)
    model.eval()
    val_loss = estimate_loss(model, val_ids)  # the whole validation split, deterministic
    meta = {
        "seed": args.seed,
        "config": dataclasses.asdict(model.config),
        "n_params": sum(p.numel() for p in model.parameters()),
        "steps": args.steps,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "schedule": "warmup + cosine (slmbook.training.train defaults)",
        "tokens_seen": args.steps * args.batch_size * model.config.block_size,
        "train_loss": history.eval_train_loss[-1],
        "val_loss": val_loss,
        "val_bits_per_char": val_loss / math.log(2),
        "val_loss_measured_on": "the whole validation split, slmbook.losses.estimate_loss "
                                "(consecutive windows of block_size)",
        "check": check_loss(model, tokenizer, val_text),
        "corpus": "slmbook.data.load_corpus() (pydoc_data.topics)",
        "corpus_hash": corpus_hash(text),
        "corpus_chars": len(text),
        "val_fraction": VAL_FRACTION,
        "train_chars": len(train_text),
        "val_chars": len(val_text),
        "tokenizer_fit": "CharTokenizer fitted on the whole corpus (character set only)",
        "python_version": platform.python_version(),
        "torch_version": torch.__version__,
        "slmbook_version": slmbook.__version__,
        "threads": torch.get_num_threads(),
        "wall_time_s": round(time.perf_counter() - started, 1),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": " ".join(["OMP_NUM_THREADS=1 python scripts/train_pretrained.py",
                             shlex.join(sys.argv[1:] if argv is None else argv)]).strip(),
    }
    path = checkpoints.save(args.out, model, step=args.steps, tokenizer=tokenizer,
                            history=history, force=True, **meta)  # replaces a damaged file too
    meta["file_bytes"] = path.stat().st_size
    path.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return meta


if __name__ == "__main__":
    result = main()
    print(json.dumps({k: result[k] for k in ("steps", "train_loss", "val_loss",
                                              "val_bits_per_char", "file_bytes", "wall_time_s")}))
