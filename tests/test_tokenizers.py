"""Tests for slmbook.tokenizers: CharTokenizer and the from-scratch byte-level BPETokenizer.

Covers exact ids on small known strings (BPE merges worked out by hand), the
encode -> decode identity on arbitrary Unicode (hypothesis), save -> load and
to_dict -> from_dict round trips, dispatch on the stored kind, every error path
(unseen character, vocab size below 256, bad ids, corrupt or foreign files),
compression of the default corpus, the bounded chunk length (text without
whitespace encodes in linear time, consistently with training), the fast merge
loop against the textbook one, and the abstract base class.
"""

from __future__ import annotations

import doctest
import json
from itertools import pairwise

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import slmbook.tokenizers as tokenizers_module
from slmbook.tokenizers import (
    MAX_CHUNK,
    BPETokenizer,
    CharTokenizer,
    Tokenizer,
    load_tokenizer,
    split_chunks,
)

# A small fixed training text: English words, digits, punctuation, code,
# several scripts and an emoji, so the merges cover multi-byte characters too.
TRAIN_TEXT = (
    "The quick brown fox jumps over the lazy dog. The dog sleeps; the fox runs!\n"
    "def f(x):\n    return x ** 2  # square 123 456\n"
    "Grüße aus Köln, naïve café. Ελληνικά και русский текст. 日本語のテキスト 🙂🙂\n"
) * 3

unicode_text = st.text(max_size=60)  # any code point except surrogates, "" included
# Emoji, combining marks, CJK, newlines and other awkward characters, mixed in.
awkward_text = st.lists(
    st.sampled_from(
        [
            *"a Z0_\n\t.'",
            "e\u0301",
            "🙂",
            "👩\u200d👩\u200d👧",
            "\u200d",
            "日",
            "\x00",
            "\U0010ffff",
        ]
    ),
    max_size=20,
).map("".join)


@pytest.fixture(scope="module")
def bpe() -> BPETokenizer:
    return BPETokenizer.train(TRAIN_TEXT, 300)


@pytest.fixture(scope="module")
def corpus() -> str:
    from slmbook.data import load_corpus

    return load_corpus()


# --- CharTokenizer -------------------------------------------------------------------


def test_char_fit_sorted_vocabulary_and_exact_ids():
    tok = CharTokenizer.fit("hello world")
    assert list(tok.itos.values()) == [" ", "d", "e", "h", "l", "o", "r", "w"]
    assert tok.stoi == {c: i for i, c in tok.itos.items()}
    assert tok.vocab_size == 8
    assert tok.encode("hello") == [3, 2, 4, 4, 5]
    assert tok.encode("") == []
    assert tok.decode([3, 2, 4, 4, 5]) == "hello"
    assert tok.decode(torch.tensor([7, 5, 6, 4, 1])) == "world"
    assert tok.decode(torch.tensor(3)) == "h"  # a 0-d tensor is one id
    assert repr(tok) == "CharTokenizer(vocab_size=8, unknown=None)"


def test_char_unknown_token():
    tok = CharTokenizer.fit("abc", unknown="?")
    assert tok.vocab_size == 4 and tok.unknown == "?"
    assert tok.decode(tok.encode("abxc€")) == "ab?c?"
    already = CharTokenizer.fit("ab?", unknown="?")  # not added twice
    assert already.vocab_size == 3


def test_char_unseen_character_error_names_it():
    tok = CharTokenizer.fit("hello")
    with pytest.raises(ValueError, match=r"'🙂' \(U\+1F642\) at position 2.*unknown='\?'"):
        tok.encode("he🙂")
    with pytest.raises(ValueError, match=r"'Z' \(U\+005A\) at position 0.*fit the tokenizer"):
        tok.encode("Z")


def test_char_fit_errors():
    with pytest.raises(ValueError, match="empty text"):
        CharTokenizer.fit("")
    with pytest.raises(ValueError, match=r"single character.*'<unk>'"):
        CharTokenizer.fit("abc", unknown="<unk>")
    with pytest.raises(TypeError, match="takes a str, got bytes"):
        CharTokenizer.fit(b"abc")  # type: ignore[arg-type]


def test_char_constructor_errors():
    with pytest.raises(ValueError, match="single characters, got 'ab'"):
        CharTokenizer(["ab"])
    with pytest.raises(ValueError, match="distinct, 'a'"):
        CharTokenizer(["a", "a"])
    with pytest.raises(ValueError, match="at least one character"):
        CharTokenizer([])
    with pytest.raises(ValueError, match="unknown='\\?' is not one of the chars"):
        CharTokenizer(["a"], unknown="?")


def test_encode_rejects_non_str():
    with pytest.raises(TypeError, match="encode takes a str, got bytes"):
        CharTokenizer.fit("ab").encode(b"ab")  # type: ignore[arg-type]


