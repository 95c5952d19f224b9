"""slmbook.learned_retrieval: TF-IDF with learnable per-term weights.

Covers: at initialisation the weights are exactly 1 and the scores, candidates
and rankings equal TfidfRetriever's (float64, 1e-12, identical ids, both
backends); with any weights the scores equal a dense reference computation and
search is the exact top-k; the gradient reaches theta only through the
candidates' scores, equal to a dense hand-computed gradient; training with
rag_sequence_nll against a frozen fake reader raises the weight of the term
that identifies the right passage (no relevance labels); document weights
make the index stale until reindex(); the collapse diagnostics; the Retriever
protocol; every documented error.
"""

import math

import numpy as np
import pytest
import torch

from slmbook.learned_retrieval import THETA_AT_ONE, LearnedTfidfRetriever, prior_entropy
from slmbook.marginal import rag_sequence_nll
from slmbook.retrieval import Hit, Retriever, TfidfRetriever

PEOPLE = [("ann", "paris", 1970), ("bob", "rome", 1980), ("cid", "oslo", 1990), ("dee", "lima", 1960)]


def _passages():
    out = []
    for name, city, year in PEOPLE:
        out += [
            f"{name} faq",  # answerless, short: plain TF-IDF ranks it first
            f"{name} lives in the city of {city}, near the river, with a cat and a garden",
            f"{name} was born in {year}",
        ]
    return out


QUESTIONS = [f"which city does {n} live in" for n, _, _ in PEOPLE]
GOLD = [3 * i + 1 for i in range(len(PEOPLE))]

CORPUS = [
    "The with statement wraps a block with methods of a context manager.",
    "A for loop iterates over the items of any iterable object.",
    "The try statement specifies exception handlers and cleanup code.",
    "Lambda expressions create small anonymous functions.",
    "Dictionaries map hashable keys to arbitrary values.",
    "A context manager defines enter and exit methods for the with statement.",
    "Exception handlers catch errors raised inside the try block.",
    "An iterable object returns an iterator; the for loop calls next on it.",
]
QUERIES = ["with statement context manager", "for loop over iterable", "exception in try",
           "anonymous functions", "keys and values", "methods of a block", "statement"]


@pytest.fixture(scope="module", params=["sklearn", "scratch", "bm25"])
def base(request):
    """A fitted base retriever: TF-IDF with either backend, or BM25 (chapter 9's option)."""
    if request.param == "bm25":
        return TfidfRetriever(weighting="bm25").fit(CORPUS)
    return TfidfRetriever(backend=request.param).fit(CORPUS)


def _dense(base):
    Q = base.vectorizer_.transform(QUERIES).toarray()
    return Q, base.matrix_.toarray()


# ---------------------------------------------------------------- initialisation
def test_initial_weights_are_exactly_one(base):
    r = LearnedTfidfRetriever(base, doc_weights=True)
    assert torch.equal(r.query_weights(), torch.ones(base.matrix_.shape[1], dtype=torch.float64))
    assert torch.equal(r.doc_term_weights(), torch.ones(base.matrix_.shape[1], dtype=torch.float64))
    assert math.isclose(THETA_AT_ONE, math.log(math.e - 1), rel_tol=1e-15)


@pytest.mark.parametrize("doc_weights", [False, True])
def test_initial_scores_and_rankings_equal_tfidf(base, doc_weights):
    r = LearnedTfidfRetriever(base, candidate_k=5, doc_weights=doc_weights)
    expected = base.search_batch(QUERIES, k=5)
    ids, scores = r.scores(QUERIES)
    for row, hits in enumerate(expected):
        assert [base.ids_[i] for i in ids[row].tolist()] == [h.passage_id for h in hits]
        np.testing.assert_allclose(scores[row].detach().numpy(), [h.score for h in hits], rtol=1e-12, atol=1e-12)
    for k in (1, 3, 8):
        got = r.search_batch(QUERIES, k=k)
        want = base.search_batch(QUERIES, k=k)
        assert [[h.passage_id for h in hs] for hs in got] == [[h.passage_id for h in hs] for hs in want]
        for g, w in zip(got, want, strict=True):
            np.testing.assert_allclose([h.score for h in g], [h.score for h in w], rtol=1e-12, atol=1e-12)
            assert [(h.text, h.source) for h in g] == [(h.text, h.source) for h in w]


