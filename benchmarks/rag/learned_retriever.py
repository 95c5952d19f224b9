"""Learned retriever benchmark: training TF-IDF term weights from the reader's likelihood.

A CPU-scale version of Lewis et al. (2020), Table 6 (frozen vs learned
retriever), on the fact world's *hard* index (each person also has an
answerless "FAQ" passage that mentions the name, so plain TF-IDF often ranks
it first).

1. The frozen shipped reader (``slmbook.checkpoints.pretrained("reader")``)
   scores the answer of every question given each of its 10 TF-IDF
   candidates alone, once: token log-probabilities ``(N, K, L)``, cached
   (``slmbook.rag.cache_candidates``).
2. A :class:`~slmbook.learned_retrieval.LearnedTfidfRetriever` (one weight
   per term, query side) is trained on the questions about *seen* people by
   the RAG-Sequence or the RAG-Token marginal likelihood, which needs no
   relevance label (only the answer), and, as the supervised bound, by the
   cross-entropy of the gold passage's prior (``slmbook.rag.train_retriever``).
3. On *held-out* people (never trained on by reader or retriever): recall@1
   of the re-ranked candidates and of the learned retriever's own search,
   and end-to-end exact match of greedy reading with the top-1 and top-3
   passages, over several seeds (each seed: another order of mini-batches
   and another random 80% of the training questions), with Wilson 95%
   intervals over the questions and the spread over seeds.
4. What was learned (the terms whose weights rose and fell), retrieval
   collapse (too low a temperature, too high a learning rate) with its
   diagnostics, the stale index of document-side weights, and (optional) a
   short joint run in which the reader learns too, through
   ``slmbook.training.train(loss_fn=...)`` (``slmbook.rag.JointRAG``, ``joint_loss``).

Usage (from the repository root):

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/rag/learned_retriever.py --seeds 0 1 2 --joint-steps 60

Writes benchmarks/rag/learned_retriever.json and benchmarks/rag/learned_retriever.md.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from slmbook import checkpoints
from slmbook.facts import make_world
from slmbook.learned_retrieval import LearnedTfidfRetriever
from slmbook.model import GPT, GPTConfig
from slmbook.rag import RAG, CandidateCache, JointRAG, cache_candidates, joint_loss, train_retriever
from slmbook.reader import ReaderTokenizer, exact_match, read, render_prompt, teacher_forced_match
from slmbook.retrieval import TfidfRetriever

HERE = Path(__file__).parent
K = 10  # candidates per question (the base TF-IDF top-10)
OBJECTIVES = {"rag-sequence": "sequence", "rag-token": "token", "supervised": "labels"}
"""The result keys and the ``objective`` of :func:`slmbook.rag.train_retriever` they name."""


def load_reader(path: str | None):
    """The shipped reader (default), a checkpoint file, or ``"random"`` (smoke tests only)."""
    if path is None:
        return checkpoints.pretrained("reader")
    if path == "random":
        torch.manual_seed(0)
        return GPT(GPTConfig(vocab_size=96, block_size=256)).eval(), ReaderTokenizer()
    return checkpoints.load(path).build_model(), ReaderTokenizer()


# ---------------------------------------------------------------- the cache
def build_cache(model, tokenizer, base: TfidfRetriever, qas) -> CandidateCache:
    """The frozen reader's log-probabilities for each question's TF-IDF top-K, alone."""
    return cache_candidates(model, tokenizer, LearnedTfidfRetriever(base, candidate_k=K), qas, k=K,
                            batch_size=200)


# ---------------------------------------------------------------- training the retriever
def fit(base, qas, cache: CandidateCache, objective: str, *, tau: float, lr: float, epochs: int,
        batch_size: int, seed: int, fraction: float = 0.8, doc_weights: bool = False,
        query_weights: bool = True):
    """A fresh learned retriever trained by ``slmbook.rag.train_retriever`` on a random
    ``fraction`` of the questions (another one, and another batch order, for each ``seed``)."""
    rng = np.random.default_rng(seed)
    train_idx = rng.permutation(len(qas))[: int(fraction * len(qas))]
    if objective == "supervised":  # the gold passage must be among the candidates
        train_idx = train_idx[cache.gold[train_idx].any(1).numpy()]
    batches = []
    for _ in range(epochs):
        order = rng.permutation(train_idx)
        batches += [order[s : s + batch_size] for s in range(0, len(order), batch_size)]
    retriever = LearnedTfidfRetriever(base, candidate_k=K, doc_weights=doc_weights)
    retriever.theta.requires_grad_(query_weights)
    t0 = time.perf_counter()
    losses = train_retriever(retriever, [qa.question for qa in qas], cache,
                             objective=OBJECTIVES[objective], temperature=tau, lr=lr,
                             batch_size=batch_size, seed=seed, batches=batches)
    return retriever, {"train_seconds": time.perf_counter() - t0, "steps": len(losses),
                       "first_loss": losses[0], "last_loss": float(np.mean(losses[-10:]))}


# ---------------------------------------------------------------- evaluation
def wilson(p: float, n: int, z: float = 1.96) -> list[float]:
    """Wilson 95% interval of a proportion ``p`` of ``n`` questions, in percent."""
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [round(max(0.0, 100 * (centre - half)), 1), round(min(100.0, 100 * (centre + half)), 1)]


def tf_em(model, tokenizer, qas, passage_lists) -> float:
    """Teacher-forced exact match (equal to greedy reading's, one forward pass per prompt)."""
    prompts = [render_prompt(qa.question, ps) for qa, ps in zip(qas, passage_lists, strict=True)]
    return float(np.mean(teacher_forced_match(model, tokenizer, prompts, [qa.answer for qa in qas])))


def read_em(model, tokenizer, qas, passage_lists) -> float:
    """Exact match of greedy reading."""
    prompts = [render_prompt(qa.question, ps) for qa, ps in zip(qas, passage_lists, strict=True)]
    answers = read(model, tokenizer, prompts)
    return float(np.mean([exact_match(a, qa.answer) for a, qa in zip(answers, qas, strict=True)]))


def evaluate(retriever, cache: CandidateCache, qas, model, tokenizer, base, tau: float, *,
             em: bool = True) -> dict:
    """recall@1 (re-ranked candidates and full search), EM top-1/top-3, collapse diagnostics."""
    questions = [qa.question for qa in qas]
    cand = cache.candidate_ids.numpy()
    with torch.no_grad():
        ids, scores = retriever.scores(questions, cand)
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices.numpy()  # (N, K)
    ranked = np.take_along_axis(ids.numpy(), order, 1)
    gold_rows = np.array([base.ids_.index(qa.passage_id) for qa in qas])
    hits = retriever.search_batch(questions, k=1)
    report = retriever.collapse_report(questions, tau, cand)  # over the cached candidates
    full = retriever.collapse_report(questions, tau)  # over the learned retriever's own search
    out = {
        "recall@1": float(np.mean(ranked[:, 0] == gold_rows)),
        "recall@3": float(np.mean((ranked[:, :3] == gold_rows[:, None]).any(1))),
        "recall@1_search": float(np.mean([h[0].passage_id == qa.passage_id
                                          for h, qa in zip(hits, qas, strict=True)])),
        "prior_entropy": report.mean_entropy,
        "distinct_top1": report.distinct_top1,
        "most_common_top1_share": report.most_common_top1_share,
        "distinct_top1_search": full.distinct_top1,
        "most_common_top1_share_search": full.most_common_top1_share,
    }
    # EM of the top-1: the cached teacher-forced match of that candidate (= greedy reading)
    out["em_top1"] = float(np.mean(cache.exact.numpy()[np.arange(len(order)), order[:, 0]]))
    if em:  # top-3 in rank order: one teacher-forced pass over the 3-passage prompts
        prompts = [render_prompt(q, [base.texts_[j] for j in r[:3]])
                   for q, r in zip(questions, ranked, strict=True)]
        out["em_top3"] = float(np.mean(teacher_forced_match(
            model, tokenizer, prompts, [qa.answer for qa in qas])))
    return out


def pipeline_em(retriever, model, tokenizer, qas) -> dict:
    """End to end through ``slmbook.rag.RAG``: the retriever's own search, then greedy reading."""
    out = {}
    for k in (1, 3):
        answers = RAG(retriever, model, tokenizer, k=k).answer_batch([qa.question for qa in qas])
        out[f"rag_em_k{k}"] = float(np.mean([exact_match(a.text, qa.answer)
                                             for a, qa in zip(answers, qas, strict=True)]))
    return out


def term_changes(retriever, n: int = 8) -> dict:
    weights = retriever.term_weights()
    moved = sorted(weights.items(), key=lambda kv: kv[1])
    return {"rose": [[t, round(w, 3)] for t, w in moved[::-1][:n]],
            "fell": [[t, round(w, 3)] for t, w in moved[:n]]}


# ---------------------------------------------------------------- joint training
def joint_run(base, seen, cache_seen: CandidateCache, held, tau: float, lr_reader: float,
              lr_retriever: float, steps: int, seed: int, reader_path: str | None,
              batch_size: int = 4) -> dict:
    from slmbook.training import train

    reader, tokenizer = load_reader(reader_path)
    model = JointRAG(reader, LearnedTfidfRetriever(base, candidate_k=K))
    optimizer = torch.optim.AdamW([
        {"params": model.reader.parameters(), "lr": lr_reader, "weight_decay": 0.0},
        {"params": model.retriever.parameters(), "lr": lr_retriever, "weight_decay": 0.0},
    ])
    n = len(seen)

    def batches(generator: torch.Generator) -> torch.Tensor:
        return torch.randint(0, n, (batch_size,), generator=generator)

    t0 = time.perf_counter()
    history = train(model, batches, None, optimizer=optimizer,
                    loss_fn=joint_loss([qa.question for qa in seen], [qa.answer for qa in seen],
                                       cache_seen.candidate_ids, tokenizer, tau),
                    max_steps=steps, eval_every=steps, seed=seed, progress=False, grad_clip=1.0,
                    schedule="constant", block_size=reader.config.block_size, eval_batches=1)
    seconds = time.perf_counter() - t0
    model.reader.eval()
    # the reader changed: its log-probs for the held-out candidates are re-read
    cache_held = build_cache(model.reader, tokenizer, base, held)
    result = evaluate(model.retriever, cache_held, held, model.reader, tokenizer, base, tau)
    result.update({"seconds": seconds, "steps": steps, "batch_size": batch_size, "lr_reader": lr_reader,
                   "train_loss": [float(x) for x in getattr(history, "train_loss", [])]})
    return result


# ---------------------------------------------------------------- main
def summarize(runs: list[dict], n: int) -> dict:
    out = {}
    for key in [k for k in runs[0] if all(k in r for r in runs)]:
        values = [r[key] for r in runs]
        if isinstance(values[0], float) and key != "prior_entropy":
            mean = float(np.mean(values))
            out[key] = {"mean": round(100 * mean, 2), "sd": round(100 * float(np.std(values)), 2),
                        "min": round(100 * min(values), 2), "max": round(100 * max(values), 2),
                        "wilson95_of_mean": wilson(mean, n)}
        elif isinstance(values[0], (int, float)):
            out[key] = {"mean": round(float(np.mean(values)), 4), "values": values}
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--tau", type=float, default=0.1)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--joint-steps", type=int, default=0, help="0: no joint run")
    parser.add_argument("--reader", default=None,
                        help="reader checkpoint (default: the shipped one; 'random': smoke test)")
    parser.add_argument("--limit", type=int, default=None, help="questions per split (smoke test)")
    parser.add_argument("--out", type=Path, default=HERE / "learned_retriever.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    t_start = time.perf_counter()

    world = make_world(seed=0)
    base = TfidfRetriever().fit(world.passages(hard=True))
    model, tokenizer = load_reader(args.reader)
    seen, held = world.questions("seen"), world.questions("heldout")
    if args.limit:
        seen, held = seen[: args.limit], held[: args.limit]
    t0 = time.perf_counter()
    cache_seen = build_cache(model, tokenizer, base, seen)
    cache_held = build_cache(model, tokenizer, base, held)
    cache_seconds = time.perf_counter() - t0
    n = len(held)
    tau = args.tau
    result: dict = {
        "command": "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/rag/learned_retriever.py "
                   + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": {"platform": platform.platform(), "torch": torch.__version__, "threads": 1},
        "world": {"fingerprint": world.fingerprint(), "passages": len(base),
                  "seen_questions": len(seen), "heldout_questions": n},
        "settings": {"K": K, "tau": tau, "lr": args.lr, "epochs": args.epochs,
                     "batch_size": args.batch_size, "train_fraction": 0.8, "seeds": args.seeds},
        "cache_seconds": round(cache_seconds, 1),
        "gold_in_candidates_heldout": float(cache_held.gold.any(1).double().mean()),
    }

    # baselines (no training): closed book, gold passage, plain TF-IDF
    plain = LearnedTfidfRetriever(base, candidate_k=K)
    result["closed_book_em"] = tf_em(model, tokenizer, held, [[] for _ in held])
    result["gold_passage_em"] = tf_em(
        model, tokenizer, held, [[base.texts_[base.ids_.index(qa.passage_id)]] for qa in held])
    result["tfidf"] = evaluate(plain, cache_held, held, model, tokenizer, base, tau)
    # check: greedy reading of the TF-IDF top-1 gives the teacher-forced EM
    result["tfidf"]["em_top1_greedy"] = read_em(
        model, tokenizer, held, [[base.texts_[r[0]]] for r in cache_held.candidate_ids.tolist()])
    result["tfidf"].update(pipeline_em(base, model, tokenizer, held))

    # learned retrievers, frozen reader
    result["learned"] = {}
    for objective in OBJECTIVES:
        runs, terms, info = [], None, []
        for seed in args.seeds:
            retriever, log = fit(base, seen, cache_seen, objective, tau=tau, lr=args.lr,
                                 epochs=args.epochs, batch_size=args.batch_size, seed=seed)
            runs.append(evaluate(retriever, cache_held, held, model, tokenizer, base, tau))
            info.append(log)
            if terms is None:
                terms = term_changes(retriever)
                runs[-1].update(pipeline_em(retriever, model, tokenizer, held))
        result["learned"][objective] = {"runs": runs, "summary": summarize(runs, n),
                                        "train": info, "terms_seed0": terms}

    # collapse: too low a temperature, too high a learning rate
    result["collapse"] = {}
    for name, t, lr in (("tau=0.1, lr=0.05 (default)", tau, args.lr),
                        ("tau=0.001", 1e-3, args.lr), ("lr=1", tau, 1.0), ("lr=5", tau, 5.0),
                        ("lr=20", tau, 20.0)):
        retriever, log = fit(base, seen, cache_seen, "rag-sequence", tau=t, lr=lr,
                             epochs=args.epochs, batch_size=args.batch_size, seed=0)
        ev = evaluate(retriever, cache_held, held, model, tokenizer, base, t, em=False)
        ev["train"] = log
        ev["terms"] = term_changes(retriever, 5)
        result["collapse"][name] = ev

    # the stale index: document-side weights only, trained; the index is not rebuilt
    retriever, log = fit(base, seen, cache_seen, "rag-sequence", tau=tau, lr=args.lr,
                         epochs=args.epochs, batch_size=args.batch_size, seed=0,
                         doc_weights=True, query_weights=False)
    def search_recall(candidate_k: int) -> float:
        retriever.candidate_k = candidate_k  # how many first-stage passages are re-ranked
        hits = retriever.search_batch([qa.question for qa in held], k=1)
        retriever.candidate_k = K
        return float(np.mean([h[0].passage_id == qa.passage_id for h, qa in zip(hits, held, strict=True)]))

    stale_top1, stale_rerank = search_recall(1), search_recall(K)
    t0 = time.perf_counter()
    retriever.reindex()
    reindex_seconds = time.perf_counter() - t0
    result["stale_index"] = {
        "stale_index_top1": stale_top1,  # the stale index's own first passage
        "stale_index_rerank_top10": stale_rerank,  # its top-10 re-scored with fresh weights
        "fresh_index_top1": search_recall(1),  # after reindex()
        "reindex_seconds": reindex_seconds, "passages": len(base), "train": log,
    }

    if args.joint_steps:
        result["joint"] = joint_run(base, seen, cache_seen, held, tau, 3e-4, args.lr,
                                    args.joint_steps, seed=0, reader_path=args.reader)
    result["total_seconds"] = round(time.perf_counter() - t_start, 1)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(markdown(result) + "\n")
    print(markdown(result))


def _pct(summary: dict, key: str) -> str:
    s = summary[key]
    return f"{s['mean']:.1f} (sd {s['sd']:.1f}; {s['wilson95_of_mean'][0]:.1f}-{s['wilson95_of_mean'][1]:.1f})"


def markdown(r: dict) -> str:
    n = r["world"]["heldout_questions"]
    t = r["tfidf"]
    lines = [
        "# Learned retriever on the hard index (held-out people)",
        "",
        f"Command: `{r['command']}`",
        "",
        f"{n} held-out questions, {r['world']['passages']} passages, K = {r['settings']['K']} "
        f"TF-IDF candidates (gold among them for {100 * r['gold_in_candidates_heldout']:.1f}%), "
        f"tau = {r['settings']['tau']}. Percentages; learned rows: mean over seeds "
        f"{r['settings']['seeds']} (sd over seeds; Wilson 95% interval of the mean over the "
        "questions).",
        "",
        "| retriever | training signal | recall@1 | EM top-1 | EM top-3 |",
        "|---|---|---|---|---|",
        f"| none (closed book) | - | - | {100 * r['closed_book_em']:.1f} | - |",
        f"| gold passage | - | 100 | {100 * r['gold_passage_em']:.1f} | - |",
        f"| TF-IDF | - | {100 * t['recall@1']:.1f} {wilson(t['recall@1'], n)} | "
        f"{100 * t['em_top1']:.1f} | {100 * t['em_top3']:.1f} |",
    ]
    labels = {"rag-sequence": "answers only, RAG-Sequence", "rag-token": "answers only, RAG-Token",
              "supervised": "gold passage labels (bound)"}
    for obj, label in labels.items():
        s = r["learned"][obj]["summary"]
        lines.append(f"| learned, reader frozen | {label} | {_pct(s, 'recall@1')} | "
                     f"{_pct(s, 'em_top1')} | {_pct(s, 'em_top3')} |")
    if "joint" in r:
        j = r["joint"]
        lines.append(f"| learned, joint ({j['steps']} steps, {j['seconds']:.0f} s) | answers only, "
                     f"RAG-Sequence | {100 * j['recall@1']:.1f} | {100 * j['em_top1']:.1f} | "
                     f"{100 * j['em_top3']:.1f} |")
    terms = r["learned"]["rag-sequence"]["terms_seed0"]
    if "rag_em_k1" in t:
        s0 = r["learned"]["rag-sequence"]["runs"][0]
        lines += ["", "End to end through `slmbook.rag.RAG` (the retriever's own search, greedy reading; "
                  "seed 0): exact match with k = 1 / k = 3 passages: TF-IDF "
                  f"{100 * t['rag_em_k1']:.1f} / {100 * t['rag_em_k3']:.1f}, learned (RAG-Sequence) "
                  f"{100 * s0['rag_em_k1']:.1f} / {100 * s0['rag_em_k3']:.1f}."]
    lines += ["", "Terms whose weights rose (RAG-Sequence, seed 0): "
              + ", ".join(f"{a} {w}" for a, w in terms["rose"]),
              "", "Terms whose weights fell: " + ", ".join(f"{a} {w}" for a, w in terms["fell"]),
              "", "Collapse diagnostics (RAG-Sequence, seed 0):", "",
              "| setting | recall@1 (re-ranked top-10) | recall@1 (search) | entropy of p(z|x) "
              "(nats) | distinct top-1 (search) | most common top-1 (search) |",
              "|---|---|---|---|---|---|"]
    for name, c in r["collapse"].items():
        lines.append(f"| {name} | {100 * c['recall@1']:.1f} | {100 * c['recall@1_search']:.1f} | "
                     f"{c['prior_entropy']:.3f} | {c['distinct_top1_search']} of {n} | "
                     f"{100 * c['most_common_top1_share_search']:.1f}% of questions |")
    st = r["stale_index"]
    lines += ["", f"Stale index (document-side weights learned, index built before): "
              f"recall@1 {100 * st['stale_index_top1']:.1f} from the stale index's first passage, "
              f"{100 * st['stale_index_rerank_top10']:.1f} when its top-10 are re-scored with the "
              f"fresh weights, {100 * st['fresh_index_top1']:.1f} after reindex() "
              f"({1000 * st['reindex_seconds']:.1f} ms for {st['passages']} passages).",
              "", f"Reader log-probabilities cached in {r['cache_seconds']} s; total "
              f"{r['total_seconds']} s on 1 thread (a shared machine: times are indicative)."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
