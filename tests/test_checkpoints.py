"""slmbook.checkpoints: round trips, atomic writes, safe loading and clear errors.

Covers: save/load of model, optimizer, scheduler, tokenizer, RNG states and
metadata; a crash during a save leaves the previous file intact; a pickle that
would run code is refused and never executed; truncated, corrupt and foreign
files, config mismatches and unwritable folders give clear errors;
``pretrained()`` explains how to regenerate a missing or damaged file.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import pickle
import random
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from slmbook import checkpoints
from slmbook.model import GPT, GPTConfig
from slmbook.schedules import make_scheduler
from slmbook.tokenizers import CharTokenizer
from slmbook.training import make_optimizer

TEXT = "the cat sat on the mat. the dog ran to the door.\n" * 4


def _tiny(**kw) -> tuple[GPT, CharTokenizer]:
    tok = CharTokenizer.fit(TEXT)
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=tok.vocab_size, block_size=8, n_layer=1, n_head=2, n_embd=16)
    for k, v in kw.items():
        setattr(config, k, v)
    return GPT(config), tok


def _trained_optimizer(model: GPT):
    opt = make_optimizer(model, lr=1e-2)
    sched = make_scheduler(opt, "cosine", warmup_steps=2, max_steps=10)
    x = torch.randint(0, model.config.vocab_size, (2, 8))
    for _ in range(3):
        model(x).logsumexp(-1).mean().backward()
        opt.step()
        opt.zero_grad()
        sched.step()
    return opt, sched


def test_round_trip_restores_everything(tmp_path):
    model, tok = _tiny()
    opt, sched = _trained_optimizer(model)
    path = checkpoints.save(tmp_path / "sub" / "c.pt", model, opt, scheduler=sched, step=3,
                            tokenizer=tok, corpus_hash="abc123", note=np.float64(0.5))
    ckpt = checkpoints.load(path)
    assert ckpt.step == 3 and ckpt.model_class == "GPT"
    assert ckpt.meta["corpus_hash"] == "abc123" and ckpt.meta["note"] == 0.5
    assert ckpt.meta["slmbook_version"] and ckpt.meta["torch_version"] == str(torch.__version__)
    assert ckpt.tokenizer == tok
    rebuilt = ckpt.build_model()
    assert not rebuilt.training
    x = torch.randint(0, tok.vocab_size, (2, 8))
    model.eval()
    torch.testing.assert_close(rebuilt(x), model(x), rtol=0, atol=0)
    model2, _ = _tiny()
    opt2 = make_optimizer(model2, lr=1e-2)
    sched2 = make_scheduler(opt2, "cosine", warmup_steps=2, max_steps=10)
    ckpt.restore(model2, opt2, sched2)
    assert sched2.last_epoch == sched.last_epoch
    assert opt2.param_groups[0]["lr"] == pytest.approx(opt.param_groups[0]["lr"], rel=0, abs=0)
    for p, q in zip(opt.state.values(), opt2.state.values(), strict=True):
        torch.testing.assert_close(p["exp_avg"], q["exp_avg"], rtol=0, atol=0)


def test_rng_states_round_trip():
    g = torch.Generator().manual_seed(5)
    states = checkpoints.capture_rng_states(g)
    expected = (random.random(), np.random.rand(), torch.rand(3), torch.rand(2, generator=g))  # noqa: NPY002
    random.seed(99)
    np.random.seed(99)  # noqa: NPY002
    torch.manual_seed(99)
    g.manual_seed(99)
    checkpoints.restore_rng_states(states, g)
    again = (random.random(), np.random.rand(), torch.rand(3), torch.rand(2, generator=g))  # noqa: NPY002
    assert again[:2] == expected[:2]
    torch.testing.assert_close(again[2], expected[2], rtol=0, atol=0)
    torch.testing.assert_close(again[3], expected[3], rtol=0, atol=0)


@pytest.mark.parametrize("where", ["torch.save", "os.replace"])
def test_crash_during_save_keeps_previous_checkpoint(tmp_path, monkeypatch, where):
    model, _ = _tiny()
    path = checkpoints.save(tmp_path / "c.pt", model, step=1)
    before = path.read_bytes()

    def crash(*args, **kwargs):
        if where == "torch.save":  # half a file written, then the "power cut"
            args[1].write(b"partial garbage")
        raise OSError("simulated crash")

    monkeypatch.setattr(torch if where == "torch.save" else os, where.split(".")[1], crash)
    with torch.no_grad():
        model.lm_head.weight.add_(1.0)
    with pytest.raises(OSError, match="simulated crash"):
        checkpoints.save(path, model, step=2)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pt"]  # no temp file left over
    assert checkpoints.load(path).step == 1


class _Evil:
    """Unpickling this would create a file: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("writer", ["torch", "pickle"])
