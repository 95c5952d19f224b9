"""Tests of slmbook.compression: bits per character of zlib, bz2 and lzma on known strings,
the conditional (given the training text) versus alone definitions, and the error paths."""

from __future__ import annotations

import bz2
import lzma
import random
import zlib

import pytest

from slmbook.compression import compressed_size, compressor_bits_per_char


def test_known_string_matches_the_definition():
    train = "the quick brown fox jumps over the lazy dog. " * 40
    val = "the lazy dog sleeps; the quick brown fox jumps. " * 5
    result = compressor_bits_per_char(train, val)
    assert set(result) == {"zlib", "bz2", "lzma"}
    for name, compress in {
        "zlib": lambda b: zlib.compress(b, 9),
        "bz2": lambda b: bz2.compress(b, 9),
        "lzma": lambda b: lzma.compress(b, preset=9),
    }.items():
        size = lambda s, c=compress: len(c(s.encode()))  # noqa: E731
        assert result[name]["alone"] == pytest.approx(size(val) * 8 / len(val))
        expected = (size(train + val) - size(train)) * 8 / len(val)
        assert result[name]["conditional"] == pytest.approx(expected)
        # having read the training text makes the validation text cheaper
        assert result[name]["conditional"] < result[name]["alone"]


def test_one_repeated_character_costs_almost_nothing():
    # Exact sizes vary with the zlib build, so bound them: a header and a few
    # back-references, far below 8 bits per character.
    size = compressed_size("a" * 1000, "zlib")
    assert 8 <= size <= 24
    result = compressor_bits_per_char("", "a" * 1000, methods=("zlib",))
    assert result["zlib"]["alone"] == pytest.approx(size * 8 / 1000)
    assert result["zlib"]["conditional"] == pytest.approx(size * 8 / 1000 - 8 * 8 / 1000)


def test_random_text_is_incompressible_and_repeats_are_free():
    rng = random.Random(0)
    alphabet = "".join(chr(c) for c in range(33, 33 + 64))  # 64 symbols: 6 bits each
    text = "".join(rng.choice(alphabet) for _ in range(20_000))
    result = compressor_bits_per_char("", text, methods=("lzma",))
    assert 6.0 <= result["lzma"]["alone"] <= 6.6
    repeat = compressor_bits_per_char(text, text, methods=("lzma",))
    assert repeat["lzma"]["conditional"] < 0.1  # the validation text was already seen


def test_lzma_extreme_is_opt_in():
    text = "the quick brown fox jumps over the lazy dog. " * 20
    result = compressor_bits_per_char("", text, methods=("lzma-extreme",))
    expected = len(lzma.compress(text.encode(), preset=9 | lzma.PRESET_EXTREME)) * 8 / len(text)
    assert result["lzma-extreme"]["alone"] == pytest.approx(expected)


def test_counts_characters_not_bytes():
    val = "é" * 10_000  # 2 UTF-8 bytes per character
    result = compressor_bits_per_char("", val, methods=("bz2",))
    assert result["bz2"]["alone"] == pytest.approx(compressed_size(val, "bz2") * 8 / 10_000)


def test_errors():
    with pytest.raises(ValueError, match=r"val_text is empty"):
        compressor_bits_per_char("abc", "")
    with pytest.raises(ValueError, match=r"unknown compressor\(s\) \['gzip'\]"):
        compressor_bits_per_char("abc", "abc", methods=("zlib", "gzip"))
    with pytest.raises(TypeError, match=r"must be str, got str and list"):
        compressor_bits_per_char("abc", [1, 2])
    with pytest.raises(ValueError, match=r"unknown compressor 'zip'"):
        compressed_size("abc", "zip")
