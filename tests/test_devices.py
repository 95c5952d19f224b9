"""slmbook.devices: TrainConfig.device and dtype, autocast and the gradient scaler.

Covers: the names accepted and the errors for others (in TrainConfig and on
the command line); "auto" is CUDA when present, else the CPU; asking for a
missing CUDA or MPS says so; bfloat16 autocast on the CPU computes the
products in bfloat16 and trains to nearly the float32 losses, weights staying
float32; float16 on the CPU warns (no scaler there); train() moves the model
to the device asked for; the dtype is stored in checkpoints and a changed
dtype on resume is reported as inexact; scripts/gpu_check.sh parses.
dtype="auto": bfloat16 only where the device has bfloat16 instructions and a
probe measures it faster; the probe changes nothing (an auto run equals a run
in the precision it chose, bit for bit, dropout included); a resumed auto run
keeps its precision; the command defaults to it and reports the choice.
"""

from __future__ import annotations

import pytest
import torch

from slmbook import checkpoints, devices
from slmbook.cli import main
from slmbook.model import GPT, GPTConfig
from slmbook.training import TrainConfig, train

IDS = torch.randint(0, 11, (2000,), generator=torch.Generator().manual_seed(0))
FAST = {"batch_size": 4, "eval_batches": 2, "progress": False, "eval_every": 10}


def _model() -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=11, block_size=16, n_layer=1, n_head=2, n_embd=32))


def test_config_accepts_the_names_and_refuses_others():
    assert TrainConfig(max_steps=1).device is None and TrainConfig(max_steps=1).dtype == "float32"
    for name in devices.DEVICES:
        assert TrainConfig(max_steps=1, device=name).device == name
    with pytest.raises(ValueError, match=r"device must be one of \['auto', 'cpu', 'cuda', 'mps'\]"):
        TrainConfig(max_steps=1, device="gpu")
    with pytest.raises(ValueError, match=r"dtype must be one of \['float32', 'bfloat16', 'float16', 'auto'\]"):
        TrainConfig(max_steps=1, dtype="fp8")


def test_resolve_device():
    assert devices.resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert devices.resolve_device("auto").type == expected


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_asking_for_a_missing_gpu_says_so():
    with pytest.raises(ValueError, match="torch sees no CUDA GPU here"):
        devices.resolve_device("cuda")
    if not torch.backends.mps.is_available():
        with pytest.raises(ValueError, match="no Apple GPU available"):
            devices.resolve_device("mps")


def test_bfloat16_autocast_on_the_cpu():
    cpu = torch.device("cpu")
    with devices.autocast(cpu, "bfloat16"):
        assert (torch.ones(2, 3) @ torch.ones(3, 2)).dtype == torch.bfloat16
    with devices.autocast(cpu, "float32"):
        assert (torch.ones(2, 3) @ torch.ones(3, 2)).dtype == torch.float32
    assert devices.grad_scaler(cpu, "bfloat16") is None
    with pytest.warns(UserWarning, match="without a gradient scaler"):
        assert devices.grad_scaler(cpu, "float16") is None


def test_bfloat16_trains_close_to_float32_with_float32_weights():
    h32 = train(_model(), IDS, IDS, max_steps=20, **FAST)
    model = _model()
    h16 = train(model, IDS, IDS, max_steps=20, dtype="bfloat16", **FAST)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert h16.eval_val_loss[-1] == pytest.approx(h32.eval_val_loss[-1], abs=0.05)
    assert h16.eval_val_loss[-1] != h32.eval_val_loss[-1]  # the products really were bf16


def test_train_moves_the_model_to_the_device_asked_for(tmp_path):
    model = _model()
    train(model, IDS, None, max_steps=2, device="cpu", checkpoint_path=tmp_path / "m.pt", **FAST)
    assert next(model.parameters()).device.type == "cpu"
    stored = checkpoints.load(tmp_path / "m.pt").training_state["config"]
    assert stored["device"] == "cpu" and stored["dtype"] == "float32"
    with pytest.warns(UserWarning, match=r"dtype='bfloat16' \(was 'float32'\): applied"):
        train(_model(), IDS, None, max_steps=2, device="cpu", dtype="bfloat16",
              checkpoint_path=tmp_path / "m.pt", resume_from=tmp_path / "m.pt", **FAST)


