"""Generalization without retraining (chapter 12): the knowledge lives in the index.

Everything uses the shipped reader as it is (no retraining) and chapter 9's
TF-IDF retriever, top-3 passages (the default pipeline), on the default fact
world ``make_world()``:

(a) **Index swap** in the style of Lewis et al. 2020: the "v2" world
    ``world.changed()`` in which 30% of the people moved city or changed
    employer. For every changed fact, the question is answered with the v1
    index and with the v2 index; exact match against the v1 truth and the v2
    truth gives a 2x2 table (matched index high, mismatched low). The
    closed-book reader (k=0) has no index to swap.
(b) **The paraphrase template** never used in training: exact match with the
    gold passage, TF-IDF top-1 and top-3, beside the training templates.
(c) **Deleting facts** from the index: one fact per person (attributes in
    turn) is removed; the questions about them are read with the remaining
    index. How often the reader still gives the old answer, gives something
    else, or abstains (``RAG(min_score=...)``: the best passage scores below
    the threshold), against the same rates on the facts that were kept.
(d) **Absent people** (``world.questions("absent")``, not in the world):
    coverage and accuracy on the held-out questions and abstention on the
    absent ones, against ``min_score``.

Exact match is computed by teacher forcing (equal to greedy decoding, see
reader_table.py); the abstention of ``RAG`` depends on the best hit's score
only, so it is applied to the same hits for every threshold (checked once
against ``RAG(min_score=...).answer_batch``). Every rate has a 95% Wilson
interval.

Usage (from the repository root)::

    OMP_NUM_THREADS=1 python benchmarks/rag/generalization.py

writes benchmarks/rag/generalization.json and generalization.md.
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

from slmbook.facts import ATTRIBUTES, make_world, passage_id  # noqa: E402
from slmbook.metrics import wilson_interval as wilson  # noqa: E402
from slmbook.rag import RAG, pretrained_reader  # noqa: E402
from slmbook.reader import render_prompt, teacher_forced_match  # noqa: E402
from slmbook.retrieval import TfidfRetriever  # noqa: E402

K = 3
THRESHOLDS = (0.0, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)


def rate(k: int, n: int) -> dict:
    lo, hi = wilson(k, n) if n else (0.0, 1.0)
    return {"k": k, "n": n, "rate": k / n if n else 0.0, "ci95": [lo, hi]}


def prompts_for(questions, hits, k: int = K) -> list[str]:
    return [render_prompt(q, [h.text for h in hs[:k]]) for q, hs in zip(questions, hits,
                                                                       strict=True)]


def index_swap(model, tok, v1, v2) -> dict:
    """(a): every changed fact, v1 or v2 index, scored against the v1 and the v2 truth."""
    changed = {(pid, a): (old, new) for pid, a, old, new in v1.diff(v2)}
    qs = [q for split in ("seen", "heldout") for q in v1.questions(split)
          if (q.person, q.attribute) in changed]
    questions = [q.question for q in qs]
    truth = {"v1": [changed[q.person, q.attribute][0] for q in qs],
             "v2": [changed[q.person, q.attribute][1] for q in qs]}
    seen = [q.person in v1.seen_ids for q in qs]
    table = {}
    for index, world in (("v1 index", v1), ("v2 index", v2)):
        hits = TfidfRetriever().fit(world.passages()).search_batch(questions, K)
        prompts = prompts_for(questions, hits)
        row = {}
        for t in ("v1", "v2"):
            ok = teacher_forced_match(model, tok, prompts, truth[t])
            row[f"{t} truth"] = rate(sum(ok), len(ok))
            row[f"{t} truth, seen people"] = rate(sum(o for o, s in zip(ok, seen, strict=True)
                                                      if s), sum(seen))
        table[index] = row
    closed = [render_prompt(q) for q in questions]
    table["closed book (k=0)"] = {
        f"{t} truth": rate(sum(ok := teacher_forced_match(model, tok, closed, truth[t])),
                           len(ok)) for t in ("v1", "v2")}
    by_attr = Counter(q.attribute for q in qs)
    return {"questions": len(qs), "seen_people": sum(seen), "by_attribute": dict(by_attr),
            "table": table}


def paraphrase(model, tok, world, retriever) -> dict:
    """(b): exact match with gold, top-1, top-3, training templates vs the paraphrase."""
    by_id = {p.id: p for p in world.passages()}
    rows = {}
    for split in ("seen", "heldout"):
        for para in (False, True):
            qs = world.questions(split, paraphrase=para)
            questions = [q.question for q in qs]
            hits = retriever.search_batch(questions, K)
            answers = [q.answer for q in qs]
            row = {}
            for ctx, prompts in (
                    ("gold", [render_prompt(q.question, [by_id[q.passage_id].text]) for q in qs]),
                    ("top1", prompts_for(questions, hits, 1)),
                    ("top3", prompts_for(questions, hits, 3))):
                ok = teacher_forced_match(model, tok, prompts, answers)
                row[ctx] = rate(sum(ok), len(ok))
            row["recall@1"] = rate(sum(q.passage_id == hs[0].passage_id
                                       for q, hs in zip(qs, hits, strict=True)), len(qs))
            row["recall@3"] = rate(sum(q.passage_id in [h.passage_id for h in hs]
                                       for q, hs in zip(qs, hits, strict=True)), len(qs))
            rows[split + (" (paraphrase)" if para else " (training templates)")] = row
    return rows


def deletion(model, tok, world) -> dict:
    """(c): one fact per person removed from the index; old answer, other, abstain."""
    removed = {passage_id(p.id, ATTRIBUTES[i % 4]) for i, p in enumerate(world.people)}
    index = [p for p in world.passages() if p.id not in removed]
    retriever = TfidfRetriever().fit(index)
    out = {"removed_passages": len(removed), "index_passages": len(index), "by_split": {}}
    greedy_kinds = {}
    for split in ("seen", "heldout"):
        qs = world.questions(split)
        questions = [q.question for q in qs]
        hits = retriever.search_batch(questions, K)
        prompts = prompts_for(questions, hits)
        old = teacher_forced_match(model, tok, prompts, [q.answer for q in qs])
        top = [hs[0].score for hs in hits]
        gone = [q.passage_id in removed for q in qs]
        rows = {}
        for t in THRESHOLDS:
            row = {}
            for name, pick in (("deleted", True), ("kept", False)):
                idx = [i for i, g in enumerate(gone) if g == pick]
                abst = [top[i] < t for i in idx]
                old_ans = [old[i] and top[i] >= t for i in idx]
                other = [not old[i] and top[i] >= t for i in idx]
                row[name] = {"old answer": rate(sum(old_ans), len(idx)),
                             "other answer": rate(sum(other), len(idx)),
                             "abstain": rate(sum(abst), len(idx))}
            rows[f"{t:g}"] = row
        out["by_split"][split] = {
            "deleted": sum(gone), "kept": len(gone) - sum(gone), "by_min_score": rows,
            "top_score_median": {"deleted": _median([s for s, g in zip(top, gone, strict=True)
                                                     if g]),
                                 "kept": _median([s for s, g in zip(top, gone, strict=True)
                                                  if not g])}}
        if split == "seen":  # what "something else" is: greedy answers to the deleted facts
            dq = [q for q, g in zip(qs, gone, strict=True) if g]
            answers = RAG(retriever, model, tok, k=K).answer_batch([q.question for q in dq])
            same_person = Counter()
            for a, q in zip(answers, dq, strict=True):
                p = world.person(q.person)
                kind = ("old answer" if a.text == q.answer else
                        "another fact of the same person" if a.text in p.facts.values() else
                        "a value of the attribute" if a.text in _values(world, q.attribute) else
                        "other text")
                same_person[kind] += 1
            greedy_kinds = dict(same_person)
    out["greedy_deleted_seen_kinds"] = greedy_kinds
    return out


def _values(world, attribute: str) -> set[str]:
    return {p.facts[attribute] for p in world.people}


def _median(xs: list[float]) -> float:
    xs = sorted(xs)
    return round(xs[len(xs) // 2], 4) if xs else float("nan")


def absent(model, tok, world, retriever) -> dict:
    """(d): coverage / accuracy on held-out questions, abstention on absent people."""
    known, missing = world.questions("heldout"), world.questions("absent")
    k_hits = retriever.search_batch([q.question for q in known], K)
    a_hits = retriever.search_batch([q.question for q in missing], K)
    ok = teacher_forced_match(model, tok, prompts_for([q.question for q in known], k_hits),
                              [q.answer for q in known])
    kt, at = [h[0].score for h in k_hits], [h[0].score for h in a_hits]
    rows = {}
    for t in THRESHOLDS:
        answered = [i for i, s in enumerate(kt) if s >= t]
        rows[f"{t:g}"] = {"coverage": rate(len(answered), len(known)),
                          "accuracy": rate(sum(ok[i] for i in answered), len(answered)),
                          "abstain_absent": rate(sum(s < t for s in at), len(missing))}
    # check: RAG(min_score) abstains exactly where the post-hoc threshold does
    t = 0.5
    answers = RAG(retriever, model, tok, k=K, min_score=t).answer_batch(
        [q.question for q in missing])
    check = [a.abstained for a in answers] == [s < t for s in at]
    return {"answerable": len(known), "absent": len(missing), "by_min_score": rows,
            "rag_min_score_check": {"min_score": t, "same_abstentions": check},
            "top_score_median": {"heldout": _median(kt), "absent": _median(at)}}


def pct(r: dict) -> str:
    return f"{100 * r['rate']:.1f}% [{100 * r['ci95'][0]:.0f}, {100 * r['ci95'][1]:.0f}]"


def markdown(res: dict) -> str:
    a = res["index_swap"]
    lines = [f"Generalization of the shipped reader without retraining, TF-IDF top-{K}, 95% "
             f"Wilson intervals. Command: `{res['command']}` ({res['date']}, {res['threads']} "
             f"thread(s), {res['machine']}; {res['seconds']:.0f} s).", "",
             f"**(a) Index swap** ({a['questions']} changed facts of `world.changed()`, "
             f"{a['seen_people']} of seen people): exact match against the v1 and the v2 truth.",
             "", "| index | v1 truth | v2 truth |", "|---|---|---|"]
    for name, row in a["table"].items():
        lines.append(f"| {name} | {pct(row['v1 truth'])} | {pct(row['v2 truth'])} |")
    lines += ["", "**(b) Paraphrase template** (never used in training): exact match.", "",
              "| questions | gold | top-1 | top-3 | recall@1 | recall@3 |",
              "|---|---|---|---|---|---|"]
    for name, row in res["paraphrase"].items():
        lines.append(f"| {name} | " + " | ".join(pct(row[c]) for c in (
            "gold", "top1", "top3", "recall@1", "recall@3")) + " |")
    d = res["deletion"]
    lines += ["", f"**(c) Deleting facts** ({d['removed_passages']} passages, one per person, "
              f"removed from the index): what RAG answers, by `min_score`.", "",
              "| people | min_score | deleted: old answer | deleted: other | deleted: abstain | "
              "kept: old (correct) | kept: abstain |", "|---|---|---|---|---|---|---|"]
    for split, s in d["by_split"].items():
        for t, row in s["by_min_score"].items():
            lines.append(f"| {split} | {t} | {pct(row['deleted']['old answer'])} | "
                         f"{pct(row['deleted']['other answer'])} | "
                         f"{pct(row['deleted']['abstain'])} | {pct(row['kept']['old answer'])} | "
                         f"{pct(row['kept']['abstain'])} |")
    lines += ["", "Median best-passage score, deleted vs kept: " + "; ".join(
        f"{split} {s['top_score_median']['deleted']:.3f} vs {s['top_score_median']['kept']:.3f}"
        for split, s in d["by_split"].items()) + ". Greedy answers to the deleted facts of seen "
        f"people: {d['greedy_deleted_seen_kinds']}."]
    e = res["absent"]
    lines += ["", f"**(d) Absent people** ({e['absent']} questions about people not in the "
              f"world, {e['answerable']} held-out questions): abstention by `min_score`.", "",
              "| min_score | coverage (held-out) | accuracy when answering | abstain (absent) |",
              "|---|---|---|---|"]
    for t, row in e["by_min_score"].items():
        lines.append(f"| {t} | {pct(row['coverage'])} | {pct(row['accuracy'])} | "
                     f"{pct(row['abstain_absent'])} |")
    c = e["rag_min_score_check"]
    lines += ["", f"Median best-passage score: held-out {e['top_score_median']['heldout']:.3f}, "
              f"absent {e['top_score_median']['absent']:.3f}. `RAG(min_score={c['min_score']})` "
              f"abstains on exactly the same absent questions as the threshold applied to the "
              f"scores: {c['same_abstentions']}."]
    return "\n".join(lines) + "\n"


def main() -> None:
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    world = make_world()
    v2 = world.changed()
    retriever = TfidfRetriever().fit(world.passages())
    model, tok = pretrained_reader()
    res = {
        "command": "OMP_NUM_THREADS=1 python benchmarks/rag/generalization.py",
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "threads": torch.get_num_threads(),
        "machine": f"{platform.machine()}, load average {open('/proc/loadavg').read().split()[0]}",
        "torch_version": torch.__version__,
        "world_fingerprint": world.fingerprint(), "v2_fingerprint": v2.fingerprint(),
        "k": K,
        "index_swap": index_swap(model, tok, world, v2),
        "paraphrase": paraphrase(model, tok, world, retriever),
        "deletion": deletion(model, tok, world),
        "absent": absent(model, tok, world, retriever),
    }
    res["seconds"] = round(time.perf_counter() - t0, 1)
    (HERE / "generalization.json").write_text(json.dumps(res, indent=1) + "\n")
    (HERE / "generalization.md").write_text(markdown(res))
    print(markdown(res))


if __name__ == "__main__":
    main()
