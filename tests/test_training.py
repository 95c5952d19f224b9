"""slmbook.training: the loop, its data sources, early stopping, resuming and guards.

Covers: the loss falls on a tiny corpus; the loop equals a hand-written one;
gradient accumulation equals one big batch; (X, Y) sources with -100 targets
score only the marked positions; epochs; a resumed run equals the
uninterrupted one bit for bit (Ctrl-C writes the checkpoint); NaN losses stop
training and keep the last good checkpoint; bad arguments raise clear errors;
a custom loss (answer-only, on padded variable-length batches) trains, resumes
bit for bit after Ctrl-C, stops early and checkpoints; TrainConfig overrides
and the config stored in checkpoints; to_device. Early stopping, samples and
History are covered in test_callbacks.py.
"""

from __future__ import annotations

import math
import signal
import subprocess
import time
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from tiny_lm import FAST, TEXT, TOK, TRAIN, VAL, tiny_model

from slmbook import checkpoints
from slmbook.callbacks import Callback, EarlyStopping
from slmbook.data import get_batch
from slmbook.model import GPT, GPTConfig
from slmbook.optim import SGD, AdamW
from slmbook.tokenizers import CharTokenizer
from slmbook.training import TrainConfig, make_optimizer, to_device, train

_model = tiny_model


def test_loss_decreases_on_a_tiny_corpus():
    h = train(_model(), TRAIN, VAL, max_steps=40, eval_every=20, lr=1e-2, **FAST)
    assert len(h.steps) == 40 and h.eval_steps == [20, 40] and h.stop_reason == "max_steps"
    assert h.train_loss[0] > math.log(TOK.vocab_size) - 0.3
    assert h.eval_val_loss[-1] < h.train_loss[0] - 1.0
    assert h.tokens[-1] == 40 * 8 * 16 and h.time == sorted(h.time)


