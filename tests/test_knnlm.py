"""Tests of slmbook.knnlm: datastore encoding, exact k-NN search, the kNN-LM mixture.

Covers: document ids and windows; encoded hidden states are the input of
``lm_head`` and the scores equal :func:`slmbook.losses.estimate_loss`; the
search against a brute-force ``torch.cdist`` reference, with and without
same-document exclusion; p_kNN and the mixture are distributions, λ = 0 is
exactly the LM, a stored context predicts its next character; tuning agrees
with the direct computation; the curve runs on a tiny corpus; argument checks.
"""

from __future__ import annotations

import math

import pytest
import torch

from slmbook.data import train_val_split
from slmbook.knnlm import (
    Encoded,
    KNNLMConfig,
    bits_per_char,
    document_ids,
    encode,
    interpolate,
    knn_log_probs,
    knn_search,
    knnlm_curve,
    target_log_probs,
    tune,
    window_starts,
)
from slmbook.losses import estimate_loss
from slmbook.model import GPT, Bigram, GPTConfig
from slmbook.tokenizers import CharTokenizer

V, T = 12, 8


@pytest.fixture
def model() -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=V, block_size=T, n_layer=1, n_head=2, n_embd=16)).eval()


@pytest.fixture
def ids() -> torch.Tensor:
    return torch.randint(0, V, (301,), generator=torch.Generator().manual_seed(1))


def brute_force(queries, keys, k, q_groups=None, k_groups=None):
    d = torch.cdist(queries.double(), keys.double()).pow(2)  # (Q, N)
    if q_groups is not None:
        d[q_groups[:, None] == k_groups[None, :]] = math.inf
    order = d.argsort(dim=1, stable=True)[:, :k]
    return d.gather(1, order), order


def test_document_ids():
    docs = ["abc", "de", "f"]
    got = document_ids(docs)
    assert len(got) == len("\n\n".join(docs))
    assert got.tolist() == [0, 0, 0, 0, 0, 1, 1, 1, 1, 2]
    with pytest.raises(ValueError, match="non-empty sequence of strings"):
        document_ids("abc")


def test_window_starts_and_checks():
    assert window_starts(20, block_size=8, stride=8).tolist() == [0, 8]
    assert window_starts(9, block_size=8, stride=3).tolist() == [0]
    with pytest.raises(ValueError, match="stride=9 exceeds block_size=8"):
        window_starts(20, block_size=8, stride=9)
    with pytest.raises(ValueError, match="too few for one window"):
        window_starts(8, block_size=8, stride=4)
    with pytest.raises(TypeError, match="stride must be a positive int"):
        window_starts(20, block_size=8, stride=2.0)


def test_encode_matches_lm_head_and_estimate_loss(model, ids):
    full = encode(model, ids, stride=T, batch_size=5)
    assert len(full) == (len(ids) - 1) // T * T
    assert torch.equal(full.positions[:T], torch.arange(1, T + 1))
    assert torch.equal(full.targets, ids[full.positions])
    with torch.no_grad():
        again = torch.log_softmax(model.lm_head(full.hidden), -1)
    torch.testing.assert_close(again, full.log_probs, atol=1e-5, rtol=0)
    nats = -target_log_probs(full.log_probs, full.targets).double().mean()
    assert float(nats) == pytest.approx(estimate_loss(model, ids, batch_size=7), rel=1e-6)
    assert bits_per_char(full.log_probs, full.targets) == pytest.approx(float(nats) / math.log(2))


def test_encode_stride_keeps_last_positions(model, ids):
    part = encode(model, ids, stride=3)
    assert part.positions[:3].tolist() == [T - 2, T - 1, T]  # contexts of T - 2 .. T tokens
    assert len(set(part.positions.tolist())) == len(part)  # every position once
    assert (part.positions.diff() == 1).all()  # and none skipped
    some = encode(model, ids, stride=3, starts=torch.tensor([6, 0]))
    assert some.positions.tolist() == [12, 13, 14, 6, 7, 8]
    torch.testing.assert_close(some.hidden[3:], part.hidden[:3])
    assert "6 positions" in repr(some)
    with pytest.raises(ValueError, match="window starts must lie in"):
        encode(model, ids, stride=3, starts=torch.tensor([len(ids)]))
    with pytest.raises(TypeError, match=r"Embedding has no config\.block_size"):
        encode(torch.nn.Embedding(V, V), ids)
    with pytest.raises(TypeError, match=r"Bigram has no transformer\.ln_f"):
        encode(Bigram(V, block_size=T), ids)


