"""slmbook.cli: the ``slmbook`` command (``train``, ``generate``, ``ask`` and ``search``).

Covers: ``--help`` documents every option; unknown options, bad values and
missing or corrupt checkpoints give a message and exit status 2, never a
traceback; ``train`` then ``generate`` work end to end on a tiny corpus, in
process and (marked slow) in a subprocess through ``python -m slmbook``.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import os
import signal
import subprocess
import sys

import pytest

from slmbook import checkpoints
from slmbook.cli import CLI_DEFAULTS, build_parser, main
from slmbook.training import TrainConfig

TINY = ["--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--block-size", "8",
        "--batch-size", "4", "--eval-batches", "2", "--no-progress",
        "--dtype", "float32"]  # not the command's "auto": runs compared here must not depend on timing


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "tiny.txt"
    path.write_text("the cat sat on the mat.\nthe dog ran to the door.\n" * 20, encoding="utf-8")
    return path


def test_help_explains_every_option(capsys):
    parser = build_parser()
    for command in ("train", "generate", "ask", "search"):
        with pytest.raises(SystemExit, match=r"^0$") as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0
        text = capsys.readouterr().out
        sub = parser._subparsers._group_actions[0].choices[command]
        for action in sub._actions:
            assert action.help, f"{command} {action.option_strings} has no help"
            for option in action.option_strings:
                assert option in text


def test_every_train_config_field_is_an_option_with_the_same_default():
    sub = build_parser()._subparsers._group_actions[0].choices["train"]
    actions = {a.dest: a for a in sub._actions}
    for f in dataclasses.fields(TrainConfig):
        assert f.name in actions, f"TrainConfig.{f.name} has no option"
        expected = CLI_DEFAULTS.get(f.name, f.default)
        assert actions[f.name].default == expected, f.name
        if f.name != "progress":
            assert f.metadata["help"].split()[0] in actions[f.name].help or f.name == "block_size"
    # the deliberate differences, each with its reason in cli.py; nothing else differs
    assert sorted(CLI_DEFAULTS) == ["block_size", "checkpoint_every", "checkpoint_path",
                                    "device", "dtype", "lr", "max_steps"]
    args = sub.parse_args([])
    assert {a: getattr(args, a) for a in ("eval_every", "seed", "lr")} == {
        "eval_every": TrainConfig.eval_every, "seed": TrainConfig.seed, "lr": CLI_DEFAULTS["lr"]}
    assert sub.parse_args(["--grad-clip", "none", "--steps", "7"]).grad_clip is None


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["train", "--bogus"], "unrecognized arguments: --bogus"),
        (["train", "--steps", "0"], "--max-steps: max_steps must be a positive int, got 0"),
        (["train", "--lr", "fast"], "expected a number, got 'fast'"),
        (["train", "--schedule", "linear"], "--schedule: unknown schedule 'linear'"),
        (["train", "--eval-batches", "x"], "expected an integer or none, got 'x'"),
        (["generate"], "the following arguments are required: --checkpoint"),
        (["generate", "--checkpoint", "nowhere.pt"], "checkpoint 'nowhere.pt' does not exist"),
        (["train", "--resume", "nowhere.pt"], "checkpoint 'nowhere.pt' does not exist"),
        (["fly"], "invalid choice: 'fly'"),
        (["generate", "--checkpoint", "x.pt", "--seed", str(2**64)], "expected a seed below 2**64"),
        (["generate", "--checkpoint", "x.pt", "--temperature", "inf"], "positive finite number"),
    ],
)
def test_bad_arguments_exit_2_with_a_message(argv, match, capsys):
    with pytest.raises(SystemExit, match=r"^2$") as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert match in err and "Traceback" not in err


def test_corrupt_checkpoint_and_bad_corpus_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    assert main(["generate", "--checkpoint", str(bad)]) == 2
    assert "cannot load checkpoint" in capsys.readouterr().err
    assert main(["train", "--corpus", str(tmp_path / "none.txt"), *TINY]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_train_then_generate_in_process(corpus, tmp_path, capsys):
    out = tmp_path / "run" / "model.pt"
    code = main(["train", "--corpus", str(corpus), "--steps", "6", "--eval-every", "3",
                 "--sample-length", "10", "--out", str(out), *TINY])
    assert code == 0
    printed = capsys.readouterr().out
    assert "step      6: train loss" in printed and "bits/char" in printed
    ckpt = checkpoints.load(out)
    assert ckpt.step == 6 and ckpt.meta["corpus"] == str(corpus)
    assert main(["generate", "--checkpoint", str(out), "--prompt", "the",
                 "--max-new-tokens", "12", "--seed", "1"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("the") and len(text.rstrip("\n")) >= 15


def test_resume_continues_a_run(corpus, tmp_path, capsys):
    out = tmp_path / "model.pt"
    common = ["--corpus", str(corpus), "--eval-every", "3", "--sample-length", "0", "--out",
              str(out), *TINY]
    assert main(["train", "--steps", "3", *common]) == 0
    assert main(["train", "--steps", "6", "--resume", str(out), *common]) == 0
    assert "stopped (max_steps) after 6 steps" in capsys.readouterr().out
    assert checkpoints.load(out).step == 6


@pytest.mark.slow
def test_python_m_slmbook_end_to_end_in_a_subprocess(corpus, tmp_path):
    out = tmp_path / "model.pt"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [sys.executable, "-m", "slmbook", "train", "--corpus", str(corpus), "--steps", "4",
         "--eval-every", "2", "--sample-length", "0", "--out", str(out), *TINY],
        capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "stopped (max_steps) after 4 steps" in run.stdout
    run = subprocess.run(
        [sys.executable, "-m", "slmbook", "generate", "--checkpoint", str(out), "--prompt",
         "the", "--max-new-tokens", "8"], capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("the")


# ----------------------------------------------------------------------------- nothing lost


def _train(corpus, out, *extra):
    return main(["train", "--corpus", str(corpus), "--steps", "3", "--eval-every", "3",
                 "--sample-length", "0", "--out", str(out), *TINY, *extra])


def test_out_never_overwrites_the_corpus_or_another_file(corpus, capsys):
    before = corpus.read_text(encoding="utf-8")
    assert _train(corpus, corpus) == 2
    err = capsys.readouterr().err
    assert "tiny.txt' exists and is not an slmbook checkpoint" in err and "Traceback" not in err
    assert corpus.read_text(encoding="utf-8") == before
    assert _train(corpus, corpus, "--force") == 2  # --force is for checkpoints only
    assert corpus.read_text(encoding="utf-8") == before


def test_out_overwrites_a_checkpoint_only_when_resuming_it_or_forced(corpus, tmp_path, capsys):
    out = tmp_path / "model.pt"
    assert _train(corpus, out) == 0
    first = out.read_bytes()
    capsys.readouterr()
    assert _train(corpus, out) == 2
    assert "already holds a checkpoint; continue it with --resume" in capsys.readouterr().err
    assert out.read_bytes() == first
    assert _train(corpus, out, "--force") == 0 and out.read_bytes() != first
    assert main(["train", "--resume", str(out), "--steps", "5", *TINY]) == 0
    assert checkpoints.load(out).step == 5


def test_step_pattern_prints_a_resume_path_that_exists(corpus, tmp_path, capsys):
    pattern = tmp_path / "runs" / "r-{step}.pt"
    assert _train(corpus, pattern, "--checkpoint-every", "2") == 0
    printed = capsys.readouterr().out
    assert f"checkpoint: {tmp_path / 'runs' / 'r-3.pt'}" in printed
    assert checkpoints.load(tmp_path / "runs" / "r-3.pt").step == 3


def test_sigterm_saves_and_exits_143(corpus, tmp_path, monkeypatch, capsys):
    from slmbook import cli

    monkeypatch.setattr(cli, "_report", lambda h, m: signal.raise_signal(signal.SIGTERM))
    out = tmp_path / "model.pt"
    assert main(["train", "--corpus", str(corpus), "--steps", "8", "--eval-every", "2",
                 "--sample-length", "0", "--out", str(out), *TINY]) == 143
    err = capsys.readouterr().err
    assert f"terminated: resume with --resume {out}" in err and "Traceback" not in err
    assert checkpoints.load(out).step == 2


def test_second_ctrl_c_during_the_save_exits_130_without_traceback(corpus, tmp_path, monkeypatch,
                                                                   capsys):
    import torch

    out = tmp_path / "model.pt"
    assert _train(corpus, out) == 0
    before = out.read_bytes()
    real_save = torch.save

    def interrupted_twice(obj, f):
        real_save(obj, f)
        signal.raise_signal(signal.SIGINT)  # the first stops at the end of the step
        signal.raise_signal(signal.SIGINT)  # the second, during the save, stops at once

    monkeypatch.setattr(torch, "save", interrupted_twice)
    assert _train(corpus, out, "--force") == 130
    err = capsys.readouterr().err
    assert "interrupted again: stopped at once" in err and "Traceback" not in err
    assert out.read_bytes() == before  # the old checkpoint is intact, no temp file left
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "tiny.txt") == ["model.pt"]


# ----------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--lr", "inf"], "--lr: lr must be a finite number, got inf"),
        (["--lr", "1e30"], "--lr: lr must be at most 10.0, got 1e+30"),
        (["--seed", str(2**64)], "--seed: seed must be below 2**64"),
        (["--sample-length", "-5"], "expected an integer >= 0 (0 for none), got -5"),
    ],
)
def test_bad_train_values_exit_2_before_training(corpus, tmp_path, extra, match, capsys):
    with pytest.raises(SystemExit, match="2") as exit_info:
        _train(corpus, tmp_path / "model.pt", *extra)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert match in err and "Traceback" not in err
    assert not (tmp_path / "model.pt").exists()


def test_directories_where_files_are_expected(corpus, tmp_path, capsys):
    for argv in (["generate", "--checkpoint", str(tmp_path)], ["train", "--resume", str(tmp_path)]):
        with pytest.raises(SystemExit, match="2") as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        assert "is a directory; give the checkpoint file in it" in capsys.readouterr().err
    assert main(["train", "--corpus", str(tmp_path), *TINY]) == 2
    assert "--corpus: " in (err := capsys.readouterr().err) and "is a directory" in err
    assert _train(corpus, tmp_path) == 2
    assert "is a directory; give a file name" in capsys.readouterr().err


def test_default_prompt_missing_from_the_vocabulary(tmp_path, capsys):
    flat = tmp_path / "flat.txt"
    flat.write_text("the cat sat on the mat. " * 40, encoding="utf-8")  # no newline anywhere
    out = tmp_path / "flat.pt"
    assert _train(flat, out) == 0
    capsys.readouterr()
    assert main(["generate", "--checkpoint", str(out), "--max-new-tokens", "5"]) == 2
    err = capsys.readouterr().err
    assert "the default prompt, a newline, is not in this model's vocabulary" in err
    assert "--prompt" in err and "Traceback" not in err
    assert main(["generate", "--checkpoint", str(out), "--prompt", "é"]) == 2
    assert "--prompt: character 'é'" in capsys.readouterr().err


def test_resume_keeps_stored_options_and_refuses_another_corpus(corpus, tmp_path, capsys):
    out = tmp_path / "model.pt"
    assert _train(corpus, out, "--lr", "2e-3", "--schedule", "constant", "--warmup-steps", "0") == 0
    assert main(["train", "--resume", str(out), "--steps", "5", "--lr", "1e-3"]) == 0
    captured = capsys.readouterr()
    assert "note: resuming" in captured.err and "lr=0.001" in captured.err
    ckpt = checkpoints.load(out)
    assert ckpt.step == 5 and ckpt.history["lr"][-1] == pytest.approx(1e-3)
    assert ckpt.config["n_embd"] == 16  # the stored model, not the default --n-embd
    other = tmp_path / "other.txt"
    other.write_text("a different text, a different hash.\n" * 30, encoding="utf-8")
    assert main(["train", "--resume", str(out), "--steps", "7", "--corpus", str(other)]) == 2
    assert "another corpus" in capsys.readouterr().err


def test_resume_with_a_malformed_stored_training_config(corpus, tmp_path, capsys):
    import torch

    out = tmp_path / "model.pt"
    assert _train(corpus, out) == 0
    payload = torch.load(out, weights_only=True)
    payload["training_state"]["config"]["lr"] = "fast"
    torch.save(payload, out)
    capsys.readouterr()
    assert main(["train", "--resume", str(out), "--steps", "5"]) == 2
    err = capsys.readouterr().err
    assert "holds a malformed training configuration (lr must be a finite number" in err


@pytest.mark.slow
def test_a_real_sigterm_to_a_subprocess_saves_and_exits_143(corpus, tmp_path):
    out = tmp_path / "model.pt"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.Popen(
        [sys.executable, "-m", "slmbook", "train", "--corpus", str(corpus), "--steps", "100000",
         "--eval-every", "1", "--sample-length", "0", "--out", str(out), *TINY],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert "step      1:" in run.stdout.readline() + run.stdout.readline()  # training runs
    run.send_signal(signal.SIGTERM)  # what `timeout`, docker or Slurm send
    _, stderr = run.communicate(timeout=120)
    assert run.returncode == 143, stderr
    assert "terminated: resume with --resume" in stderr and "Traceback" not in stderr
    assert checkpoints.load(out).step >= 1


def test_epochs_alone_replaces_the_default_steps(corpus, tmp_path, capsys):
    out = tmp_path / "model.pt"
    assert main(["train", "--corpus", str(corpus), "--epochs", "0.5", "--eval-every", "100",
                 "--sample-length", "0", "--out", str(out), *TINY]) == 0
    steps = checkpoints.load(out).step
    assert 1 <= steps < 100 and f"after {steps} steps" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="2"):
        main(["train", "--epochs", "1", "--steps", "5", *TINY])
    assert "give exactly one of max_steps and epochs" in capsys.readouterr().err


# ----------------------------------------------------------------------------- ask


@pytest.fixture
def tiny_reader(monkeypatch):
    """A tiny untrained reader in place of the shipped one (the pipeline is what is tested)."""
    import torch

    from slmbook import rag
    from slmbook.reader import ReaderTokenizer, make_reader

    torch.manual_seed(0)
    model = make_reader(n_layer=1, n_head=1, n_embd=8).eval()
    monkeypatch.setattr(rag, "pretrained_reader", lambda: (model, ReaderTokenizer()))
    return model


QUESTION = "Which city does Zukra Tasror live in?"  # a held-out person of make_world(0)


def test_ask_answers_and_shows_the_passages_read(tiny_reader, capsys):
    assert main(["ask", QUESTION, "--show-passages"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("answer: ") and "[3]" in out and "Zukra Tasror lives in" in out
    assert main(["ask", QUESTION, "--k", "0", "--show-passages"]) == 0  # closed book
    out = capsys.readouterr().out
    assert out.startswith("answer: ") and "[1]" not in out


def test_ask_abstains_below_min_score(tiny_reader, capsys):
    assert main(["ask", "Which city does Nobody Atall live in?", "--min-score", "0.99"]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == "I don't know"
    assert "abstained: the best passage scores" in captured.err


@pytest.mark.parametrize(("argv", "match"), [
    (["ask", "   "], "the question is empty"),
    (["ask", QUESTION, "--k", "-1"], "expected an integer >= 0"),
    (["ask", QUESTION, "--min-score", "nan"], "expected a finite number"),
])
def test_ask_bad_arguments_exit_2(tiny_reader, argv, match, capsys):
    with pytest.raises(SystemExit, match="2"):
        main(argv)
    assert match in capsys.readouterr().err


def test_ask_outside_the_reader_alphabet_exits_2(tiny_reader, capsys):
    assert main(["ask", "Where does Zoë live?"]) == 2
    err = capsys.readouterr().err
    assert "slmbook ask: error: character 'ë'" in err and "Traceback" not in err


def test_ask_without_the_shipped_reader_says_how_to_make_it(monkeypatch, tmp_path, capsys):
    from slmbook import rag

    monkeypatch.setattr(rag.importlib.resources, "files", lambda package: tmp_path)
    assert main(["ask", QUESTION]) == 2
    err = capsys.readouterr().err
    assert "slmbook ask: error: the shipped reader" in err and "is missing" in err
    assert "scripts/train_reader.py" in err and "Traceback" not in err


READER = importlib.resources.files("slmbook") / "assets" / "reader.pt"


@pytest.mark.slow
@pytest.mark.skipif(not READER.is_file(), reason="the shipped reader is not trained yet")
def test_ask_with_the_shipped_reader(capsys):
    assert main(["ask", QUESTION]) == 0
    assert capsys.readouterr().out.strip() == "Quito"


# ----------------------------------------------------------------------------- search


@pytest.fixture
def docs(tmp_path):
    root = tmp_path / "notes"
    (root / "sub").mkdir(parents=True)
    (root / "clip.txt").write_text("Gradient clipping caps the norm of the gradient.\n",
                                   encoding="utf-8")
    (root / "sub" / "adam.md").write_text("AdamW keeps two moments per parameter.\n",
                                          encoding="utf-8")
    (root / ".hidden.txt").write_text("gradient gradient gradient", encoding="utf-8")
    return root


def test_search_finds_files_in_folders_recursively(docs, capsys):
    assert main(["search", "--docs", str(docs), "--k", "1", "how many moments does AdamW keep"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"1. {docs / 'sub' / 'adam.md'}#0  score=") and "two moments" in out
    assert main(["search", "--docs", str(docs), "gradient"]) == 0
    out = capsys.readouterr().out
    assert "clip.txt#0" in out and ".hidden" not in out


def test_search_skips_binary_and_non_utf8_files_with_a_note(docs, capsys):
    (docs / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n\0\0gradient")
    (docs / "latin1.txt").write_bytes("caf\xe9 gradient".encode("latin-1"))
    assert main(["search", "--docs", str(docs), "gradient"]) == 0
    captured = capsys.readouterr()
    assert "image.png': a binary file" in captured.err
    assert "latin1.txt': not UTF-8 text" in captured.err and "clip.txt" in captured.out


def test_search_index_is_saved_reused_and_refitted_when_files_change(docs, tmp_path, capsys):
    index = tmp_path / "notes.idx"
    argv = ["search", "--docs", str(docs), "--index", str(index), "gradient"]
    assert main(argv) == 0
    assert "saved the index of 2 files (2 passages)" in capsys.readouterr().err
    assert main(argv) == 0
    assert "reusing the index" in capsys.readouterr().err
    (docs / "clip.txt").write_text("Clipping is now about something else.", encoding="utf-8")
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "the files changed since" in err and "saved the index" in err
    assert main(["search", "--index", str(index), "moments"]) == 0  # the index alone
    assert "adam.md#0" in capsys.readouterr().out


def test_search_never_overwrites_a_file_that_is_not_an_index(docs, tmp_path, capsys):
    other = tmp_path / "thesis.txt"
    other.write_text("my thesis", encoding="utf-8")
    assert main(["search", "--docs", str(docs), "--index", str(other), "gradient"]) == 2
    assert "is not a search index" in capsys.readouterr().err
    assert other.read_text(encoding="utf-8") == "my thesis"
    fake = tmp_path / "fake.zip"
    with __import__("zipfile").ZipFile(fake, "w") as z:
        z.writestr("a.txt", "zip, not an index")
    before = fake.read_bytes()
    assert main(["search", "--index", str(fake), "gradient"]) == 2
    assert "--index: " in capsys.readouterr().err and fake.read_bytes() == before


@pytest.mark.parametrize(("make", "match"), [
    (lambda root: ["--docs", str(root / "missing")], "does not exist"),
    (lambda root: ["--docs", str(root / "empty")], "holds no files"),
    (lambda root: ["--docs", str(root / "blob.bin")], "no readable text"),
    (lambda root: [], "give --docs PATH"),
    (lambda root: ["--index", str(root / "none.idx")], "none.idx' does not exist"),
    (lambda root: ["--index", str(root)], "is a folder"),
])
def test_search_bad_input_exits_2_with_a_message(tmp_path, make, match, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "blob.bin").write_bytes(b"\0\1\2")
    assert main(["search", *make(tmp_path), "query"]) == 2
    err = capsys.readouterr().err
    assert match in err and "Traceback" not in err


def test_search_empty_query_exits_2(docs, capsys):
    with pytest.raises(SystemExit, match="2"):
        main(["search", "--docs", str(docs), " "])
    assert "the query is empty" in capsys.readouterr().err