def test_initial_rankings_equal_on_ties():
    """Exact ties (duplicate passages) keep TF-IDF's passage order."""
    base = TfidfRetriever().fit(["cat on mat", "dog in fog", "cat on mat", "cat on mat", "the dog"])
    r = LearnedTfidfRetriever(base, candidate_k=5)
    for q in ["cat", "dog", "mat dog"]:
        assert [h.passage_id for h in r.search(q, 5)] == [h.passage_id for h in base.search(q, 5)]


# ---------------------------------------------------------------- any weights
def _randomise(r, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in r.parameters():
            p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype))


@pytest.mark.parametrize("doc_weights", [False, True])
def test_scores_equal_dense_reference(base, doc_weights):
    r = LearnedTfidfRetriever(base, candidate_k=4, doc_weights=doc_weights)
    _randomise(r)
    r.reindex()
    Q, D = _dense(base)
    w = r.query_weights().detach().numpy()
    u = r.doc_term_weights().detach().numpy() if doc_weights else 1.0
    S = (Q * w * u) @ D.T  # (B, N)
    ids, scores = r.scores(QUERIES)
    np.testing.assert_allclose(scores.detach().numpy(), np.take_along_axis(S, ids.numpy(), 1), rtol=1e-12, atol=1e-14)
    # search is the exact top-k of the learned score (index fresh)
    for row, hits in enumerate(r.search_batch(QUERIES, k=3)):
        best = np.sort(S[row])[::-1][:3]
        np.testing.assert_allclose([h.score for h in hits], best, rtol=1e-12, atol=1e-14)


def test_scores_of_given_candidates(base):
    r = LearnedTfidfRetriever(base)
    cand = np.array([[0, 7], [3, 3], [1, 2], [4, 0], [5, 6], [2, 1], [7, 0]])
    ids, scores = r.scores(QUERIES, cand)
    assert ids.tolist() == cand.tolist()
    Q, D = _dense(base)
    np.testing.assert_allclose(scores.detach().numpy(), np.take_along_axis(Q @ D.T, cand, 1), rtol=1e-12, atol=1e-14)
    ids_t, _ = r.scores(QUERIES, torch.from_numpy(cand))
    assert ids_t.tolist() == cand.tolist()


def test_gradient_reaches_theta_only_through_candidate_scores(base):
    r = LearnedTfidfRetriever(base, candidate_k=3)
    _randomise(r, seed=1)
    assert [name for name, _ in r.named_parameters()] == ["theta"]
    ids, scores = r.scores(QUERIES)
    g = torch.Generator().manual_seed(2)
    upstream = torch.randn(scores.shape, generator=g, dtype=torch.float64)
    (scores * upstream).sum().backward()
    Q, D = _dense(base)
    # d/d theta_t of sum_bk g_bk sum_t w_t q_bt d_zt = sigmoid(theta_t) sum_bk g_bk q_bt d_zt
    per_term = np.zeros(Q.shape[1])
    for b in range(len(QUERIES)):
        for k, z in enumerate(ids[b].tolist()):
            per_term += upstream[b, k].item() * Q[b] * D[z]
    expected = torch.sigmoid(r.theta.detach()).numpy() * per_term
    np.testing.assert_allclose(r.theta.grad.numpy(), expected, rtol=1e-10, atol=1e-14)
    # terms in no query/candidate pair get exactly zero gradient
    assert (r.theta.grad.numpy()[per_term == 0] == 0).all()


# ---------------------------------------------------------------- learning without labels
def test_marginal_likelihood_training_raises_the_right_term():
    base = TfidfRetriever().fit(_passages())
    r = LearnedTfidfRetriever(base, candidate_k=3)
    top1 = [hits[0].passage_id for hits in base.search_batch(QUESTIONS, 1)]
    assert top1 == [str(g - 1) for g in GOLD]  # plain TF-IDF picks the answerless FAQ
    ids, _ = r.scores(QUESTIONS)
    # a frozen fake reader: the answer is likely only with the city passage in context
    answer_lp = torch.where(ids == torch.tensor(GOLD)[:, None], -0.1, -8.0).double()
    opt = torch.optim.Adam(r.parameters(), lr=0.1)
    for _ in range(40):
        _, scores = r.scores(QUESTIONS, ids)
        loss = rag_sequence_nll(scores, answer_lp, temperature=0.1)
        opt.zero_grad()
        loss.backward()
        opt.step()
    w = r.term_weights()
    assert w["city"] > 2.0  # the term that tells the city passage apart rose
    assert all(w[name] < 0.5 for name, _, _ in PEOPLE)  # the names, shared with the FAQ, fell
    assert w["born"] == pytest.approx(1.0, abs=1e-12)  # in no candidate pair: untouched
    assert [hits[0].passage_id for hits in r.search_batch(QUESTIONS, 1)] == [str(g) for g in GOLD]


