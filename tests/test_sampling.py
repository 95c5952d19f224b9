"""slmbook.sampling: shapes, reproducibility under a seeded torch.Generator, context
cropping to the block size, temperature and top-k against direct computations,
restoring train/eval mode, and the errors for bad sampling arguments."""

from __future__ import annotations

import copy

import pytest
import torch

from slmbook.model import GPT, Bigram, GPTConfig
from slmbook.sampling import generate, generate_ids, next_token_probs
from slmbook.tokenizers import CharTokenizer

TEXT = "hello world, hello slmbook. "


@pytest.fixture
def setup():
    torch.manual_seed(0)
    tok = CharTokenizer.fit(TEXT)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=8, n_layer=1, n_head=2, n_embd=16))
    return model, tok


def test_generate_ids_shape_and_determinism(setup):
    model, _ = setup
    idx = torch.zeros(3, 2, dtype=torch.long)
    a = generate_ids(model, idx, 20, generator=torch.Generator().manual_seed(1))
    b = generate_ids(model, idx, 20, generator=torch.Generator().manual_seed(1))
    c = generate_ids(model, idx, 20, generator=torch.Generator().manual_seed(2))
    assert a.shape == (3, 22) and a.dtype == torch.long
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(a[:, :2], idx)
    assert torch.equal(generate_ids(model, idx, 0), idx)


def test_generate_text_reproducible(setup):
    model, tok = setup
    s1 = generate(model, tok, "hello", 30, generator=torch.Generator().manual_seed(0))
    s2 = generate(model, tok, "hello", 30, generator=torch.Generator().manual_seed(0))
    assert s1 == s2 and s1.startswith("hello") and len(s1) == 35
    cont = generate(
        model, tok, "hello", 30, generator=torch.Generator().manual_seed(0), include_prompt=False
    )
    assert s1 == "hello" + cont


def test_context_cropped_to_block_size(setup):
    """A prompt longer than block_size works, and only its last block_size tokens matter."""
    model, _ = setup
    g = torch.Generator().manual_seed(0)
    long = torch.randint(0, 10, (1, 30), generator=g)
    other = long.clone()
    other[:, :22] = (other[:, :22] + 1) % 10  # change everything but the last 8 tokens
    a = generate_ids(model, long, 5, generator=torch.Generator().manual_seed(3))
    b = generate_ids(model, other, 5, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a[:, 30:], b[:, 30:])


def test_top_k_one_is_greedy(setup):
    model, _ = setup
    idx = torch.tensor([[1, 2, 3]])
    out = generate_ids(model, idx, 6, top_k=1)
    ctx = idx
    for _ in range(6):
        with torch.no_grad():
            nxt = model(ctx[:, -8:])[:, -1].argmax(-1, keepdim=True)
        ctx = torch.cat([ctx, nxt], 1)
    assert torch.equal(out, ctx)


def test_next_token_probs_temperature_and_top_k(setup):
    model, _ = setup
    idx = torch.tensor([[4, 5, 6]])
    with torch.no_grad():
        logits = model(idx)[:, -1]
    for t in (0.5, 1.0, 2.0):
        torch.testing.assert_close(
            next_token_probs(model, idx, temperature=t), torch.softmax(logits / t, -1)
        )
    p = next_token_probs(model, idx, top_k=3)
    assert (p > 0).sum() == 3
    torch.testing.assert_close(p.sum(-1), torch.ones(1))
    top3 = torch.topk(logits, 3).indices
    torch.testing.assert_close(p[0, top3[0]], torch.softmax(logits[0, top3[0]], -1))
    assert next_token_probs(model, idx, top_k=1000).count_nonzero() == logits.numel()
    cold = next_token_probs(model, idx, temperature=0.1).max()
    hot = next_token_probs(model, idx, temperature=10.0).max()
    assert cold > p.max() > hot


def test_mode_restored_and_no_grad(setup):
    model, _ = setup
    model.train()
    out = generate_ids(model, torch.zeros(1, 1, dtype=torch.long), 3)
    assert model.training and not out.requires_grad
    model.eval()
    next_token_probs(model, torch.zeros(1, 1, dtype=torch.long))
    assert not model.training


