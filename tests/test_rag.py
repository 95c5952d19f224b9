"""Tests of slmbook.rag: the retrieve-render-read pipeline, scoring, diagnosis, abstention."""

import random

import pytest
import torch

from slmbook.facts import VALUES, make_world
from slmbook.rag import ABSTAIN, RAG, Answer, abstention, diagnose, format_answer, score
from slmbook.reader import ReaderTokenizer, make_reader, read, render_prompt
from slmbook.retrieval import TfidfRetriever


@pytest.fixture(scope="module")
def world():
    return make_world(seed=0, n_people=30, n_heldout=10)


@pytest.fixture(scope="module")
def retriever(world):
    return TfidfRetriever().fit(world.passages())


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return make_reader(n_layer=1, n_head=2, n_embd=16)


class _SearchOnly:
    """A retriever with only search() (no search_batch): any Retriever must work."""

    def __init__(self, inner):
        self.inner, self.calls = inner, 0

    def search(self, query, k):
        self.calls += 1
        return self.inner.search(query, k)


def test_answer_renders_the_top_k_and_reads(world, retriever, tiny):
    rag = RAG(retriever, tiny, ReaderTokenizer(), k=3, max_answer=4)
    q = world.questions("heldout")[0]
    a = rag.answer(q.question)
    hits = retriever.search(q.question, 3)
    assert a.hits == hits and not a.abstained
    assert a.prompt == render_prompt(q.question, [h.text for h in hits])
    assert a.text == read(tiny, ReaderTokenizer(), [a.prompt], max_answer=4)[0]


def test_batch_equals_one_by_one_and_any_retriever_works(world, retriever, tiny):
    qs = [q.question for q in world.questions("heldout")[:6]]
    rag = RAG(retriever, tiny, ReaderTokenizer(), k=2, max_answer=3)
    batch = rag.answer_batch(qs)
    assert batch == [rag.answer(q) for q in qs]
    other = _SearchOnly(retriever)
    assert RAG(other, tiny, ReaderTokenizer(), k=2, max_answer=3).answer_batch(qs) == batch
    assert other.calls == len(qs)


def test_k0_is_closed_book(world, tiny):
    q = world.questions("seen")[0].question
    a = RAG(None, tiny, ReaderTokenizer(), k=0, max_answer=3).answer(q)
    assert a.hits == [] and a.prompt == render_prompt(q) and not a.abstained


def test_min_score_abstains(world, retriever, tiny):
    qs = world.questions("heldout")[:4] + world.questions("absent", n_absent=4)
    answers = RAG(retriever, tiny, ReaderTokenizer(), k=1, min_score=0.7,
                  max_answer=2).answer_batch([q.question for q in qs])
    for a in answers:
        assert a.abstained == (a.hits[0].score < 0.7 if a.hits else True)
        assert (a.text == ABSTAIN) == a.abstained
    assert all(a.abstained for a in answers[4:])  # no one of that name: low scores
    assert not any(a.abstained for a in answers[:4])
    never = RAG(retriever, tiny, ReaderTokenizer(), k=1, min_score=2.0, max_answer=2)
    assert all(a.abstained for a in never.answer_batch([q.question for q in qs]))


def test_score_diagnose_abstention(world):
    qas = world.questions("heldout")[:4] + world.questions("absent", n_absent=2)

    class H:  # a minimal hit
        def __init__(self, pid):
            self.passage_id, self.score, self.text = pid, 1.0, ""

    answers = [Answer(qas[0].answer, [H(qas[0].passage_id)]),        # correct
               Answer("nope", [H(qas[1].passage_id)]),               # reading miss
               Answer("nope", [H("p999/city")]),                     # retrieval miss
               Answer(ABSTAIN, [], abstained=True),                  # abstained
               Answer(ABSTAIN, [], abstained=True), Answer("Oslo", [H("p000/city")])]
    assert diagnose(answers[:4], qas[:4]) == ["correct", "reading miss", "retrieval miss",
                                              "abstained"]
    assert score(answers[:4], qas[:4]) == 0.25
    m = abstention(answers, qas)
    assert m["coverage"] == 0.75 and m["accuracy"] == pytest.approx(1 / 3)
    assert m["abstain_absent"] == 0.5
    with pytest.raises(ValueError, match="3 answers for 4 questions"):
        score(answers[:3], qas[:4])