def test_malicious_pickle_is_refused_not_executed(tmp_path, writer):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    payload = {"format": checkpoints.FORMAT, "model": _Evil(marker)}
    if writer == "torch":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(ValueError, match=r"evil\.pt.*NOT loaded"):
        checkpoints.load(path)
    assert not marker.exists()


def test_truncated_corrupt_and_foreign_files(tmp_path):
    model, _ = _tiny()
    good = checkpoints.save(tmp_path / "good.pt", model).read_bytes()
    (tmp_path / "cut.pt").write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError, match=r"cut\.pt.*truncated, corrupt"):
        checkpoints.load(tmp_path / "cut.pt")
    (tmp_path / "noise.pt").write_bytes(os.urandom(300))
    with pytest.raises(ValueError, match=r"noise\.pt"):
        checkpoints.load(tmp_path / "noise.pt")
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.pt"):
        checkpoints.load(tmp_path / "empty.pt")
    torch.save({"weight": torch.zeros(2)}, tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match=r"foreign\.pt.*not an slmbook checkpoint"):
        checkpoints.load(tmp_path / "foreign.pt")
    with pytest.raises(FileNotFoundError, match=r"missing\.pt.*does not exist"):
        checkpoints.load(tmp_path / "missing.pt")


def test_config_mismatch_is_a_clear_error(tmp_path):
    model, _ = _tiny()
    ckpt = checkpoints.load(checkpoints.save(tmp_path / "c.pt", model))
    other = GPT(GPTConfig(vocab_size=model.config.vocab_size, block_size=8, n_layer=1,
                          n_head=2, n_embd=32))
    with pytest.raises(ValueError, match=r"different configuration.*n_embd.*\(16, 32\)"):
        ckpt.restore(other)


def test_unwritable_folder_and_unsafe_metadata(tmp_path):
    model, _ = _tiny()
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(OSError, match="not writable"):
        checkpoints.save(blocker / "c.pt", model)
    with pytest.raises(IsADirectoryError, match="is a directory"):
        checkpoints.save(tmp_path, model)
    with pytest.raises(TypeError, match=r"\['where'\] is a PosixPath"):
        checkpoints.save(tmp_path / "c.pt", model, where=tmp_path)
    assert not (tmp_path / "c.pt").exists()


def test_pretrained_missing_or_damaged_says_how_to_regenerate(tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoints.importlib.resources, "files", lambda pkg: tmp_path)
    with pytest.raises(FileNotFoundError, match=r"scripts/train_pretrained\.py"):
        checkpoints.pretrained()
    (tmp_path / "assets").mkdir()
    (tmp_path / "assets" / "pretrained.pt").write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"damaged.*scripts/train_pretrained\.py"):
        checkpoints.pretrained()
    model, tok = _tiny()
    checkpoints.save(tmp_path / "assets" / "pretrained.pt", model, tokenizer=tok, force=True)
    loaded, loaded_tok = checkpoints.pretrained()
    assert loaded_tok == tok and loaded.config == model.config


# ----------------------------------------------------------------------------- nothing lost


def test_refuses_to_overwrite_a_file_that_is_not_a_checkpoint(tmp_path):
    model, _ = _tiny()
    corpus = tmp_path / "my.txt"
    corpus.write_text("precious text\n")
    with pytest.raises(FileExistsError, match=r"my\.txt' exists and is not an slmbook checkpoint"):
        checkpoints.save(corpus, model)
    assert corpus.read_text() == "precious text\n"
    (tmp_path / "empty.pt").write_bytes(b"")  # nothing to lose: an empty placeholder is fine
    assert checkpoints.load(checkpoints.save(tmp_path / "empty.pt", model, step=1)).step == 1
    assert checkpoints.is_checkpoint(tmp_path / "empty.pt") and not checkpoints.is_checkpoint(corpus)
    checkpoints.save(corpus, model, force=True)  # explicitly asked for
    assert checkpoints.is_checkpoint(corpus)


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_stale_temp_files_of_dead_processes_are_removed(tmp_path):
    model, _ = _tiny()
    dead = tmp_path / f".c.pt.{_dead_pid()}.0123abcd.tmp"
    alive = tmp_path / f".c.pt.{os.getppid()}.89abcdef.tmp"  # a running process is still writing
    other = tmp_path / f".d.pt.{_dead_pid()}.0123abcd.tmp"  # another checkpoint's: not ours to judge
    for p in (dead, alive, other):
        p.write_bytes(b"x" * 100)
    checkpoints.save(tmp_path / "c.pt", model)
    assert not dead.exists() and alive.exists() and other.exists()


