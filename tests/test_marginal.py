"""slmbook.marginal: the retrieval prior and posterior, RAG-Sequence and RAG-Token losses.

Covers: both losses equal brute-force enumeration in float64 (explicit Python
loops over passages and tokens); torch.autograd.gradcheck (finite
differences) on every input; K = 1 reduces to the single-passage loss; L = 1
makes the two losses agree, and neither bounds the other; the gradient w.r.t. the scores equals
(prior - posterior) / tau; the reductions; extreme scores, tiny temperatures
and -inf log-probabilities stay finite; padding is ignored, even if it is
-inf or NaN; every documented error.
"""

import math

import pytest
import torch

from slmbook.marginal import (
    answer_token_logprobs,
    rag_sequence_nll,
    rag_token_nll,
    retrieval_log_prior,
    retrieval_posterior,
    retrieval_prior,
)

B, K, L = 3, 4, 5


def _inputs(seed=0, b=B, k=K, length=L, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(b, k, generator=g, dtype=dtype) * 2
    tok = torch.log(torch.rand(b, k, length, generator=g, dtype=dtype) * 0.9 + 0.05)
    mask = torch.rand(b, length, generator=g) < 0.7
    mask[:, 0] = True  # at least one answer token per row
    return scores, tok, mask


def _brute_sequence(scores, answer_lp, tau):
    out = []
    for b in range(scores.shape[0]):
        weights = [math.exp(scores[b, z].item() / tau) for z in range(scores.shape[1])]
        total = sum(weights)
        p_y = sum(w / total * math.exp(answer_lp[b, z].item()) for z, w in enumerate(weights))
        out.append(-math.log(p_y))
    return torch.tensor(out, dtype=torch.float64)


def _brute_token(scores, tok, mask, tau):
    out = []
    for b in range(scores.shape[0]):
        weights = [math.exp(scores[b, z].item() / tau) for z in range(scores.shape[1])]
        total = sum(weights)
        nll = 0.0
        for t in range(tok.shape[2]):
            if mask[b, t]:
                p_t = sum(w / total * math.exp(tok[b, z, t].item()) for z, w in enumerate(weights))
                nll -= math.log(p_t)
        out.append(nll)
    return torch.tensor(out, dtype=torch.float64)


# ---------------------------------------------------------------- against enumeration
@pytest.mark.parametrize("tau", [0.1, 1.0, 3.0])
def test_sequence_equals_brute_force(tau):
    scores, tok, mask = _inputs()
    answer_lp = (tok * mask[:, None, :]).sum(-1)
    got = rag_sequence_nll(scores, answer_lp, tau, reduction="none")
    torch.testing.assert_close(got, _brute_sequence(scores, answer_lp, tau), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("tau", [0.1, 1.0, 3.0])
def test_token_equals_brute_force(tau):
    scores, tok, mask = _inputs(seed=1)
    got = rag_token_nll(scores, tok, mask, tau, reduction="none")
    torch.testing.assert_close(got, _brute_token(scores, tok, mask, tau), rtol=1e-12, atol=1e-12)


def test_prior_and_posterior_by_enumeration():
    scores, tok, _ = _inputs(seed=2)
    answer_lp = tok.sum(-1)
    tau = 0.5
    prior = retrieval_prior(scores, tau)
    expected = torch.exp(scores / tau) / torch.exp(scores / tau).sum(-1, keepdim=True)
    torch.testing.assert_close(prior, expected, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(retrieval_log_prior(scores, tau), expected.log(), rtol=1e-12, atol=1e-12)
    joint = expected * answer_lp.exp()
    torch.testing.assert_close(
        retrieval_posterior(scores, answer_lp, tau), joint / joint.sum(-1, keepdim=True),
        rtol=1e-10, atol=1e-14,
    )


# ---------------------------------------------------------------- gradients
def test_gradcheck_sequence():
    scores, tok, _ = _inputs(seed=3)
    answer_lp = tok.sum(-1).requires_grad_()
    scores.requires_grad_()
    assert torch.autograd.gradcheck(lambda s, a: rag_sequence_nll(s, a, 0.7), (scores, answer_lp))
    assert torch.autograd.gradgradcheck(lambda s, a: rag_sequence_nll(s, a, 0.7), (scores, answer_lp))


def test_gradcheck_token():
    scores, tok, mask = _inputs(seed=4)
    scores.requires_grad_(), tok.requires_grad_()
    assert torch.autograd.gradcheck(lambda s, t: rag_token_nll(s, t, mask, 0.7, "sum"), (scores, tok))


@pytest.mark.parametrize("tau", [0.1, 1.0, 2.5])
def test_score_gradient_is_prior_minus_posterior_over_tau(tau):
    scores, tok, _ = _inputs(seed=5)
    answer_lp = tok.sum(-1)
    scores.requires_grad_()
    rag_sequence_nll(scores, answer_lp, tau, reduction="sum").backward()
    expected = (retrieval_prior(scores, tau) - retrieval_posterior(scores, answer_lp, tau)) / tau
    torch.testing.assert_close(scores.grad, expected.detach(), rtol=1e-10, atol=1e-12)


def test_token_score_gradient_is_sum_over_tokens_of_prior_minus_posterior():
    scores, tok, mask = _inputs(seed=6)
    tau = 0.8
    scores.requires_grad_()
    rag_token_nll(scores, tok, mask, tau, reduction="sum").backward()
    expected = torch.zeros_like(scores)
    for t in range(L):
        post_t = retrieval_posterior(scores, tok[:, :, t], tau)
        expected += mask[:, t, None] * (retrieval_prior(scores, tau) - post_t) / tau
    torch.testing.assert_close(scores.grad, expected.detach(), rtol=1e-10, atol=1e-12)


def test_gradient_flows_to_reader_through_posterior():
    """d L / d log p(y|x,z) = -posterior: the reader learns most from the passages the posterior trusts."""
    scores, tok, _ = _inputs(seed=7)
    answer_lp = tok.sum(-1).requires_grad_()
    rag_sequence_nll(scores, answer_lp, reduction="sum").backward()
    torch.testing.assert_close(answer_lp.grad, -retrieval_posterior(scores, answer_lp.detach()),
                               rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------- special cases
def test_k1_is_single_passage_loss():
    scores, tok, mask = _inputs(seed=8, k=1)
    answer_lp = (tok * mask[:, None, :]).sum(-1)
    torch.testing.assert_close(rag_sequence_nll(scores, answer_lp, 0.3, "none"), -answer_lp[:, 0],
                               rtol=0, atol=1e-12)
    torch.testing.assert_close(rag_token_nll(scores, tok, mask, 0.3, "none"),
                               -(tok[:, 0] * mask).sum(-1), rtol=0, atol=1e-12)


def test_sequence_and_token_agree_when_l_is_1():
    scores, tok, _ = _inputs(seed=9, length=1)
    mask = torch.ones(B, 1, dtype=torch.bool)
    torch.testing.assert_close(rag_token_nll(scores, tok, mask, 0.4),
                               rag_sequence_nll(scores, tok[:, :, 0], 0.4), rtol=1e-12, atol=1e-12)


def test_neither_loss_bounds_the_other():
    """RAG-Token wins when tokens come from different passages, loses when one passage has them all."""
    scores = torch.zeros(1, 2, dtype=torch.float64)
    mask = torch.ones(1, 2, dtype=torch.bool)
    split = torch.log(torch.tensor([[[0.9, 0.1], [0.1, 0.9]]], dtype=torch.float64))
    torch.testing.assert_close(rag_token_nll(scores, split, mask), -2 * torch.log(torch.tensor(0.5, dtype=torch.float64)))
    torch.testing.assert_close(rag_sequence_nll(scores, split.sum(-1)), -torch.log(torch.tensor(0.09, dtype=torch.float64)))
    one = torch.log(torch.tensor([[[0.9, 0.9], [0.1, 0.1]]], dtype=torch.float64))
    torch.testing.assert_close(rag_token_nll(scores, one, mask), -2 * torch.log(torch.tensor(0.5, dtype=torch.float64)))
    torch.testing.assert_close(rag_sequence_nll(scores, one.sum(-1)), -torch.log(torch.tensor(0.41, dtype=torch.float64)))


def test_reductions():
    scores, tok, mask = _inputs(seed=11)
    answer_lp = tok.sum(-1)
    none = rag_sequence_nll(scores, answer_lp, reduction="none")
    assert none.shape == (B,)
    torch.testing.assert_close(rag_sequence_nll(scores, answer_lp), none.mean())
    torch.testing.assert_close(rag_sequence_nll(scores, answer_lp, reduction="sum"), none.sum())
    none_t = rag_token_nll(scores, tok, mask, reduction="none")
    torch.testing.assert_close(rag_token_nll(scores, tok, mask), none_t.mean())
    torch.testing.assert_close(rag_token_nll(scores, tok, mask, reduction="sum"), none_t.sum())


def test_integer_mask_equals_bool_mask():
    scores, tok, mask = _inputs(seed=12)
    torch.testing.assert_close(rag_token_nll(scores, tok, mask.long()), rag_token_nll(scores, tok, mask))


def test_padding_is_ignored_even_if_inf_or_nan():
    scores, tok, mask = _inputs(seed=13)
    dirty = tok.clone()
    dirty[~mask[:, None, :].expand_as(tok)] = float("nan")
    dirty[0, 0, ~mask[0]] = float("-inf")
    dirty.requires_grad_()
    clean = rag_token_nll(scores, tok, mask, reduction="sum")
    loss = rag_token_nll(scores, dirty, mask, reduction="sum")
    torch.testing.assert_close(loss, clean)
    loss.backward()
    assert torch.isfinite(dirty.grad).all()
    assert (dirty.grad[~mask[:, None, :].expand_as(tok)] == 0).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_extreme_values_stay_finite(dtype):
    scores = torch.tensor([[1e4, -1e4, 0.0], [5e3, 5e3, -1e4]], dtype=dtype, requires_grad=True)
    answer_lp = torch.tensor([[-1e4, -2.0, float("-inf")], [float("-inf"), -3.0, -1e4]], dtype=dtype,
                             requires_grad=True)
    for tau in (1e-3, 1.0, 1e3):
        loss = rag_sequence_nll(scores, answer_lp, tau)
        assert torch.isfinite(loss)
        grads = torch.autograd.grad(loss, (scores, answer_lp))
        assert all(torch.isfinite(g).all() for g in grads)
        post = retrieval_posterior(scores, answer_lp, tau)
        assert torch.isfinite(post).all() and (post[:, :] >= 0).all()
        tok = answer_lp[:, :, None].expand(2, 3, 2)
        loss_t = rag_token_nll(scores, tok, torch.ones(2, 2, dtype=torch.bool), tau)
        assert torch.isfinite(loss_t)
        assert all(torch.isfinite(g).all() for g in torch.autograd.grad(loss_t, (scores, answer_lp)))
    # row 1, tau = 1: passage 0 has prior 1/2 but cannot produce the answer; passage 1 gives e^-3
    row = rag_sequence_nll(scores, answer_lp, 1.0, "none")[1]
    torch.testing.assert_close(row, torch.tensor(3.0 + math.log(2), dtype=dtype))


def test_impossible_passage_gets_zero_posterior():
    scores = torch.zeros(1, 2, dtype=torch.float64)
    answer_lp = torch.tensor([[float("-inf"), -1.0]], dtype=torch.float64)
    torch.testing.assert_close(retrieval_posterior(scores, answer_lp),
                               torch.tensor([[0.0, 1.0]], dtype=torch.float64))


# ---------------------------------------------------------------- errors
def test_errors():
    s, tok, mask = _inputs(seed=14)
    lp = tok.sum(-1)
    with pytest.raises(ValueError, match=r"temperature must be a positive number, got 0.0"):
        rag_sequence_nll(s, lp, 0.0)
    with pytest.raises(ValueError, match="temperature must be a finite number"):
        retrieval_prior(s, float("nan"))
    with pytest.raises(ValueError, match=r"reduction='avg' is unknown"):
        rag_sequence_nll(s, lp, reduction="avg")
    with pytest.raises(ValueError, match=r"doc_scores must have shape \(B, K\), got \(4,\)"):
        rag_sequence_nll(s[0], lp)
    with pytest.raises(ValueError, match=r"answer_logprobs has shape \(3, 3\) but doc_scores has \(3, 4\)"):
        rag_sequence_nll(s, lp[:, :3])
    with pytest.raises(ValueError, match=r"K = 0"):
        rag_sequence_nll(s[:, :0], lp[:, :0])
    with pytest.raises(TypeError, match=r"must be a torch\.Tensor"):
        rag_sequence_nll([[0.0]], lp)
    with pytest.raises(TypeError, match=r"floating-point tensor, got torch\.int64"):
        rag_sequence_nll(s.long(), lp)
    with pytest.raises(ValueError, match=r"must be log-probabilities.*negate it"):
        rag_sequence_nll(s, -lp)
    with pytest.raises(ValueError, match=r"token_logprobs must have shape \(B, K, L\)"):
        rag_token_nll(s, lp, mask)
    with pytest.raises(ValueError, match=r"token_logprobs has shape \(3, 2, 5\)"):
        rag_token_nll(s, tok[:, :2], mask)
    with pytest.raises(ValueError, match=r"mask has shape \(3, 4\)"):
        rag_token_nll(s, tok, mask[:, :4])
    with pytest.raises(TypeError, match="mask must be bool or integer 0/1"):
        rag_token_nll(s, tok, mask.double())
    with pytest.raises(TypeError, match="mask must be bool or integer 0/1"):
        rag_token_nll(s, tok, mask.long() * 2)
    with pytest.raises(TypeError, match="mask must be a"):
        rag_token_nll(s, tok, None)
    with pytest.raises(ValueError, match="token_logprobs must be log-probabilities"):
        rag_token_nll(s, -tok, mask)


# ---------------------------------------------------------------- answer_token_logprobs
def test_answer_token_logprobs_equals_a_loop_and_feeds_both_losses():
    g = torch.Generator().manual_seed(15)
    logits = torch.randn(6, 9, 5, generator=g, dtype=torch.float64, requires_grad=True)
    targets = torch.full((6, 9), -100)
    spans = [(2, 5), (0, 9), (4, 5), (3, 7), (1, 3), (8, 9)]
    for row, (a, b) in enumerate(spans):
        targets[row, a:b] = torch.randint(0, 5, (b - a,), generator=g)
    lp, mask = answer_token_logprobs(logits, targets)
    assert lp.shape == mask.shape == (6, 9)
    logp = torch.log_softmax(logits, -1)
    for row, (a, b) in enumerate(spans):
        assert mask[row].tolist() == [i < b - a for i in range(9)]
        for i, t in enumerate(range(a, b)):
            torch.testing.assert_close(lp[row, i], logp[row, t, targets[row, t]], rtol=0, atol=0)
        assert (lp[row, b - a:] == 0).all()
    # the sum over the mask is the answer's log-probability = -(sum of token cross-entropies)
    ce = torch.nn.functional.cross_entropy(logits.reshape(-1, 5), targets.reshape(-1), reduction="none")
    torch.testing.assert_close(lp.sum(-1), -ce.view(6, 9).sum(-1))
    # K = 1 reader loss, through both marginal losses, with gradients to the logits
    scores = torch.zeros(6, 1, dtype=torch.float64)
    loss = rag_token_nll(scores, lp[:, None, :], mask, reduction="sum")
    torch.testing.assert_close(loss, ce.sum())
    torch.testing.assert_close(rag_sequence_nll(scores, lp.sum(-1)[:, None], reduction="sum"), ce.sum())
    (grad,) = torch.autograd.grad(loss, logits)
    (expected,) = torch.autograd.grad(ce.sum(), logits)
    torch.testing.assert_close(grad, expected)


def test_answer_token_logprobs_errors():
    with pytest.raises(ValueError, match=r"logits must be an \(N, T, V\) tensor, got \(2, 3\)"):
        answer_token_logprobs(torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"targets must be an \(N, T\) = \(2, 3\) tensor, got \(2, 4\)"):
        answer_token_logprobs(torch.zeros(2, 3, 4), torch.zeros(2, 4, dtype=torch.long))