def test_knn_search_matches_brute_force():
    g = torch.Generator().manual_seed(2)
    queries, keys = torch.randn(37, 6, generator=g), torch.randn(200, 6, generator=g)
    d, i = knn_search(queries, keys, 9, chunk_size=8)
    d_ref, i_ref = brute_force(queries, keys, 9)
    assert torch.equal(i, i_ref)
    torch.testing.assert_close(d.double(), d_ref, atol=1e-4, rtol=1e-5)
    assert (d.diff(dim=1) >= 0).all()  # nearest first


def test_knn_search_excludes_the_same_group():
    g = torch.Generator().manual_seed(3)
    keys = torch.randn(60, 4, generator=g)
    key_groups = torch.arange(60) // 20  # three documents of 20 keys
    queries = keys[[5, 25, 45]] + 1e-3  # each sits on a key of its own document
    q_groups = torch.tensor([0, 1, 2])
    d, i = knn_search(queries, keys, 10, query_groups=q_groups, key_groups=key_groups)
    assert (key_groups[i] != q_groups[:, None]).all()
    d_ref, i_ref = brute_force(queries, keys, 10, q_groups, key_groups)
    assert torch.equal(i, i_ref)
    torch.testing.assert_close(d.double(), d_ref, atol=1e-4, rtol=1e-5)
    open_d, open_i = knn_search(queries, keys, 1)
    assert open_i[:, 0].tolist() == [5, 25, 45] and (open_d < 1e-4).all()
    # only own-document keys: no neighbour at all, and the mixture falls back to the LM
    d, i = knn_search(queries[:1], keys[:20], 3, query_groups=q_groups[:1],
                      key_groups=key_groups[:20])
    assert d.isinf().all() and (i == -1).all()
    knn = knn_log_probs(d, torch.zeros_like(i), V)
    assert knn.isneginf().all()
    lm = torch.log_softmax(torch.randn(1, V, generator=g), -1)
    assert torch.equal(interpolate(lm, knn, 0.5), lm)


def test_knn_log_probs_by_hand_and_sums_to_one():
    d = torch.tensor([[0.0, 1.0, 2.0], [1.0, 1.0, math.inf]])
    v = torch.tensor([[3, 1, 3], [2, 0, 0]])
    p = knn_log_probs(d, v, 5, temperature=1.0).exp()
    w = torch.tensor([1.0, math.exp(-1), math.exp(-2)])
    w = w / w.sum()
    torch.testing.assert_close(p[0], torch.tensor([0.0, w[1], 0, w[0] + w[2], 0]))
    torch.testing.assert_close(p[1], torch.tensor([0.5, 0, 0.5, 0, 0]))
    g = torch.Generator().manual_seed(4)
    d = torch.rand(50, 7, generator=g) * 30
    v = torch.randint(0, V, (50, 7), generator=g)
    for temperature in (0.1, 1.0, 100.0):
        p = knn_log_probs(d, v, V, temperature).exp()
        torch.testing.assert_close(p.sum(1), torch.ones(50))


def test_interpolate_is_a_distribution_and_lambda_zero_is_the_lm():
    g = torch.Generator().manual_seed(5)
    lm = torch.log_softmax(torch.randn(30, V, generator=g), -1)
    knn = knn_log_probs(torch.rand(30, 4, generator=g), torch.randint(0, V, (30, 4), generator=g),
                        V)
    assert torch.equal(interpolate(lm, knn, 0.0), lm)
    torch.testing.assert_close(interpolate(lm, knn, 1.0), knn)
    for lam in (0.1, 0.5, 0.9):
        mixed = interpolate(lm, knn, lam)
        torch.testing.assert_close(mixed.exp().sum(1), torch.ones(30))
        torch.testing.assert_close(mixed.exp(), lam * knn.exp() + (1 - lam) * lm.exp())
    targets = torch.randint(0, V, (30,), generator=g)
    assert bits_per_char(interpolate(lm, knn, 0.0), targets) == bits_per_char(lm, targets)


