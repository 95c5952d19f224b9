r"""kNN-LM: a language model's next-character distribution mixed with its nearest neighbours'.

Khandelwal et al. (2020), "Generalization through Memorization: Nearest
Neighbor Language Models", add retrieval to a trained language model without
retraining it:

* **Datastore.** Run the model over the training text. At every position the
  *key* is the model's final hidden state (after the last LayerNorm, the input
  of ``lm_head``), shape (C,), and the *value* is the character that follows.
* **Query.** At a validation position, the hidden state of its context.
* **kNN distribution.** The ``k`` keys nearest to the query in squared L2
  distance ``d``, each voting for its value with weight ``exp(-d / T)``:
  ``p_kNN(y) ∝ Σ_j exp(-d_j / T) [v_j = y]``.
* **Interpolation.** ``p(y) = λ p_kNN(y) + (1 - λ) p_LM(y)``.

Contexts come from sliding windows of ``block_size`` characters moved by
``stride``; only the last ``stride`` positions of each window are kept, so
every key and query has between ``block_size - stride + 1`` and
``block_size`` characters of context (the paper likewise scores and stores
only tokens that have a long prior context, with windows of thousands of
tokens). The paper's key is the input of the last feed-forward layer; here it
is the input of ``lm_head``, which the paper also tries.

Nothing leaks: the validation text is a held-out split of the corpus (the
shipped model never trained on it), and the search can exclude every key
from the query's own document (``query_groups`` / ``key_groups``), since
the split cuts one document in two.

Taught in chapter 12, "What retrieval buys" (book/12_benefits.ipynb).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from slmbook._checks import (
    model_block_size,
    model_device,
    positive_float,
    positive_int,
    token_ids,
    unit_interval,
)
from slmbook.inference import forward_with_hooks

__all__ = [
    "Encoded",
    "KNNLMConfig",
    "bits_per_char",
    "document_ids",
    "encode",
    "interpolate",
    "knn_log_probs",
    "knn_search",
    "knnlm_curve",
    "target_log_probs",
    "tune",
    "window_starts",
]


def document_ids(documents: Sequence[str], separator: str = "\n\n") -> torch.Tensor:
    """The document index of every character of ``separator.join(documents)``.

    The separator after document ``i`` counts as part of document ``i``.

    >>> document_ids(["ab", "c"], separator="-").tolist()
    [0, 0, 0, 1]

    Returns
    -------
    doc_ids: (N,) int64, ``N = len(separator.join(documents))``.

    See chapter 12, "What retrieval buys" (book/12_benefits.ipynb).
    """
    if isinstance(documents, str) or not documents:
        raise ValueError("documents must be a non-empty sequence of strings (one per document)")
    lengths = [len(d) + len(separator) for d in documents]
    lengths[-1] -= len(separator)
    return torch.repeat_interleave(torch.arange(len(documents)), torch.tensor(lengths))


def window_starts(n: int, block_size: int, stride: int) -> torch.Tensor:
    """The first index of every sliding window: 0, stride, 2 stride, ... (each needs T + 1 ids).

    >>> window_starts(10, block_size=4, stride=2).tolist()
    [0, 2, 4]

    See chapter 12, "What retrieval buys" (book/12_benefits.ipynb).
    """
    n, block_size, stride = (positive_int(k, v) for k, v in
                             (("n", n), ("block_size", block_size), ("stride", stride)))
    if stride > block_size:
        raise ValueError(f"stride={stride} exceeds block_size={block_size}; positions between "
                         "windows would be skipped: use stride <= block_size")
    if n < block_size + 1:
        raise ValueError(f"{n} ids are too few for one window of block_size={block_size} "
                         f"(it needs {block_size + 1}); use more text or a smaller block_size")
    return torch.arange(0, n - block_size, stride)


@dataclass
class Encoded:
    """What the model computes at the kept positions of some windows.

    Attributes
    ----------
    hidden: (M, C) float32, the final hidden states (keys or queries).
    log_probs: (M, V) float32, the model's next-token log-probabilities.
    targets: (M,) int64, the token that follows (the datastore's values).
    positions: (M,) int64, the index of each target in the ids.

    See chapter 12, "What retrieval buys" (book/12_benefits.ipynb).
    """

    hidden: torch.Tensor
    log_probs: torch.Tensor
    targets: torch.Tensor
    positions: torch.Tensor

    def __len__(self) -> int:
        return len(self.targets)

    def __repr__(self) -> str:
        return f"Encoded({len(self)} positions, width {self.hidden.shape[1]})"

    def select(self, index: torch.Tensor) -> Encoded:
        """The positions ``index`` (a (m,) int64 tensor or a (M,) bool mask)."""
        return Encoded(self.hidden[index], self.log_probs[index], self.targets[index],
                       self.positions[index])


def _final_norm(model: nn.Module) -> nn.Module:
    ln_f = getattr(getattr(model, "transformer", None), "ln_f", None)
    if not isinstance(ln_f, nn.Module):
        raise TypeError(f"{type(model).__name__} has no transformer.ln_f; kNN-LM needs a "
                        "slmbook.model.GPT (its final LayerNorm output is the key)")
    return ln_f


def encode(model: nn.Module, ids: torch.Tensor, *, stride: int = 32,
           starts: torch.Tensor | None = None, batch_size: int = 64) -> Encoded:
    """Hidden states and next-token log-probabilities at the last ``stride`` positions of windows.

    Parameters
    ----------
    model:
        A :class:`slmbook.model.GPT`; the hidden state is the output of its
        final LayerNorm ``transformer.ln_f``, read with a forward hook.
    ids:
        (N,) int64 token ids.
    stride:
        How far each window moves (at most ``block_size``); every kept
        position has at least ``block_size - stride + 1`` tokens of context.
    starts:
        (W,) window starts, a subset of :func:`window_starts` (default: all).
    batch_size:
        Windows per forward pass.

    Returns
    -------
    Encoded
        ``W * stride`` positions, in the order of ``starts``.

    See chapter 12, "What retrieval buys" (book/12_benefits.ipynb).
    """
    ids = token_ids("ids", ids, ndim=1)
    block_size = model_block_size(model)
    if block_size is None:
        raise TypeError(f"{type(model).__name__} has no config.block_size; pass a slmbook GPT")
    ln_f, device, captured = _final_norm(model), model_device(model), []
    batch_size = positive_int("batch_size", batch_size)
    every = window_starts(len(ids), block_size, stride)
    starts = every if starts is None else token_ids("starts", starts, ndim=1)
    if len(starts) and (starts.min() < 0 or starts.max() > every[-1]):
        raise ValueError(f"window starts must lie in [0, {int(every[-1])}] so that each window "
                         f"and its targets fit in the {len(ids)} ids")
    offsets = torch.arange(block_size + 1)
    out: list[tuple[torch.Tensor, torch.Tensor]] = []
    for batch in starts.split(batch_size):
        window = ids[batch[:, None] + offsets]  # (B, T + 1)
        captured.clear()
        logits = forward_with_hooks(model, window[:, :-1].to(device),
                                    [(ln_f, lambda m, i, o: captured.append(o))])
        hidden = captured[0][:, -stride:].float().cpu()  # (B, stride, C)
        out.append((hidden, F.log_softmax(logits[:, -stride:].float(), -1).cpu()))
    width, vocab = ln_f.normalized_shape[0], model.config.vocab_size
    positions = (starts[:, None] + block_size - stride + 1 + torch.arange(stride)).reshape(-1)
    return Encoded(
        hidden=torch.cat([h for h, _ in out]).reshape(-1, width) if out else torch.zeros(0, width),
        log_probs=torch.cat([lp for _, lp in out]).reshape(-1, vocab) if out
        else torch.zeros(0, vocab),
        targets=ids[positions], positions=positions)


def knn_search(queries: torch.Tensor, keys: torch.Tensor, k: int, *,
               query_groups: torch.Tensor | None = None, key_groups: torch.Tensor | None = None,
               chunk_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact k nearest keys of every query in squared L2 distance, nearest first.

    ``|q - x|^2 = |q|^2 - 2 q·x + |x|^2``, one matrix product per chunk of
    queries, then ``topk``. With ``query_groups`` and ``key_groups`` (for
    example document ids), a key whose group equals the query's is never
    returned. Where fewer than ``k`` keys are allowed, the missing neighbours
    have distance ``inf`` and index -1.

    Parameters
    ----------
    queries: (Q, C) float.
    keys: (N, C) float, the same C.
    k: neighbours per query, at most N.
    query_groups, key_groups: (Q,) and (N,) int64, both or neither.
    chunk_size: queries per matrix product (memory: chunk_size x N floats).

    Returns
    -------
    (distances, indices): (Q, k) float32 and (Q, k) int64.

    See chapter 12, "What retrieval buys" (book/12_benefits.ipynb).
    """
    if queries.dim() != 2 or keys.dim() != 2 or queries.shape[1] != keys.shape[1]:
        raise ValueError(f"queries (Q, C) and keys (N, C) must be 2-D with the same C, got "
                         f"{tuple(queries.shape)} and {tuple(keys.shape)}")
    k, chunk_size = positive_int("k", k), positive_int("chunk_size", chunk_size)
    if k > len(keys):
        raise ValueError(f"k={k} exceeds the {len(keys)} keys of the datastore; use k <= "
                         f"{len(keys)}")
    if (query_groups is None) != (key_groups is None):
        raise ValueError("pass both query_groups and key_groups (to exclude same-group keys) "
                         "or neither")
    if query_groups is not None and (len(query_groups) != len(queries)
                                     or len(key_groups) != len(keys)):
        raise ValueError(f"query_groups ({len(query_groups)}) and key_groups ({len(key_groups)}) "
                         f"need one entry per query ({len(queries)}) and per key ({len(keys)})")
    keys = keys.float()
    key_sq = keys.pow(2).sum(1)  # (N,)
    dists, index = [], []
    for start in range(0, len(queries), chunk_size):
        q = queries[start:start + chunk_size].float()  # (q, C)
        d = torch.addmm(key_sq, q, keys.T, alpha=-2).add_(q.pow(2).sum(1, keepdim=True))
        d.clamp_(min=0)  # (q, N); rounding can make an exact match slightly negative
        if query_groups is not None:
            same = query_groups[start:start + chunk_size, None] == key_groups[None, :]
            d.masked_fill_(same, math.inf)
        top = d.topk(k, dim=1, largest=False)  # sorted, nearest first
        dists.append(top.values)
        index.append(top.indices.masked_fill(top.values.isinf(), -1))
    if not dists:
        return torch.zeros(0, k), torch.zeros(0, k, dtype=torch.long)
    return torch.cat(dists), torch.cat(index)


def knn_log_probs(distances: torch.Tensor, values: torch.Tensor, vocab_size: int,
                  temperature: float = 1.0) -> torch.Tensor:
    """log p_kNN: the neighbours' values, each weighted by ``softmax(-d / T)`` over the k.

    Parameters
    ----------
    distances: (Q, k) squared distances (``inf`` for a missing neighbour).
    values: (Q, k) int64, the token after each neighbour (any id where missing).
    vocab_size: V.
    temperature: T > 0; smaller T trusts the nearest neighbour more.

    Returns
    -------
    log_p: (Q, V); a row is all ``-inf`` where a query has no neighbour.

    See chapter 12, "What retrieval buys" (book/12_benefits.ipynb).
    """
    vocab_size = positive_int("vocab_size", vocab_size)
    temperature = positive_float("temperature", temperature)
    if distances.shape != values.shape or distances.dim() != 2:
        raise ValueError(f"distances and values must both be (Q, k), got "
                         f"{tuple(distances.shape)} and {tuple(values.shape)}")
    missing = distances.isinf()
    weights = torch.softmax(-distances.double() / temperature, dim=1)  # (Q, k); nan if none
    weights = weights.masked_fill(missing, 0.0).nan_to_num(0.0)
    values = values.masked_fill(missing, 0)
    if values.numel() and (values.min() < 0 or values.max() >= vocab_size):
        raise ValueError(f"values must be token ids in [0, {vocab_size})")
    p = torch.zeros(len(values), vocab_size, dtype=torch.float64).scatter_add_(1, values, weights)
    return p.log().float()  # (Q, V)


def interpolate(lm_log_probs: torch.Tensor, knn_log_probs: torch.Tensor,
                lam: float) -> torch.Tensor:
    """log(λ p_kNN + (1 - λ) p_LM), computed in log space; rows without neighbours keep p_LM.

    ``lam = 0`` returns ``lm_log_probs`` exactly.

    Parameters
    ----------
    lm_log_probs, knn_log_probs: (..., V).
    lam: λ in [0, 1].

    Returns
    -------
    log_p: (..., V).

    See chapter 12, "What retrieval buys" (book/12_benefits.ipynb).
    """
    lam = unit_interval("lam", lam, closed_right=True)
    if lm_log_probs.shape != knn_log_probs.shape:
        raise ValueError(f"lm_log_probs {tuple(lm_log_probs.shape)} and knn_log_probs "
                         f"{tuple(knn_log_probs.shape)} must have the same shape")
    if lam == 0.0:
        return lm_log_probs.clone()
    mixed = torch.logaddexp(lm_log_probs + math.log1p(-lam) if lam < 1 else
                            torch.full_like(lm_log_probs, -math.inf),
                            knn_log_probs + math.log(lam))
    empty = knn_log_probs.isneginf().all(-1, keepdim=True)  # no neighbour: nothing to mix
    return torch.where(empty, lm_log_probs, mixed)


def target_log_probs(log_probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``log_probs[i, targets[i]]``: (Q, V) and (Q,) -> (Q,).

    See chapter 12, "What retrieval buys" (book/12_benefits.ipynb).
    """
    return log_probs.gather(1, targets[:, None]).squeeze(1)


def bits_per_char(log_probs: torch.Tensor, targets: torch.Tensor) -> float:
    """Mean -log2 p(target) of one-character tokens: (Q, V) and (Q,) -> a float.

    See chapter 12, "What retrieval buys" (book/12_benefits.ipynb).
    """
    return float(-target_log_probs(log_probs, targets).double().mean() / math.log(2))


@dataclass
class KNNLMConfig:
    """The choices behind a kNN-LM measurement (:func:`knnlm_curve`).

    See chapter 12, "What retrieval buys" (book/12_benefits.ipynb).
    """

    stride: int = 32  # windows move this far; every position keeps >= 33 chars of context
    ks: tuple[int, ...] = (8, 32, 128, 512, 1024)  # neighbours tried; one search of max(ks)
    temperatures: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)  # T tried
    lambdas: tuple[float, ...] = tuple(i / 100 for i in range(100))  # λ tried
    exclude_same_document: bool = True  # never retrieve the query's own document
    tune_fraction: float = 0.5  # this share of the validation split tunes k, T, λ
    tune_part: str = "last"  # which end of the validation split tunes; the rest is reported
    chunk_size: int = 256  # queries per matrix product in the search
    batch_size: int = 64  # windows per forward pass

    def __post_init__(self) -> None:
        self.stride = positive_int("stride", self.stride)
        self.ks = tuple(positive_int("ks", k) for k in self.ks)
        self.temperatures = tuple(positive_float("temperatures", t) for t in self.temperatures)
        self.lambdas = tuple(unit_interval("lambdas", x, closed_right=True) for x in self.lambdas)
        if not (self.ks and self.temperatures and self.lambdas):
            raise ValueError("ks, temperatures and lambdas each need at least one value")
        self.tune_fraction = unit_interval("tune_fraction", self.tune_fraction)
        if self.tune_fraction == 0:
            raise ValueError("tune_fraction must be > 0: k, T and λ are tuned on that part")
        if self.tune_part not in ("first", "last"):
            raise ValueError(f"tune_part must be 'first' or 'last', got {self.tune_part!r}")


def tune(lm_log_probs: torch.Tensor, distances: torch.Tensor, values: torch.Tensor,
         targets: torch.Tensor, config: KNNLMConfig) -> dict[str, float]:
    """The ``k``, ``T`` and ``λ`` of ``config``'s grids with the lowest bits per character.

    ``distances`` and ``values`` (Q, max k) come from one search, nearest first,
    so a smaller ``k`` is their first columns (a ``k`` above max k counts as
    max k); ``lm_log_probs`` is (Q, V).

    See chapter 12, "What retrieval buys" (book/12_benefits.ipynb).
    """
    lm = target_log_probs(lm_log_probs, targets).double()[None]  # (1, Q)
    lams = torch.tensor(config.lambdas, dtype=torch.float64)[:, None]  # (L, 1)
    best = {"bits": math.inf}
    for k in sorted({min(k, distances.shape[1]) for k in config.ks}):  # a small datastore: k <= N
        for t in config.temperatures:
            knn = knn_log_probs(distances[:, :k], values[:, :k], lm_log_probs.shape[1], t)
            knn = target_log_probs(knn, targets).double()[None]
            has = ~distances[:, :k].isinf().all(1)[None]  # (1, Q): queries with neighbours
            mixed = torch.logaddexp(lm + torch.log1p(-lams.clamp(max=1 - 1e-12)),
                                    knn + lams.log())  # (L, Q)
            bits = -torch.where(has, mixed, lm).mean(1) / math.log(2)
            i = int(bits.argmin())
            if bits[i] < best["bits"]:
                best = {"k": k, "temperature": t, "lam": config.lambdas[i], "bits": float(bits[i])}
    return best


def _sample(n: int, size: int | None, generator: torch.Generator) -> torch.Tensor:
    if size is None or size >= n:
        return torch.arange(n)
    return torch.randperm(n, generator=generator)[:size].sort().values


def knnlm_curve(model: nn.Module, tokenizer: Any, sizes: Sequence[int | None] = (2_000, 8_000, 32_000),
                *, n_tune: int | None = 1_000, n_report: int | None = 2_000,
                config: KNNLMConfig | None = None, documents: Sequence[str] | None = None,
                val_fraction: float = 0.1, seed: int = 0, details: bool = False) -> dict:
    """Bits per character of kNN-LM on held-out text, against the size of the datastore.

    The corpus (``documents`` joined by blank lines; default the book's
    :func:`slmbook.data.load_documents`) is split by
    :func:`slmbook.data.train_val_split`. The datastore holds the keys of
    random windows of the training split (nested: each size adds windows to
    the previous ones; ``None`` = every window). ``k``, ``T`` and ``λ`` are
    tuned on ``n_tune`` positions of one end of the validation split
    (``config.tune_part``, a ``tune_fraction`` of it) and reported on the rest. The default curve (2,000 /
    8,000 / 32,000 keys, 1,000 + 2,000 queries) takes about 10 s on one
    busy CPU thread.

    Parameters
    ----------
    model, tokenizer:
        A :class:`slmbook.model.GPT` and its character-level tokenizer
        (``encode(str) -> list[int]``), e.g. ``slmbook.checkpoints.pretrained()``.
    sizes:
        Datastore sizes in keys (rounded up to whole windows of ``stride``
        keys), ``None`` for the whole training split.
    n_tune, n_report:
        Query positions from each part, as random (seeded) windows of
        ``stride`` positions (rounded up to whole windows); ``None`` = all.
    config:
        The grids and the options (:class:`KNNLMConfig`).
    documents, val_fraction, seed:
        The corpus, its split, and the seed of every random choice.
    details:
        Also return the per-position log-probabilities (below).

    Returns
    -------
    dict
        ``lm_bits`` (the model alone on the reported positions), and
        ``points``: per size, the tuned ``k``, ``temperature``, ``lam``, the
        reported ``bits``, ``bits_same_document`` (the same with the query's
        own document allowed in the datastore) and ``n_same_document`` (the
        reported positions whose document has keys in the datastore), and
        ``seconds`` (search and tuning). With
        ``details=True`` also the tensors ``positions`` (Q,) (the reported
        targets' indices in the validation ids), ``lm_target_log_probs`` (Q,)
        and, per point, ``target_log_probs`` (Q,) (natural log).

    See chapter 12, "What retrieval buys" (book/12_benefits.ipynb).
    """
    from slmbook.data import load_documents, train_val_split

    config = KNNLMConfig() if config is None else config
    n_tune = positive_int("n_tune", n_tune, allow_none=True)
    n_report = positive_int("n_report", n_report, allow_none=True)
    if isinstance(sizes, str | int) or not sizes:
        raise ValueError(f"sizes must be a non-empty sequence of ints or None, got {sizes!r}")
    docs = list(load_documents().values()) if documents is None else list(documents)
    text = "\n\n".join(docs)
    ids = torch.tensor(tokenizer.encode(text), dtype=torch.long)
    if len(ids) != len(text):
        raise ValueError("kNN-LM here needs a character-level tokenizer (one id per character)")
    doc_of = document_ids(docs)
    train_ids, val_ids = train_val_split(ids, val_fraction)
    gen = torch.Generator().manual_seed(seed)
    # queries: random windows of the reported part and of the tuning part
    block, stride = model.config.block_size, config.stride
    val_starts = window_starts(len(val_ids), block, stride)
    first = val_starts + block - stride + 1  # the first kept position of each window
    last = config.tune_part == "last"
    cut = round(len(val_ids) * (1 - config.tune_fraction if last else config.tune_fraction))
    tuning = first >= cut if last else first < cut
    parts = {}
    for name, mask, size in (("report", ~tuning, n_report), ("tune", tuning, n_tune)):
        if not mask.any():
            raise ValueError(f"the {name} part of the validation split is empty; change "
                             "tune_fraction or use more text")
        chosen = _sample(int(mask.sum()), None if size is None else -(-size // stride), gen)
        parts[name] = encode(model, val_ids, stride=stride, starts=val_starts[mask][chosen],
                             batch_size=config.batch_size)
    q_docs = {n: doc_of[len(train_ids) + p.positions] for n, p in parts.items()}
    # datastore: nested random windows of the training split
    starts = window_starts(len(train_ids), block, stride)
    order = starts[torch.randperm(len(starts), generator=gen)]
    wanted = [len(starts) if s is None else min(len(starts), -(-positive_int("sizes", s) // stride))
              for s in sizes]
    store = encode(model, train_ids, stride=stride, starts=order[:max(wanted)],
                   batch_size=config.batch_size)
    key_docs = doc_of[store.positions]
    report = parts["report"]
    points = []
    for n_windows in wanted:
        clock = time.perf_counter()
        n_keys = n_windows * stride
        keys, values, kd = store.hidden[:n_keys], store.targets[:n_keys], key_docs[:n_keys]
        k = min(max(config.ks), n_keys)
        found = {}
        for name, part in parts.items():
            groups = (q_docs[name], kd) if config.exclude_same_document else (None, None)
            d, i = knn_search(part.hidden, keys, k, query_groups=groups[0], key_groups=groups[1],
                              chunk_size=config.chunk_size)
            found[name] = (d, values[i.clamp(min=0)])
        best = tune(parts["tune"].log_probs, *found["tune"], parts["tune"].targets, config)
        d, v = (x[:, :best["k"]] for x in found["report"])
        knn = knn_log_probs(d, v, report.log_probs.shape[1], best["temperature"])
        mixed = interpolate(report.log_probs, knn, best["lam"])
        bits = bits_per_char(mixed, report.targets)
        # the same, with the query's own document allowed (only its queries can change)
        same = torch.isin(q_docs["report"], kd)
        if config.exclude_same_document and same.any():
            d2, i2 = knn_search(report.hidden[same], keys, best["k"], chunk_size=config.chunk_size)
            d, v = d.clone(), v.clone()
            d[same], v[same] = d2, values[i2]
            knn = knn_log_probs(d, v, report.log_probs.shape[1], best["temperature"])
        bits_same = bits_per_char(interpolate(report.log_probs, knn, best["lam"]), report.targets)
        points.append({"size": n_keys, "k": best["k"], "temperature": best["temperature"],
                       "lam": best["lam"], "tune_bits": best["bits"], "bits": bits,
                       "bits_same_document": bits_same, "n_same_document": int(same.sum()),
                       "seconds": time.perf_counter() - clock})
        if details:
            points[-1]["target_log_probs"] = target_log_probs(mixed, report.targets)
    extra = {"positions": report.positions,
             "lm_target_log_probs": target_log_probs(report.log_probs, report.targets)}
    return {**(extra if details else {}), "lm_bits": bits_per_char(report.log_probs, report.targets),
            "lm_tune_bits": bits_per_char(parts["tune"].log_probs, parts["tune"].targets),
            "n_report": len(report), "n_tune": len(parts["tune"]), "stride": stride,
            "exclude_same_document": config.exclude_same_document, "seed": seed,
            "points": points}