def test_bad_arguments(retriever, tiny):
    with pytest.raises(TypeError, match="retriever must have a search"):
        RAG(object(), tiny, ReaderTokenizer(), k=2)
    with pytest.raises(ValueError, match="k must be"):
        RAG(retriever, tiny, ReaderTokenizer(), k=-1)
    with pytest.raises(TypeError, match="single str"):
        RAG(retriever, tiny, ReaderTokenizer()).answer_batch("Where?")


@pytest.mark.slow
def test_shipped_reader_reads_rather_than_remembers():
    from slmbook.rag import default_rag, pretrained_reader
    from slmbook.reader import teacher_forced_match

    model, tok = pretrained_reader()
    w = make_world()
    seen = w.split_people("seen")[:40]
    # a context that contradicts the training fact is followed
    prompts, answers = [], []
    for p in seen:
        new = "Oslo" if p.facts["city"] != "Oslo" else "Lima"
        prompts.append(render_prompt(f"Which city does {p.name} live in?",
                                     [f"{p.name} lives in the city of {new}."]))
        answers.append(new)
    got = read(model, tok, prompts)
    assert sum(g == a for g, a in zip(got, answers, strict=True)) >= 36
    # people never seen, with names unlike the world's (values of the world)
    rng = random.Random(0)
    prompts, answers = [], []
    for first in ("Mira", "Quazel", "Hepti", "Oren", "Talia", "Bjorn", "Ines", "Kofi", "Lena"):
        for last in rng.sample(["Oakhurst", "Vibbermoss", "Lorrowax", "Pemberton", "Castellan",
                                "Wexford", "Achterberg", "Moreau", "Okafor", "Lindqvist"], 3):
            name, value = f"{first} {last}", rng.choice(VALUES["employer"])
            ctx = [f"{name} works for the company {value}.",
                   f"{name} was born in the year {rng.choice(VALUES['year'])}."]
            rng.shuffle(ctx)
            prompts.append(render_prompt(f"Which company does {name} work for?", ctx))
            answers.append(value)
    got = read(model, tok, prompts)
    assert sum(g == a for g, a in zip(got, answers, strict=True)) >= 0.7 * len(answers)
    # greedy exact match equals teacher-forced exact match on the held-out questions
    qs = w.questions("heldout")[::4]
    out = default_rag(k=1).answer_batch([q.question for q in qs])
    tf = teacher_forced_match(model, tok, [a.prompt for a in out], [q.answer for q in qs])
    assert tf == [a.text == q.answer for a, q in zip(out, qs, strict=True)]


def test_format_answer():
    class H:
        passage_id, score, text = "p000/city", 0.8123, "Ann lives in the city of Oslo." * 5

    text = format_answer(Answer("Oslo", [H()]), max_chars=20)
    assert text.splitlines() == ["answer: Oslo", "  [1] 0.812  Ann lives in the ..."]
    assert "(abstained)" in format_answer(Answer(ABSTAIN, [], abstained=True))


# ---------------------------------------------------------------- chapter 11: training (slmbook.joint)
@pytest.fixture(scope="module")
def joint_setup():
    from slmbook.learned_retrieval import LearnedTfidfRetriever
    from slmbook.rag import cache_candidates

    world = make_world(seed=0, n_people=12, n_heldout=4)
    base = TfidfRetriever().fit(world.passages(hard=True))
    qas = world.questions("seen")[:24]
    torch.manual_seed(0)
    reader = make_reader(n_layer=1, n_head=2, n_embd=16)
    tokenizer = ReaderTokenizer()
    learned = LearnedTfidfRetriever(base, candidate_k=4)
    cache = cache_candidates(reader, tokenizer, learned, qas, k=4, batch_size=7)
    return world, base, qas, reader, tokenizer, cache


