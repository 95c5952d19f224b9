"""slmbook.model: GPTConfig validation, GPT and Bigram shapes, causality, weight tying,
parameter counts against a closed-form formula, the initial loss, and error messages."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from slmbook.init import count_parameters
from slmbook.model import GPT, Bigram, GPTConfig
from slmbook.ngram import BigramCounts

TINY = dict(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=16)


@pytest.fixture
def tiny() -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(**TINY))


def closed_form_count(V: int, T: int, L: int, C: int, bias: bool) -> int:
    """wte + wpe + L blocks + ln_f; lm_head is tied to wte and adds nothing."""
    if bias:
        per_block = (
            2 * 2 * C + (3 * C * C + 3 * C) + (C * C + C) + (4 * C * C + 4 * C) + (4 * C * C + C)
        )
        ln_f = 2 * C
    else:
        per_block = 2 * C + 12 * C * C
        ln_f = C
    return V * C + T * C + L * per_block + ln_f


def test_config_defaults_and_head_size():
    cfg = GPTConfig(vocab_size=103)
    assert (cfg.block_size, cfg.n_layer, cfg.n_head, cfg.n_embd) == (64, 4, 4, 128)
    assert cfg.dropout == 0.0 and cfg.bias is True and cfg.attention == "fused"
    assert cfg.head_size == 32


def test_forward_shape(tiny):
    idx = torch.randint(0, 11, (3, 8))
    assert tiny(idx).shape == (3, 8, 11)
    assert tiny(idx[:, :5]).shape == (3, 5, 11)


def test_gpt2_parameter_names_and_tying(tiny):
    names = set(tiny.state_dict())
    for expected in (
        "transformer.wte.weight",
        "transformer.wpe.weight",
        "transformer.h.0.ln_1.weight",
        "transformer.h.0.attn.c_attn.weight",
        "transformer.h.0.attn.c_attn.bias",
        "transformer.h.1.attn.c_proj.weight",
        "transformer.h.0.ln_2.bias",
        "transformer.h.0.mlp.c_fc.weight",
        "transformer.h.0.mlp.c_proj.bias",
        "transformer.ln_f.weight",
        "lm_head.weight",
    ):
        assert expected in names
    assert tiny.lm_head.weight is tiny.transformer.wte.weight
    assert not any(".attn.bias" in n or "masked_bias" in n for n in names)


def test_causality(tiny):
    """Changing token t changes no logits before position t."""
    idx = torch.randint(0, 11, (2, 8))
    base = tiny(idx)
    for t in range(8):
        changed = idx.clone()
        changed[:, t] = (changed[:, t] + 1) % 11
        out = tiny(changed)
        torch.testing.assert_close(out[:, :t], base[:, :t], rtol=0, atol=1e-6)
        assert (out[:, t:] - base[:, t:]).abs().max() > 1e-6


@pytest.mark.parametrize("bias", [True, False])
def test_parameter_count_closed_form(bias):
    model = GPT(GPTConfig(**TINY, bias=bias))
    expected = closed_form_count(11, 8, 2, 16, bias)
    counts = count_parameters(model)
    assert counts["total"] == expected == sum(p.numel() for p in model.parameters())


def test_default_config_count():
    counts = count_parameters(GPT(GPTConfig(vocab_size=103)), by="layer")
    assert counts["transformer.h.0"] == 12 * 128**2 + 13 * 128 == 198_272
    assert counts["lm_head"] == 0
    assert counts["total"] == closed_form_count(103, 64, 4, 128, True) == 814_720


def test_initial_loss_close_to_ln_v():
    torch.manual_seed(0)
    V = 103
    model = GPT(GPTConfig(vocab_size=V))
    x = torch.randint(0, V, (8, 64))
    y = torch.randint(0, V, (8, 64))
    with torch.no_grad():
        loss = F.cross_entropy(model(x).reshape(-1, V), y.reshape(-1)).item()
    assert abs(loss - math.log(V)) < 0.1


def test_scratch_and_fused_models_agree():
    torch.manual_seed(0)
    fused = GPT(GPTConfig(**TINY)).double()
    scratch = GPT(GPTConfig(**TINY, attention="scratch")).double()
    scratch.load_state_dict(fused.state_dict())
    idx = torch.randint(0, 11, (2, 8))
    torch.testing.assert_close(scratch(idx), fused(idx))


def test_dropout_only_in_training():
    model = GPT(GPTConfig(**TINY, dropout=0.5)).eval()
    idx = torch.randint(0, 11, (2, 8))
    torch.testing.assert_close(model(idx), model(idx))
    model.train()
    assert not torch.allclose(model(idx), model(idx))


def test_bigram_shape_and_initial_loss():
    torch.manual_seed(0)
    model = Bigram(50)
    x = torch.randint(0, 50, (4, 100))
    logits = model(x)
    assert logits.shape == (4, 100, 50)
    loss = F.cross_entropy(logits.reshape(-1, 50), x.reshape(-1)).item()
    assert abs(loss - math.log(50)) < 0.1
    assert model.config.block_size == 64


def test_bigram_optimum_is_the_count_model():
    """Log conditional frequencies minimise the neural bigram's loss (zero gradient), and
    its loss then equals the count-based BigramCounts loss (no smoothing)."""
    torch.manual_seed(0)
    V = 4
    ids = torch.randint(0, V, (400,))
    counts = BigramCounts.fit(ids, V, smoothing=0.0)
    model = Bigram(V)
    with torch.no_grad():
        model.token_embedding.weight.copy_(counts.probs.log())
    loss = F.cross_entropy(model(ids[None, :-1])[0], ids[1:])
    loss.backward()
    assert loss.item() == pytest.approx(counts.loss(ids), abs=1e-6)
    torch.testing.assert_close(
        model.token_embedding.weight.grad, torch.zeros(V, V), atol=1e-7, rtol=0
    )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(n_embd=10, n_head=4), r"n_embd=10 is not divisible by n_head=4"),
        (dict(n_layer=0), r"n_layer must be a positive int, got 0"),
        (dict(block_size=-3), r"block_size must be a positive int, got -3"),
        (dict(dropout=1.0), r"dropout must be in \[0, 1\), got 1.0"),
        (dict(dropout=-0.1), r"dropout must be in \[0, 1\), got -0.1"),
        (dict(attention="flash"), r"unknown attention implementation 'flash'.*fused, scratch"),
    ],
)
def test_config_errors(kwargs, match):
    args = {"vocab_size": 10, **kwargs}
    with pytest.raises(ValueError, match=match):
        GPTConfig(**args)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(n_head=2.0), r"n_head must be a positive int, got 2\.0 \(float\)"),
        (dict(n_layer=True), r"n_layer must be a positive int, got True \(bool\)"),
        (dict(dropout="0.1"), r"dropout must be a finite number, got '0\.1' \(str\)"),
    ],
)
def test_config_type_errors(kwargs, match):
    with pytest.raises(TypeError, match=match):
        GPTConfig(**{"vocab_size": 10, **kwargs})


def test_ids_of_other_integer_dtypes_are_widened_and_lists_refused():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=8)).eval()
    ids = torch.tensor([[1, 2, 10, 3]])
    with torch.no_grad():
        expected = model(ids)
        for dtype in (torch.uint8, torch.int16, torch.int32):
            torch.testing.assert_close(model(ids.to(dtype)), expected, rtol=0, atol=0)
        assert Bigram(11)(ids.to(torch.uint8)).shape == (1, 4, 11)
    with pytest.raises(TypeError, match=r"idx must be a \(B, T\) tensor of token ids, got a list; use torch\.tensor"):
        model([[1, 2, 3]])
    with pytest.raises(TypeError, match=r"idx must be integer token ids, got dtype torch\.float64"):
        model(ids.double())


def test_config_vocab_size_error():
    with pytest.raises(ValueError, match=r"vocab_size must be a positive int, got 0"):
        GPTConfig(vocab_size=0)
    with pytest.raises(ValueError, match=r"vocab_size must be a positive int, got 0"):
        Bigram(0)


def test_forward_errors(tiny):
    with pytest.raises(ValueError, match=r"token id 11 is outside the vocabulary \[0, 11\)"):
        tiny(torch.tensor([[1, 2, 11]]))
    with pytest.raises(ValueError, match=r"token id -1 is outside the vocabulary"):
        tiny(torch.tensor([[-1, 2]]))
    with pytest.raises(ValueError, match=r"sequence length 9 exceeds block_size=8.*crop"):
        tiny(torch.zeros(1, 9, dtype=torch.long))
    with pytest.raises(ValueError, match=r"idx must be \(B, T\).*idx\[None\]"):
        tiny(torch.zeros(5, dtype=torch.long))
    with pytest.raises(TypeError, match=r"idx must be integer token ids, got dtype torch\.float32"):
        tiny(torch.zeros(1, 3))
    with pytest.raises(ValueError, match=r"token id 7 is outside the vocabulary \[0, 5\)"):
        Bigram(5)(torch.tensor([[7]]))
    with pytest.raises(TypeError, match=r"GPT needs a GPTConfig"):
        GPT({"vocab_size": 3})


def test_from_pretrained_uses_the_hub_helpers(monkeypatch):
    from types import SimpleNamespace

    from slmbook import hub

    source = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=8))
    hf_config = SimpleNamespace(vocab_size=11, n_positions=8, n_layer=1, n_head=2, n_embd=8)
    conv1d = ("c_attn.weight", "c_proj.weight", "c_fc.weight")  # GPT-2 stores these (in, out)
    hf_state = {k: v.t() if k.endswith(conv1d) else v for k, v in source.state_dict().items()}
    fake = SimpleNamespace(config=hf_config, state_dict=lambda: hf_state)
    calls = []
    monkeypatch.setattr(hub, "load_hf_model", lambda name, **kw: calls.append((name, kw)) or fake)
    model = GPT.from_pretrained("gpt2", dtype=torch.float64, local_files_only=True)
    assert calls == [("gpt2", {"local_files_only": True})]
    assert not model.training and model.lm_head.weight.dtype == torch.float64
    torch.testing.assert_close(model.transformer.wte.weight.float(), source.transformer.wte.weight)
