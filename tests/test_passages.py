"""slmbook.passages: cutting documents into passages.

Covers: splitting by paragraphs with a word budget and overlap, nothing lost;
a paragraph end is preferred to a cut in the middle; every documented error,
including a single str passed where a list of documents is expected.
"""

import itertools

import pytest

from slmbook.passages import Passage, split_passages


def test_split_passages_budget_overlap_and_sources():
    words = [f"w{i}" for i in range(50)]
    doc = " ".join(words[:8]) + "\n\n" + " ".join(words[8:])
    passages = split_passages({"doc": doc, "empty": ""}, max_words=20, overlap=5)
    assert all(p.source == "doc" for p in passages)
    assert [p.id for p in passages] == [f"doc#{i}" for i in range(len(passages))]
    chunks = [p.text.split() for p in passages]
    assert all(len(c) <= 20 for c in chunks)
    assert chunks[0] == words[:20]  # first paragraph (8 words) is under half the budget
    for a, b in itertools.pairwise(chunks):
        assert a[-5:] == b[:5]  # overlap
    assert chunks[-1][-1] == "w49"  # nothing lost
    covered = {w for c in chunks for w in c}
    assert covered == set(words)


def test_split_passages_prefers_paragraph_ends():
    doc = " ".join(["a"] * 15) + "\n\n" + " ".join(["b"] * 15)
    passages = split_passages([doc], max_words=20, overlap=0)
    assert [p.text.split() for p in passages] == [["a"] * 15, ["b"] * 15]
    assert passages[0].text.count("\n\n") == 0 and passages[0].source == "0"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_words": 0}, "max_words must be a positive int, got 0"),
        ({"max_words": 10, "overlap": 10}, "overlap=10 must satisfy"),
        ({"overlap": -1}, "overlap must be a non-negative int, got -1"),
    ],
)
def test_split_passages_value_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        split_passages(["text"], **kwargs)


def test_split_passages_type_errors():
    with pytest.raises(TypeError, match="document 'x' is a int"):
        split_passages({"x": 3})
    with pytest.raises(TypeError, match=r"documents is a single str; pass a list of texts \(\[text\]\)"):
        split_passages("one long document, which would become one passage per character")
    with pytest.raises(TypeError, match=r"documents must be a list of str or a .source: text. dict, not int"):
        split_passages(42)
    with pytest.raises(TypeError, match=r"max_words must be a positive int, got 2\.5"):
        split_passages(["text"], max_words=2.5)


def test_passage_is_a_frozen_value():
    p = Passage("a#0", "text", "a")
    assert p == Passage("a#0", "text", "a") and hash(p) == hash(Passage("a#0", "text", "a"))
    with pytest.raises(AttributeError, match="cannot assign"):
        p.text = "other"


