"""The compute ladder of chapter 12: closed-book models of growing size vs the reader + TF-IDF.

Each rung is a :class:`slmbook.model.GPT` over the reader's 96 characters,
trained from scratch through :func:`slmbook.training.train` with the reader's
answer-only loss (:func:`slmbook.reader.answer_loss`) on the seen people's
questions alone (``ReaderData(closed_book=True, questions="one")``: exactly
the k=0 prompt ``"Q: ...\\nA: "``), so it can only learn the facts by heart.
Every rung gets a fixed budget of CPU seconds (``time.process_time``): a
first short run measures the CPU seconds per step, which fixes ``max_steps``
(so that the cosine schedule ends when the budget does); a callback stops a
run that overruns its budget by 25%.

For each rung: parameters N, training FLOPs (6 N per token processed,
padding included, counted batch by batch), CPU seconds, exact match on seen
and held-out people (95% Wilson intervals), closed-book exact match on the
facts ``world.changed()`` alters against the v1 and the v2 truth (a model that
memorised v1 stays at v1), and inference FLOPs per answer
(2 N per token of prompt + answer + end, i.e. with a key-value cache). Beside
them the shipped reader + TF-IDF top-3: its training cost (from
``slmbook/assets/reader.json`` and ``pretrained.json``; tokens estimated from
batches of the same data source), the index build time, the retrieval time
per question, and its inference FLOPs per answer (its prompt holds three
passages).

Usage (from the repository root)::

    OMP_NUM_THREADS=1 python benchmarks/rag/ladder.py              # the recorded ladder
    OMP_NUM_THREADS=1 python benchmarks/rag/ladder.py --tiny       # a one-minute check
    OMP_NUM_THREADS=1 python benchmarks/rag/ladder.py --extra S-long   # 3900 steps of S
    OMP_NUM_THREADS=1 python benchmarks/rag/ladder.py --extra S-short  # 250 steps (chapter 12, live)

writes benchmarks/rag/ladder.json and ladder.md (after every rung, so that a
run cut short keeps the rungs that finished).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.append(str(HERE.parent.parent))  # an installed slmbook comes first

from slmbook.callbacks import Callback  # noqa: E402
from slmbook.facts import make_world  # noqa: E402
from slmbook.metrics import wilson_interval as wilson  # noqa: E402
from slmbook.model import GPT, GPTConfig  # noqa: E402
from slmbook.rag import pretrained_reader  # noqa: E402
from slmbook.reader import (  # noqa: E402
    END,
    ReaderData,
    ReaderTokenizer,
    answer_loss,
    render_prompt,
    teacher_forced_match,
)
from slmbook.retrieval import TfidfRetriever  # noqa: E402
from slmbook.training import train  # noqa: E402

ASSETS = HERE.parent.parent / "slmbook" / "assets"

# (name, n_layer, n_head, n_embd, CPU-second budget)
RUNGS = (("S", 2, 4, 64, 80.0), ("M", 4, 4, 128, 160.0), ("L", 6, 6, 204, 320.0))
EXTRA = {"S-long": ("S-long", 2, 4, 64, 240.0, 3900),  # the smallest model, 3x the steps of S
         # a short run that chapter 12 repeats live (about 16 CPU s)
         "S-short": ("S-short", 2, 4, 64, 40.0, 250)}
TINY = (("tiny-S", 1, 2, 32, 8.0), ("tiny-M", 2, 4, 64, 8.0))
BLOCK = 96
BATCH = 64
LR = 3e-3


class Stop(Exception):
    """Raised by the budget callback when a run overruns its CPU budget."""


class Counting:
    """A batch source that counts the tokens it hands out (``B * T``, padding included)."""

    def __init__(self, data: ReaderData) -> None:
        self.data, self.tokens, self.batches = data, 0, 0

    def __call__(self, generator: torch.Generator):
        batch = self.data(generator)
        self.tokens += batch.ids.numel()
        self.batches += 1
        return batch


class Budget(Callback):
    """A callback that raises :class:`Stop` once the process has used ``limit`` CPU seconds."""

    def __init__(self, start: float, limit: float) -> None:
        self.start, self.limit = start, limit

    def on_step(self, history, model) -> None:
        if time.process_time() - self.start > self.limit:
            raise Stop


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def make_model(n_layer: int, n_head: int, n_embd: int) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=96, block_size=BLOCK, n_layer=n_layer, n_head=n_head,
                         n_embd=n_embd))


def em(model, tok, qs, prompts) -> dict:
    ok = teacher_forced_match(model, tok, prompts, [q.answer for q in qs])
    k = sum(ok)
    lo, hi = wilson(k, len(qs))
    return {"n": len(qs), "correct": k, "em": k / len(qs), "ci95": [lo, hi]}


def changed_facts(model, tok, world) -> dict:
    """Closed-book exact match on the facts ``world.changed()`` alters, against v1 and v2 truth.

    The closed-book model saw only v1; a model that memorised v1 answers v1
    whatever the world has become (chapter 12's index swap, without an index).
    """
    changed = {(pid, a): (old, new) for pid, a, old, new in world.diff(world.changed())}
    out = {}
    for split in ("seen", "heldout"):
        qs = [q for q in world.questions(split) if (q.person, q.attribute) in changed]
        prompts = [render_prompt(q.question) for q in qs]
        out[split] = {}
        for i, truth in enumerate(("v1", "v2")):
            ok = teacher_forced_match(model, tok, prompts, [changed[q.person, q.attribute][i]
                                                            for q in qs])
            lo, hi = wilson(sum(ok), len(ok))
            out[split][f"{truth} truth"] = {"n": len(ok), "correct": sum(ok),
                                            "em": sum(ok) / len(ok), "ci95": [lo, hi]}
    return out


def tokens_per_answer(tok, prompts, answers) -> float:
    return sum(len(tok.encode(p + a + END)) for p, a in zip(prompts, answers, strict=True)) / len(
        prompts)


def run_rung(world, tok, name, n_layer, n_head, n_embd, budget, qs, steps=None) -> dict:
    data = ReaderData(world, split="seen", batch_size=BATCH, closed_book=True,
                      questions="one", block_size=BLOCK)
    # calibration: CPU seconds per step, on a throwaway copy of the model
    probe = make_model(n_layer, n_head, n_embd)
    c0 = time.process_time()
    train(probe, data, None, loss_fn=answer_loss, max_steps=10, batch_size=BATCH, lr=LR,
          eval_every=10, eval_batches=1, progress=False)
    per_step = (time.process_time() - c0) / 10
    max_steps = max(20, int(budget / per_step)) if steps is None else steps
    model = make_model(n_layer, n_head, n_embd)
    counted = Counting(data)
    c0, w0 = time.process_time(), time.perf_counter()
    stopped = "max_steps"
    try:
        hist = train(model, counted, None, loss_fn=answer_loss, max_steps=max_steps,
                     batch_size=BATCH, lr=LR, warmup_steps=min(100, max_steps // 10),
                     eval_every=max_steps + 1, eval_batches=1, progress=False,
                     callbacks=[Budget(c0, 1.25 * budget)])
        final_loss = float(hist.train_loss[-1]) if getattr(hist, "train_loss", None) else None
    except Stop:
        stopped, final_loss = "cpu budget exceeded by 25%", None
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    model.eval()
    N = n_params(model)
    prompts = {s: [render_prompt(q.question) for q in qs[s]] for s in qs}
    row = {
        "name": name, "n_layer": n_layer, "n_head": n_head, "n_embd": n_embd,
        "block_size": BLOCK, "params": N, "budget_cpu_s": budget,
        "calibrated_cpu_s_per_step": round(per_step, 4), "max_steps": max_steps,
        "batches": counted.batches, "tokens": counted.tokens,
        "train_flops": 6 * N * counted.tokens, "cpu_s": round(cpu, 1), "wall_s": round(wall, 1),
        "stopped": stopped, "final_train_loss": final_loss,
        "seen": em(model, tok, qs["seen"], prompts["seen"]),
        "heldout": em(model, tok, qs["heldout"], prompts["heldout"]),
        "tokens_per_answer": tokens_per_answer(tok, prompts["heldout"],
                                               [q.answer for q in qs["heldout"]]),
        "changed_facts": changed_facts(model, tok, world),
    }
    row["inference_flops_per_answer"] = 2 * N * row["tokens_per_answer"]
    return row


def reader_row(world, tok, qs) -> dict:
    """The shipped reader + TF-IDF top-3: costs from the asset records, accuracy measured."""
    meta = json.loads((ASSETS / "reader.json").read_text())
    lm = json.loads((ASSETS / "pretrained.json").read_text())
    model, _ = pretrained_reader()
    N = n_params(model)
    # tokens of the reader's training: batches of the same data source as scripts/train_reader.py
    data = ReaderData(world, split="seen", batch_size=meta["train"]["batch_size"],
                      max_distractors=3)
    g = torch.Generator().manual_seed(1)
    sample = [data(g).ids.numel() for _ in range(100)]
    tokens = meta["steps"] * sum(sample) / len(sample)
    w0, c0 = time.perf_counter(), time.process_time()
    retriever = TfidfRetriever().fit(world.passages())
    build = {"wall_s": time.perf_counter() - w0, "cpu_s": time.process_time() - c0}
    out = {"name": "reader + TF-IDF top-3", "params": N, "init": meta["init"],
           "reader_cpu_s": meta["cpu_time_s"], "reader_wall_s": meta["wall_time_s"],
           "reader_steps": meta["steps"], "reader_tokens_estimated": round(tokens),
           "reader_train_flops": 6 * N * tokens,
           "lm_params": lm["n_params"], "lm_tokens": lm["tokens_seen"],
           "lm_train_flops": 6 * lm["n_params"] * lm["tokens_seen"],
           "lm_wall_s": lm["wall_time_s"],
           "index_passages": len(world.passages()),
           "index_build_s": round(build["wall_s"], 4), "index_build_cpu_s": round(build["cpu_s"], 4)}
    out["train_flops"] = out["reader_train_flops"] + out["lm_train_flops"]
    for split in ("seen", "heldout"):
        questions = [q.question for q in qs[split]]
        c0 = time.process_time()
        hits = retriever.search_batch(questions, 3)
        per_q = (time.process_time() - c0) / len(questions)
        prompts = [render_prompt(q, [h.text for h in hs]) for q, hs in zip(questions, hits,
                                                                          strict=True)]
        out[split] = em(model, tok, qs[split], prompts)
        if split == "heldout":
            out["retrieval_cpu_s_per_question"] = per_q
            out["tokens_per_answer"] = tokens_per_answer(tok, prompts,
                                                         [q.answer for q in qs[split]])
    out["inference_flops_per_answer"] = 2 * N * out["tokens_per_answer"]
    return out


def sci(x: float) -> str:
    return f"{x:.2e}"


def cell(r: dict) -> str:
    return f"{100 * r['em']:.1f}% [{100 * r['ci95'][0]:.0f}, {100 * r['ci95'][1]:.0f}]"


def markdown(result: dict) -> str:
    lines = [f"Closed-book ladder vs the reader + TF-IDF. Command: `{result['command']}` "
             f"({result['date']}, {result['threads']} thread(s), {result['machine']}). "
             "Exact match with 95% Wilson intervals; training FLOPs = 6 N x tokens processed "
             "(padding included); inference FLOPs = 2 N x (prompt + answer + end) tokens, "
             "mean over the held-out questions.", "",
             "| model | params | train FLOPs | CPU s | EM seen | EM held-out | "
             "inference FLOPs/answer |", "|---|---|---|---|---|---|---|"]
    for r in result["rungs"]:
        lines.append(f"| closed book {r['name']} ({r['n_layer']}x{r['n_embd']}, "
                     f"{r['max_steps']} steps) | {r['params']:,} | {sci(r['train_flops'])} | "
                     f"{r['cpu_s']:.0f} | {cell(r['seen'])} | {cell(r['heldout'])} | "
                     f"{sci(r['inference_flops_per_answer'])} |")
    rr = result.get("reader")
    if rr:
        lines.append(f"| {rr['name']} | {rr['params']:,} | {sci(rr['train_flops'])} | "
                     f"{rr['reader_cpu_s']:.0f} | {cell(rr['seen'])} | {cell(rr['heldout'])} | "
                     f"{sci(rr['inference_flops_per_answer'])} |")
        lines += ["", f"Reader + TF-IDF: training FLOPs = reader fine-tuning "
                  f"{sci(rr['reader_train_flops'])} ({rr['reader_steps']} steps, "
                  f"~{rr['reader_tokens_estimated']:,} tokens, estimated from 100 batches of the "
                  f"same data source) + the language model it starts from "
                  f"{sci(rr['lm_train_flops'])} ({rr['lm_tokens']:,} tokens; its CPU time is not "
                  f"recorded, wall {rr['lm_wall_s']:.0f} s); CPU s is the reader's fine-tuning "
                  f"only (reader.json). Index build ({rr['index_passages']} passages): "
                  f"{rr['index_build_cpu_s']:.3f} CPU s; retrieval: "
                  f"{1000 * rr['retrieval_cpu_s_per_question']:.3f} CPU ms per question "
                  f"(batched). Prompt + answer: {rr['tokens_per_answer']:.0f} tokens "
                  f"(closed book: {result['rungs'][0]['tokens_per_answer']:.0f})."
                  if result["rungs"] else ""]
    if rr and result["rungs"]:
        big = max(result["rungs"], key=lambda r: r["params"])
        best = max(result["rungs"], key=lambda r: r["seen"]["em"])
        lines += ["", f"Chance on held-out people (commonest seen value per attribute): "
                  f"{100 * result['chance_heldout']:.1f}%. The best closed-book rung on seen "
                  f"people ({best['name']}) reaches {100 * best['seen']['em']:.1f}%, the reader + "
                  f"TF-IDF {100 * rr['seen']['em']:.1f}% (held out: "
                  f"{100 * max(r['heldout']['em'] for r in result['rungs']):.1f}% at best vs "
                  f"{100 * rr['heldout']['em']:.1f}%). Training FLOPs, reader (with its language "
                  f"model) / largest rung ({big['name']}): "
                  f"{rr['train_flops'] / big['train_flops']:.1f}x; inference FLOPs per answer, "
                  f"reader / largest rung: "
                  f"{rr['inference_flops_per_answer'] / big['inference_flops_per_answer']:.2f}x. "
                  "CPU s per rung excludes its 10-step calibration run; wall s per rung: "
                  + ", ".join(f"{r['name']} {r['wall_s']:.0f}" for r in result["rungs"]) + "."]
    swapped = [r for r in result["rungs"] if "changed_facts" in r]
    if swapped:
        lines += ["", "Closed book on the facts `world.changed()` alters (the model saw only v1), "
                  "seen people: " + "; ".join(
                      f"{r['name']}: v1 truth {cell(r['changed_facts']['seen']['v1 truth'])}, "
                      f"v2 truth {cell(r['changed_facts']['seen']['v2 truth'])} "
                      f"(n = {r['changed_facts']['seen']['v1 truth']['n']})" for r in swapped) + "."]
    if result.get("note"):
        lines += ["", result["note"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tiny", action="store_true", help="two tiny rungs of 8 CPU s (a one-minute check)")
    ap.add_argument("--out", default=str(HERE / "ladder"), help="output path without suffix")
    ap.add_argument("--markdown", action="store_true",
                    help="only rewrite the .md from the recorded .json")
    ap.add_argument("--note", default=None, help="a note stored with --markdown (e.g. why a "
                    "rung is missing)")
    ap.add_argument("--extra", default=None, choices=sorted(EXTRA),
                    help="run only this extra rung and append it to the recorded .json")
    args = ap.parse_args()
    out = Path(args.out)
    if args.extra:
        torch.set_num_threads(1)
        world = make_world()
        result = json.loads(out.with_suffix(".json").read_text())
        qs = {"seen": world.questions("seen"), "heldout": world.questions("heldout")}
        *rung, steps = EXTRA[args.extra]
        row = run_rung(world, ReaderTokenizer(), *rung, qs, steps=steps)
        row["command"] = result["command"] + f" --extra {args.extra}"
        result["rungs"] = [r for r in result["rungs"] if r["name"] != args.extra] + [row]
        out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
        out.with_suffix(".md").write_text(markdown(result))
        print(markdown(result))
        return
    if args.markdown:
        result = json.loads(out.with_suffix(".json").read_text())
        if args.note:
            result["note"] = args.note
            out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
        out.with_suffix(".md").write_text(markdown(result))
        print(markdown(result))
        return
    torch.set_num_threads(1)
    world = make_world()
    tok = ReaderTokenizer()
    qs = {"seen": world.questions("seen"), "heldout": world.questions("heldout")}
    result = {
        "command": "OMP_NUM_THREADS=1 python benchmarks/rag/ladder.py" + (" --tiny" * args.tiny),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "threads": torch.get_num_threads(),
        "machine": f"{platform.machine()}, load average {open('/proc/loadavg').read().split()[0]}"
                   " at the start",
        "torch_version": torch.__version__, "world_fingerprint": world.fingerprint(),
        "data": "ReaderData(make_world(), split='seen', closed_book=True, questions='one', "
                f"batch_size={BATCH}): one training-template question per sequence, no passages",
        "lr": LR, "chance_heldout": sum(world.chance("heldout").values()) / 4,
        "rungs": [],
    }

    def write() -> None:
        out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
        out.with_suffix(".md").write_text(markdown(result))

    result["reader"] = reader_row(world, tok, qs)
    write()
    for rung in TINY if args.tiny else RUNGS:
        result["rungs"].append(run_rung(world, tok, *rung, qs))
        write()
        print(json.dumps(result["rungs"][-1]), flush=True)
    result["finished"] = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    write()
    print(markdown(result))


if __name__ == "__main__":
    main()
