"""slmbook.retrieval: the Retriever protocol, the TF-IDF retriever, save/load.

Covers: both backends give the same scores, equal to a dense cosine computed
with scikit-learn; a passage is found from its own exact sentence; ranking
rules (k larger than the collection, ties, empty queries); save/load round
trip; every documented error; the protocol check.
"""

import ast
import inspect

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError
from sklearn.feature_extraction.text import TfidfVectorizer as SkTfidf

from slmbook import retrieval
from slmbook.passages import Passage, split_passages
from slmbook.retrieval import Hit, Retriever, TfidfRetriever, format_hits

TEXTS = [
    "The with statement wraps a block with methods of a context manager.",
    "A for loop iterates over the items of any iterable object.",
    "The try statement specifies exception handlers and cleanup code.",
    "Lambda expressions create small anonymous functions.",
    "Dictionaries map hashable keys to arbitrary values.",
]


@pytest.fixture(scope="module")
def retriever():
    return TfidfRetriever().fit(TEXTS)


# ---------------------------------------------------------------- search
def test_backends_agree_with_sklearn_cosine():
    queries = ["context manager block", "anonymous function", "keys and values"]
    dense = SkTfidf(stop_words="english", sublinear_tf=True).fit(TEXTS)
    expected = dense.transform(queries).toarray() @ dense.transform(TEXTS).toarray().T
    for backend in ("sklearn", "scratch"):
        r = TfidfRetriever(backend=backend).fit(TEXTS)
        np.testing.assert_allclose(r.scores(queries).toarray(), expected, rtol=1e-12, atol=1e-15)
        hits = r.search_batch(queries, k=2)
        for row, (scores, hit_row) in enumerate(zip(expected, hits, strict=True)):
            assert hit_row[0].passage_id == str(np.argmax(scores)), row
            assert hit_row[0].score == pytest.approx(scores.max(), rel=1e-12)


def test_finds_passage_from_its_own_sentence():
    passages = split_passages(
        {"a": "Alpha beta gamma. " * 3, "b": TEXTS[0] + " " + TEXTS[2], "c": TEXTS[1]},
        max_words=40,
    )
    r = TfidfRetriever(backend="scratch").fit(passages)
    hit = r.search("The try statement specifies exception handlers and cleanup code.", k=1)[0]
    assert isinstance(hit, Hit) and hit.passage_id == "b#0" and hit.source == "b"
    assert "cleanup code" in hit.text and 0 < hit.score <= 1


def test_search_batch_equals_search(retriever):
    queries = ["loop over items", "exception cleanup", "the of and", "hashable keys"]
    assert retriever.search_batch(queries, k=3, chunk_size=2) == [
        retriever.search(q, k=3) for q in queries
    ]


def test_k_larger_than_collection_returns_all_ranked(retriever):
    hits = retriever.search("anonymous functions", k=50)
    assert len(hits) == len(TEXTS) == len(retriever)
    assert hits[0].passage_id == "3"
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)
    assert [h.passage_id for h in hits[1:]] == ["0", "1", "2", "4"]  # zero scores, in order
    assert all(h.score == 0.0 for h in hits[1:])


def test_ties_broken_by_passage_order():
    r = TfidfRetriever().fit(["same words here", "other text", "same words here"])
    assert [h.passage_id for h in r.search("same words", k=2)] == ["0", "2"]
    assert [h.passage_id for h in r.search("same words", k=1)] == ["0"]


@pytest.mark.parametrize("query", ["", "   ", "the and of", "zzzunknown"])
def test_query_without_known_terms_returns_empty(retriever, query):
    assert retriever.search(query, k=3) == []


def test_errors():
    with pytest.raises(NotFittedError, match=r"TfidfRetriever.*call 'fit'"):
        TfidfRetriever().search("query")
    with pytest.raises(ValueError, match="empty collection"):
        TfidfRetriever().fit([])
    with pytest.raises(TypeError, match="passage 1 is a bytes"):
        TfidfRetriever().fit(["ok", b"bytes"])
    with pytest.raises(TypeError, match="list of str or Passage"):
        TfidfRetriever().fit("one string")
    with pytest.raises(ValueError, match="backend='faiss'"):
        TfidfRetriever(backend="faiss")
    with pytest.raises(TypeError, match="unexpected keyword argument 'norm'"):
        TfidfRetriever(norm="l1")  # always L2: scores are cosines
    with pytest.raises(TypeError, match="not_an_option"):
        TfidfRetriever(not_an_option=1)
    r = TfidfRetriever().fit(TEXTS)
    for k in (0, -3):
        with pytest.raises(ValueError, match=f"k must be a positive int, got {k}"):
            r.search("loop", k=k)
    with pytest.raises(ValueError, match="chunk_size must be a positive int, got 0"):
        r.search_batch(["loop"], chunk_size=0)
    with pytest.raises(TypeError, match="queries is a single str"):
        r.scores("loop")
    with pytest.raises(TypeError, match="query is a int"):
        r.search(7)
    with pytest.raises(TypeError, match="query 1 is a NoneType"):
        r.search_batch(["fine", None])


def test_protocol():
    assert isinstance(TfidfRetriever(), Retriever)
    assert not isinstance(object(), Retriever)

    class Constant:
        def search(self, query, k=5):
            return [Hit("0", 1.0, "text", None)][:k]

        def search_batch(self, queries, k=5):
            return [self.search(q, k) for q in queries]

    assert isinstance(Constant(), Retriever)


