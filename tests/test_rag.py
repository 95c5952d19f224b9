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
