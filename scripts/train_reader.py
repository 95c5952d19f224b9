"""Train the shipped reader of chapter 10 (slmbook/assets/reader.pt + reader.json).

The reader is a character-level GPT trained by ``slmbook.training.train`` with
the answer-only loss (``slmbook.reader.answer_loss``) on contexts of the
default fact world's *seen* people: the gold passage among 0 to 3
distractors, followed by every question about them. Every ``--eval-every``
steps it measures teacher-forced exact match (equal to greedy decoding's) on
the *held-out* people, with the gold passage alone and with two distractors,
and records it against wall-clock and CPU seconds.

Usage (from the repository root)::

    OMP_NUM_THREADS=1 python scripts/train_reader.py                  # the shipped reader
    OMP_NUM_THREADS=1 python scripts/train_reader.py --compare 600    # random vs pretrained start

``--compare S`` trains from a random start and from chapter 8's pretrained
language model for S seconds each (same seed, same data) and writes
benchmarks/rag/init_comparison.json instead of the asset.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.append(str(ROOT))  # an installed (or PYTHONPATH) slmbook comes first

from slmbook import checkpoints  # noqa: E402
from slmbook.callbacks import Callback  # noqa: E402
from slmbook.facts import make_world  # noqa: E402
from slmbook.reader import (  # noqa: E402
    ReaderData,
    ReaderTokenizer,
    answer_loss,
    make_reader,
    reader_from_lm,
    render_prompt,
    teacher_forced_match,
)
from slmbook.training import TrainConfig, train  # noqa: E402


def eval_prompts(world, seed: int = 0, question_first: bool = False
                 ) -> dict[str, tuple[list[str], list[str]]]:
    """Held-out prompts: gold passage alone, and gold + 2 distractors (shuffled)."""
    rng = random.Random(seed)
    passages = world.passages()
    by_id = {p.id: p for p in passages}
    qs = world.questions("heldout")
    gold = [render_prompt(q.question, [by_id[q.passage_id].text], question_first=question_first)
            for q in qs]
    mixed = []
    for q in qs:
        same_person = [p.text for p in passages if p.source == q.person and p.id != q.passage_id]
        same_attr = [p.text for p in passages
                     if p.id.endswith("/" + q.attribute) and p.source != q.person]
        ctx = [by_id[q.passage_id].text, rng.choice(same_person), rng.choice(same_attr)]
        rng.shuffle(ctx)
        mixed.append(render_prompt(q.question, ctx, question_first=question_first))
    answers = [q.answer for q in qs]
    return {"gold": (gold, answers), "distractors": (mixed, answers)}


class EMCurve(Callback):
    """Exact match on the held-out people at every evaluation, against seconds."""

    def __init__(self, prompts, tokenizer, log) -> None:
        self.prompts, self.tokenizer, self.log = prompts, tokenizer, log
        self.curve, self.eval_wall, self.eval_cpu = [], 0.0, 0.0
        self.wall0, self.cpu0 = time.perf_counter(), time.process_time()

    def on_eval(self, history, model) -> None:
        w, c = time.perf_counter(), time.process_time()
        row = {"step": history.steps[-1],
               "train_s": round(w - self.wall0 - self.eval_wall, 1),
               "cpu_s": round(c - self.cpu0 - self.eval_cpu, 1),
               "train_loss": round(history.train_loss[-1], 4)}
        for name, (prompts, answers) in self.prompts.items():
            row[f"em_{name}"] = round(sum(teacher_forced_match(model, self.tokenizer, prompts,
                                                                 answers)) / len(answers), 4)
        self.curve.append(row)
        self.eval_wall += time.perf_counter() - w
        self.eval_cpu += time.process_time() - c
        print(json.dumps(row), file=self.log, flush=True)


def build(init: str, block_size: int, args):
    torch.manual_seed(args.seed)
    if args.continue_from:
        return checkpoints.load(args.continue_from).build_model()
    if init == "lm":
        lm, lm_tok = checkpoints.pretrained()
        return reader_from_lm(lm, lm_tok, block_size=block_size)
    return make_reader(n_layer=args.n_layer, n_head=args.n_head, n_embd=args.n_embd,
                       block_size=block_size)


def run(init: str, args, world, prompts, *, max_steps: int, time_limit: float | None):
    model = build(init, args.block_size, args)
    tok = ReaderTokenizer()
    data = ReaderData(world, split="seen", batch_size=args.batch_size,
                      min_distractors=args.min_distractors, max_distractors=3,
                      question_first=args.question_first, block_size=args.block_size)
    val = ReaderData(world, split="seen", batch_size=args.batch_size, fresh_people=1.0,
                     question_first=args.question_first, block_size=args.block_size)  # invented people: a validation split
    config = TrainConfig(max_steps=max_steps, batch_size=args.batch_size, lr=args.lr,
                         warmup_steps=args.warmup, schedule="cosine", eval_every=args.eval_every,
                         eval_batches=4, seed=args.seed, time_limit=time_limit, progress=False)
    curve = EMCurve(prompts, tok, sys.stdout)
    wall, cpu = time.perf_counter(), time.process_time()
    history = train(model, data, val, config, loss_fn=answer_loss, callbacks=[curve],
                    tokenizer=tok)
    return model, history, curve, config, time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--init", choices=("random", "lm"), default="lm")
    p.add_argument("--max-steps", type=int, default=1500)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--block-size", type=int, default=448)
    p.add_argument("--n-layer", type=int, default=4)
    p.add_argument("--n-head", type=int, default=4)
    p.add_argument("--n-embd", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--compare", type=float, default=None, metavar="SECONDS")
    p.add_argument("--continue-from", default=None, metavar="READER_PT",
                   help="a second phase: start from this reader (its record is kept)")
    p.add_argument("--min-distractors", type=int, default=0)
    p.add_argument("--question-first", action="store_true",
                   help="the question before the passages (one question per context)")
    p.add_argument("--out", default=str(ROOT / "slmbook" / "assets" / "reader.pt"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    world = make_world()
    prompts = eval_prompts(world, question_first=args.question_first)
    command = "OMP_NUM_THREADS=1 python scripts/train_reader.py " + " ".join(sys.argv[1:])
    common = {"command": command.strip(), "threads": args.threads,
              "machine": f"{platform.machine()}, shared with other jobs (load average "
                         f"{open('/proc/loadavg').read().split()[0]} at the start)",
              "torch_version": torch.__version__, "python_version": platform.python_version(),
              "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
              "world": {"seed": 0, "n_people": 400, "n_heldout": 100,
                        "fingerprint": world.fingerprint()}}
    if args.compare is not None:
        out = {**common, "budget_s": args.compare, "runs": {}}
        for init in ("random", "lm"):
            _, history, curve, _, wall, cpu = run(init, args, world, prompts,
                                                  max_steps=args.max_steps,
                                                  time_limit=args.compare)
            out["runs"][init] = {"steps": history.steps[-1], "wall_s": round(wall, 1),
                                 "cpu_s": round(cpu, 1), "curve": curve.curve}
        path = ROOT / "benchmarks" / "rag" / "init_comparison.json"
        path.write_text(json.dumps(out, indent=1) + "\n")
        print(f"wrote {path}")
        return
    model, history, curve, config, wall, cpu = run(args.init, args, world, prompts,
                                                    max_steps=args.max_steps, time_limit=None)
    out = Path(args.out)
    final = curve.curve[-1]
    before = None
    if args.continue_from:
        before = json.loads(Path(args.continue_from).with_suffix(".json").read_text())
    checkpoints.save(out, model, tokenizer=ReaderTokenizer(), step=history.steps[-1],
                     init=args.init, question_first=args.question_first,
                     world_fingerprint=world.fingerprint())
    record = {
        **common,
        "init": args.init,
        "question_first": args.question_first,
        "config": {k: v for k, v in vars(model.config).items()},
        "n_params": sum(p.numel() for p in model.parameters()),
        "train": {k: v for k, v in vars(config).items() if not k.startswith("_")},
        "data": "slmbook.reader.ReaderData(make_world(), split='seen', max_distractors=3): the "
                "gold passage among 0-3 distractors (same person's other facts, same fact of "
                "other people), then every question about them; half the contexts with invented "
                "names, 20% of values invented; loss on the answers only",
        "wall_time_s": round(wall, 1),
        "cpu_time_s": round(cpu, 1),
        "eval_time_excluded_s": round(curve.eval_wall, 1),
        "steps": history.steps[-1],
        "final": final,
        "em_curve": curve.curve,
        "file_bytes": out.stat().st_size,
    }
    if before is not None:
        record["continued_from"] = before
        record["total_cpu_time_s"] = round(before.get("total_cpu_time_s", before["cpu_time_s"])
                                           + cpu, 1)
        record["total_wall_time_s"] = round(before.get("total_wall_time_s",
                                                       before["wall_time_s"]) + wall, 1)
    out.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {out} ({record['file_bytes']} bytes) and {out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