@settings(max_examples=60, deadline=None, database=None)
@given(text=unicode_text)
def test_char_roundtrip_arbitrary_unicode(text):
    tok = CharTokenizer.fit("abc" + text)  # a superset, so "" works too
    ids = tok.encode(text)
    assert len(ids) == len(text)
    assert tok.decode(ids) == text


# --- decode argument checks (shared by both tokenizers) --------------------------------


@pytest.mark.parametrize("make", [lambda: CharTokenizer.fit("abc"), lambda: BPETokenizer()])
def test_decode_errors(make):
    tok = make()
    V = tok.vocab_size
    with pytest.raises(ValueError, match=f"token id {V} at position 1 is out of range.*{V - 1}"):
        tok.decode([0, V])
    with pytest.raises(ValueError, match="token id -1 at position 0 is out of range"):
        tok.decode([-1])
    with pytest.raises(TypeError, match=r"integers, got 1\.5 at position 0"):
        tok.decode([1.5])
    with pytest.raises(TypeError, match="integers, got True"):
        tok.decode([True])
    with pytest.raises(TypeError, match=r"dtype torch\.float32"):
        tok.decode(torch.zeros(3))
    with pytest.raises(ValueError, match=r"shape \(N,\), got shape \(2, 3\)"):
        tok.decode(torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(TypeError, match=r"got str 'abc'.*use encode"):
        tok.decode("abc")  # type: ignore[arg-type]
    assert tok.decode([]) == ""


# --- BPETokenizer --------------------------------------------------------------------


def test_bpe_merges_by_hand():
    # "aaabdaaabac" is one chunk. Pair counts: aa 4, ab 2, others 1 -> (a, a) = 256.
    # Then [256 a b d 256 a b a c]: (256, a) and (a, b) both 2, the lower pair wins:
    # (97, 98) = 257. Then (256, 257) = 258 twice. Then every pair once: (97, 99) = 259.
    tok = BPETokenizer.train("aaabdaaabac", 260)
    assert tok.merges == [(97, 97), (97, 98), (256, 257), (97, 99)]
    assert tok.encode("aaabdaaabac") == [258, 100, 258, 259]
    assert tok.token_bytes(258) == b"aaab"
    assert tok.vocab[259] == b"ac"
    assert tok.vocab_size == 260
    assert repr(tok) == "BPETokenizer(vocab_size=260, merges=4)"
    assert BPETokenizer.train("aaabdaaabac", 260) == tok  # deterministic


def test_bpe_stops_early_when_nothing_is_left_to_merge():
    tok = BPETokenizer.train("ab ab", 1000)
    # Chunks "ab" and " ab": merges (a, b) then (" ", ab), then every chunk is one token.
    assert tok.merges == [(97, 98), (32, 256)]
    assert tok.vocab_size == 258
    assert BPETokenizer.train("", 300).vocab_size == 256


def test_bpe_merges_do_not_cross_chunks():
    tok = BPETokenizer.train("a.a.a.a.a.a", 300)  # chunks "a" and "." alternate
    assert all(tok.token_bytes(i) in {b"a", b"."} for i in tok.encode("a.a."))
    assert tok.vocab_size == 256


def test_bpe_learns_words_and_encodes_unseen_text(bpe):
    learned = {bpe.token_bytes(i) for i in range(256, bpe.vocab_size)}
    assert {b" the", b" fox", b" dog"} <= learned
    assert bpe.vocab_size == 300 and len(bpe.merges) == 44
    unseen = "Zebra ♞ 42"  # never seen in training: falls back to bytes
    assert bpe.decode(bpe.encode(unseen)) == unseen


def test_bpe_decode_partial_character_is_replaced(bpe):
    ids = bpe.encode("🙂")  # four UTF-8 bytes
    assert bpe.decode(ids) == "🙂"
    assert bpe.decode([0xF0]) == "\ufffd"  # half a character: U+FFFD, not an exception


def test_bpe_train_errors():
    with pytest.raises(ValueError, match="vocab_size=255 is too small: it must be at least 256"):
        BPETokenizer.train("abc", 255)
    with pytest.raises(TypeError, match=r"vocab_size must be an int, got 300\.0"):
        BPETokenizer.train("abc", 300.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="takes a str"):
        BPETokenizer.train(None, 300)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"'\\ud800' at position 1 is a lone surrogate"):
        BPETokenizer.train("a\ud800", 300)


def test_bpe_encode_lone_surrogate_error(bpe):
    with pytest.raises(ValueError, match="position 2 is a lone surrogate"):
        bpe.encode("ab\udfff")


