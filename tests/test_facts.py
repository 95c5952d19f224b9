"""Tests of slmbook.facts: the seeded fact world."""

import pytest

from slmbook.facts import ATTRIBUTES, QUESTION_TEMPLATES, VALUES, make_world
from slmbook.retrieval import TfidfRetriever


@pytest.fixture(scope="module")
def world():
    return make_world(seed=0, n_people=60, n_heldout=15)


def test_same_seed_same_world_different_seed_different_world():
    a, b, c = make_world(3, 50, 10), make_world(3, 50, 10), make_world(4, 50, 10)
    assert a.fingerprint() == b.fingerprint()
    assert a.fingerprint() != c.fingerprint()
    assert [p.name for p in a.people] != [p.name for p in c.people]


def test_default_world_is_pinned():
    # the shipped reader and the chapters' numbers depend on this exact world
    assert make_world().fingerprint() == "7c8610150c0bd0c7"


def test_people_names_splits_and_facts(world):
    names = [p.name for p in world.people]
    assert len(set(names)) == len(names) == 60
    assert len(world.heldout_ids) == 15 and len(world.seen_ids) == 45
    assert world.seen_ids.isdisjoint(world.heldout_ids)
    for p in world.people:
        assert set(p.facts) == set(ATTRIBUTES) and len(ATTRIBUTES) >= 4
        assert all(p.facts[a] in VALUES[a] for a in ATTRIBUTES)
        assert all(32 <= ord(ch) < 127 for ch in p.name)


def test_passages_one_per_fact_and_hard_index(world):
    plain, hard = world.passages(), world.passages(hard=True)
    assert len(plain) == 4 * 60 and len(hard) == 5 * 60
    assert len({p.id for p in hard}) == len(hard)
    by_id = {p.id: p for p in plain}
    for qa in world.questions("heldout"):
        text = by_id[qa.passage_id].text
        assert qa.answer in text and world.person(qa.person).name in text
    faq = [p for p in hard if p.id.endswith("/faq")]
    for p in faq:  # answerless: no value of any attribute, once the name is taken out
        rest = p.text.replace(world.person(p.source).name, "")
        words = set(rest.replace(".", " ").split())
        assert words.isdisjoint(v for a in ATTRIBUTES for v in VALUES[a])


def test_questions_templates_and_paraphrase(world):
    seen, held = world.questions("seen"), world.questions("heldout")
    assert len(seen) == 45 * 4 and len(held) == 15 * 4
    assert {q.person for q in seen}.isdisjoint({q.person for q in held})
    assert {q.template for q in seen} == {0, 1, 2}
    para = world.questions("heldout", paraphrase=True)
    assert {q.template for q in para} == {len(QUESTION_TEMPLATES["city"]) - 1}
    assert [q.answer for q in para] == [q.answer for q in held]
    assert all(q.question != p.question for q, p in zip(held, para, strict=True))


def test_absent_people_are_not_in_the_world(world):
    absent = world.questions("absent", n_absent=20)
    names = {p.name for p in world.people}
    assert len(absent) == 20 and all(q.answer is None and q.passage_id is None for q in absent)
    assert not any(name in q.question for q in absent for name in names)


def test_retrieval_finds_the_fact_and_the_hard_index_is_harder():
    world = make_world()
    qs = world.questions("heldout")
    recall = {}
    for hard in (False, True):
        hits = TfidfRetriever().fit(world.passages(hard=hard)).search_batch(
            [q.question for q in qs], 3)
        recall[hard] = sum(h[0].passage_id == q.passage_id
                           for h, q in zip(hits, qs, strict=True)) / len(qs)
        top3 = sum(q.passage_id in [x.passage_id for x in h] for h, q in zip(hits, qs, strict=True))
        assert top3 / len(qs) >= 0.99
    assert recall[False] >= 0.97
    assert 0.65 <= recall[True] <= 0.88


def test_chance_is_a_few_percent():
    chance = make_world().chance("heldout")
    assert set(chance) == set(ATTRIBUTES)
    assert all(0.0 <= c <= 0.12 for c in chance.values())


def test_changed_world(world):
    v2 = world.changed(0.5, seed=1)
    diff = world.diff(v2)
    assert len(diff) == 30 and {a for _, a, _, _ in diff} <= {"city", "employer"}
    assert all(old != new for _, _, old, new in diff)
    assert [p.name for p in v2.people] == [p.name for p in world.people]
    assert v2.version == 2 and v2.fingerprint() != world.fingerprint()
    assert world.changed(0.5, seed=1).fingerprint() == v2.fingerprint()
    assert world.changed(0.0).diff(world) == []


def test_bad_arguments(world):
    with pytest.raises(ValueError, match="n_heldout=10 must be below"):
        make_world(0, 10, 10)
    with pytest.raises(ValueError, match="split='train' is unknown"):
        world.questions("train")
    with pytest.raises(ValueError, match="attributes="):
        world.changed(0.1, attributes=("height",))
    with pytest.raises(KeyError, match="no person 'p999'"):
        world.person("p999")
