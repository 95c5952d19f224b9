"""slmbook.devices: TrainConfig.device and dtype, autocast and the gradient scaler.

Covers: the names accepted and the errors for others (in TrainConfig and on
the command line); "auto" is CUDA when present, else the CPU; asking for a
missing CUDA or MPS says so; bfloat16 autocast on the CPU computes the
products in bfloat16 and trains to nearly the float32 losses, weights staying
float32; float16 on the CPU warns (no scaler there); train() moves the model
to the device asked for; the dtype is stored in checkpoints and a changed
dtype on resume is reported as inexact; scripts/gpu_check.sh parses.
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
    with pytest.raises(ValueError, match=r"dtype must be one of \['float32', 'bfloat16', 'float16'\]"):
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
