"""slmbook.attention: the step-by-step causal attention equals PyTorch's fused
scaled_dot_product_attention in values and gradients (float64 tight, float32 looser),
its weights are causal probability distributions, and attention_maps records them."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from slmbook.attention import (
    CausalSelfAttention,
    attention_maps,
    causal_attention_fused,
    causal_attention_scratch,
)
from slmbook.model import GPT, Bigram, GPTConfig

TOL = {torch.float64: dict(rtol=1e-10, atol=1e-12), torch.float32: dict(rtol=1e-4, atol=1e-5)}


def qkv(dtype: torch.dtype, shape=(2, 3, 7, 5)):
    g = torch.Generator().manual_seed(0)
    return [torch.randn(shape, dtype=dtype, generator=g, requires_grad=True) for _ in range(3)]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_scratch_equals_torch_values_and_gradients(dtype):
    q, k, v = qkv(dtype)
    q2, k2, v2 = (t.detach().clone().requires_grad_() for t in (q, k, v))
    out = causal_attention_scratch(q, k, v)
    ref = F.scaled_dot_product_attention(q2, k2, v2, is_causal=True)
    torch.testing.assert_close(out, ref, **TOL[dtype])
    upstream = torch.randn_like(out)
    (out * upstream).sum().backward()
    (ref * upstream).sum().backward()
    for a, b in ((q, q2), (k, k2), (v, v2)):
        torch.testing.assert_close(a.grad, b.grad, **TOL[dtype])


def test_fused_is_torch_sdpa():
    q, k, v = qkv(torch.float64)
    torch.testing.assert_close(
        causal_attention_fused(q, k, v), F.scaled_dot_product_attention(q, k, v, is_causal=True)
    )


def test_weights_are_causal_distributions():
    q, k, v = qkv(torch.float64)
    out, w = causal_attention_scratch(q, k, v, return_weights=True)
    T = q.shape[-2]
    assert w.shape == (2, 3, T, T)
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 3, T, dtype=torch.float64))
    assert (w.triu(diagonal=1) == 0).all()
    assert (w[..., 0, 0] == 1).all()  # the first position can only look at itself
    torch.testing.assert_close(out, w @ v)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_module_scratch_equals_fused_with_gradients(dtype):
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=5, block_size=6, n_head=2, n_embd=8)
    fused = CausalSelfAttention(cfg).to(dtype)
    scratch = CausalSelfAttention(GPTConfig(**{**cfg.__dict__, "attention": "scratch"})).to(dtype)
    scratch.load_state_dict(fused.state_dict())
    x = torch.randn(3, 6, 8, dtype=dtype)
    out_f, out_s = fused(x), scratch(x)
    torch.testing.assert_close(out_s, out_f, **TOL[dtype])
    out_f.pow(2).sum().backward()
    out_s.pow(2).sum().backward()
    for (name, pf), ps in zip(fused.named_parameters(), scratch.parameters(), strict=True):
        torch.testing.assert_close(ps.grad, pf.grad, **TOL[dtype], msg=name)


def test_attention_maps_on_gpt():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=3, n_head=2, n_embd=16)).train()
    idx = torch.randint(0, 11, (2, 8))
    maps = attention_maps(model, idx)
    assert model.training  # mode restored
    assert len(maps) == 3 and all(m.shape == (2, 2, 8, 8) for m in maps)
    for m in maps:
        torch.testing.assert_close(m.sum(-1), torch.ones(2, 2, 8))
        assert (m.triu(diagonal=1) == 0).all()
    # the recorded weights reproduce layer 0's attention output
    block = model.transformer.h[0]
    x = model.transformer.wte(idx) + model.transformer.wpe(torch.arange(8))
    q, k, v = block.attn._heads(block.ln_1(x))
    torch.testing.assert_close(maps[0] @ v, causal_attention_fused(q, k, v), rtol=1e-4, atol=1e-6)
    assert not any(h for m in model.modules() for h in m._forward_hooks.values())


def test_attention_maps_error():
    with pytest.raises(ValueError, match=r"Bigram has no CausalSelfAttention layers"):
        attention_maps(Bigram(5), torch.zeros(1, 2, dtype=torch.long))


def test_plot_attention_map_checks_shapes():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from slmbook.plotting import plot_attention_map

    _, w = causal_attention_scratch(*qkv(torch.float32, (1, 1, 4, 2)), return_weights=True)
    ax = plot_attention_map(w[0, 0], list("abcd"), title="t")
    assert ax.get_title() == "t"
    with pytest.raises(
        ValueError, match=r"weights must be \(T, T\) for one head, got \(1, 1, 4, 4\)"
    ):
        plot_attention_map(w)
    with pytest.raises(ValueError, match=r"got 3 token labels for T = 4 positions"):
        plot_attention_map(w[0, 0], list("abc"))
    plt.close("all")