def test_a_stored_context_predicts_its_next_character(model, ids):
    store = encode(model, ids, stride=4)
    query = store.select(torch.tensor([17, 40]))  # contexts that are in the datastore
    d, i = knn_search(query.hidden, store.hidden, 5)
    assert i[:, 0].tolist() == [17, 40]
    assert (d[:, 0] < 1e-4).all()
    knn = knn_log_probs(d, store.targets[i], V, temperature=1e-3)
    assert (target_log_probs(knn, query.targets).exp() > 0.99).all()
    mixed = interpolate(query.log_probs, knn, 0.9)
    assert torch.equal(mixed.argmax(1), query.targets)


def test_tune_agrees_with_the_direct_computation(model, ids):
    store = encode(model, ids[:200], stride=4)
    queries = encode(model, ids[200:], stride=4)
    d, i = knn_search(queries.hidden, store.hidden, 16)
    values = store.targets[i]
    config = KNNLMConfig(ks=(4, 16), temperatures=(0.5, 5.0), lambdas=(0.0, 0.2, 0.5))
    best = tune(queries.log_probs, d, values, queries.targets, config)
    assert best["k"] in (4, 16) and best["temperature"] in (0.5, 5.0)
    knn = knn_log_probs(d[:, :best["k"]], values[:, :best["k"]], V, best["temperature"])
    direct = bits_per_char(interpolate(queries.log_probs, knn, best["lam"]), queries.targets)
    assert best["bits"] == pytest.approx(direct, rel=1e-5)
    assert best["bits"] <= bits_per_char(queries.log_probs, queries.targets) + 1e-9
    # neighbours that always know the answer: tuning trusts them
    perfect = tune(queries.log_probs, d, queries.targets[:, None].expand(-1, 16),
                   queries.targets, config)
    assert perfect["lam"] == 0.5