def test_bpe_constructor_validates_merges():
    assert BPETokenizer([(97, 98), (256, 99)]).token_bytes(257) == b"abc"
    with pytest.raises(ValueError, match=r"merge 0 is \[256, 1\].*0 \.\. 255"):
        BPETokenizer([(256, 1)])
    with pytest.raises(ValueError, match="distinct"):
        BPETokenizer([(97, 98), (97, 98)])


def test_token_bytes_out_of_range(bpe):
    with pytest.raises(ValueError, match="token id 300 at position 0 is out of range"):
        bpe.token_bytes(300)


def test_bpe_verbose_prints_merges(capsys):
    BPETokenizer.train("aaabdaaabac", 257, verbose=True)
    assert capsys.readouterr().out == "merge 1: b'aa' -> 256 (4 times)\n"
    BPETokenizer.train("aaabdaaabac", 257)
    assert capsys.readouterr().out == ""


@settings(max_examples=80, deadline=None, database=None)
@given(text=unicode_text)
def test_bpe_roundtrip_arbitrary_unicode(bpe, text):
    ids = bpe.encode(text)
    assert all(0 <= i < bpe.vocab_size for i in ids)
    assert len(ids) <= len(text.encode("utf-8"))
    assert bpe.decode(ids) == text


@settings(max_examples=60, deadline=None, database=None)
@given(text=awkward_text)
def test_both_roundtrip_emoji_and_combining_marks(bpe, text):
    assert bpe.decode(bpe.encode(text)) == text
    char = CharTokenizer.fit(text + "x")
    assert char.decode(char.encode(text)) == text


@settings(max_examples=25, deadline=None, database=None)
@given(text=st.text(alphabet="ab c", max_size=30))
def test_bpe_trained_on_text_roundtrips_it(text):
    tok = BPETokenizer.train(text, 270)
    assert tok.decode(tok.encode(text)) == text


def test_bpe_compresses_the_default_corpus(corpus):
    tok = BPETokenizer.train(corpus, 512)
    ids = tok.encode(corpus)
    n_bytes = len(corpus.encode("utf-8"))
    assert tok.vocab_size == 512
    assert len(ids) < 0.6 * n_bytes  # measured about 2.15 bytes per token
    assert tok.decode(ids) == corpus


# --- saving and loading ---------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda: CharTokenizer.fit(TRAIN_TEXT),
        lambda: CharTokenizer.fit("abc", unknown="�"),
        lambda: BPETokenizer.train(TRAIN_TEXT, 300),
    ],
)
def test_save_load_roundtrip(tmp_path, make):
    tok = make()
    path = tok.save(tmp_path / "tok.json")
    assert path == tmp_path / "tok.json"
    json.loads(path.read_text(encoding="utf-8"))  # plain JSON
    for loaded in (load_tokenizer(path), Tokenizer.load(path), type(tok).load(str(path))):
        assert type(loaded) is type(tok)
        assert loaded == tok
        assert loaded.encode(TRAIN_TEXT[:150]) == tok.encode(TRAIN_TEXT[:150])
    d = tok.to_dict()
    assert d["kind"] == type(tok).__name__ and d["version"] == 1
    assert json.loads(json.dumps(d)) == d  # JSON-safe
    assert Tokenizer.from_dict(d) == tok
    assert type(tok).from_dict(d) == tok


def test_equality():
    assert CharTokenizer.fit("ab") == CharTokenizer.fit("ba")
    assert CharTokenizer.fit("ab") != CharTokenizer.fit("abc")
    assert CharTokenizer.fit("ab") != BPETokenizer()
    assert CharTokenizer.fit("ab") != "ab"


def test_load_other_kind_errors(tmp_path):
    path = BPETokenizer().save(tmp_path / "bpe.json")
    with pytest.raises(
        ValueError, match=r"bpe\.json' holds a BPETokenizer, not a CharTokenizer; use Tokenizer"
    ):
        CharTokenizer.load(path)
    with pytest.raises(ValueError, match="dict holds a CharTokenizer, not a BPETokenizer"):
        BPETokenizer.from_dict(CharTokenizer.fit("a").to_dict())


