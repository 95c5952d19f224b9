"""slmbook.distributed: train() and `slmbook train` under torchrun, on CPU with gloo.

Covers, with 2 real processes started by the test (torchrun, bounded in time,
the whole process group killed on failure): the weights after 20 steps equal
those of 1 process with the same global batch (to float32 rounding); rank 0
alone prints and writes; resuming under DDP equals the uninterrupted DDP run;
a DDP checkpoint resumes in one process and a one-process checkpoint under
DDP; train() itself with a custom loss on padded dataclass batches, gradient
accumulation, clipping and early stopping gives the same result in 1 and 2
processes; SIGTERM to torchrun, and Ctrl-C to its whole process group (each
worker gets it twice), stop every rank with one checkpoint. Without
processes: shard() on tuples and dataclasses, the global batch that W does
not divide, agree() and all_sums() in one process. dtype="auto" decides alike on
every rank (from the summed probe times).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from slmbook import checkpoints
from slmbook import distributed as ddp
from slmbook.cli import main

TEXT = "the cat sat on the mat.\nthe dog ran to the door.\n" * 20
TINY = ["--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--block-size", "8",
        "--batch-size", "4", "--eval-batches", "2", "--no-progress", "--sample-length", "0",
        "--eval-every", "10", "--steps", "20", "--checkpoint-every", "10",
        # train()'s rate, not the command's 4e-3: the float32 rounding that 1 and 2 processes
        # differ by grows with the step size, and the bounds below are for this one
        "--lr", "1e-3",
        "--dtype", "float32"]  # not "auto", which could choose differently for 1 and 2 processes
TIMEOUT = 240  # seconds for one torchrun launch, far above the ~15 s it takes on 2 busy cores


def max_difference(a: Path, b: Path) -> float:
    sa, sb = checkpoints.load(a).model_state, checkpoints.load(b).model_state
    assert sa.keys() == sb.keys()  # no "module." prefix: a DDP checkpoint is a plain one
    return max((sa[k].float() - sb[k].float()).abs().max().item() for k in sa)


def torchrun(*argv: str) -> subprocess.CompletedProcess:
    run = ddp.launch(list(argv), nproc=2, timeout=TIMEOUT)
    assert run.returncode == 0, run.stderr[-3000:]
    return run


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same 20-step run in 1 process and in 2, with checkpoints at steps 10 and 20."""
    root = tmp_path_factory.mktemp("ddp")
    corpus = root / "tiny.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    args = ["train", "--corpus", str(corpus), *TINY]
    assert main([*args, "--out", str(root / "one-{step}.pt")]) == 0
    two = torchrun("-m", "slmbook", *args, "--out", str(root / "two-{step}.pt"))
    return root, two


@pytest.mark.slow
def test_two_processes_equal_one_with_the_same_global_batch(runs):
    root, two = runs
    assert max_difference(root / "one-20.pt", root / "two-20.pt") < 1e-5
    one, dist = checkpoints.load(root / "one-20.pt"), checkpoints.load(root / "two-20.pt")
    assert dist.training_state["world_size"] == 2 and dist.history["tokens"][-1] == 20 * 4 * 8
    assert dist.history["eval_val_loss"] == pytest.approx(one.history["eval_val_loss"], abs=1e-5)
    # rank 0 alone prints (and writes: one file per save, no partial ones)
    assert two.stdout.count("corpus: ") == 1 and two.stdout.count("step     20:") == 1
    assert sorted(p.name for p in root.glob("two-*")) == ["two-10.pt", "two-20.pt"]
    dist.build_model()  # a DDP checkpoint is an ordinary one


@pytest.mark.slow
def test_resume_under_ddp_equals_the_uninterrupted_ddp_run(runs, tmp_path):
    root, _ = runs
    shutil.copy(root / "two-10.pt", tmp_path / "two-10.pt")
    torchrun("-m", "slmbook", "train", "--resume", str(tmp_path / "two-10.pt"),
             "--out", str(tmp_path / "two-{step}.pt"))
    assert max_difference(tmp_path / "two-20.pt", root / "two-20.pt") == 0.0