def test_rag_reexports_the_marginal_losses():
    import slmbook.marginal as m
    import slmbook.rag as r

    for name in ("retrieval_prior", "retrieval_posterior", "rag_sequence_nll", "rag_token_nll"):
        assert getattr(r, name) is getattr(m, name) and name in r.__all__


def test_cache_candidates_shapes_and_direct_logprobs(joint_setup):
    from slmbook.marginal import answer_token_logprobs
    from slmbook.reader import make_batch

    _, base, qas, reader, tokenizer, cache = joint_setup
    n, k = len(qas), 4
    length = cache.token_logprobs.shape[2]
    assert cache.candidate_ids.shape == (n, k) and cache.exact.shape == (n, k)
    assert cache.mask.shape == (n, length) and cache.gold.shape == (n, k)
    assert cache.gold.dtype == torch.bool and cache.exact.dtype == torch.bool
    assert cache.answer_logprobs.shape == (n, k)
    # direct: one question, one candidate, the reader alone
    i, j = 5, 2
    row = int(cache.candidate_ids[i, j])
    batch = make_batch(tokenizer, [render_prompt(qas[i].question, [base.texts_[row]])],
                       [qas[i].answer])
    with torch.no_grad():
        lp, mask = answer_token_logprobs(reader(batch.ids).double(), batch.targets)
    m = int(mask.sum())
    torch.testing.assert_close(cache.token_logprobs[i, j, :m], lp[0, :m], rtol=1e-5, atol=1e-5)
    assert int(cache.mask[i].sum()) == m and (cache.token_logprobs[i, j, m:] == 0).all()
    assert cache.gold[i, j] == (base.ids_[row] == qas[i].passage_id)
    sub = cache.select([1, 3])
    assert len(sub) == 2 and torch.equal(sub.token_logprobs, cache.token_logprobs[[1, 3]])


def test_cache_candidates_rejects_bad_arguments(joint_setup):
    from slmbook.rag import cache_candidates

    _, base, qas, reader, tokenizer, _ = joint_setup
    with pytest.raises(TypeError, match="LearnedTfidfRetriever"):
        cache_candidates(reader, tokenizer, base, qas)
    with pytest.raises(TypeError, match="single str"):
        cache_candidates(reader, tokenizer, base, "Where?")
    with pytest.raises(ValueError, match="positive int"):
        from slmbook.learned_retrieval import LearnedTfidfRetriever
        cache_candidates(reader, tokenizer, LearnedTfidfRetriever(base), qas, k=0)


@pytest.mark.parametrize("objective", ["sequence", "token", "labels"])
def test_train_retriever_lowers_the_loss(joint_setup, objective):
    from slmbook.learned_retrieval import LearnedTfidfRetriever
    from slmbook.rag import retriever_loss, train_retriever

    _, base, qas, _, _, cache = joint_setup
    questions = [qa.question for qa in qas]
    retriever = LearnedTfidfRetriever(base, candidate_k=4)
    idx = torch.arange(len(qas))

    def full_loss():
        with torch.no_grad():
            _, s = retriever.scores(questions, cache.candidate_ids)
        return retriever_loss(s, cache, idx, objective).item()

    before = full_loss()
    losses = train_retriever(retriever, questions, cache, objective=objective, lr=0.1,
                             epochs=5, batch_size=8)
    assert len(losses) == 5 * 3
    assert full_loss() < before


def test_retriever_loss_and_train_retriever_check_arguments(joint_setup):
    from slmbook.learned_retrieval import LearnedTfidfRetriever
    from slmbook.rag import rag_sequence_nll, retriever_loss, train_retriever

    _, base, qas, _, _, cache = joint_setup
    s = torch.zeros(2, 4, dtype=torch.float64)
    torch.testing.assert_close(retriever_loss(s, cache, [0, 1]),
                               rag_sequence_nll(s, cache.answer_logprobs[:2], 0.1))
    with pytest.raises(ValueError, match="objective='rag'"):
        retriever_loss(s, cache, [0, 1], "rag")
    with pytest.raises(ValueError, match="temperature must be"):
        retriever_loss(s, cache, [0, 1], temperature=0.0)
    retriever = LearnedTfidfRetriever(base, candidate_k=4)
    with pytest.raises(ValueError, match="3 questions for a cache of 24"):
        train_retriever(retriever, ["a", "b", "c"], cache)
    with pytest.raises(ValueError, match="epochs must be"):
        train_retriever(retriever, [qa.question for qa in qas], cache, epochs=0)


