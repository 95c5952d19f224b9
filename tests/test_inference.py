"""slmbook.inference.evaluating: eval mode and no gradients, every mode restored."""

import pytest
import torch
from torch import nn

from slmbook.inference import evaluating, forward_with_hooks


def test_eval_mode_and_no_grad_inside_then_modes_restored():
    model = nn.Sequential(nn.Linear(3, 3), nn.Dropout(0.5), nn.Dropout(0.5))
    model[2].eval()  # a submodule deliberately left in eval mode
    before = [m.training for m in model.modules()]
    with evaluating(model) as m:
        assert m is model
        assert not any(mod.training for mod in model.modules())
        out = model(torch.ones(2, 3))
        assert not out.requires_grad
        assert torch.equal(out, model(torch.ones(2, 3)))  # dropout is off
    assert [m.training for m in model.modules()] == before
    assert torch.is_grad_enabled()


def test_modes_restored_when_the_block_raises():
    model = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.1))
    with pytest.raises(RuntimeError, match="boom"), evaluating(model):
        raise RuntimeError("boom")
    assert all(m.training for m in model.modules())
    assert torch.is_grad_enabled()


def test_forward_with_hooks_records_and_removes_its_hooks():
    model = nn.Sequential(nn.Linear(2, 3), nn.ReLU())
    seen = []
    out = forward_with_hooks(model, torch.ones(1, 2), [(model[0], lambda m, i, o: seen.append(o))])
    assert len(seen) == 1 and seen[0].shape == (1, 3)
    assert torch.equal(out, torch.relu(seen[0]))
    model(torch.ones(1, 2))
    assert len(seen) == 1  # the hook is gone
    assert not model[0]._forward_hooks


def test_forward_with_hooks_removes_hooks_when_the_forward_pass_fails():
    model = nn.Linear(2, 2)
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        forward_with_hooks(model, torch.ones(1, 5), [(model, lambda m, i, o: None)])
    assert not model._forward_hooks and model.training
