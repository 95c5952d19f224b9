"""Tests for the pretrained checkpoint shipped in slmbook/assets.

``slmbook.checkpoints.pretrained()`` must load the model and its tokenizer
with no download, and the model must still reach the validation loss recorded
when ``scripts/train_pretrained.py`` wrote it (the ``check`` entry of
``pretrained.json``: the same measurement, repeated), so that a change to the
model code can never leave a stale file behind silently. The metadata inside
the checkpoint and in the JSON file agree. A missing or damaged file gives a
clear error that says how to regenerate it.
"""

from __future__ import annotations

import importlib.resources
import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from slmbook import checkpoints
from slmbook.data import corpus_hash, load_corpus, train_val_split
from slmbook.losses import estimate_loss
from slmbook.model import GPT

ASSETS = importlib.resources.files("slmbook") / "assets"


@pytest.fixture(scope="module")
def meta() -> dict:
    return json.loads((ASSETS / "pretrained.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def shipped():
    return checkpoints.pretrained()


def test_loads_model_and_tokenizer(shipped, meta):
    model, tokenizer = shipped
    assert isinstance(model, GPT) and not model.training
    assert model.config.vocab_size == tokenizer.vocab_size == meta["config"]["vocab_size"]
    assert {k: getattr(model.config, k) for k in meta["config"]} == meta["config"]
    assert sum(p.numel() for p in model.parameters()) == meta["n_params"]
    text = "def f(x):\n    return x + 1"
    assert tokenizer.decode(tokenizer.encode(text)) == text


def test_metadata_inside_and_beside_agree(meta):
    with importlib.resources.as_file(ASSETS / "pretrained.pt") as path:
        ckpt = checkpoints.load(path)
        size = Path(path).stat().st_size
    for key in ("seed", "config", "steps", "val_loss", "check", "corpus_hash", "command"):
        assert ckpt.meta[key] == meta[key], key
    assert ckpt.step == meta["steps"]
    assert size == meta["file_bytes"] and size < 5_000_000


def test_clearly_trained(meta):
    assert meta["val_loss"] < 1.5 < math.log(meta["config"]["vocab_size"])
    assert meta["train_chars"] + meta["val_chars"] == meta["corpus_chars"]


def test_still_reaches_recorded_validation_loss(shipped, meta):
    model, tokenizer = shipped
    check = meta["check"]
    text = load_corpus()
    _, val_text = train_val_split(text, meta["val_fraction"])
    ids = torch.tensor(tokenizer.encode(val_text[: check["chars"]]), dtype=torch.long)
    loss = estimate_loss(model, ids, batch_size=check["batch_size"], block_size=check["block_size"])
    # Same text, same weights, same computation: equal up to floating-point noise. On another
    # Python patch version the corpus (hence the text measured) differs; then only a band holds.
    tolerance = 1e-3 if corpus_hash(text) == meta["corpus_hash"] else 0.15
    assert abs(loss - check["loss"]) < tolerance, (loss, check["loss"])


@pytest.fixture
def fake_assets(monkeypatch, tmp_path):
    """Point ``pretrained()`` at ``tmp_path/assets`` instead of the installed package data."""
    files = importlib.resources.files

    def fake_files(anchor):
        return tmp_path if anchor == "slmbook" else files(anchor)

    monkeypatch.setattr(importlib.resources, "files", fake_files)
    (tmp_path / "assets").mkdir()
    return tmp_path / "assets"


def test_missing_file(fake_assets):
    with pytest.raises(FileNotFoundError, match=r"pretrained checkpoint .* is missing.*train_pretrained\.py"):
        checkpoints.pretrained()


def test_truncated_file(fake_assets):
    with importlib.resources.as_file(ASSETS / "pretrained.pt") as path:
        data = Path(path).read_bytes()
    (fake_assets / "pretrained.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"damaged.*truncated, corrupt.*train_pretrained\.py"):
        checkpoints.pretrained()


def test_garbage_file(fake_assets):
    (fake_assets / "pretrained.pt").write_bytes(b"not a checkpoint at all" * 100)
    with pytest.raises(ValueError, match="pretrained checkpoint is damaged"):
        checkpoints.pretrained()


def test_foreign_torch_file(fake_assets):
    torch.save({"weights": torch.zeros(3)}, fake_assets / "pretrained.pt")
    with pytest.raises(ValueError, match="not an slmbook checkpoint"):
        checkpoints.pretrained()


def test_copy_of_real_file_loads(fake_assets):
    with importlib.resources.as_file(ASSETS / "pretrained.pt") as path:
        shutil.copy(path, fake_assets / "pretrained.pt")
    model, _ = checkpoints.pretrained()  # the fixture really redirects the lookup
    assert isinstance(model, GPT)