def test_overwriting_keeps_file_mode_and_writes_through_symlinks(tmp_path):
    model, _ = _tiny()
    path = checkpoints.save(tmp_path / "c.pt", model, step=1)
    path.chmod(0o600)
    checkpoints.save(path, model, step=2)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and checkpoints.load(path).step == 2
    link = tmp_path / "latest.pt"
    link.symlink_to(path)
    assert checkpoints.save(link, model, step=3) == path
    assert link.is_symlink() and checkpoints.load(path).step == 3
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_long_valid_file_names_are_accepted(tmp_path):
    model, _ = _tiny()
    path = tmp_path / ("a" * 250 + ".pt")  # 253 bytes: valid; temporary names must fit too
    assert checkpoints.load(checkpoints.save(path, model, step=4)).step == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_out_of_space_message_names_the_path(tmp_path, monkeypatch):
    model, _ = _tiny()
    path = checkpoints.save(tmp_path / "c.pt", model, step=1)

    def full_disk(obj, f):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError, match=r"cannot write checkpoint '.*c\.pt': No space left on device"):
        checkpoints.save(path, model, step=2)
    monkeypatch.undo()
    assert checkpoints.load(path).step == 1 and sorted(p.name for p in tmp_path.iterdir()) == ["c.pt"]


def test_a_directory_is_not_a_checkpoint_path(tmp_path):
    model, _ = _tiny()
    with pytest.raises(IsADirectoryError, match="is a directory; give a file name"):
        checkpoints.save(tmp_path, model)
    with pytest.raises(IsADirectoryError, match="is a directory"):
        checkpoints.load(tmp_path)


# ----------------------------------------------------------------------------- hostile files


def _payload(tmp_path, **changes) -> Path:
    model, tok = _tiny()
    path = checkpoints.save(tmp_path / "c.pt", model, tokenizer=tok)
    payload = torch.load(path, weights_only=True)
    payload.update(changes)
    torch.save(payload, tmp_path / "edited.pt")
    return tmp_path / "edited.pt"


def test_huge_claimed_vocabulary_is_refused_before_building_the_model(tmp_path, monkeypatch):
    model, _ = _tiny()
    config = {**dataclasses.asdict(model.config), "vocab_size": 30_000_000}
    path = _payload(tmp_path, config=config, tokenizer=None)
    built = []
    monkeypatch.setattr(torch.nn.Embedding, "reset_parameters",
                        lambda self: built.append((self.num_embeddings, self.weight.device.type)))
    with pytest.raises(ValueError, match=r"do not have the shapes its configuration implies.*30000000"):
        checkpoints.load(path).build_model()
    assert (30_000_000, "meta") in built and all(d == "meta" for _, d in built)  # nothing allocated


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"format_version": "one"}, "malformed format version 'one'"),
        ({"format_version": 99}, "format version 99, newer than"),
        ({"step": "7"}, "field 'step' is a str, expected int"),
        ({"config": [1, 2]}, "field 'config' is a list"),
        ({"meta": None}, "field 'meta' is a NoneType"),
        ({"config": {"vocab_size": "lots"}}, "invalid model configuration"),
        ({"tokenizer": {"kind": "nonsense"}}, "malformed tokenizer"),
    ],
)
def test_malformed_stored_fields_are_clear_errors(tmp_path, changes, match):
    path = _payload(tmp_path, **changes)
    with pytest.raises(ValueError, match=match):
        checkpoints.load(path).build_model()


def test_nan_weights_and_tokenizer_mismatch_are_refused(tmp_path):
    model, tok = _tiny()
    with torch.no_grad():
        model.lm_head.weight[0, 0] = float("nan")
    path = checkpoints.save(tmp_path / "nan.pt", model, tokenizer=tok)
    with pytest.raises(ValueError, match=r"NaN or infinite weights \(in \['.*'\]\).*earlier checkpoint"):
        checkpoints.load(path).build_model()
    model, _ = _tiny()
    other = CharTokenizer.fit("abc")
    path = checkpoints.save(tmp_path / "mismatch.pt", model, tokenizer=other)
    with pytest.raises(ValueError, match=r"tokenizer has 3 tokens but its model's vocabulary is \d+"):
        checkpoints.load(path)
