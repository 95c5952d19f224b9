"""slmbook.cli: the ``slmbook`` command (``train`` and ``generate``).

Covers: ``--help`` documents every option; unknown options, bad values and
missing or corrupt checkpoints give a message and exit status 2, never a
traceback; ``train`` then ``generate`` work end to end on a tiny corpus, in
process and (marked slow) in a subprocess through ``python -m slmbook``.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys

import pytest

from slmbook import checkpoints
from slmbook.cli import CLI_DEFAULTS, build_parser, main
from slmbook.training import TrainConfig

TINY = ["--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--block-size", "8",
        "--batch-size", "4", "--eval-batches", "2", "--no-progress"]


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "tiny.txt"
    path.write_text("the cat sat on the mat.\nthe dog ran to the door.\n" * 20, encoding="utf-8")
    return path


def test_help_explains_every_option(capsys):
    parser = build_parser()
    for command in ("train", "generate"):
        with pytest.raises(SystemExit) as exit_info:
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
                                    "max_steps"]
    args = sub.parse_args([])
    assert {a: getattr(args, a) for a in ("eval_every", "seed", "lr")} == {
        "eval_every": TrainConfig.eval_every, "seed": TrainConfig.seed, "lr": TrainConfig.lr}
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
    with pytest.raises(SystemExit) as exit_info:
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