def test_works_with_bigram():
    model = Bigram(5, block_size=4)
    out = generate_ids(model, torch.zeros(2, 1, dtype=torch.long), 10)
    assert out.shape == (2, 11) and out.max() < 5


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(temperature=0), ValueError, r"temperature must be > 0, got 0.0; use a small value"),
        (dict(temperature=-1.5), ValueError, r"temperature must be > 0, got -1\.5"),
        (dict(temperature=float("inf")), ValueError, r"temperature must be a finite number, got inf"),
        (dict(temperature=float("nan")), ValueError, r"temperature must be a finite number, got nan"),
        (dict(temperature="hot"), TypeError, r"temperature must be a finite number, got 'hot'"),
        (dict(top_k=0), ValueError, r"top_k must be a positive int, got 0"),
        (dict(top_k=2.5), TypeError, r"top_k must be a positive int or None, got 2\.5"),
        (dict(top_k=True), TypeError, r"top_k must be a positive int or None, got True"),
    ],
)
def test_sampling_errors(setup, kwargs, error, match):
    model, tok = setup
    idx = torch.zeros(1, 1, dtype=torch.long)
    with pytest.raises(error, match=match):
        generate_ids(model, idx, 3, **kwargs)
    with pytest.raises(error, match=match):
        generate(model, tok, "h", 3, **kwargs)
    with pytest.raises(error, match=match):
        next_token_probs(model, idx, **kwargs)


@pytest.mark.parametrize("temperature", [1e-45, 5e-324, 1e-30])
def test_tiny_temperature_samples_greedily(setup, temperature):
    model, _ = setup
    idx = torch.tensor([[1, 2, 3]])
    probs = next_token_probs(model, idx, temperature=temperature)
    assert torch.isfinite(probs).all()
    assert probs[0, next_token_probs(model, idx).argmax()] == 1.0
    greedy = generate_ids(model, idx, 5, temperature=temperature)
    expected = idx
    for _ in range(5):
        expected = torch.cat([expected, model(expected)[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(greedy, expected)


def test_ids_other_integer_dtypes_and_float_or_list_ids(setup):
    model, _ = setup
    g = torch.Generator().manual_seed(0)
    expected = generate_ids(model, torch.tensor([[1, 2]]), 4, generator=g)
    g.manual_seed(0)
    out = generate_ids(model, torch.tensor([[1, 2]], dtype=torch.uint8), 4, generator=g)
    assert out.dtype == torch.int64 and torch.equal(out, expected)
    with pytest.raises(TypeError, match=r"idx must be integer token ids, got dtype torch\.float32"):
        generate_ids(model, torch.tensor([[1.0, 2.0]]), 2)
    with pytest.raises(TypeError, match=r"idx must be a \(B, T\) tensor of token ids, got a list"):
        next_token_probs(model, [[1, 2]])


def test_nan_weights_give_a_clear_error(setup):
    model, _ = setup
    broken = copy.deepcopy(model)
    with torch.no_grad():
        broken.lm_head.weight.fill_(float("nan"))
    with pytest.raises(ValueError, match=r"logits contain NaN.*load an earlier checkpoint"):
        generate_ids(broken, torch.tensor([[1]]), 2)


def test_other_errors(setup):
    model, tok = setup
    with pytest.raises(ValueError, match=r"max_new_tokens must be a non-negative int, got -1"):
        generate_ids(model, torch.zeros(1, 1, dtype=torch.long), -1)
    with pytest.raises(TypeError, match=r"max_new_tokens must be a non-negative int, got 2\.0"):
        generate_ids(model, torch.zeros(1, 1, dtype=torch.long), 2.0)
    with pytest.raises(ValueError, match=r"T >= 1, got shape \(1, 0\)"):
        generate_ids(model, torch.zeros(1, 0, dtype=torch.long), 2)
    with pytest.raises(ValueError, match=r"prompt encodes to no tokens"):
        generate(model, tok, "", 2)


def test_next_token_plot_and_temperature_widget(setup):
    """The chapter-3 figure helper and widget build (headless) and check their inputs."""
    pytest.importorskip("ipywidgets")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from slmbook.plotting import plot_next_token_distribution
    from slmbook.widgets import temperature_explorer

    model, tok = setup
    labels = [tok.decode([i]) for i in range(tok.vocab_size)]
    probs = next_token_probs(model, torch.tensor([tok.encode("hel")]))[0]
    ax = plot_next_token_distribution(probs, labels, top=5)
    assert len(ax.patches) == 5
    with pytest.raises(ValueError, match=r"probs must be \(V,\) with V = len\(labels\) = 3"):
        plot_next_token_distribution(probs, labels[:3])
    temperature_explorer(model, tok, "hel", max_new_tokens=5)
    with pytest.raises(ValueError, match=r"default=0.3 is not one of temperatures"):
        temperature_explorer(model, tok, "hel", default=0.3)
    plt.close("all")


def test_tokenizer_that_does_not_match_the_model_is_refused_before_sampling(setup):
    model, _ = setup
    other = CharTokenizer.fit("only a few letters")
    assert other.vocab_size != model.config.vocab_size
    with pytest.raises(ValueError, match=rf"the tokenizer has {other.vocab_size} tokens but the model predicts"):
        generate(model, other, "a", 3)
