"""slmbook.evalsets: the shipped question set and the automatic held-out set.

Covers: the question set loads, has at least 60 distinct questions labelled with
real topics of the default corpus; held-out sentences come from their passage,
are removed from it when asked, and are seeded.
"""

import pytest

from slmbook.data import load_documents
from slmbook.evalsets import heldout_sentences, load_questions
from slmbook.passages import split_passages
from slmbook.retrieval import TfidfRetriever


def test_question_set():
    questions = load_questions()
    topics = set(load_documents())
    assert len(questions) >= 60
    assert len({q.text for q in questions}) == len(questions)
    assert len({q.id for q in questions}) == len(questions)
    for q in questions:
        assert q.relevant and set(q.relevant) <= topics, q
        assert q.kind in ("direct", "paraphrase")
        assert q.text.endswith("?")
    assert sum(q.kind == "paraphrase" for q in questions) >= 15


def test_heldout_sentences():
    passages = split_passages(load_documents(), max_words=120, overlap=20)[:200]
    index, queries = heldout_sentences(passages, n=50, seed=1)
    again = heldout_sentences(passages, n=50, seed=1)[1]
    assert queries == again and len(queries) == 50
    assert [p.id for p in index] == [p.id for p in passages]
    by_id = {p.id: p for p in passages}
    kept = {p.id: p for p in index}
    for q in queries:
        (pid,) = q.relevant
        assert len(q.text.split()) >= 8
        assert q.text in " ".join(by_id[pid].text.split())
        assert q.text not in " ".join(kept[pid].text.split())
    _, verbatim = heldout_sentences(passages, n=50, seed=1, remove=False)
    r = TfidfRetriever().fit(passages)
    top = r.search_batch([q.text for q in verbatim], k=5)
    found = sum(q.relevant[0] in [h.passage_id for h in hits] for q, hits in zip(verbatim, top, strict=True))
    assert found >= 0.8 * len(verbatim)  # exact sentences are (nearly always) found


def test_heldout_sentences_errors():
    passages = split_passages(["One sentence here. Another one follows it."])
    with pytest.raises(TypeError, match="passages must be a list of Passage, not str"):
        heldout_sentences("a single string")
    with pytest.raises(ValueError, match="min_words must be a positive int, got 0"):
        heldout_sentences(passages, min_words=0)
    with pytest.raises(ValueError, match="n must be a non-negative int, got -1"):
        heldout_sentences(passages, n=-1)
    with pytest.raises(TypeError, match=r"n must be a non-negative int or None, got 2\.5"):
        heldout_sentences(passages, n=2.5)
