"""kNN-LM on the book's real text: bits per character against the size of the datastore.

The shipped character-level model (``slmbook.checkpoints.pretrained()``,
trained on the training split only) is mixed with a k-nearest-neighbour
distribution over a datastore of its own final hidden states on the training
split (Khandelwal et al. 2020), without retraining; see
:func:`slmbook.knnlm.knnlm_curve`.

* Held-out text: the validation split (the last 10% of the corpus, never
  trained on). Its first half is reported on; k, T and λ are tuned on
  ``--n-tune`` positions of the second half, separately for every size.
* Leakage: keys from the query's own document are excluded (the split cuts
  one document in two); the same measurement with them allowed is recorded.
* Where the gain comes from: the reported positions are split by whether the
  preceding ``m`` characters and the next one occur verbatim in the training
  text of another document.

Usage (from the repository root; one thread, the machine is shared)::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/rag/knnlm.py

Writes benchmarks/rag/knnlm.json and benchmarks/rag/knnlm.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import platform
import shlex
import sys
import time
from pathlib import Path

import torch

from slmbook import checkpoints
from slmbook.data import corpus_hash, load_corpus, load_documents, train_val_split
from slmbook.knnlm import KNNLMConfig, document_ids, knnlm_curve

HERE = Path(__file__).resolve().parent
LN2 = math.log(2)


def verbatim_overlap(text: str, docs: torch.Tensor, n_train: int, positions: torch.Tensor,
                     m: int) -> torch.Tensor:
    """(Q,) bool: the m characters before each validation target, and the target, occur
    verbatim in the training text of another document."""
    train, val = text[:n_train], text[n_train:]
    grams: dict[str, set[int]] = {}
    for i in range(n_train - m):
        grams.setdefault(train[i:i + m + 1], set()).add(int(docs[i + m]))
    out = []
    for p in positions.tolist():
        own = int(docs[n_train + p])
        found = grams.get(val[p - m:p + 1], set())
        out.append(bool(found - {own}))
    return torch.tensor(out)


def environment(text: str, threads: int) -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"command": "OMP_NUM_THREADS=1 python " + " ".join(shlex.quote(a) for a in sys.argv),
            "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
            "python": platform.python_version(), "torch": str(torch.__version__),
            "threads": threads, "cpu": cpu, "corpus_hash": corpus_hash(text),
            "corpus_chars": len(text)}


def run_fold(model, tok, sizes, args, config: KNNLMConfig) -> dict:
    """One curve (tuned on one end of the validation split, reported on the other), with the
    per-position gains summarised and the verbatim-overlap breakdown of the largest datastore."""
    text, names = load_corpus(), list(load_documents())
    docs = list(load_documents().values())
    n_report = None if args.n_report == "all" else int(args.n_report)
    r = knnlm_curve(model, tok, sizes, n_tune=args.n_tune, n_report=n_report, config=config,
                    seed=args.seed, details=True)
    lm = r.pop("lm_target_log_probs").double()
    positions = r.pop("positions")
    n_train = len(train_val_split(text)[0])
    doc_of = document_ids(docs)
    gains = []
    for point in r["points"]:
        gains.append((point.pop("target_log_probs").double() - lm) / LN2)  # bits saved
        point["gain_bits"] = r["lm_bits"] - point["bits"]
        point["gain_standard_error"] = float(gains[-1].std() / math.sqrt(len(lm)))
        point["share_positions_helped"] = float((gains[-1] > 0).double().mean())
    largest = gains[max(range(len(gains)), key=lambda i: r["points"][i]["size"])]
    breakdown = []
    for m in args.overlap:
        seen = verbatim_overlap(text, doc_of, n_train, positions, m)
        row = {"m": m, "share": float(seen.double().mean())}
        for key, mask in (("seen", seen), ("unseen", ~seen)):
            row[f"lm_bits_{key}"] = float(-lm[mask].mean() / LN2) if mask.any() else None
            row[f"gain_bits_{key}"] = float(largest[mask].mean()) if mask.any() else None
        breakdown.append(row)
    return {"tune_part": config.tune_part,
            "reported_documents": sorted({names[int(d)] for d in
                                          doc_of[n_train + positions].unique()}),
            "split_document": names[int(doc_of[n_train])], **r,
            "overlap_breakdown_largest_datastore": breakdown}


def fold_markdown(r: dict, block_size: int) -> list[str]:
    nan = float("nan")
    report, tune = ("first", "second") if r["tune_part"] == "last" else ("second", "first")
    md = [f"Held-out text: the {report} half of the validation split ({r['n_report']:,} "
          f"positions, contexts of {block_size - r['stride'] + 1} to {block_size} characters), "
          f"documents {', '.join(r['reported_documents'])}. k, T and λ tuned per size on "
          f"{r['n_tune']:,} positions of the {tune} half. Same-document keys excluded; the "
          "last column allows them.", "",
          "| datastore keys | k | T | λ | bits/char | gain vs LM | ± s.e. | own document allowed |",
          "|---:|---:|---:|---:|---:|---:|---:|---:|",
          f"| 0 (LM alone) | | | | {r['lm_bits']:.4f} | | | |"]
    md += [f"| {q['size']:,} | {q['k']} | {q['temperature']:g} | {q['lam']:.2f} | "
           f"{q['bits']:.4f} | {q['gain_bits']:+.4f} | {q['gain_standard_error']:.4f} | "
           f"{q['bits_same_document']:.4f} |" for q in r["points"]]
    md += ["", f"The split cuts the document `{r['split_document']}` in two; "
           f"{max(q['n_same_document'] for q in r['points']):,} reported positions are in it.",
           "", "Largest datastore, by whether the m characters before the target and the target "
           "occur verbatim in another document of the training text:", "",
           "| m | share of positions | LM bits (seen / unseen) | gain (seen / unseen) |",
           "|---:|---:|---:|---:|"]
    md += [f"| {b['m']} | {b['share']:.3f} | {b['lm_bits_seen'] or nan:.3f} / "
           f"{b['lm_bits_unseen'] or nan:.3f} | {b['gain_bits_seen'] or nan:+.3f} / "
           f"{b['gain_bits_unseen'] or nan:+.3f} |" for b in r["overlap_breakdown_largest_datastore"]]
    return md


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", nargs="+", default=["10000", "30000", "100000", "all"],
                   help="datastore sizes in keys, 'all' for every training position")
    p.add_argument("--n-report", default="all", help="reported positions ('all' or a number)")
    p.add_argument("--n-tune", type=int, default=4000, help="positions that tune k, T, λ")
    p.add_argument("--stride", type=int, default=32)
    p.add_argument("--ks", type=int, nargs="+", default=list(KNNLMConfig.ks),
                   help="numbers of neighbours tried")
    p.add_argument("--temperatures", type=float, nargs="+",
                   default=list(KNNLMConfig.temperatures), help="temperatures T tried")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overlap", type=int, nargs="*", default=[8, 16, 32],
                   help="context lengths m of the verbatim-overlap breakdown")
    p.add_argument("--swap", action="store_true",
                   help="also the swapped fold: tune on the first half, report on the second")
    p.add_argument("--out", default=str(HERE), help="folder for knnlm.json/.md")
    args = p.parse_args()
    torch.set_num_threads(1)
    model, tok = checkpoints.pretrained()
    text, docs = load_corpus(), list(load_documents().values())
    assert text == "\n\n".join(docs)
    sizes = [None if s == "all" else int(s) for s in args.sizes]
    config = KNNLMConfig(stride=args.stride, ks=tuple(args.ks),
                         temperatures=tuple(args.temperatures))
    start, cpu = time.perf_counter(), time.process_time()
    main_fold = run_fold(model, tok, sizes, args, config)
    swapped = (run_fold(model, tok, sizes, args, dataclasses.replace(config, tune_part="first"))
               if args.swap else None)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
    result = {"environment": environment(text, torch.get_num_threads()),
              "config": {**vars(args), "knnlm": {k: v for k, v in vars(config).items()
                                                  if k != "lambdas"},
                         "lambdas": f"{config.lambdas[0]} to {config.lambdas[-1]} by 0.01"},
              "seconds": seconds, "cpu_seconds": cpu_seconds, **main_fold,
              **({"swapped": swapped} if swapped else {})}
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "knnlm.json").write_text(json.dumps(result, indent=2) + "\n")
    env = result["environment"]
    md = [f"Command: `{env['command']}`  ",
          f"Date (UTC): {env['date_utc']}; torch {env['torch']}, Python {env['python']}, "
          f"{env['threads']} thread (shared machine), CPU: {env['cpu']}; corpus hash "
          f"{env['corpus_hash']}; {seconds:.0f} s in all ({cpu_seconds:.0f} s of CPU time).", ""]
    md += fold_markdown(main_fold, model.config.block_size)
    if swapped:
        md += ["", "## Swapped: tuned on the first half, reported on the second", ""]
        md += fold_markdown(swapped, model.config.block_size)
    (Path(args.out) / "knnlm.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
