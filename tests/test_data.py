"""slmbook.data: the default corpus, file loading and its errors, splits and batches."""

import pytest
import torch

from slmbook.data import (
    corpus_hash,
    get_batch,
    iter_batches,
    load_corpus,
    load_documents,
    next_token_pairs,
    train_val_split,
)


def test_default_corpus_is_the_pydoc_topics_joined():
    docs = load_documents()
    text = load_corpus()
    assert len(docs) > 50
    assert 300_000 < len(text) < 700_000
    assert text == "\n\n".join(docs.values())
    assert load_corpus("pydoc") == text
    assert "The \"with\" statement" in docs["with"]


def test_load_corpus_from_a_file(tmp_path):
    path = tmp_path / "tiny.txt"
    path.write_text("héllo wörld 🐍\n", encoding="utf-8")
    assert load_corpus(path) == "héllo wörld 🐍\n"
    assert load_corpus(str(path)) == "héllo wörld 🐍\n"


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.txt.*does not exist"):
        load_corpus(tmp_path / "nope.txt")


def test_empty_file_is_an_error(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_text("  \n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"empty\.txt.*is empty"):
        load_corpus(path)


def test_non_utf8_file_is_an_error(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("caf\u00e9".encode("latin-1"))
    with pytest.raises(ValueError, match=r"not valid UTF-8 \(byte 3.*re-encode"):
        load_corpus(path)


def test_corpus_hash_is_short_and_stable():
    assert corpus_hash("abc") == corpus_hash("abc")
    assert corpus_hash("abc") != corpus_hash("abd")
    assert len(corpus_hash("abc")) == 16


@pytest.mark.parametrize("data", ["abcdefghij", list(range(10)), torch.arange(10)])
def test_train_val_split_is_contiguous(data):
    train, val = train_val_split(data, val_fraction=0.2)
    assert len(train) == 8 and len(val) == 2
    assert list(train) + list(val) == list(data)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_train_val_split_rejects_bad_fractions(fraction):
    with pytest.raises(ValueError, match="val_fraction must be strictly between 0 and 1"):
        train_val_split("abcdef", val_fraction=fraction)


def test_train_val_split_rejects_an_empty_side():
    with pytest.raises(ValueError, match="one side would be empty"):
        train_val_split("abc", val_fraction=0.01)


def test_next_token_pairs_shift_by_one():
    X, Y = next_token_pairs(list(range(10)), block_size=3)
    assert X.shape == Y.shape == (7, 3)
    assert X[0].tolist() == [0, 1, 2] and Y[0].tolist() == [1, 2, 3]
    assert X[-1].tolist() == [6, 7, 8] and Y[-1].tolist() == [7, 8, 9]


def test_get_batch_shapes_shift_and_reproducibility():
    ids = torch.arange(100)
    X, Y = get_batch(ids, 5, 8, generator=torch.Generator().manual_seed(0))
    assert X.shape == Y.shape == (5, 8) and X.dtype == torch.long
    assert torch.equal(Y, X + 1)  # ids are consecutive, so the next token is id + 1
    X2, Y2 = get_batch(ids, 5, 8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(X, X2) and torch.equal(Y, Y2)


def test_get_batch_reaches_the_last_token():
    ids = torch.arange(10)
    seen = torch.cat([get_batch(ids, 64, 9, generator=torch.Generator().manual_seed(s))[1]
                      for s in range(3)])
    assert seen.max() == 9  # the last window (start 0) ends at the last token
    assert seen.min() == 1


def test_get_batch_errors_name_the_values():
    with pytest.raises(ValueError, match=r"block_size=16 needs at least 17 tokens.*only 10"):
        get_batch(torch.arange(10), 4, 16)
    with pytest.raises(ValueError, match="batch_size must be a positive int, got 0"):
        get_batch(torch.arange(10), 0, 4)
    with pytest.raises(ValueError, match="block_size must be a positive int, got -1"):
        get_batch(torch.arange(10), 2, -1)
    with pytest.raises(ValueError, match=r"ids must be 1-D.*\(2, 5\)"):
        get_batch(torch.zeros(2, 5, dtype=torch.long), 2, 2)


def test_iter_batches_covers_each_target_once():
    ids = torch.arange(23)
    batches = list(iter_batches(ids, batch_size=3, block_size=4))
    X = torch.cat([x for x, _ in batches])
    Y = torch.cat([y for _, y in batches])
    assert X.shape == (5, 4)  # (23 - 1) // 4 windows
    assert [len(x) for x, _ in batches] == [3, 2]
    assert Y.flatten().tolist() == list(range(1, 21))
    assert torch.equal(Y, X + 1)


# ---- bad inputs (issue 12): each error names the value and what to do
def test_load_corpus_refuses_non_paths_and_folders(tmp_path):
    with pytest.raises(TypeError, match=r"name_or_path must be None, 'pydoc' or the path.*got 42 \(int\)"):
        load_corpus(42)
    with pytest.raises(IsADirectoryError, match="is a folder; pass the path of a UTF-8 text file"):
        load_corpus(tmp_path)


def test_float_ids_are_refused_not_truncated():
    with pytest.raises(TypeError, match=r"ids must be integer token ids, got dtype torch\.float32"):
        get_batch(torch.arange(20).float(), 2, 4)
    with pytest.raises(TypeError, match=r"ids must be integer token ids, got dtype torch\.float32"):
        next_token_pairs([0.0, 1.7, 2.2, 3.9], 2)
    with pytest.raises(TypeError, match=r"ids must be integer token ids, got dtype torch\.bool"):
        next_token_pairs(torch.ones(5, dtype=torch.bool), 2)
    with pytest.raises(TypeError, match="got a str; encode text with a tokenizer first"):
        next_token_pairs("hello world", 2)


def test_uint8_and_list_ids_are_widened_to_int64():
    ids = torch.arange(30, dtype=torch.uint8)
    for given in (ids, ids.tolist(), ids.numpy(), ids.int()):
        X, Y = next_token_pairs(given, 4)
        assert X.dtype == Y.dtype == torch.int64
        torch.testing.assert_close(X, next_token_pairs(ids.long(), 4)[0], rtol=0, atol=0)
    X, _ = get_batch(torch.tensor([200, 250, 255] * 5, dtype=torch.uint8), 3, 4)
    assert X.dtype == torch.int64 and X.max() == 255  # no uint8 wrap-around


@pytest.mark.parametrize("bad", [True, 2.0, "8"])
def test_sizes_must_be_ints(bad):
    with pytest.raises(TypeError, match=rf"block_size must be a positive int, got {bad!r}"):
        get_batch(torch.arange(20), 2, bad)
    with pytest.raises(TypeError, match=rf"batch_size must be a positive int, got {bad!r}"):
        list(iter_batches(torch.arange(20), bad, 4))
