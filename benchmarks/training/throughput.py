"""Training throughput (tokens/s) of the default configuration, and its MFU.

MFU (model FLOPs utilisation) = FLOPs the model needs per token x tokens per
second / the fp32 matrix-multiply peak measured in the same run. FLOPs per
token follow the usual estimate for a transformer trained with backprop:
6 N (forward and backward through every weight, N = parameters without the
position embeddings) + 12 L T C (attention scores and weighted sums).

Run from the repository root, for example::

    python benchmarks/training/throughput.py --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from _common import HERE, environment, matmul_peak_gflops, write_results

from slmbook.cli import CLI_DEFAULTS
from slmbook.data import corpus_hash, get_batch, load_corpus, train_val_split
from slmbook.model import GPT, GPTConfig
from slmbook.optim import AdamW
from slmbook.tokenizers import CharTokenizer
from slmbook.training import train


def flops_per_token(model: GPT) -> float:
    c = model.config
    n = sum(p.numel() for p in model.parameters()) - model.transformer.wpe.weight.numel()
    return 6 * n + 12 * c.n_layer * c.block_size * c.n_embd


def bare_loop(model: GPT, train_ids: torch.Tensor, args: argparse.Namespace) -> float:
    """The in-run reference: a minimal nanoGPT-style loop (no evaluation, no history,
    no guards), torch's fused AdamW, around the same model. Returns tokens/s."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.99), fused=True)
    g = torch.Generator().manual_seed(args.seed)
    for i in range(args.warmup + args.steps):
        if i == args.warmup:
            start = time.perf_counter()
        X, Y = get_batch(train_ids, args.batch_size, args.block_size, generator=g)
        loss = F.cross_entropy(model(X).flatten(0, 1), Y.flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    return args.batch_size * args.block_size * args.steps / (time.perf_counter() - start)


def _groups(model: GPT) -> list[dict]:
    """AdamW's two groups as in slmbook.training.make_optimizer: weight decay on matrices only."""
    return [{"params": [p for p in model.parameters() if p.dim() >= 2], "weight_decay": 0.1},
            {"params": [p for p in model.parameters() if p.dim() < 2], "weight_decay": 0.0}]


VARIANTS = {  # name: (optimizer factory or None for train()'s own, dtype)
    "default": (None, CLI_DEFAULTS["dtype"]),  # slmbook train's: foreach AdamW, dtype "auto"
    "float32": (None, "float32"),  # train()'s own defaults
    "float32-loop": (lambda m: AdamW(_groups(m), lr=1e-3, betas=(0.9, 0.99), foreach=False),
                     "float32"),  # slmbook's AdamW as the plain per-parameter loop
    "torch-adamw-fused": (lambda m: torch.optim.AdamW(_groups(m), lr=1e-3, betas=(0.9, 0.99),
                                                      fused=True), "float32"),
    "bf16-autocast": (None, "bfloat16"),
}


def measure(args: argparse.Namespace, ids: torch.Tensor, vocab: int,
            variant: str) -> tuple[float, str]:
    """Tokens per second of one timed run of ``variant``, and the precision it ran in."""
    torch.manual_seed(args.seed)
    config = GPTConfig(vocab_size=vocab, block_size=args.block_size, n_layer=args.n_layer,
                       n_head=args.n_head, n_embd=args.n_embd)
    model = GPT(config)
    train_ids, val_ids = train_val_split(ids)
    if variant == "bare-loop":
        return bare_loop(model, train_ids, args), "float32"
    make, dtype = VARIANTS[variant]
    steps = args.warmup + args.steps
    h = train(model, train_ids, val_ids, max_steps=steps, batch_size=args.batch_size,
              eval_every=steps, eval_batches=1, optimizer=make(model) if make else None,
              progress=False, seed=args.seed, dtype=dtype)
    seconds = h.time[-1] - h.time[args.warmup - 1]
    tokens = h.tokens[-1] - h.tokens[args.warmup - 1]
    return tokens / seconds, h.dtype


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2, help="torch threads (default: 2)")
    p.add_argument("--steps", type=int, default=300, help="timed steps (default: 300)")
    p.add_argument("--warmup", type=int, default=30, help="untimed steps first (default: 30)")
    p.add_argument("--batch-size", type=int, default=12)
    p.add_argument("--block-size", type=int, default=64)
    p.add_argument("--n-layer", type=int, default=4)
    p.add_argument("--n-head", type=int, default=4)
    p.add_argument("--n-embd", type=int, default=128)
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--variants", default="default,float32,bare-loop",
                   help="comma-separated: default (train() with slmbook train's defaults: "
                   "slmbook's foreach AdamW, dtype 'auto'), float32 (train()'s own defaults: "
                   "the same in float32), float32-loop (slmbook's AdamW as its per-parameter "
                   "loop), torch-adamw-fused (train() with torch's fused AdamW), bf16-autocast "
                   "(train() with dtype='bfloat16'), bare-loop (a minimal nanoGPT-style loop "
                   "in float32 with torch's fused AdamW around the same model: the in-run "
                   "reference); the last one is the reference of the ratios")
    p.add_argument("--rounds", type=int, default=3,
                   help="the variants take turns this many times; each reports its median "
                   "(default: 3)")
    p.add_argument("--out", default=str(HERE / "results"), help="folder for throughput.json/.md")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    text = load_corpus()
    tok = CharTokenizer.fit(text)
    ids = torch.tensor(tok.encode(text))
    peak = matmul_peak_gflops()
    variants = args.variants.split(",")
    unknown = sorted(set(variants) - {*VARIANTS, "bare-loop"})
    if unknown:
        p.error(f"unknown variants {unknown}; choose from {[*VARIANTS, 'bare-loop']}")
    samples: dict[str, list[float]] = {v: [] for v in variants}
    precision: dict[str, list[str]] = {v: [] for v in variants}
    for _ in range(args.rounds):  # interleaved, so that a noisy neighbour hits every variant
        for v in variants:
            tok_s, dtype = measure(args, ids, tok.vocab_size, v)
            samples[v].append(tok_s)
            precision[v].append(dtype)
    peak_after = matmul_peak_gflops()  # the machine may have become busier meanwhile
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=args.block_size,
                          n_layer=args.n_layer, n_head=args.n_head, n_embd=args.n_embd))
    fpt = flops_per_token(model)
    reference = samples[variants[-1]]
    rows = []
    for v in variants:
        tok_s = statistics.median(samples[v])
        rows.append({"variant": v, "tokens_per_s": tok_s, "samples": samples[v],
                     "dtype": "/".join(sorted(set(precision[v]))), "dtypes": precision[v],
                     "ms_per_step": 1000 * args.batch_size * args.block_size / tok_s,
                     "flops_per_token": fpt, "model_gflops": fpt * tok_s / 1e9,
                     "mfu": fpt * tok_s / 1e9 / peak["best_gflops"],
                     # each round's ratio to the reference run next to it, then the median:
                     # a machine whose speed drifts between rounds moves both runs of a pair
                     "round_ratios": [a / b for a, b in zip(samples[v], reference, strict=True)],
                     "vs_last_variant": statistics.median(
                         a / b for a, b in zip(samples[v], reference, strict=True)),
                     "parameters": sum(p.numel() for p in model.parameters())})
    result = {"environment": environment(corpus_hash(text)), "config": vars(args),
              "matmul_peak_gflops": peak, "matmul_peak_gflops_after": peak_after, "runs": rows}
    md = [f"| variant | precision | tokens/s (median of {args.rounds}) | ms/step | "
          f"model GFLOP/s | MFU (vs fp32 matmul peak) | vs {variants[-1]} (median of the "
          "rounds' ratios) | range of the ratios |",
          "|---|---|---:|---:|---:|---:|---:|---:|"]
    md += [f"| {r['variant']} | {r['dtype']} | {r['tokens_per_s']:,.0f} | {r['ms_per_step']:.1f} | "
           f"{r['model_gflops']:.1f} | {100 * r['mfu']:.1f}% | {r['vs_last_variant']:.2f} | "
           f"{min(r['round_ratios']):.2f} to {max(r['round_ratios']):.2f} |"
           for r in rows]
    md.append(f"\nfp32 matmul peak: {peak['best_gflops']:.1f} GFLOP/s before, "
              f"{peak_after['best_gflops']:.1f} after; {rows[0]['parameters']:,} parameters, "
              f"{rows[0]['flops_per_token']:,.0f} FLOPs per token.")
    path = write_results("throughput", result, "\n".join(md), args.out)
    print("\n".join(md))
    print(f"written {path}")


if __name__ == "__main__":
    main()
