"""Retrieval benchmark: slmbook's TfidfRetriever (TF-IDF and BM25 weighting) beside bm25s.

Measures, at each collection size: index build time, batch throughput
(queries per second over a fixed query set, top-10), single-query latency,
and recall@1/5/10 and MRR on the hand-written question set.

Collections larger than the corpus's passages are made deterministically:
the corpus passages come first (ids unchanged, so the question labels still
hold), then synthetic passages, each the first half of one corpus passage
followed by the second half of another (seeded draws); its source is
"A|B", the two parents' topics, and it counts as relevant to a question when
either parent topic does (half of it comes from that topic). They share the
corpus's vocabulary and word statistics, so they cost what real passages
cost, and they are hard distractors.

slmbook's BM25 (``weighting="bm25"``) and bm25s use the same formula (the
Lucene variant) with the same, untuned k1 = 1.5 and b = 0.75 (bm25s's
defaults); nothing is tuned on the evaluation questions.

Usage (from the repository root; bm25s only for this benchmark):

    .venv/bin/pip install bm25s
    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 \
        .venv/bin/python benchmarks/retrieval/bench_retrieval.py --sizes 0 10000 100000

Writes benchmarks/retrieval/results.json (or --out) and prints a Markdown
table (paste it into results.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import time
from pathlib import Path

import numpy as np
import scipy
import sklearn

from slmbook.bm25 import LUCENE_STOP_WORDS
from slmbook.data import corpus_hash, load_corpus, load_documents
from slmbook.evalsets import heldout_sentences, load_questions
from slmbook.metrics import mean_reciprocal_rank, recall_at_k
from slmbook.passages import Passage, split_passages

HERE = Path(__file__).parent
KS = (1, 5, 10)
N_SINGLE = 200  # queries timed one call at a time
ROUNDS = 5  # timing rounds; the systems take turns in each round, best round kept
K1, B = 1.5, 0.75  # BM25 parameters of both BM25 systems: the usual defaults, not tuned here


def make_collection(base: list[Passage], size: int, seed: int = 0) -> list[Passage]:
    """The corpus passages, then recombined ones up to ``size`` (deterministic)."""
    rng = random.Random(seed)
    words = [p.text.split() for p in base]
    out = list(base[:size])
    while len(out) < size:
        a, b = rng.randrange(len(base)), rng.randrange(len(base))
        text = " ".join(words[a][: len(words[a]) // 2] + words[b][len(words[b]) // 2 :])
        source = f"{base[a].source}|{base[b].source}"
        out.append(Passage(f"synthetic#{len(out)}", text, source))
    return out


def timed(fn, repeat: int = 1):
    """Best wall time of ``repeat`` calls and the last result."""
    best, result = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def scores_of(ranked_sources: list[list[str]], relevant) -> dict[str, float]:
    """Recall@k and MRR; a hit is relevant when one of its "|"-separated sources is."""
    flags = [
        [any(s in rel for s in source.split("|")) for source in row]
        for row, rel in zip(ranked_sources, relevant, strict=True)
    ]
    ranked_sources, relevant = flags, [{True}] * len(flags)
    out = {f"recall@{k}": recall_at_k(ranked_sources, relevant, k) for k in KS}
    out["mrr"] = mean_reciprocal_rank(ranked_sources, relevant, k=max(KS))
    return out


def bench_slmbook(backend, passages, queries, questions, relevant, weighting="tfidf", **options):
    from slmbook.retrieval import TfidfRetriever

    bm25 = {"k1": K1, "b": B, **options} if weighting == "bm25" else options
    build, r = timed(
        lambda: TfidfRetriever(backend=backend, weighting=weighting, **bm25).fit(passages))
    ranked = [[h.source for h in hits] for hits in r.search_batch(questions, k=10)]
    batch = lambda: r.search_batch(queries, k=10)  # noqa: E731
    single = lambda: [r.search(q, k=10) for q in queries[:N_SINGLE]]  # noqa: E731
    return build, batch, single, scores_of(ranked, relevant)


def bench_bm25s(passages, queries, questions, relevant, stopwords="en"):
    import bm25s

    texts = [p.text for p in passages]
    sources = np.array([p.source for p in passages])
    if stopwords == "sklearn":  # slmbook's list (318 words) instead of bm25s's "en" (33 words)
        from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

        stopwords = sorted(ENGLISH_STOP_WORDS)

    def build():
        tokens = bm25s.tokenize(texts, stopwords=stopwords, show_progress=False)
        index = bm25s.BM25(k1=K1, b=B, method="lucene")
        index.index(tokens, show_progress=False)
        return index

    def search(qs):
        tokens = bm25s.tokenize(qs, stopwords=stopwords, return_ids=False, show_progress=False)
        tokens = [t or ["the_empty_query"] for t in tokens]
        ids, _ = index.retrieve(tokens, k=10, show_progress=False, n_threads=1)
        return ids

    build_s, index = timed(build)
    ranked = [[str(s) for s in sources[row]] for row in search(questions)]
    batch = lambda: search(queries)  # noqa: E731
    single = lambda: [search([q]) for q in queries[:N_SINGLE]]  # noqa: E731
    return build_s, batch, single, scores_of(ranked, relevant)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[0, 10_000, 100_000],
                        help="collection sizes in passages; 0 means the corpus passages only")
    parser.add_argument("--n-queries", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=HERE / "results.json",
                        help="where to write the JSON results (default: results.json here)")
    parser.add_argument("--bm25s-stopwords", choices=["en", "sklearn"], default="en",
                        help="bm25s's own English list (default, as recorded) or slmbook's "
                             "(scikit-learn's), to compare the weightings on the same tokens")
    args = parser.parse_args()

    base = split_passages(load_documents(), max_words=120, overlap=20)
    question_set = load_questions()
    questions = [q.text for q in question_set]
    relevant = [set(q.relevant) for q in question_set]
    # throughput queries: held-out sentences of the corpus plus the questions, cycled
    _, heldout = heldout_sentences(base, remove=False)
    pool = questions + [q.text for q in heldout]
    queries = [pool[i % len(pool)] for i in range(args.n_queries)]

    evalargs = (queries, questions, relevant)
    rows = []
    for size in args.sizes:
        size = size or len(base)
        passages = make_collection(base, size)
        systems = {
            "slmbook (sklearn backend)": lambda ps: bench_slmbook("sklearn", ps, *evalargs),
            "slmbook (scratch backend)": lambda ps: bench_slmbook("scratch", ps, *evalargs),
            "slmbook (bm25)": lambda ps: bench_slmbook("sklearn", ps, *evalargs, weighting="bm25"),
            # the same tokens as bm25s: Lucene's 33 stop words instead of scikit-learn's 318
            "slmbook (bm25, Lucene stop words)": lambda ps: bench_slmbook(
                "sklearn", ps, *evalargs, weighting="bm25", stop_words=LUCENE_STOP_WORDS),
            "bm25s": lambda ps: bench_bm25s(ps, *evalargs, stopwords=args.bm25s_stopwords),
        }
        built = {}
        for name, run in systems.items():
            built[name] = run(passages)
        best_batch = dict.fromkeys(systems, float("inf"))
        best_single = dict.fromkeys(systems, float("inf"))
        for _ in range(ROUNDS):  # interleaved, so that a burst of load hits all systems
            for name, (_, batch, single, _) in built.items():
                best_batch[name] = min(best_batch[name], timed(batch)[0])
                best_single[name] = min(best_single[name], timed(single)[0])
        for name, (build, _, _, scores) in built.items():
            rows.append({"passages": size, "system": name, "build_s": build,
                         "queries_per_s": len(queries) / best_batch[name],
                         "latency_ms": 1000 * best_single[name] / N_SINGLE, **scores})
            print(json.dumps(rows[-1]), flush=True)
        del built

    import bm25s

    machine = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average_at_end": os.getloadavg(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "python": platform.python_version(),
        "numpy": np.__version__, "scipy": scipy.__version__, "scikit-learn": sklearn.__version__,
        "bm25s": bm25s.__version__, "bm25s_stopwords": args.bm25s_stopwords,
        "bm25_k1": K1, "bm25_b": B,
        "corpus_hash": corpus_hash(load_corpus()),
        "n_corpus_passages": len(base), "n_throughput_queries": len(queries),
        "n_questions": len(questions),
    }
    args.out.write_text(json.dumps({"machine": machine, "rows": rows}, indent=1) + "\n")
    print(table(rows))


def table(rows) -> str:
    lines = ["| passages | system | build (s) | queries/s (batch) | latency (ms) | R@1 | R@5 | R@10 | MRR |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(
            f"| {r['passages']:,} | {r['system']} | {r['build_s']:.2f} | {r['queries_per_s']:,.0f} | "
            f"{r['latency_ms']:.2f} | {r['recall@1']:.3f} | {r['recall@5']:.3f} | "
            f"{r['recall@10']:.3f} | {r['mrr']:.3f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