# ---------------------------------------------------------------- stale index
def test_doc_weights_make_the_index_stale_until_reindex():
    base = TfidfRetriever().fit(_passages())
    r = LearnedTfidfRetriever(base, candidate_k=1, doc_weights=True)
    assert not r.is_stale
    term = list(base.vectorizer_.get_feature_names_out()).index("city")
    with torch.no_grad():
        r.doc_theta[term] = 5.0  # passages with "city" now score higher
    assert r.is_stale
    stale = [hits[0].passage_id for hits in r.search_batch(QUESTIONS, 1)]
    assert stale == [str(g - 1) for g in GOLD]  # the stored index still ranks the FAQ first
    _, scores = r.scores(QUESTIONS, np.array([[g - 1, g] for g in GOLD]))
    assert (scores[:, 1] > scores[:, 0]).all()  # although the fresh scores prefer the city passage
    assert not r.reindex().is_stale
    assert [hits[0].passage_id for hits in r.search_batch(QUESTIONS, 1)] == [str(g) for g in GOLD]


# ---------------------------------------------------------------- diagnostics, protocol
def test_collapse_report_and_entropy():
    base = TfidfRetriever().fit(_passages())
    r = LearnedTfidfRetriever(base, candidate_k=3)
    report = r.collapse_report(QUESTIONS, temperature=1.0)
    assert report.n_queries == 4 and report.distinct_top1 == 4 and report.most_common_top1_share == 0.25
    assert 0 < report.mean_entropy < report.max_entropy == pytest.approx(math.log(3))
    cold = r.collapse_report(QUESTIONS, temperature=1e-4)
    assert cold.mean_entropy < 1e-6  # a tiny temperature makes the prior one-hot
    s = torch.tensor([[0.0, 0.0], [1e4, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(prior_entropy(s), torch.tensor([math.log(2), 0.0], dtype=torch.float64))


def test_is_a_retriever_and_a_module(base):
    r = LearnedTfidfRetriever(base)
    assert isinstance(r, torch.nn.Module) and len(r) == len(CORPUS)
    assert all(isinstance(h, Hit) for h in r.search("with statement", 2))
    assert isinstance(r, Retriever)
    assert r.search("zzz unknown words", 3) == []
    assert r.search_batch(["zzz", "for loop"], 1)[0] == []
    assert "candidate_k=8" in repr(r)  # capped at the number of passages
    state = r.state_dict()
    assert list(state) == ["theta"]


def test_errors(base):
    with pytest.raises(TypeError, match="base must be a fitted TfidfRetriever"):
        LearnedTfidfRetriever(CORPUS)
    with pytest.raises(ValueError, match="candidate_k must be a positive int, got 0"):
        LearnedTfidfRetriever(base, candidate_k=0)
    r = LearnedTfidfRetriever(base)
    with pytest.raises(TypeError, match="queries is a single str"):
        r.scores("for loop")
    with pytest.raises(TypeError, match="query 1 is a int"):
        r.scores(["for loop", 3])
    with pytest.raises(ValueError, match=r"query 0 \('zzz'\) has no term of the vocabulary"):
        r.scores(["zzz"])
    with pytest.raises(ValueError, match=r"candidate_ids must be \(1, K\) integer"):
        r.scores(["for loop"], np.zeros((2, 3), dtype=int))
    with pytest.raises(ValueError, match=r"candidate_ids must lie in \[0, 8\)"):
        r.scores(["for loop"], np.array([[0, 8]]))
    with pytest.raises(ValueError, match="k must be a positive int, got 0"):
        r.search("for loop", 0)
    with pytest.raises(TypeError, match="query is a list"):
        r.search(["for loop"])
    with pytest.raises(ValueError, match="side='both' is unknown"):
        r.term_weights(side="both")
    with pytest.raises(ValueError, match="has no document weights"):
        r.term_weights(side="doc")
    with pytest.raises(ValueError, match="temperature must be a positive number"):
        r.collapse_report(["for loop"], temperature=0)
