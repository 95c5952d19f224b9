"""Does ``torch.compile`` speed up training of the default model on this CPU?

The same bare loop (random batches, cross-entropy, backward, torch's fused
AdamW) around slmbook's GPT at ``slmbook train``'s default size, eager and
compiled (``torch.compile(model)``: TorchInductor, forward and backward), in
float32 and in bfloat16 autocast. Reports milliseconds per step after warm-up,
the eager model timed before and after the compiled one, and the compile time.
Run from the repository root::

    python benchmarks/training/compile_check.py --threads 2
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from _common import HERE, environment, write_results

from slmbook.data import corpus_hash, load_corpus
from slmbook.model import GPT, GPTConfig


def ms_per_step(model: torch.nn.Module, dtype: str, steps: int, warmup: int,
                vocab: int) -> float:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    g = torch.Generator().manual_seed(0)
    X, Y = (torch.randint(0, vocab, (12, 64), generator=g) for _ in range(2))
    for i in range(warmup + steps):
        if i == warmup:
            start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bfloat16"):
            loss = F.cross_entropy(model(X).flatten(0, 1).float(), Y.flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return 1000 * (time.perf_counter() - start) / steps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--out", default=str(HERE / "results"), help="folder for compile.json/.md")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    text = load_corpus()
    vocab = len(set(text))
    rows = []
    for dtype in ("float32", "bfloat16"):
        torch.manual_seed(0)
        model = GPT(GPTConfig(vocab_size=vocab, block_size=64, n_layer=4, n_head=4, n_embd=128))
        eager = ms_per_step(model, dtype, args.steps, 5, vocab)
        start = time.perf_counter()
        compiled = torch.compile(model)
        ms_per_step(compiled, dtype, 1, 1, vocab)  # compiles forward and backward
        compile_s = time.perf_counter() - start
        fast = ms_per_step(compiled, dtype, args.steps, 5, vocab)
        eager_after = ms_per_step(model, dtype, args.steps, 5, vocab)
        rows.append({"dtype": dtype, "eager_ms": eager, "eager_after_ms": eager_after,
                     "compiled_ms": fast, "compile_seconds": compile_s,
                     "speedup": (eager + eager_after) / 2 / fast})
    md = ["| precision | eager ms/step (before, after) | compiled ms/step | compile time | "
          "speed-up |", "|---|---:|---:|---:|---:|"]
    md += [f"| {r['dtype']} | {r['eager_ms']:.1f}, {r['eager_after_ms']:.1f} | "
           f"{r['compiled_ms']:.1f} | {r['compile_seconds']:.0f} s | {r['speedup']:.2f}x |"
           for r in rows]
    result = {"environment": environment(corpus_hash(text)), "config": vars(args), "runs": rows}
    path = write_results("compile", result, "\n".join(md), args.out)
    print("\n".join(md))
    print(f"written {path}")


if __name__ == "__main__":
    main()
