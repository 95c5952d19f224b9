"""slmbook.training: the loop, its data sources, early stopping, resuming and guards.

Covers: the loss falls on a tiny corpus; the loop equals a hand-written one;
gradient accumulation equals one big batch; (X, Y) sources with -100 targets
score only the marked positions; epochs; a resumed run equals the
uninterrupted one bit for bit (Ctrl-C writes the checkpoint); early stopping
triggers and restores the best weights; NaN losses stop training and keep the
last good checkpoint; bad arguments raise clear errors.
"""

from __future__ import annotations

import math
import signal

import matplotlib
import pytest
import torch
import torch.nn.functional as F

from slmbook import checkpoints
from slmbook.data import get_batch
from slmbook.model import GPT, GPTConfig
from slmbook.optim import SGD, AdamW
from slmbook.tokenizers import CharTokenizer
from slmbook.training import (
    Callback,
    EarlyStopping,
    History,
    SampleCallback,
    make_optimizer,
    train,
)

matplotlib.use("Agg")

TEXT = ("the cat sat on the mat. the dog ran to the door. a bird flew over the red roof.\n"
        * 30)
TOK = CharTokenizer.fit(TEXT)
IDS = torch.tensor(TOK.encode(TEXT))
TRAIN, VAL = IDS[:2000], IDS[2000:]
FAST = {"batch_size": 8, "progress": False, "eval_batches": 2}


def _model(seed: int = 0, **kw) -> GPT:
    torch.manual_seed(seed)
    cfg = {"vocab_size": TOK.vocab_size, "block_size": 16, "n_layer": 1, "n_head": 2,
           "n_embd": 32} | kw
    return GPT(GPTConfig(**cfg))


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
    with pytest.raises(FloatingPointError, match=r"loss became nan at step 4.*run\.pt"):
        train(_model(), TRAIN, VAL, max_steps=10, eval_every=5, checkpoint_path=path,
              checkpoint_every=2, callbacks=[_BreakAt(3)], **FAST)
    ckpt = checkpoints.load(path)
    assert ckpt.step == 2
    assert all(torch.isfinite(t).all() for t in ckpt.model_state.values())
    with pytest.raises(FloatingPointError, match="NaN or infinite values at step 2"):
        train(_model(), TRAIN, VAL, max_steps=10, eval_every=5, checkpoint_path=path,
              checkpoint_every=2, callbacks=[_BreakAt(2)], **FAST)
    assert checkpoints.load(path).step == 2


def test_early_stopping_logic():
    es = EarlyStopping(patience=2, min_delta=0.1)
    model = _model()
    assert [es.update(v, model, s) for s, v in enumerate([3.0, 2.0, 1.95, 2.5])] == [
        False, False, False, True]
    assert es.best_step == 1 and es.best_loss == 2.0


def test_early_stopping_catches_overfitting_and_restores_best_weights():
    snapshots = {}

    def remember(history, model):
        snapshots[history.eval_steps[-1]] = {k: v.clone() for k, v in model.state_dict().items()}

    tiny_train = TRAIN[:60]  # memorised quickly; the validation loss then turns up
    es = EarlyStopping(patience=2)
    model = _model(n_embd=64)
    h = train(model, tiny_train, VAL, max_steps=400, eval_every=10, lr=1e-2, schedule=None,
              early_stopping=es, callbacks=[remember], weight_decay=0.0, **FAST)
    assert h.stop_reason == "early_stopping" and len(h.steps) < 400
    assert h.best_step == es.best_step < h.eval_steps[-1]
    assert h.eval_val_loss[-1] > min(h.eval_val_loss)
    assert h.eval_train_loss[-1] < h.eval_train_loss[0]
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, snapshots[es.best_step][k], rtol=0, atol=0)


def test_sample_callback_and_history_helpers(tmp_path):
    h = train(_model(), TRAIN, VAL, max_steps=4, eval_every=2,
              callbacks=[SampleCallback(TOK, "the", 10, seed=1)], **FAST)
    assert [s for s, _ in h.samples] == [2, 4]
    assert all(text.startswith("the") and len(text) == 13 for _, text in h.samples)
    again = History.from_dict(h.to_dict())
    assert again == h and again.best_step in (2, 4)
    ax = h.plot()
    assert ax.get_xlabel() == "step" and len(ax.lines) == 3


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
        ({"max_steps": 5, "grad_clip": 0.0}, ValueError, "grad_clip must be > 0"),
        ({"max_steps": 5, "checkpoint_every": 2}, ValueError, "checkpoint_every needs"),
        ({"max_steps": 5, "schedule": "linear"}, ValueError, "unknown schedule 'linear'"),
        ({"max_steps": 5, "schedule": object()}, ValueError, "schedule must be a name"),
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
    with pytest.raises(ValueError, match="patience must be a positive int"):
        EarlyStopping(patience=0)


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
    with pytest.raises(KeyboardInterrupt):
        train(_model(), TRAIN, VAL, max_steps=5, checkpoint_path=tmp_path / "c.pt",
              callbacks=[TwoInterrupts()], **FAST)
    assert signal.getsignal(signal.SIGINT) is before  # the handler is put back
    assert not (tmp_path / "c.pt").exists()