def test_load_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.json' does not exist.*save"):
        load_tokenizer(tmp_path / "nope.json")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x80\x81 not text", "is not valid JSON"),
        (b"{not json", "is not valid JSON"),
        (b"[1, 2]", "is not a saved tokenizer: expected a JSON object with a 'kind'"),
        (b'{"merges": []}', "expected a JSON object with a 'kind' field"),
        (b'{"kind": "WordTokenizer", "version": 1}', "unknown tokenizer kind 'WordTokenizer'"),
        (b'{"kind": "BPETokenizer", "version": 2, "merges": []}', "format version 2.*reads"),
        (b'{"kind": "BPETokenizer", "merges": []}', "format version None"),
        (b'{"kind": "BPETokenizer", "version": 1}', "not a valid BPETokenizer: missing field"),
        (b'{"kind": "BPETokenizer", "version": 1, "merges": [[1]]}', r"\[int, int\] pairs"),
        (b'{"kind": "BPETokenizer", "version": 1, "merges": [[97, 300]]}', "merge 0 is"),
        (b'{"kind": "BPETokenizer", "version": 1, "merges": [[97, 1.0]]}', "pairs"),
        (b'{"kind": "CharTokenizer", "version": 1}', "missing field 'chars'"),
        (b'{"kind": "CharTokenizer", "version": 1, "chars": "ab"}', "'chars' must be a list"),
        (b'{"kind": "CharTokenizer", "version": 1, "chars": ["a", 7]}', "single characters"),
        (b'{"kind": "CharTokenizer", "version": 1, "chars": ["a"], "unknown": "?"}', "unknown"),
    ],
)
def test_load_corrupt_or_foreign_file(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=r"bad\.json") as info:
        Tokenizer.load(path)
    assert info.match(message)
    assert info.match("re-create|tokenizer.save|known kinds|slmbook version")


def test_from_dict_rejects_non_dict():
    with pytest.raises(ValueError, match="dict is not a saved tokenizer"):
        Tokenizer.from_dict("CharTokenizer")  # type: ignore[arg-type]


def test_base_class_is_abstract():
    with pytest.raises(TypeError, match="abstract"):
        Tokenizer()  # type: ignore[abstract]

    class Half(Tokenizer):  # encode and the saving hooks are missing
        vocab_size = 3

        def decode(self, ids):
            return ""

    try:
        with pytest.raises(TypeError, match=r"abstract.*encode"):
            Half()
        assert issubclass(CharTokenizer, Tokenizer) and issubclass(BPETokenizer, Tokenizer)
        assert {"encode", "decode", "vocab_size", "_fields", "_from_fields"} == set(
            Tokenizer.__abstractmethods__
        )
    finally:
        Tokenizer._KINDS.pop("Half", None)  # keep the registry of kinds as it was


# --- bounded chunks --------------------------------------------------------------------


def test_split_chunks_bounds_long_runs_and_concatenates_back(corpus):
    text = "x" * 1000 + " " + "7" * 600 + "!" * 300 + " " * 700 + "é" * 257 + " end"
    chunks = split_chunks(text)
    assert "".join(chunks) == text
    assert max(len(c) for c in chunks) == MAX_CHUNK == 256
    assert [len(c) for c in chunks[:4]] == [256, 256, 256, 232]  # the x-run, cut every 256
    ordinary = tokenizers_module._SPLIT.findall(corpus)
    assert max(len(c) for c in ordinary) < MAX_CHUNK
    assert split_chunks(corpus) == ordinary  # text with spaces: chunks as before


def test_bpe_text_without_whitespace_encodes_piece_by_piece(corpus):
    tok = BPETokenizer.train(corpus[:50_000] + "ab" * 2000, 400)  # one 4000-char run
    assert max(len(tok.token_bytes(i)) for i in range(tok.vocab_size)) <= MAX_CHUNK
    g = torch.Generator().manual_seed(0)
    letters = "".join("etaoinshrdlu"[i] for i in torch.randint(12, (20_000,), generator=g))
    ids = tok.encode(letters)
    assert tok.decode(ids) == letters
    # the same ids as encoding each 256-character piece alone: linear work in the length
    pieces = [letters[i : i + MAX_CHUNK] for i in range(0, len(letters), MAX_CHUNK)]
    assert ids == [i for piece in pieces for i in tok.encode(piece)]
    assert len(ids) < 0.9 * len(letters)  # merges were applied inside the long run


def _reference_encode_chunk(tok: BPETokenizer, chunk: str) -> list[int]:
    """The textbook loop: merge the lowest-ranked pair everywhere, until none is left."""
    ids = list(chunk.encode("utf-8"))
    while len(ids) >= 2:
        pair = min(pairwise(ids), key=lambda p: tok._ranks.get(p, float("inf")))
        if pair not in tok._ranks:
            break
        ids = tokenizers_module._merge(ids, pair, 256 + tok._ranks[pair])
    return ids


@pytest.fixture(scope="module")
def repetitive_bpe() -> BPETokenizer:
    return BPETokenizer.train("aaaa abab aaab baaa " * 5 + "ab" * 50, 280)


@settings(max_examples=200, deadline=None, database=None)
@given(text=st.text(alphabet="ab ", max_size=80) | unicode_text)
def test_encode_chunk_matches_the_textbook_merge_loop(bpe, repetitive_bpe, text):
    for tok in (bpe, repetitive_bpe):
        for chunk in [*split_chunks(text), text.replace(" ", "")]:
            assert tok._encode_chunk(chunk) == _reference_encode_chunk(tok, chunk)


def test_docstring_examples():
    result = doctest.testmod(tokenizers_module, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 4 and result.failed == 0
