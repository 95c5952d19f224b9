"""slmbook.callbacks: History, Callback, SampleCallback and EarlyStopping.

Covers: early stopping's bookkeeping (patience, min_delta), that it catches
overfitting in a real run and restores the best weights exactly; samples at
every evaluation; History's round trip, best step and plot; plain functions
as callbacks; bad arguments raise clear errors.
"""

from __future__ import annotations

import matplotlib
import pytest
import torch
from tiny_lm import FAST, TOK, TRAIN, VAL, tiny_model

from slmbook.callbacks import EarlyStopping, History, SampleCallback, as_callback
from slmbook.training import train

matplotlib.use("Agg")

_model = tiny_model


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

def test_plain_functions_are_eval_callbacks_and_bad_arguments():
    calls = []
    hook = as_callback(lambda history, model: calls.append(history.eval_steps[-1]))
    train(_model(), TRAIN, VAL, max_steps=4, eval_every=2, callbacks=[hook], **FAST)
    assert calls == [2, 4]
    with pytest.raises(TypeError, match="callbacks must be Callback objects or functions"):
        as_callback(42)
    with pytest.raises(ValueError, match="patience must be a positive int, got 0"):
        EarlyStopping(patience=0)
    with pytest.raises(ValueError, match=r"min_delta must be >= 0, got -0\.1"):
        EarlyStopping(min_delta=-0.1)
    with pytest.raises(ValueError, match="max_new_tokens must be a positive int, got -5"):
        SampleCallback(TOK, "the", -5)