@pytest.mark.slow
def test_checkpoints_cross_between_one_and_two_processes(runs, tmp_path):
    root, _ = runs
    shutil.copy(root / "two-10.pt", tmp_path / "a-10.pt")  # DDP -> 1 process
    assert main(["train", "--resume", str(tmp_path / "a-10.pt"), "--out",
                 str(tmp_path / "a-{step}.pt")]) == 0
    assert max_difference(tmp_path / "a-20.pt", root / "one-20.pt") < 1e-5
    shutil.copy(root / "one-10.pt", tmp_path / "b-10.pt")  # 1 process -> DDP
    torchrun("-m", "slmbook", "train", "--resume", str(tmp_path / "b-10.pt"),
             "--out", str(tmp_path / "b-{step}.pt"))
    assert max_difference(tmp_path / "b-20.pt", root / "two-20.pt") < 1e-5


WORKER = '''
import json, os, sys
from dataclasses import dataclass
import torch, torch.nn.functional as F
from slmbook.callbacks import EarlyStopping
from slmbook.model import GPT, GPTConfig
from slmbook.training import train

torch.set_num_threads(1)

@dataclass
class Padded:  # variable-length rows padded to the longest, scored where mask is True
    ids: torch.Tensor
    mask: torch.Tensor

    @property
    def num_tokens(self):  # the targets the loss averages over: weighs each rank's shard
        return int(self.mask[:, 1:].sum())

def source(g):
    lengths = torch.randint(4, 12, (8,), generator=g)
    ids = torch.randint(1, 10, (8, 12), generator=g)
    mask = torch.arange(12)[None, :] < lengths[:, None]
    return Padded(ids * mask, mask)

def loss_fn(model, b):
    logits = model(b.ids[:, :-1])
    keep = b.mask[:, 1:]
    return F.cross_entropy(logits[keep], b.ids[:, 1:][keep])

torch.manual_seed(0)
model = GPT(GPTConfig(vocab_size=10, block_size=12, n_layer=1, n_head=2, n_embd=16))
seen = []
history = train(model, source, source, loss_fn=loss_fn, max_steps=20, eval_every=5,
                eval_batches=2, grad_accum_steps=2, grad_clip=0.05, lr=1e-3, progress=False,
                early_stopping=EarlyStopping(patience=1, min_delta=1.0, restore_best=False),
                callbacks=[lambda h, m: seen.append(h.eval_steps[-1])])
if os.environ.get("RANK", "0") == "0":  # rank 0 alone writes
    torch.save(model.state_dict(), sys.argv[1])
    print(json.dumps({"steps": history.steps[-1], "stop": history.stop_reason, "seen": seen,
                      "val": history.eval_val_loss}))
'''


@pytest.mark.slow
def test_train_with_a_custom_loss_accumulation_clipping_and_early_stopping(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER, encoding="utf-8")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, str(script), str(tmp_path / "one.pt")],
                         capture_output=True, text=True, timeout=TIMEOUT, env=env, check=True)
    two = torchrun(str(script), str(tmp_path / "two.pt"))
    a, b = json.loads(one.stdout), json.loads(two.stdout)  # one line: rank 0 alone printed
    assert a["stop"] == b["stop"] == "early_stopping" and a["steps"] == b["steps"] == 10
    assert a["seen"] == b["seen"] == [5, 10]  # callbacks ran on rank 0 only, once each
    assert b["val"] == pytest.approx(a["val"], abs=1e-5)
    wa, wb = torch.load(tmp_path / "one.pt"), torch.load(tmp_path / "two.pt")
    # 6e-8 measured; averaging the ranks' losses unweighted by their tokens gave 3e-3
    assert max((wa[k] - wb[k]).abs().max().item() for k in wa) < 1e-6