def test_command_line_device_and_dtype(tmp_path, capsys):
    corpus = tmp_path / "tiny.txt"
    corpus.write_text("the cat sat on the mat.\n" * 40, encoding="utf-8")
    tiny = ["train", "--corpus", str(corpus), "--n-layer", "1", "--n-head", "2", "--n-embd",
            "16", "--block-size", "8", "--batch-size", "4", "--eval-batches", "2",
            "--no-progress", "--sample-length", "0", "--steps", "3"]
    assert main([*tiny, "--dtype", "bfloat16", "--device", "cpu",
                 "--out", str(tmp_path / "a.pt")]) == 0
    assert checkpoints.load(tmp_path / "a.pt").training_state["config"]["dtype"] == "bfloat16"
    capsys.readouterr()
    for flag, value in (("--dtype", "half"), ("--device", "tpu")):
        with pytest.raises(SystemExit, match="2"):
            main([*tiny, flag, value, "--out", str(tmp_path / "b.pt")])
        assert f"{flag}: {flag[2:]} must be one of" in capsys.readouterr().err


def test_gpu_check_script_parses_and_names_every_setting():
    import subprocess
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "scripts" / "gpu_check.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)  # syntax only: no GPU needed here
    text = script.read_text(encoding="utf-8")
    for setting in ("cpu-float32", "cpu-ddp-2-gloo", "cuda-$dtype", "float32 bfloat16 float16",
                    "cuda-ddp-$NGPU-nccl", "tokens/s", "val loss", "date -u"):
        assert setting in text, setting


def _dropout_model() -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=11, block_size=16, n_layer=1, n_head=2, n_embd=32,
                         dropout=0.1))


def test_choose_dtype_keeps_bfloat16_only_where_it_measures_faster(monkeypatch):
    cpu, calls = torch.device("cpu"), []

    def timer(times):
        def seconds(dtype):
            calls.append(dtype)
            return times[dtype]
        return seconds

    monkeypatch.setattr(devices, "has_native_bfloat16", lambda device: True)
    assert devices.choose_dtype(cpu, timer({"float32": 2.0, "bfloat16": 1.0})) == ("bfloat16", 2.0)
    assert calls == ["float32", "bfloat16"] * 4  # a warm-up, then 3 timed turns each
    assert devices.choose_dtype(cpu, timer({"float32": 1.0, "bfloat16": 0.99})) == (
        "float32", pytest.approx(1 / 0.99))  # under AUTO_SPEEDUP: not worth the rounding
    assert devices.choose_dtype(cpu, timer({"float32": 1.0, "bfloat16": 2.0}))[0] == "float32"
    summed = devices.choose_dtype(cpu, timer({"float32": 2.0, "bfloat16": 1.0}),
                                  combine=lambda ts: [ts[0], ts[1] * 3])  # other ranks' times
    assert summed == ("float32", pytest.approx(2 / 3))
    monkeypatch.setattr(devices, "has_native_bfloat16", lambda device: False)
    calls.clear()
    assert devices.choose_dtype(cpu, timer({"float32": 2.0, "bfloat16": 1.0})) == ("float32", None)
    assert calls == []  # nothing to measure: no bfloat16 instructions


def test_native_bfloat16_follows_the_cpu_flags(monkeypatch):
    cpu = torch.device("cpu")
    for avx512_bf16, amx in ((False, False), (True, False), (False, True)):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda v=avx512_bf16: v)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda v=amx: v)
        assert devices.has_native_bfloat16(cpu) is (avx512_bf16 or amx)
    assert devices.has_native_bfloat16(torch.device("meta")) is False