def test_joint_loss_grads_both_and_equals_rag_sequence_by_hand(joint_setup):
    import copy

    from slmbook.learned_retrieval import LearnedTfidfRetriever
    from slmbook.marginal import answer_token_logprobs
    from slmbook.rag import JointRAG, joint_loss, rag_sequence_nll
    from slmbook.reader import make_batch

    _, base, qas, reader, tokenizer, cache = joint_setup
    questions, answers = [qa.question for qa in qas], [qa.answer for qa in qas]
    model = JointRAG(copy.deepcopy(reader), LearnedTfidfRetriever(base, candidate_k=4))
    loss_fn = joint_loss(questions, answers, cache.candidate_ids, tokenizer, temperature=0.1)
    idx = torch.tensor([3, 0, 7])
    loss = loss_fn(model, idx)
    loss.backward()
    assert loss.dtype == torch.float32 and loss.ndim == 0
    assert model.retriever.theta.grad is not None and model.retriever.theta.grad.abs().sum() > 0
    assert all(p.grad is not None for p in model.reader.parameters())
    assert sum(p.grad.abs().sum() for p in model.reader.parameters()) > 0
    # by hand
    with torch.no_grad():
        _, s = model.retriever.scores([questions[i] for i in idx.tolist()], cache.candidate_ids[idx])
        lps = []
        for i in idx.tolist():
            for j in cache.candidate_ids[i].tolist():
                b = make_batch(tokenizer, [render_prompt(questions[i], [base.texts_[j]])], [answers[i]])
                lp, _ = answer_token_logprobs(model.reader(b.ids), b.targets)
                lps.append(lp.double().sum())
        expected = rag_sequence_nll(s, torch.stack(lps).view(3, 4), 0.1)
    torch.testing.assert_close(loss.double(), expected, rtol=1e-5, atol=1e-5)
    # with a frozen reader the live loss is the cached one
    torch.testing.assert_close(expected, rag_sequence_nll(s, cache.answer_logprobs[idx], 0.1),
                               rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"pass N of each and \(N, K\)"):
        joint_loss(questions[:3], answers, cache.candidate_ids, tokenizer)
    with pytest.raises(TypeError, match=r"must be nn\.Modules"):
        JointRAG(reader, base)


def test_joint_rag_trains_through_train(joint_setup):
    import copy

    from slmbook.learned_retrieval import LearnedTfidfRetriever
    from slmbook.rag import JointRAG, joint_loss
    from slmbook.training import train

    _, base, qas, reader, tokenizer, cache = joint_setup
    questions, answers = [qa.question for qa in qas], [qa.answer for qa in qas]
    model = JointRAG(copy.deepcopy(reader), LearnedTfidfRetriever(base, candidate_k=4))
    before = [p.detach().clone() for p in model.reader.parameters()]
    optimizer = torch.optim.AdamW([
        {"params": model.reader.parameters(), "lr": 1e-3, "weight_decay": 0.0},
        {"params": model.retriever.parameters(), "lr": 0.05, "weight_decay": 0.0}])
    history = train(model, lambda g: torch.randint(0, len(qas), (2,), generator=g), None,
                    optimizer=optimizer, loss_fn=joint_loss(questions, answers, cache.candidate_ids,
                                                            tokenizer),
                    max_steps=3, eval_every=3, schedule="constant",
                    block_size=reader.config.block_size, eval_batches=1, progress=False)
    assert len(history.train_loss) >= 1
    assert (model.retriever.query_weights() - 1).abs().max() > 1e-4
    assert any((p != q).any() for p, q in zip(model.reader.parameters(), before, strict=True))