@pytest.mark.slow
@pytest.mark.parametrize(("send", "reason"), [
    (lambda proc: proc.send_signal(signal.SIGTERM), "terminated"),  # Slurm, docker, `timeout`
    (lambda proc: os.killpg(proc.pid, signal.SIGINT), "interrupted"),  # Ctrl-C in a terminal
])
def test_a_signal_stops_every_rank_with_one_checkpoint(tmp_path, send, reason):
    corpus = tmp_path / "tiny.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    out = tmp_path / "run.pt"
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
            "-m", "slmbook", "train", "--corpus", str(corpus), *TINY, "--steps", "100000",
            "--eval-every", "1", "--out", str(out)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, start_new_session=True)
    try:
        assert "corpus: " in proc.stdout.readline()
        assert "step      1:" in proc.stdout.readline()  # both ranks are training
        send(proc)  # torchrun passes it on: a Ctrl-C reaches every worker twice
        stdout, stderr = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert stdout.count(f"stopped ({reason})") == 1, stderr[-3000:]
    assert stderr.count(f"{reason}: resume with --resume") == 1
    assert "interrupted again" not in stderr
    step = checkpoints.load(out).step
    assert step >= 1 and [p.name for p in tmp_path.glob("*.pt")] == ["run.pt"]
    assert f"after {step} steps" in stdout  # every rank stopped at the same step


# ----------------------------------------------------------------------------- in one process


@dataclass
class Rows:
    ids: torch.Tensor  # (B, T)
    lengths: torch.Tensor  # (B,)
    name: str = "batch"


def test_shard_cuts_every_batch_tensor_and_keeps_the_rest():
    x, y = torch.arange(12).reshape(4, 3), torch.arange(12).reshape(4, 3) + 1
    ctx = ddp.Context(rank=1, world_size=2)
    sx, sy = ddp.shard((x, y), ctx)
    assert torch.equal(sx, x[2:]) and torch.equal(sy, y[2:])
    rows = ddp.shard(Rows(x, torch.tensor([3, 2, 1, 3])), ctx)
    assert isinstance(rows, Rows) and rows.lengths.tolist() == [1, 3] and rows.name == "batch"
    got = ddp.shard({"x": x, "scale": torch.tensor(2.0)}, ddp.Context(rank=0, world_size=4))
    assert torch.equal(got["x"], x[:1]) and got["scale"].item() == 2.0
    assert ddp.shard((x, y), ddp.Context()) == (x, y)  # one process: the batch itself
    with pytest.raises(ValueError, match="4 rows cannot be split evenly across 3 processes"):
        ddp.shard((x, y), ddp.Context(rank=0, world_size=3))
    with pytest.raises(TypeError, match="holds no tensor to split across 2 processes"):
        ddp.shard(["text"], ctx)


def test_the_global_batch_must_be_a_multiple_of_the_processes():
    from slmbook._run import Run
    from slmbook.model import GPT, GPTConfig
    from slmbook.training import TrainConfig, make_optimizer

    model = GPT(GPTConfig(vocab_size=5, block_size=4, n_layer=1, n_head=1, n_embd=8))
    config = TrainConfig(max_steps=1, batch_size=5)
    with pytest.raises(ValueError, match="batch_size=5 is the global batch: it must be a multiple"):
        Run(model, torch.zeros(50, dtype=torch.long), None, config, make_optimizer(model), True,
            lambda m, b: 0, None, None, None, ddp.Context(rank=0, world_size=2))


def test_one_process_needs_no_group():
    ctx = ddp.context()
    assert ctx == ddp.Context() and ctx.is_main and not ctx.active
    assert ddp.all_sums([1.5, 2], ctx) == [1.5, 2.0] and ddp.all_mean(3.0, ctx) == 3.0
    assert ddp.agree("time_limit", ctx) == "time_limit" and ddp.agree(None, ctx) is None
    with ddp.process_group() as inside:  # outside torchrun: nothing to join
        assert inside == ddp.Context()


