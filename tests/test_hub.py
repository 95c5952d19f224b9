"""Tests for slmbook.hub: loading GPT-2 weights saved by Hugging Face transformers.

Fast tests work on GPT-2-style state dicts made from slmbook's own GPT (Conv1D
matrices transposed, mask buffers added): name mapping, transposition, and
every error path (shape mismatch, missing/unexpected parameters, untied head,
unknown name, unsupported config, transformers not installed).

Slow tests (importing transformers takes several seconds) are offline too: a
tiny, randomly initialised GPT-2 is created with transformers and saved to a
temporary folder; slmbook's GPT loaded from it must give the same logits as
transformers' own model, in float32 and float64.
"""

from __future__ import annotations

import sys
from types import SimpleNamespace

import pytest
import torch

from slmbook.hub import GPT2_NAMES, config_from_hf, convert_state_dict, load_hf_model
from slmbook.model import GPT, GPTConfig

VOCAB = 61
CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def _small_gpt(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=VOCAB, block_size=24, n_layer=2, n_head=4, n_embd=32)).eval()


def _gpt2_style_state(model: GPT) -> dict[str, torch.Tensor]:
    """The state dict GPT-2's checkpoints would hold for ``model``: Conv1D layout, mask buffers."""
    state = {}
    for key, value in model.state_dict().items():
        state[key] = value.t().contiguous() if key.endswith(CONV1D) else value.clone()
    for i in range(model.config.n_layer):
        state[f"transformer.h.{i}.attn.bias"] = torch.tril(torch.ones(1, 1, 24, 24))
        state[f"transformer.h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    return state


def _ids(n: int = 3, t: int = 24) -> torch.Tensor:
    return torch.randint(VOCAB, (n, t), generator=torch.Generator().manual_seed(1))


def test_round_trip_through_gpt2_layout():
    source = _small_gpt(0)
    target = _small_gpt(1)
    state = convert_state_dict(_gpt2_style_state(source), target)
    assert set(state) == set(target.state_dict())  # mask buffers dropped
    target.load_state_dict(state)
    assert target.lm_head.weight is target.transformer.wte.weight
    with torch.no_grad():
        torch.testing.assert_close(target(_ids()), source(_ids()), rtol=0, atol=0)


def test_unprefixed_keys_are_accepted():
    source = _small_gpt(0)
    state = {k.removeprefix("transformer."): v for k, v in _gpt2_style_state(source).items()
             if k != "lm_head.weight"}  # a GPT2Model state dict has no "transformer." prefix
    target = _small_gpt(1)
    target.load_state_dict(convert_state_dict(state, target))
    torch.testing.assert_close(target.transformer.h[1].mlp.c_fc.weight,
                               source.transformer.h[1].mlp.c_fc.weight, rtol=0, atol=0)


def test_shape_mismatch_in_state_dict():
    model = _small_gpt()
    state = _gpt2_style_state(model)
    state["transformer.h.1.attn.c_proj.weight"] = torch.zeros(32, 16)
    with pytest.raises(ValueError, match=r"'transformer\.h\.1\.attn\.c_proj\.weight'.*\(16, 32\)"
                       r".*after transposing.*expects \(32, 32\)"):
        convert_state_dict(state, model)
    state = _gpt2_style_state(model)
    state["transformer.wpe.weight"] = torch.zeros(1024, 32)
    with pytest.raises(ValueError, match=r"'transformer\.wpe\.weight'.*\(1024, 32\).*\(24, 32\)"):
        convert_state_dict(state, model)


def test_missing_and_unexpected_parameters():
    model = _small_gpt()
    state = _gpt2_style_state(model)
    del state["transformer.ln_f.bias"]
    with pytest.raises(ValueError, match=r"lacks parameters \['transformer\.ln_f\.bias'\]"):
        convert_state_dict(state, model)
    state = dict(_gpt2_style_state(model), **{"transformer.extra.weight": torch.zeros(2)})
    with pytest.raises(ValueError, match=r"unexpected parameter 'transformer\.extra\.weight'"):
        convert_state_dict(state, model)


def test_untied_head_is_refused():
    model = _small_gpt()
    state = _gpt2_style_state(model)
    state["lm_head.weight"] = state["lm_head.weight"] + 1.0
    with pytest.raises(ValueError, match="not tied"):
        convert_state_dict(state, model)


def _namespace_config(**overrides) -> SimpleNamespace:
    kw = dict(vocab_size=VOCAB, n_positions=24, n_embd=32, n_layer=2, n_head=4,
              activation_function="gelu_new", layer_norm_epsilon=1e-5)
    return SimpleNamespace(**{**kw, **overrides})


def test_config_from_hf_maps_names():
    cfg = GPTConfig(**config_from_hf(_namespace_config()))
    assert cfg == GPTConfig(vocab_size=VOCAB, block_size=24, n_layer=2, n_head=4, n_embd=32,
                            dropout=0.0, bias=True)


@pytest.mark.parametrize(
    ("overrides", "pattern"),
    [({"activation_function": "relu"}, "activation_function='relu'"),
     ({"layer_norm_epsilon": 1e-6}, "layer_norm_epsilon=1e-06")],
)
def test_unsupported_config(overrides, pattern):
    with pytest.raises(ValueError, match=pattern):
        config_from_hf(_namespace_config(**overrides))


def test_unknown_name_lists_valid_names(tmp_path):
    with pytest.raises(ValueError, match=r"unknown GPT-2 model 'gpt3'.*gpt2, gpt2-medium"):
        load_hf_model("gpt3")
    with pytest.raises(ValueError, match="neither a local folder"):
        GPT.from_pretrained(tmp_path / "does-not-exist")
    assert GPT2_NAMES == ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl")


def test_transformers_missing(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "transformers", None)  # makes `import transformers` fail
    with pytest.raises(ImportError, match=r"pip install slmbook\[hf\]"):
        load_hf_model(tmp_path)
    with pytest.raises(ImportError, match="transformers"):
        GPT.from_pretrained("gpt2")


# ---- against transformers itself (slow: importing it takes several seconds) ----


def _hf_config(**overrides):
    transformers = pytest.importorskip("transformers")
    kw = dict(
        vocab_size=VOCAB, n_positions=24, n_embd=32, n_layer=2, n_head=4,
        activation_function="gelu_new", layer_norm_epsilon=1e-5,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        bos_token_id=VOCAB - 1, eos_token_id=VOCAB - 1,
    )
    kw.update(overrides)
    return transformers.GPT2Config(**kw)


def _save_tiny(folder, **overrides):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(_hf_config(**overrides)).eval()
    hf.save_pretrained(folder)
    return hf


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-gpt2")
    return _save_tiny(folder), folder


@pytest.mark.slow
def test_same_logits_float32(tiny):
    hf, folder = tiny
    model = GPT.from_pretrained(folder)
    assert isinstance(model, GPT) and not model.training
    assert model.config == GPTConfig(**config_from_hf(hf.config))
    idx = _ids()
    with torch.no_grad():
        torch.testing.assert_close(model(idx), hf(idx).logits, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_same_logits_float64(tiny):
    hf, folder = tiny
    model = GPT.from_pretrained(folder, dtype=torch.float64)
    assert model.transformer.wte.weight.dtype == torch.float64
    assert model.lm_head.weight is model.transformer.wte.weight  # still tied
    idx = _ids()
    hf64 = type(hf).from_pretrained(folder).double().eval()
    with torch.no_grad():
        torch.testing.assert_close(model(idx), hf64(idx).logits, rtol=1e-10, atol=1e-10)


@pytest.mark.slow
def test_conv1d_weights_are_transposed(tiny):
    hf, folder = tiny
    model = GPT.from_pretrained(folder)
    torch.testing.assert_close(model.transformer.h[1].attn.c_attn.weight,
                               hf.transformer.h[1].attn.c_attn.weight.t(), rtol=0, atol=0)
    torch.testing.assert_close(model.transformer.h[0].mlp.c_proj.weight,
                               hf.transformer.h[0].mlp.c_proj.weight.t(), rtol=0, atol=0)


@pytest.mark.slow
def test_folder_with_shape_mismatch_names_parameter_and_shapes(tmp_path):
    _save_tiny(tmp_path, n_inner=96)  # slmbook's MLP is always 4 * n_embd = 128 wide
    with pytest.raises(ValueError,
                       match=r"transformer\.h\.0\.mlp\.c_fc\.weight.*\(96, 32\).*\(128, 32\)"):
        GPT.from_pretrained(tmp_path)