@pytest.mark.parametrize("chosen", ["float32", "bfloat16"])
def test_auto_trains_exactly_like_the_precision_it_chose(monkeypatch, tmp_path, chosen):
    """The probe changes nothing: weights, gradients, random states, batches all as without it."""
    monkeypatch.setattr(devices, "has_native_bfloat16", lambda device: True)
    monkeypatch.setattr(devices, "AUTO_SPEEDUP", 0.0 if chosen == "bfloat16" else float("inf"))
    auto_model = _dropout_model()  # seeds torch: dropout draws the same masks in both runs
    h_auto = train(auto_model, IDS, IDS, max_steps=12, dtype="auto",
                   checkpoint_path=tmp_path / "auto.pt", **FAST)
    plain_model = _dropout_model()
    h_plain = train(plain_model, IDS, IDS, max_steps=12, dtype=chosen, **FAST)
    assert h_auto.dtype == h_plain.dtype == chosen
    assert h_auto.train_loss == h_plain.train_loss  # bit for bit
    for a, b in zip(auto_model.parameters(), plain_model.parameters(), strict=True):
        assert torch.equal(a, b)
    assert checkpoints.load(tmp_path / "auto.pt").training_state["config"]["dtype"] == chosen


def test_auto_resumes_in_the_precision_it_chose(monkeypatch, tmp_path, recwarn):
    monkeypatch.setattr(devices, "has_native_bfloat16", lambda device: True)
    monkeypatch.setattr(devices, "AUTO_SPEEDUP", 0.0)  # the first run chooses bfloat16
    path, explicit = tmp_path / "run.pt", tmp_path / "explicit.pt"
    train(_model(), IDS, IDS, max_steps=6, dtype="auto", checkpoint_path=path, **FAST)
    monkeypatch.setattr(devices, "AUTO_SPEEDUP", float("inf"))  # now it would choose float32
    h = train(_model(), IDS, IDS, max_steps=12, dtype="auto", checkpoint_path=path,
              resume_from=path, **FAST)
    assert h.dtype == "bfloat16" and len(h.steps) == 12
    assert not [w for w in recwarn if "no longer an exact continuation" in str(w.message)]
    train(_model(), IDS, IDS, max_steps=6, dtype="bfloat16", checkpoint_path=explicit, **FAST)
    same = train(_model(), IDS, IDS, max_steps=12, dtype="bfloat16", checkpoint_path=explicit,
                 resume_from=explicit, **FAST)
    assert h.train_loss == same.train_loss  # the run bfloat16 would have been


def test_auto_without_bfloat16_instructions_is_float32_without_a_probe(monkeypatch):
    monkeypatch.setattr(devices, "has_native_bfloat16", lambda device: False)
    probed = []
    monkeypatch.setattr("slmbook._run.Run._probe_seconds", lambda self, d: probed.append(d) or 1.0)
    assert train(_model(), IDS, IDS, max_steps=2, dtype="auto", **FAST).dtype == "float32"
    assert probed == []
    with pytest.raises(ValueError, match=r"dtype must be one of \['float32', 'bfloat16', "
                                         r"'float16'\], got 'auto'"):
        devices.autocast(torch.device("cpu"), "auto")  # resolved before the forward pass


def test_command_line_defaults_to_auto_and_reports_the_precision(tmp_path, capsys):
    corpus = tmp_path / "tiny.txt"
    corpus.write_text("the cat sat on the mat.\n" * 40, encoding="utf-8")
    assert main(["train", "--corpus", str(corpus), "--n-layer", "1", "--n-head", "2",
                 "--n-embd", "16", "--block-size", "8", "--batch-size", "4", "--eval-batches",
                 "2", "--no-progress", "--sample-length", "0", "--steps", "3",
                 "--out", str(tmp_path / "a.pt")]) == 0
    stored = checkpoints.load(tmp_path / "a.pt").training_state["config"]["dtype"]
    assert stored in ("float32", "bfloat16")
    assert f"tokens/s in {stored}; checkpoint" in capsys.readouterr().out