def test_launch_kills_the_whole_run_on_timeout(tmp_path):
    script = tmp_path / "sleep.py"
    script.write_text("import time\ntime.sleep(600)\n", encoding="utf-8")
    with pytest.raises(subprocess.TimeoutExpired, match=r"timed out after 0\.5 seconds"):
        ddp.launch([str(script)], nproc=1, timeout=0.5)


def test_a_signal_delivered_twice_within_the_grace_counts_once():
    from slmbook.resuming import stop_signals

    with stop_signals(grace=30.0) as signalled:
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)  # the launcher passing the same Ctrl-C on
        assert signalled() == "interrupted"
    with pytest.raises(KeyboardInterrupt, match="a second stop signal"), stop_signals() as signalled:
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)  # without a grace: a second Ctrl-C aborts


@dataclass
class Scored:  # like slmbook.reader.ReaderBatch: a stored count of the scored targets
    ids: torch.Tensor
    targets: torch.Tensor
    num_tokens: int


def test_shard_recounts_a_stored_num_tokens_from_the_targets():
    targets = torch.tensor([[1, -100], [2, 3], [-100, -100], [4, -100]])
    batch = Scored(torch.zeros(4, 2, dtype=torch.long), targets, num_tokens=4)
    first, second = (ddp.shard(batch, ddp.Context(rank=r, world_size=2)) for r in (0, 1))
    assert (first.num_tokens, second.num_tokens) == (3, 1)


def test_a_count_not_recounted_per_shard_weighs_ranks_equally_with_a_warning():
    from slmbook._run import Run
    from slmbook.model import GPT, GPTConfig
    from slmbook.training import TrainConfig, make_optimizer

    model = GPT(GPTConfig(vocab_size=5, block_size=4, n_layer=1, n_head=1, n_embd=8))
    run = Run(model, torch.zeros(50, dtype=torch.long), None, TrainConfig(max_steps=1),
              make_optimizer(model), True, lambda m, b: 0, None, None, None)
    run.ctx = ddp.Context(rank=0, world_size=2)
    stale = Rows(torch.zeros(2, 3), torch.tensor([3, 3]))
    stale.num_tokens = 6  # an attribute the shard keeps: the whole batch's count
    with pytest.warns(UserWarning, match="the ranks are weighted equally"):
        assert run._share(stale, 6) == 1.0
    assert run._share((torch.zeros(1, 4), None), 12) == 2 * 4 / 12


AUTO_SCRIPT = '''
import json, os, sys
import torch
from slmbook import devices
from slmbook._run import Run
from slmbook.model import GPT, GPTConfig
from slmbook.training import train

rank = int(os.environ["RANK"])
devices.has_native_bfloat16 = lambda device: True
# alone, rank 0 would choose bfloat16 (2x faster) and rank 1 float32 (bfloat16 3x slower);
# the sums, 3.0 s against 4.0 s, choose float32 for both
times = [{"float32": 2.0, "bfloat16": 1.0}, {"float32": 1.0, "bfloat16": 3.0}][rank]
Run._probe_seconds = lambda self, dtype: times[dtype]
torch.manual_seed(0)
model = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=16))
ids = torch.randint(0, 11, (500,), generator=torch.Generator().manual_seed(0))
h = train(model, ids, ids, max_steps=2, batch_size=4, eval_batches=1, progress=False,
          dtype="auto")
with open(sys.argv[1] + f".{rank}", "w") as f:
    json.dump(h.dtype, f)
'''


def test_auto_dtype_is_decided_alike_on_every_rank(tmp_path):
    script = tmp_path / "auto.py"
    script.write_text(AUTO_SCRIPT, encoding="utf-8")
    out = tmp_path / "dtype"
    run = ddp.launch([str(script), str(out)], nproc=2, timeout=TIMEOUT)
    assert run.returncode == 0, run.stderr[-3000:]
    assert [json.loads(Path(f"{out}.{r}").read_text()) for r in (0, 1)] == ["float32"] * 2
