"""slmbook.init: each scheme's weight statistics (mean, std) within bands of the
formula it implements (and of torch.nn.init), tied weights drawn once, reproducibility
under a generator, parameter counts per module and per layer, activation statistics,
the initial loss per scheme, and the error for an unknown scheme."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from slmbook.init import (
    INIT_SCHEMES,
    activation_stats,
    count_parameters,
    init_weights,
    parameter_table,
)
from slmbook.model import GPT, GPTConfig

CFG = GPTConfig(vocab_size=64, block_size=16, n_layer=2, n_head=4, n_embd=64)


def weights(model: nn.Module):
    """(name, weight) for every Linear / Embedding matrix, tied ones once."""
    seen = set()
    for name, m in model.named_modules():
        if isinstance(m, (nn.Linear, nn.Embedding)) and id(m.weight) not in seen:
            seen.add(id(m.weight))
            yield name, m.weight.detach()


def expected_std(scheme: str, name: str, w: torch.Tensor, std: float) -> float:
    fan_out, fan_in = w.shape
    if scheme == "normal":
        return std
    if scheme == "gpt2":
        return std / math.sqrt(2 * CFG.n_layer) if name.endswith("c_proj") else std
    if scheme == "xavier":
        return math.sqrt(2 / (fan_in + fan_out))
    return math.sqrt(2 / fan_in)  # kaiming


@pytest.mark.parametrize("scheme", ["normal", "gpt2", "xavier", "kaiming"])
def test_random_scheme_statistics(scheme):
    model = init_weights(GPT(CFG), scheme, std=0.05, generator=torch.Generator().manual_seed(0))
    for name, w in weights(model):
        s = expected_std(scheme, name, w, 0.05)
        n = w.numel()
        assert abs(w.mean().item()) < 4 * s / math.sqrt(n), name
        assert abs(w.std().item() / s - 1) < 4 / math.sqrt(n) + 0.02, name
    for name, p in model.named_parameters():
        if name.endswith("bias"):
            assert (p == 0).all(), name
        elif ".ln_" in name:
            assert (p == 1).all(), name


@pytest.mark.parametrize("scheme", ["xavier", "kaiming"])
def test_same_draws_as_torch_init(scheme):
    """With the same generator state, our scheme draws exactly what torch.nn.init draws."""
    layer = nn.Linear(30, 20)
    init_weights(layer, scheme, generator=torch.Generator().manual_seed(3))
    ref = torch.empty(20, 30)
    g = torch.Generator().manual_seed(3)
    if scheme == "xavier":
        nn.init.xavier_normal_(ref, generator=g)
    else:
        nn.init.kaiming_normal_(ref, nonlinearity="relu", generator=g)
    torch.testing.assert_close(layer.weight.detach(), ref, rtol=0, atol=0)


@pytest.mark.parametrize(("scheme", "value"), [("zeros", 0.0), ("constant", 0.3)])
def test_deterministic_schemes(scheme, value):
    model = init_weights(GPT(CFG), scheme, value=0.3)
    for name, w in weights(model):
        assert (w == value).all(), name


def test_reproducible_with_generator_and_tied_once():
    a = init_weights(GPT(CFG), "gpt2", generator=torch.Generator().manual_seed(7))
    b = init_weights(GPT(CFG), "gpt2", generator=torch.Generator().manual_seed(7))
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        torch.testing.assert_close(pa, pb, rtol=0, atol=0, msg=name)
    assert a.lm_head.weight is a.transformer.wte.weight


def test_initial_loss_per_scheme():
    """Default scheme: within 0.1 of ln V; zeros: exactly uniform; std 1: far above."""
    V = CFG.vocab_size
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, V, (8, 16), generator=g)
    y = torch.randint(0, V, (8, 16), generator=g)
    model = GPT(CFG)

    def loss(scheme, **kw):
        init_weights(model, scheme, generator=torch.Generator().manual_seed(1), **kw)
        with torch.no_grad():
            return F.cross_entropy(model(x).reshape(-1, V), y.reshape(-1)).item()

    assert abs(loss("gpt2") - math.log(V)) < 0.1
    assert loss("zeros") == pytest.approx(math.log(V), abs=1e-5)
    assert loss("normal", std=1.0) > math.log(V) + 5


def test_count_parameters_by_module_and_layer():
    model = GPT(CFG)
    by_module = count_parameters(model)
    by_layer = count_parameters(model, by="layer")
    C = CFG.n_embd
    assert by_module["transformer.h.0.attn.c_attn"] == 3 * C * C + 3 * C
    assert by_module["transformer.h.1.mlp.c_fc"] == 4 * C * C + 4 * C
    assert by_module["lm_head"] == 0  # tied to transformer.wte
    assert by_layer["transformer.h.1"] == 12 * C * C + 13 * C
    assert list(by_layer) == [
        "transformer.wte", "transformer.wpe", "transformer.h.0", "transformer.h.1",
        "transformer.ln_f", "lm_head", "total",
    ]  # fmt: skip
    total = sum(p.numel() for p in model.parameters())
    assert by_module["total"] == by_layer["total"] == total
    assert sum(v for k, v in by_layer.items() if k != "total") == total


def test_parameter_table():
    model = GPT(CFG)
    table = parameter_table(model).splitlines()
    assert table[0] == "| module | parameters | share |"
    assert (
        table[3]
        == f"| `transformer.wpe` | {16 * 64:,} | {100 * 16 * 64 / sum(p.numel() for p in model.parameters()):.1f}% |"
    )
    assert table[-1].startswith("| **total** |") and table[-1].endswith("| 100.0% |")


def test_activation_stats():
    torch.manual_seed(0)
    model = GPT(CFG).train()
    idx = torch.randint(0, CFG.vocab_size, (4, 16))
    stats = activation_stats(model, idx, max_samples=100)
    assert list(stats) == ["transformer.h.0", "transformer.h.1", "lm_head"]
    assert model.training
    with torch.no_grad():
        logits = model.eval()(idx)
    s = stats["lm_head"]
    assert s.mean == pytest.approx(logits.mean().item(), abs=1e-6)
    assert s.std == pytest.approx(logits.std().item(), rel=1e-5)
    assert s.samples.numel() <= 100
    assert "ActivationStats('lm_head'" in repr(s)
    # a larger std makes every layer's activations larger
    big = activation_stats(init_weights(model, "normal", std=0.5), idx)
    assert all(big[k].std > 5 * stats[k].std for k in stats)


def test_errors():
    model = GPT(CFG)
    with pytest.raises(ValueError, match=r"unknown init scheme 'uniform'; choose one of zeros, "):
        init_weights(model, "uniform")
    with pytest.raises(ValueError, match=r"std must be a positive number, got -0\.1"):
        init_weights(model, "normal", std=-0.1)
    with pytest.raises(ValueError, match=r"by must be 'module' or 'layer', got 'block'"):
        count_parameters(model, by="block")
    with pytest.raises(ValueError, match=r"no module named 'transformer.h.9'"):
        activation_stats(model, torch.zeros(1, 2, dtype=torch.long), modules=["transformer.h.9"])
    assert set(INIT_SCHEMES) == {"zeros", "constant", "normal", "xavier", "kaiming", "gpt2"}


def test_plot_activation_histograms():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from slmbook.plotting import plot_activation_histograms

    model = GPT(CFG)
    stats = activation_stats(model, torch.zeros(1, 4, dtype=torch.long))
    ax = plot_activation_histograms(stats, title="gpt2")
    assert ax.get_title() == "gpt2" and len(ax.get_legend().get_texts()) == len(stats)
    with pytest.raises(ValueError, match=r"stats is empty"):
        plot_activation_histograms({})
    plt.close("all")