def test_train_equals_a_hand_written_loop():
    model, ref = _model(), _model()
    h = train(model, TRAIN, VAL, max_steps=5, schedule=None, grad_clip=None, weight_decay=0.0,
              lr=1e-2, seed=3, **FAST)
    g = torch.Generator().manual_seed(3)
    opt = AdamW(ref.parameters(), lr=1e-2, betas=(0.9, 0.99), weight_decay=0.0)
    losses = []
    for _ in range(5):
        x, y = get_batch(TRAIN, 8, 16, g)
        loss = F.cross_entropy(ref(x).view(-1, TOK.vocab_size), y.reshape(-1))
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    torch.testing.assert_close(torch.tensor(h.train_loss), torch.tensor(losses), rtol=1e-6, atol=1e-6)
    for p, q in zip(model.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_grad_accumulation_equals_one_big_batch():
    x, y = get_batch(TRAIN, 8, 16, torch.Generator().manual_seed(1))
    halves = [(x[:4], y[:4]), (x[4:], y[4:])]
    small, big = _model(), _model()
    opts = {"max_steps": 1, "eval_every": 1, "schedule": None, **FAST}  # SGD: update ∝ gradient
    train(small, halves, None, grad_accum_steps=2, optimizer=SGD(small.parameters(), lr=0.5), **opts)
    train(big, [(x, y)], None, optimizer=SGD(big.parameters(), lr=0.5), **opts)
    for p, q in zip(small.parameters(), big.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_callable_source_scores_only_targets_not_ignored():
    x, y = get_batch(TRAIN, 4, 16, torch.Generator().manual_seed(2))
    y = y.clone()
    y[:, :-3] = -100  # score only the last three positions of each row
    model = _model()
    with torch.no_grad():
        logits = model(x)
    expected = F.cross_entropy(logits[:, -3:].reshape(-1, TOK.vocab_size), y[:, -3:].reshape(-1))
    h = train(model, lambda gen: (x, y), lambda gen: (x, y), max_steps=1, eval_every=1, **FAST)
    torch.testing.assert_close(torch.tensor(h.train_loss[0]), expected, rtol=1e-6, atol=1e-6)


def test_epochs_set_the_number_of_steps():
    h = train(_model(), TRAIN, VAL, epochs=2, eval_every=50, **FAST)
    assert len(h.steps) == 2 * math.ceil(len(TRAIN) / (8 * 16))
    batches = [get_batch(TRAIN, 8, 16, torch.Generator().manual_seed(i)) for i in range(3)]
    assert len(train(_model(), batches, VAL, epochs=2, eval_every=5, **FAST).steps) == 6


class _InterruptAt(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step(self, history, model):
        if history.steps[-1] == self.step:
            signal.raise_signal(signal.SIGINT)  # what Ctrl-C does


def test_ctrl_c_saves_and_resume_equals_uninterrupted_run(tmp_path):
    opts = {"max_steps": 20, "eval_every": 5, "lr": 1e-2, "seed": 7, **FAST}
    full = train(_model(dropout=0.1), TRAIN, VAL, **opts)
    path = tmp_path / "run.pt"
    first = train(_model(dropout=0.1), TRAIN, VAL, checkpoint_path=path,
                  callbacks=[_InterruptAt(8)], **opts)
    assert first.stop_reason == "interrupted" and len(first.steps) == 8
    assert checkpoints.load(path).step == 8
    other_seed = _model(seed=123, dropout=0.1)  # the checkpoint's weights replace these
    resumed = train(other_seed, TRAIN, VAL, resume_from=path, **opts)
    assert resumed.steps == full.steps and resumed.stop_reason == "max_steps"
    assert resumed.train_loss == full.train_loss  # bit for bit
    assert resumed.eval_val_loss == full.eval_val_loss


class _BreakAt(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step(self, history, model):
        if history.steps[-1] == self.step:
            with torch.no_grad():
                model.lm_head.weight[0, 0] = float("nan")


def test_nan_loss_stops_training_and_keeps_last_good_checkpoint(tmp_path):
    path = tmp_path / "run.pt"
    with pytest.raises(FloatingPointError, match=r"loss became nan at step 4.*without updating "
                                                 r"the parameters with it \(the model had already "
                                                 r"diverged.*run\.pt"):
        train(_model(), TRAIN, VAL, max_steps=10, eval_every=5, checkpoint_path=path,
              checkpoint_every=2, callbacks=[_BreakAt(3)], **FAST)
    ckpt = checkpoints.load(path)
    assert ckpt.step == 2
    assert all(torch.isfinite(t).all() for t in ckpt.model_state.values())
    with pytest.raises(FloatingPointError, match="NaN or infinite values at step 2"):
        train(_model(), TRAIN, VAL, max_steps=10, eval_every=5, checkpoint_path=path,
              checkpoint_every=2, callbacks=[_BreakAt(2)], **FAST)
    assert checkpoints.load(path).step == 2


def test_time_limit_and_scheduler_object():
    model = _model()
    opt = make_optimizer(model, lr=1e-2)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    h = train(model, TRAIN, VAL, max_steps=6, eval_every=3, optimizer=opt, schedule=sched, **FAST)
    torch.testing.assert_close(torch.tensor(h.lr), torch.tensor([1e-2, 1e-2, 5e-3, 5e-3,
                                                                 2.5e-3, 2.5e-3]))
    h = train(_model(), TRAIN, VAL, max_steps=10_000, eval_every=10_000, time_limit=1e-9, **FAST)
    assert h.stop_reason == "time_limit" and len(h.steps) == 1 and h.eval_steps == [1]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"max_steps": 0}, ValueError, "max_steps must be a positive int, got 0"),
        ({"max_steps": -3}, ValueError, "max_steps must be a positive int, got -3"),
        ({"max_steps": 5, "eval_every": 0}, ValueError, "eval_every must be a positive int"),
        ({}, ValueError, "give exactly one of max_steps and epochs"),
        ({"max_steps": 5, "epochs": 1}, ValueError, "give exactly one of max_steps and epochs"),
        ({"max_steps": 5, "grad_clip": 0.0}, ValueError, "grad_clip must be a positive number, got 0.0"),
        ({"max_steps": 5, "checkpoint_every": 2}, ValueError, "checkpoint_every needs"),
        ({"max_steps": 5, "schedule": "linear"}, ValueError, "unknown schedule 'linear'"),
        ({"max_steps": 5, "schedule": object()}, ValueError, "schedule must be a name"),
        ({"max_steps": 5, "lr": 1e30}, ValueError, r"lr must be at most 10\.0, got 1e\+30"),
        ({"max_steps": 5, "lr": math.inf}, ValueError, "lr must be a finite number, got inf"),
        ({"max_steps": 5, "seed": 2**64}, ValueError, r"seed must be below 2\*\*64"),
        ({"max_steps": 5, "seed": -1}, ValueError, "seed must be a non-negative int"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        train(_model(), TRAIN, VAL, **{"progress": False, **kwargs})


def test_bad_data_and_paths(tmp_path):
    with pytest.raises(ValueError, match=r"val_data has 0 tokens.*empty or too short"):
        train(_model(), TRAIN, torch.tensor([], dtype=torch.long), max_steps=2, progress=False)
    with pytest.raises(ValueError, match=r"val_data has 10 tokens.*block_size=16"):
        train(_model(), TRAIN, VAL[:10], max_steps=2, progress=False)
    with pytest.raises(ValueError, match="val_data is an empty iterable"):
        train(_model(), TRAIN, [], max_steps=2, progress=False)
    with pytest.raises(ValueError, match="early_stopping needs val_data"):
        train(_model(), TRAIN, None, max_steps=2, early_stopping=EarlyStopping(), progress=False)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OSError, match="is not writable"):
        train(_model(), TRAIN, VAL, max_steps=2, checkpoint_path=blocker / "c.pt", progress=False)


def test_resume_checks_config_and_step(tmp_path):
    path = tmp_path / "c.pt"
    train(_model(), TRAIN, VAL, max_steps=3, eval_every=3, checkpoint_path=path, **FAST)
    with pytest.raises(ValueError, match="different configuration"):
        train(_model(n_embd=64), TRAIN, VAL, max_steps=5, resume_from=path, **FAST)
    with pytest.raises(ValueError, match="at step 3, past max_steps=2"):
        train(_model(), TRAIN, VAL, max_steps=2, resume_from=path, **FAST)


def test_step_pattern_keeps_one_checkpoint_per_save(tmp_path):
    train(_model(), TRAIN, VAL, max_steps=4, eval_every=4, checkpoint_path=tmp_path / "r-{step}.pt",
          checkpoint_every=2, **FAST)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r-2.pt", "r-4.pt"]
    assert checkpoints.load(tmp_path / "r-2.pt").step == 2


def test_second_ctrl_c_aborts_at_once(tmp_path):
    class TwoInterrupts(Callback):
        def on_step(self, history, model):
            signal.raise_signal(signal.SIGINT)
            signal.raise_signal(signal.SIGINT)

    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt, match="a second stop signal"):
        train(_model(), TRAIN, VAL, max_steps=5, checkpoint_path=tmp_path / "c.pt",
              callbacks=[TwoInterrupts()], **FAST)
    assert signal.getsignal(signal.SIGINT) is before  # the handler is put back
    assert not (tmp_path / "c.pt").exists()


# ----------------------------------------------------------------------------- custom losses

QA_PAIRS = [("ann lives in", " oslo"), ("bob works at", " the mill"), ("cy likes", " tea"),
            ("dee was born in", " rome"), ("eve owns", " a red cat"), ("fay plays", " chess")]
QA_TOK = CharTokenizer.fit("".join(q + a + "\n" for q, a in QA_PAIRS))


@dataclass
class PaddedQA:
    """Variable-length examples padded to the longest: the next token of ids[:, t] is ids[:, t+1]."""

    ids: torch.Tensor  # (B, L) int64, padded with 0
    answer: torch.Tensor  # (B, L) bool: ids[:, t] is part of the answer (scored as a target)
    lengths: torch.Tensor  # (B,) int64

    @property
    def num_tokens(self) -> int:
        return int(self.lengths.sum())


def _qa_batch(indices) -> PaddedQA:
    rows = [(QA_TOK.encode(QA_PAIRS[i][0]), QA_TOK.encode(QA_PAIRS[i][1] + "\n")) for i in indices]
    width = max(len(q) + len(a) for q, a in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    answer = torch.zeros(len(rows), width, dtype=torch.bool)
    for r, (q, a) in enumerate(rows):
        ids[r, : len(q) + len(a)] = torch.tensor(q + a)
        answer[r, len(q): len(q) + len(a)] = True
    return PaddedQA(ids, answer, torch.tensor([len(q) + len(a) for q, a in rows]))


def _qa_source(generator: torch.Generator) -> PaddedQA:
    return _qa_batch(torch.randint(len(QA_PAIRS), (4,), generator=generator).tolist())


def answer_only_loss(model, batch: PaddedQA) -> torch.Tensor:
    logits = model(batch.ids[:, :-1])  # (B, L-1, V)
    mask = batch.answer[:, 1:]  # (B, L-1): the target ids[:, t+1] is an answer token
    return F.cross_entropy(logits[mask], batch.ids[:, 1:][mask])


def _qa_model(seed: int = 0, **kw) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(**{"vocab_size": QA_TOK.vocab_size, "block_size": 24, "n_layer": 1,
                            "n_head": 2, "n_embd": 32} | kw))


QA_OPTS = {"loss_fn": answer_only_loss, "progress": False, "eval_batches": 2, "seed": 5}


def test_custom_loss_on_padded_batches_scores_only_answers():
    batch = _qa_batch([0, 4])
    model = _qa_model()
    with torch.no_grad():
        logits = model(batch.ids[:, :-1])
    scored = [(r, t) for r in range(2) for t in range(batch.ids.size(1) - 1) if batch.answer[r, t + 1]]
    expected = torch.stack([F.cross_entropy(logits[r, t], batch.ids[r, t + 1]) for r, t in scored]).mean()
    h = train(model, [batch], [batch], max_steps=1, eval_every=1, **QA_OPTS)
    torch.testing.assert_close(torch.tensor(h.train_loss[0]), expected, rtol=1e-6, atol=1e-6)
    assert h.tokens == [batch.num_tokens]  # the batch's own count, not the padded size
    h = train(_qa_model(), _qa_source, _qa_source, max_steps=60, eval_every=30, lr=1e-2, **QA_OPTS)
    assert h.train_loss[0] > 2.5 and h.eval_val_loss[-1] < h.train_loss[0] - 2.0


def test_custom_loss_resume_after_ctrl_c_is_bit_for_bit(tmp_path):
    opts = {"max_steps": 12, "eval_every": 4, "lr": 1e-2, **QA_OPTS}
    full = train(_qa_model(dropout=0.1), _qa_source, _qa_source, **opts)
    path = tmp_path / "qa.pt"
    first = train(_qa_model(dropout=0.1), _qa_source, _qa_source, checkpoint_path=path,
                  callbacks=[_InterruptAt(5)], **opts)
    assert first.stop_reason == "interrupted" and checkpoints.load(path).step == 5
    resumed = train(_qa_model(seed=9, dropout=0.1), _qa_source, _qa_source, resume_from=path, **opts)
    assert resumed.train_loss == full.train_loss and resumed.eval_val_loss == full.eval_val_loss
    assert resumed.tokens == full.tokens


def test_custom_loss_with_early_stopping_and_checkpoints(tmp_path):
    es = EarlyStopping(patience=2)
    path = tmp_path / "qa-{step}.pt"
    seen = [_qa_batch([0, 1]), _qa_batch([2, 3])]  # memorised; the unseen pairs then get worse
    unseen = [_qa_batch([4, 5])]
    h = train(_qa_model(n_embd=64), seen, unseen, max_steps=300, eval_every=5, lr=1e-2,
              schedule=None, early_stopping=es, checkpoint_path=path, checkpoint_every=5,
              weight_decay=0.0, **QA_OPTS)
    assert h.stop_reason == "early_stopping" and h.best_step == es.best_step < h.steps[-1]
    last = checkpoints.load(tmp_path / f"qa-{h.steps[-1]}.pt")
    assert last.training_state["config"]["checkpoint_every"] == 5
    assert last.history["eval_val_loss"] == h.eval_val_loss


# ----------------------------------------------------------------------------- config and batches


def test_config_overrides_and_unknown_keywords(tmp_path):
    base = TrainConfig(max_steps=3, eval_every=3, **FAST)
    h = train(_model(), TRAIN, VAL, base, eval_batches=1, checkpoint_path=tmp_path / "c.pt")
    assert h.eval_steps == [3] and base.eval_batches == 2  # the config itself is not changed
    stored = checkpoints.load(tmp_path / "c.pt").training_state["config"]
    assert stored == {**base.to_dict(), "eval_batches": 1, "checkpoint_path": str(tmp_path / "c.pt")}
    with pytest.raises(TypeError, match=r"unknown keyword arguments \['eval_evry'\].*'eval_every'"):
        train(_model(), TRAIN, VAL, max_steps=3, eval_evry=3)
    with pytest.raises(TypeError, match="config must be a TrainConfig, got dict"):
        train(_model(), TRAIN, VAL, {"max_steps": 3})


def test_to_device_rebuilds_containers_and_dataclasses():
    batch = {"qa": _qa_batch([0]), "pair": (torch.zeros(2), [torch.ones(1), "text"]), "n": 3}
    moved = to_device(batch, "meta")
    assert moved["qa"].ids.device.type == "meta" and isinstance(moved["qa"], PaddedQA)
    assert moved["pair"][0].device.type == "meta" and isinstance(moved["pair"], tuple)
    assert moved["pair"][1][0].device.type == "meta" and moved["pair"][1][1] == "text"
    assert moved["n"] == 3 and batch["qa"].ids.device.type == "cpu"


# ----------------------------------------------------------------------------- nothing lost


class _SignalAt(Callback):
    def __init__(self, step: int, sig: int) -> None:
        self.step, self.sig = step, sig

    def on_step(self, history, model):
        if history.steps[-1] == self.step:
            signal.raise_signal(self.sig)


def test_sigterm_saves_a_resumable_checkpoint_like_ctrl_c(tmp_path):
    def killed(signum, frame):  # what SIGTERM would do if train did not handle it
        raise RuntimeError("killed by SIGTERM without a checkpoint")

    before = signal.signal(signal.SIGTERM, killed)
    try:
        opts = {"max_steps": 10, "eval_every": 5, "lr": 1e-2, "seed": 3, **FAST}
        full = train(_model(), TRAIN, VAL, **opts)
        path = tmp_path / "run.pt"
        first = train(_model(), TRAIN, VAL, checkpoint_path=path,
                      callbacks=[_SignalAt(4, signal.SIGTERM)], **opts)
        assert first.stop_reason == "terminated" and checkpoints.load(path).step == 4
        assert signal.getsignal(signal.SIGTERM) is killed  # put back
        resumed = train(_model(seed=5), TRAIN, VAL, resume_from=path, **opts)
        assert resumed.train_loss == full.train_loss
    finally:
        signal.signal(signal.SIGTERM, before)


def test_a_second_run_on_the_same_checkpoint_refuses_naming_the_other_process(tmp_path):
    path = tmp_path / "run.pt"
    other = subprocess.Popen(["sleep", "60"])
    lock = tmp_path / ".run.pt.lock"
    try:
        lock.write_text(f"{other.pid}\n")  # as a running `train` holds it
        with pytest.raises(FileExistsError, match=rf"in use by another training run \(process {other.pid}"):
            train(_model(), TRAIN, VAL, max_steps=2, checkpoint_path=path, **FAST)
        assert not path.exists() and lock.read_text() == f"{other.pid}\n"
    finally:
        other.kill()
        other.wait()
    train(_model(), TRAIN, VAL, max_steps=2, checkpoint_path=path, **FAST)  # a dead one's lock
    assert checkpoints.load(path).step == 2 and not lock.exists()


def test_free_space_is_checked_before_training(tmp_path, monkeypatch):
    import shutil

    from slmbook import _files

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(_files.shutil, "disk_usage", lambda p: usage._replace(free=1000))
    steps = []
    with pytest.raises(OSError, match=r"not enough free space for checkpoint '.*c\.pt': it needs "
                                      r"about [\d,]+ bytes, 1,000 are free .*[\d,]+ bytes missing"):
        train(_model(), TRAIN, VAL, max_steps=3, checkpoint_path=tmp_path / "c.pt",
              callbacks=[lambda h, m: steps.append(h)], **FAST)
    assert steps == [] and not (tmp_path / "c.pt").exists()


def test_a_file_that_is_not_a_checkpoint_is_refused_before_training(tmp_path):
    corpus = tmp_path / "my.txt"
    corpus.write_text(TEXT)
    with pytest.raises(FileExistsError, match=r"my\.txt' exists and is not an slmbook checkpoint"):
        train(_model(), TRAIN, VAL, max_steps=2, checkpoint_path=corpus, **FAST)
    assert corpus.read_text() == TEXT


def test_two_identical_cpu_runs_give_bit_identical_weights():
    runs = []
    for _ in range(2):
        model = _model(dropout=0.1)  # seeds torch, which dropout draws from
        train(model, TRAIN, VAL, max_steps=8, eval_every=4, lr=1e-2, seed=11, **FAST)
        runs.append(model)
    a, b = runs
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(p, q), name


# ----------------------------------------------------------------------------- resume decisions


def _first_run(tmp_path, **kw):
    opts = {"max_steps": 6, "eval_every": 6, "lr": 1e-2, "seed": 2, **FAST} | kw
    path = tmp_path / "c.pt"
    train(_model(), TRAIN, VAL, checkpoint_path=path, **opts)
    return path, opts


def test_resume_refuses_another_corpus_or_schedule(tmp_path):
    path, opts = _first_run(tmp_path, meta={"corpus_hash": "aaa"})
    with pytest.raises(ValueError, match=r"another corpus \(hash aaa, this run's is bbb\)"):
        train(_model(), TRAIN, VAL, resume_from=path, **{**opts, "max_steps": 8,
                                                          "meta": {"corpus_hash": "bbb"}})
    with pytest.raises(ValueError, match=r"schedule='cosine'; resuming with schedule='constant'"):
        train(_model(), TRAIN, VAL, resume_from=path, **{**opts, "max_steps": 8,
                                                          "schedule": "constant"})
    with pytest.raises(ValueError, match=r"min_lr_ratio=0\.1; resuming with min_lr_ratio=0\.5"):
        train(_model(), TRAIN, VAL, resume_from=path, **{**opts, "max_steps": 8,
                                                          "min_lr_ratio": 0.5})


def test_resume_applies_a_new_learning_rate_and_says_so(tmp_path):
    path, opts = _first_run(tmp_path, schedule="constant", warmup_steps=0)
    with pytest.warns(UserWarning, match=r"lr=0\.002, weight_decay=0\.1 \(the checkpoint's run used 0\.01"):
        h = train(_model(), TRAIN, VAL, resume_from=path, **{**opts, "max_steps": 9, "lr": 2e-3})
    assert h.lr[:6] == [1e-2] * 6
    torch.testing.assert_close(torch.tensor(h.lr[6:]), torch.tensor([2e-3] * 3))
    with pytest.warns(UserWarning, match=r"batch_size=4 \(was 8\).*no longer an exact"):
        train(_model(), TRAIN, VAL, resume_from=path, **{**opts, "max_steps": 7, "batch_size": 4})


def test_extending_a_cosine_run_does_not_make_the_learning_rate_jump(tmp_path):
    path, opts = _first_run(tmp_path, warmup_steps=0)
    with pytest.warns(UserWarning, match="keeps its original 6 steps"):
        h = train(_model(), TRAIN, VAL, resume_from=path, **{**opts, "max_steps": 12})
    final = 1e-2 * 0.1  # lr * min_lr_ratio, where the 6-step cosine ends
    assert h.lr[5] > final and max(h.lr[6:]) <= final * (1 + 1e-6)


def test_time_limit_counts_only_this_run(tmp_path):
    slow = Callback()
    slow.on_step = lambda history, model: time.sleep(0.3)
    opts = {"max_steps": 3, "eval_every": 3, "lr": 1e-2, "seed": 2, "schedule": "constant", **FAST}
    first = train(_model(), TRAIN, VAL, resume_from=None, callbacks=[slow],
                  **{**opts, "checkpoint_path": tmp_path / "slow.pt"})
    assert first.time[-1] >= 0.6  # two sleeps before the last step's time
    h = train(_model(), TRAIN, VAL, resume_from=tmp_path / "slow.pt", time_limit=0.5,
              **{**opts, "max_steps": 6, "checkpoint_path": tmp_path / "slow.pt"})
    assert h.stop_reason == "max_steps" and len(h.steps) == 6