def test_knnlm_curve_on_a_tiny_corpus():
    g = torch.Generator().manual_seed(6)
    alphabet = "abcdefgh "
    docs = ["".join(alphabet[j] for j in torch.randint(0, 9, (400,), generator=g))
            for _ in range(5)]
    tok = CharTokenizer.fit("\n\n".join(docs))
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=T, n_layer=1, n_head=2,
                          n_embd=16)).eval()
    config = KNNLMConfig(stride=4, ks=(4, 8), temperatures=(1.0, 4.0))
    r = knnlm_curve(model, tok, (100, None), n_tune=40, n_report=50, config=config,
                    documents=docs, val_fraction=0.3, details=True)
    assert r["n_report"] == 52 and r["n_tune"] == 40  # whole windows of 4 positions
    assert (r["positions"] < round(602 * 0.5)).all()  # the first half of the 602 held out
    assert r["points"][0]["size"] == 100
    n_train = len(train_val_split("\n\n".join(docs), 0.3)[0])
    assert r["points"][1]["size"] == len(window_starts(n_train, T, 4)) * 4  # every window
    assert r["points"][1]["n_same_document"] > 0  # the split cuts a document in two
    for p in r["points"]:
        assert p["tune_bits"] <= r["lm_tune_bits"] + 1e-9  # λ = 0 is in the grid
        assert p["bits"] == pytest.approx(-float(p["target_log_probs"].mean()) / math.log(2), rel=1e-5)
    assert r["lm_bits"] == pytest.approx(-float(r["lm_target_log_probs"].mean()) / math.log(2),
                                   rel=1e-5)
    open_config = KNNLMConfig(stride=4, ks=(4, 8), temperatures=(1.0, 4.0),
                              exclude_same_document=False)
    r2 = knnlm_curve(model, tok, (100, None), n_tune=40, n_report=50, config=open_config,
                     documents=docs, val_fraction=0.3)
    assert r2["lm_bits"] == r["lm_bits"]  # the same seeded positions
    for q in r2["points"]:
        assert q["bits"] == q["bits_same_document"]
    swapped = KNNLMConfig(stride=4, ks=(4,), temperatures=(1.0,), tune_part="first")
    r3 = knnlm_curve(model, tok, (100,), n_tune=None, n_report=None, config=swapped,
                     documents=docs, val_fraction=0.3, details=True)
    assert (r3["positions"] >= round(602 * 0.5)).all()  # reported: the second half
    assert r3["n_tune"] + r3["n_report"] == len(window_starts(602, T, 4)) * 4  # all of it
    with pytest.raises(ValueError, match="sizes must be a non-empty sequence"):
        knnlm_curve(model, tok, 100, documents=docs)
    with pytest.raises(ValueError, match="n_report must be a positive int"):
        knnlm_curve(model, tok, (100,), n_report=0, documents=docs)
    with pytest.raises(ValueError, match="character-level tokenizer"):
        knnlm_curve(model, type("Pairs", (), {"encode": lambda s, t: [0] * (len(t) // 2)})(),
                    (10,), documents=docs)


def test_argument_checks():
    q, keys = torch.randn(3, 4), torch.randn(5, 4)
    with pytest.raises(ValueError, match="k=6 exceeds the 5 keys"):
        knn_search(q, keys, 6)
    with pytest.raises(ValueError, match="k must be a positive int"):
        knn_search(q, keys, 0)
    with pytest.raises(ValueError, match="must be 2-D with the same C"):
        knn_search(q, torch.randn(5, 3), 2)
    with pytest.raises(ValueError, match="pass both query_groups and key_groups"):
        knn_search(q, keys, 2, query_groups=torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="need one entry per query"):
        knn_search(q, keys, 2, query_groups=torch.zeros(2, dtype=torch.long),
                   key_groups=torch.zeros(5, dtype=torch.long))
    d, v = torch.rand(3, 2), torch.zeros(3, 2, dtype=torch.long)
    with pytest.raises(ValueError, match="temperature must be a positive number"):
        knn_log_probs(d, v, V, temperature=0.0)
    with pytest.raises(ValueError, match=r"values must be token ids in \[0, 12\)"):
        knn_log_probs(d, v + V, V)
    with pytest.raises(ValueError, match="must both be"):
        knn_log_probs(d, v[:, :1], V)
    lm = torch.zeros(3, V)
    with pytest.raises(ValueError, match=r"lam must be in \[0, 1\]"):
        interpolate(lm, lm, 1.5)
    with pytest.raises(ValueError, match="must have the same shape"):
        interpolate(lm, lm[:, :2], 0.5)
    with pytest.raises(ValueError, match="tune_fraction must be > 0"):
        KNNLMConfig(tune_fraction=0.0)
    with pytest.raises(ValueError, match="tune_part must be 'first' or 'last'"):
        KNNLMConfig(tune_part="middle")
    with pytest.raises(ValueError, match="need at least one value"):
        KNNLMConfig(ks=())
    assert isinstance(Encoded(torch.zeros(0, 2), torch.zeros(0, 3), torch.zeros(0),
                              torch.zeros(0)), Encoded)


@pytest.mark.slow
def test_the_notebook_curve_on_the_shipped_model():
    from slmbook.checkpoints import pretrained

    model, tok = pretrained()
    r = knnlm_curve(model, tok, (2_000, 8_000))
    assert 1.5 < r["lm_bits"] < 2.2 and 1.5 < r["lm_tune_bits"] < 2.2
    assert [p["size"] for p in r["points"]] == [2_016, 8_000]
    for p in r["points"]:
        assert p["tune_bits"] <= r["lm_tune_bits"] + 1e-9
        assert abs(p["bits"] - r["lm_bits"]) < 0.1  # a small datastore changes little
        assert p["seconds"] < 30