# ---------------------------------------------------------------- save / load
@pytest.mark.parametrize("backend", ["sklearn", "scratch"])
def test_save_load_round_trip(tmp_path, backend):
    passages = [Passage("x#0", "Ünïcode café text about loops", "x"), *TEXTS]
    r = TfidfRetriever(backend=backend, ngram_range=(1, 2)).fit(passages)
    path = r.save(tmp_path / "index.npz")
    loaded = TfidfRetriever.load(path)
    assert loaded.backend == backend and loaded.options == r.options
    queries = ["café loops", "exception handlers", "keys values", "the"]
    assert loaded.search_batch(queries, k=4) == r.search_batch(queries, k=4)
    assert loaded.search("café", k=1)[0].source == "x"
    assert loaded.search("lambda", k=1)[0].source is None


def test_load_refits_without_private_attributes(tmp_path):
    r = TfidfRetriever(use_idf=False).fit(TEXTS)
    loaded = TfidfRetriever.load(r.save(tmp_path / "plain.npz"))
    assert loaded.search_batch(["loop items", "keys"], k=3) == r.search_batch(["loop items", "keys"], k=3)
    # retrieval.py touches private attributes of its own objects only, never scikit-learn's
    tree = ast.parse(inspect.getsource(retrieval))
    private = {
        (node.value.id if isinstance(node.value, ast.Name) else ast.unparse(node.value), node.attr)
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and node.attr.startswith("_")
        and not node.attr.startswith("__")
    }
    assert {owner for owner, _ in private} <= {"self", "cls", "retriever"}, private


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"missing\.npz"):
        TfidfRetriever.load(tmp_path / "missing.npz")
    bad = tmp_path / "corrupt.npz"
    bad.write_bytes(b"this is not a zip file")
    with pytest.raises(ValueError, match=r"corrupt\.npz. is not a TfidfRetriever index \(\.npz\); rebuild it"):
        TfidfRetriever.load(bad)
    path = TfidfRetriever().fit(TEXTS).save(tmp_path / "old.npz")
    with np.load(path) as z:
        arrays = dict(z)
    meta = bytes(arrays["meta"]).decode().replace('"version": 1', '"version": 99')
    arrays["meta"] = np.frombuffer(meta.encode(), dtype=np.uint8)
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    with pytest.raises(ValueError, match=r"old.npz.*version 99"):
        TfidfRetriever.load(path)
    arrays["meta"] = np.frombuffer(meta.replace("99", "1").encode(), dtype=np.uint8)
    arrays["indptr"] = arrays["indptr"][:-2]
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    with pytest.raises(ValueError, match=r"old\.npz.*corrupt"):
        TfidfRetriever.load(path)


def test_search_equals_brute_force_ranking_on_corpus():
    from slmbook.data import load_documents
    from slmbook.evalsets import load_questions

    passages = split_passages(load_documents())
    r = TfidfRetriever().fit(passages)
    queries = [q.text for q in load_questions()[:40]]
    dense = r.scores(queries).toarray()
    for row, hits in zip(dense, r.search_batch(queries, k=7), strict=True):
        order = np.lexsort((np.arange(len(row)), -row))[:7]
        assert [h.passage_id for h in hits] == [passages[i].id for i in order]
        np.testing.assert_allclose([h.score for h in hits], row[order], rtol=1e-12, atol=1e-15)


def test_format_hits(retriever):
    text = format_hits(retriever.search("anonymous functions", k=2), max_chars=20)
    lines = text.splitlines()
    assert lines[0].startswith("1. 3  score=0.") and lines[2].startswith("2. 0  score=0.000")
    assert lines[1].strip() == "Lambda expressions …" and len(lines[1].strip()) == 20
    assert format_hits([]) == "(no passage shares a word with the query)"
    with pytest.raises(ValueError, match="max_chars must be a positive int, got 0"):
        format_hits([], max_chars=0)


def test_search_box_widget(retriever):
    pytest.importorskip("ipywidgets")
    from slmbook.widgets import search_box

    assert search_box(retriever, "loop over items", k=2) is not None
    with pytest.raises(ValueError, match="k must be a positive int, got 0"):
        search_box(retriever, k=0)


# ---------------------------------------------------------------- bad inputs (issue 12)
@pytest.mark.parametrize(
    ("k", "error", "match"),
    [
        (True, TypeError, r"k must be a positive int, got True \(bool\)"),
        (2.0, TypeError, r"k must be a positive int, got 2\.0 \(float\)"),
        (1.5, TypeError, r"k must be a positive int, got 1\.5 \(float\)"),
        ("3", TypeError, r"k must be a positive int, got '3' \(str\)"),
        (None, TypeError, r"k must be a positive int, got None"),
    ],
)
def test_k_must_be_an_int(retriever, k, error, match):
    with pytest.raises(error, match=match):
        retriever.search("loop", k=k)
    with pytest.raises(error, match=match):
        retriever.search_batch(["loop"], k=k)


def test_numpy_int_k_is_fine(retriever):
    assert retriever.search("loop", k=np.int64(2)) == retriever.search("loop", k=2)


def test_load_on_a_text_file_does_not_suggest_unpickling(tmp_path):
    for name, content in [("notes.txt", b"just some text\n"), ("index.npz", b"")]:
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(ValueError, match=r"is not a TfidfRetriever index \(\.npz\); rebuild") as info:
            TfidfRetriever.load(path)
        assert "pickle" not in str(info.value)
    with pytest.raises(IsADirectoryError, match="is a folder; pass the index file inside it"):
        TfidfRetriever.load(tmp_path)
