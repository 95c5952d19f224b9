"""The reader table of chapter 10: exact match of the shipped reader by context and split.

Contexts: no context (closed book, k=0), the gold passage, TF-IDF top-1 and
top-3 (chapter 9's retriever over the default fact world's index). Splits:
seen people, held-out people, and held-out people asked with the paraphrase
template that training never used. Each cell has a 95% Wilson interval; the
answering time is measured for all held-out questions at once.

Usage (from the repository root)::

    OMP_NUM_THREADS=1 python benchmarks/rag/reader_table.py

writes benchmarks/rag/reader_table.json and reader_table.md.
"""

from __future__ import annotations

import json
import math
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.append(str(HERE.parent.parent))  # an installed slmbook comes first

from slmbook.facts import make_world  # noqa: E402
from slmbook.rag import RAG, diagnose, pretrained_reader  # noqa: E402
from slmbook.reader import read, render_prompt  # noqa: E402
from slmbook.retrieval import TfidfRetriever  # noqa: E402

CONTEXTS = ("none", "gold", "top1", "top3")
SPLITS = (("seen", False), ("heldout", False), ("heldout", True))


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion k/n."""
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def measure(model, tok, world, retriever) -> dict:
    by_id = {p.id: p for p in world.passages()}
    rows = {}
    for split, para in SPLITS:
        qs = world.questions(split, paraphrase=para)
        name = split + (" (paraphrase)" if para else "")
        row = {"n": len(qs)}
        for ctx in CONTEXTS:
            t0 = time.perf_counter()
            if ctx == "gold":
                prompts = [render_prompt(q.question, [by_id[q.passage_id].text]) for q in qs]
                texts = read(model, tok, prompts)
                kinds = None
            else:
                k = {"none": 0, "top1": 1, "top3": 3}[ctx]
                answers = RAG(retriever, model, tok, k=k).answer_batch([q.question for q in qs])
                texts = [a.text for a in answers]
                kinds = diagnose(answers, qs)
            seconds = time.perf_counter() - t0
            correct = sum(t == q.answer for t, q in zip(texts, qs, strict=True))
            lo, hi = wilson(correct, len(qs))
            row[ctx] = {"em": correct / len(qs), "ci95": [lo, hi], "seconds": round(seconds, 2)}
            if kinds is not None:
                row[ctx]["errors"] = {k: kinds.count(k) for k in ("retrieval miss", "reading miss")}
        rows[name] = row
    return rows


def markdown(result: dict) -> str:
    head = "| questions | n | " + " | ".join(CONTEXTS) + " |\n|---|---|" + "---|" * len(CONTEXTS)
    lines = [f"Exact match of the shipped reader, 95% Wilson intervals. Command: "
             f"`{result['command']}` ({result['date']}, {result['threads']} thread(s), "
             f"{result['machine']}).", "", head]
    for name, row in result["rows"].items():
        cells = [f"{100 * row[c]['em']:.1f}% [{100 * row[c]['ci95'][0]:.0f}, "
                 f"{100 * row[c]['ci95'][1]:.0f}]" for c in CONTEXTS]
        lines.append(f"| {name} | {row['n']} | " + " | ".join(cells) + " |")
    lines += ["", f"Chance (commonest seen value per attribute), held-out: "
              f"{100 * result['chance_heldout']:.1f}%. Answering all {result['rows']['heldout']['n']}"
              f" held-out questions with TF-IDF top-3 (retrieval + batched reading): "
              f"{result['rows']['heldout']['top3']['seconds']:.2f} s."]
    return "\n".join(lines) + "\n"


def main() -> None:
    torch.set_num_threads(1)
    world = make_world()
    retriever = TfidfRetriever().fit(world.passages())
    model, tok = pretrained_reader()
    chance = world.chance("heldout")
    result = {
        "command": "OMP_NUM_THREADS=1 python benchmarks/rag/reader_table.py",
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "threads": torch.get_num_threads(),
        "machine": f"{platform.machine()}, load average {open('/proc/loadavg').read().split()[0]}",
        "torch_version": torch.__version__,
        "world_fingerprint": world.fingerprint(),
        "chance_heldout": sum(chance.values()) / len(chance),
        "chance_by_attribute": chance,
        "rows": measure(model, tok, world, retriever),
    }
    (HERE / "reader_table.json").write_text(json.dumps(result, indent=1) + "\n")
    (HERE / "reader_table.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
