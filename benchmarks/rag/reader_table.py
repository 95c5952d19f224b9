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
import platform
import sys
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.append(str(HERE.parent.parent))  # an installed slmbook comes first

from slmbook.facts import make_world  # noqa: E402
from slmbook.metrics import wilson_interval  # noqa: E402
from slmbook.rag import RAG, diagnose, pretrained_reader  # noqa: E402
from slmbook.reader import render_prompt, teacher_forced_match  # noqa: E402
from slmbook.retrieval import TfidfRetriever  # noqa: E402

CONTEXTS = ("none", "gold", "top1", "top3")
SPLITS = (("seen", False), ("heldout", False), ("heldout", True))


def measure(model, tok, world, retriever) -> dict:
    """Exact match per (split, context), by teacher forcing (equal to greedy decoding)."""
    by_id = {p.id: p for p in world.passages()}
    rows = {}
    for split, para in SPLITS:
        qs = world.questions(split, paraphrase=para)
        name = split + (" (paraphrase)" if para else "")
        row = {"n": len(qs)}
        top3 = retriever.search_batch([q.question for q in qs], 3)
        for ctx in CONTEXTS:
            if ctx == "gold":
                prompts = [render_prompt(q.question, [by_id[q.passage_id].text]) for q in qs]
            else:
                k = {"none": 0, "top1": 1, "top3": 3}[ctx]
                prompts = [render_prompt(q.question, [h.text for h in hits[:k]])
                           for q, hits in zip(qs, top3, strict=True)]
            ok = teacher_forced_match(model, tok, prompts, [q.answer for q in qs])
            correct = sum(ok)
            lo, hi = wilson_interval(correct, len(qs))
            row[ctx] = {"em": correct / len(qs), "ci95": [lo, hi]}
            if ctx in ("top1", "top3"):
                k = {"top1": 1, "top3": 3}[ctx]
                retrieved = [q.passage_id in [h.passage_id for h in hits[:k]]
                             for q, hits in zip(qs, top3, strict=True)]
                row[ctx]["recall"] = sum(retrieved) / len(qs)
                row[ctx]["errors"] = {
                    "retrieval miss": sum(not r for r in retrieved),
                    "reading miss": sum(r and not o for r, o in zip(retrieved, ok, strict=True))}
        rows[name] = row
    return rows


def time_pipeline(model, tok, world, retriever) -> dict:
    """All held-out questions through RAG.answer_batch (TF-IDF top-3, greedy), timed."""
    qs = world.questions("heldout")
    rag = RAG(retriever, model, tok, k=3)
    t0 = time.perf_counter()
    answers = rag.answer_batch([q.question for q in qs])
    seconds = time.perf_counter() - t0
    greedy = [a.text == q.answer for a, q in zip(answers, qs, strict=True)]
    forced = teacher_forced_match(model, tok, [a.prompt for a in answers], [q.answer for q in qs])
    return {"questions": len(qs), "seconds": round(seconds, 2),
            "greedy_equals_teacher_forced": greedy == forced, "em": sum(greedy) / len(qs),
            "kinds": dict(Counter(diagnose(answers, qs)))}


def markdown(result: dict) -> str:
    head = "| questions | n | " + " | ".join(CONTEXTS) + " |\n|---|---|" + "---|" * len(CONTEXTS)
    lines = [f"Exact match of the shipped reader, 95% Wilson intervals. Command: "
             f"`{result['command']}` ({result['date']}, {result['threads']} thread(s), "
             f"{result['machine']}).", "", head]
    for name, row in result["rows"].items():
        cells = [f"{100 * row[c]['em']:.1f}% [{100 * row[c]['ci95'][0]:.0f}, "
                 f"{100 * row[c]['ci95'][1]:.0f}]" for c in CONTEXTS]
        lines.append(f"| {name} | {row['n']} | " + " | ".join(cells) + " |")
    t = result["pipeline"]
    lines += ["", f"Chance (commonest seen value per attribute), held-out: "
              f"{100 * result['chance_heldout']:.1f}%. Exact match is computed by teacher "
              f"forcing; greedy decoding gives the same verdicts "
              f"({t['greedy_equals_teacher_forced']} on the {t['questions']} held-out questions "
              f"with top-3). Answering all {t['questions']} held-out questions with TF-IDF top-3 "
              f"(retrieval + batched greedy reading, 1 thread): {t['seconds']:.2f} s."]
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
        "pipeline": time_pipeline(model, tok, world, retriever),
    }
    (HERE / "reader_table.json").write_text(json.dumps(result, indent=1) + "\n")
    (HERE / "reader_table.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
