"""Tests for slmbook.optim: SGD, Adam and AdamW against torch.optim.

Covers: 100 steps on random problems with two parameter groups (different
learning rates) give the same parameters as torch.optim, for every option
combination, in float64 and float32; a state_dict round trip in the middle of a
run continues identically (also across slmbook and torch); None gradients are
skipped and sparse gradients handled like torch; bad arguments and foreign
state dicts raise clear errors. Also: complex parameters (Adam updates the
real and imaginary parts as a real view, as torch does), the step counter under
a bfloat16 default dtype, and one-element tensor betas, each against torch.
"""

from __future__ import annotations

import copy
import io

import pytest
import torch

from slmbook import optim

SGD_OPTIONS = [
    {},
    {"momentum": 0.9, "dampening": 0.5},
    {"momentum": 0.9, "nesterov": True},
    {"weight_decay": 0.1},
    {"momentum": 0.8, "weight_decay": 0.05, "nesterov": True},
    {"momentum": 0.9, "dampening": 0.1, "weight_decay": 0.01, "maximize": True},
]
ADAM_OPTIONS = [
    {},
    {"betas": (0.8, 0.99), "eps": 1e-3},
    {"weight_decay": 0.1},
    {"amsgrad": True},
    {"betas": (0.0, 0.9), "eps": 1e-6, "weight_decay": 0.05, "amsgrad": True},
    {"maximize": True, "weight_decay": 0.01},
]
CASES = (
    [("SGD", o) for o in SGD_OPTIONS]
    + [("Adam", o) for o in ADAM_OPTIONS]
    + [("AdamW", o) for o in ADAM_OPTIONS]
)
TOL = {torch.float64: dict(rtol=1e-12, atol=1e-12), torch.float32: dict(rtol=1e-6, atol=1e-6)}


def _problem(dtype: torch.dtype, seed: int = 0):
    """Random least squares with a tanh layer; returns the params and a loss function."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(16, 5, generator=g, dtype=dtype)
    y = torch.randn(16, 3, generator=g, dtype=dtype)
    w1 = torch.randn(5, 4, generator=g, dtype=dtype)
    b1 = torch.randn(4, generator=g, dtype=dtype)
    w2 = torch.randn(4, 3, generator=g, dtype=dtype)

    def loss_fn(params):
        a, b, c = params
        return ((torch.tanh(x @ a + b) @ c - y) ** 2).mean()

    return [w1, b1, w2], loss_fn


def _make(cls, params, options, lrs=(0.05, 0.01)):
    groups = [{"params": params[:2], "lr": lrs[0]}, {"params": params[2:], "lr": lrs[1]}]
    return cls(groups, **options)


def _run(opt, params, loss_fn, steps):
    for _ in range(steps):
        opt.zero_grad()
        loss = loss_fn(params)
        loss.backward()
        opt.step()


def _leaves(tensors):
    return [t.detach().clone().requires_grad_(True) for t in tensors]


def _max_diff(mine, ref):
    return max((a.detach() - b.detach()).abs().max().item() for a, b in zip(mine, ref, strict=True))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize(("name", "options"), CASES, ids=[f"{n}-{o}" for n, o in CASES])
def test_matches_torch_for_100_steps(name, options, dtype):
    init, loss_fn = _problem(dtype)
    mine, ref = _leaves(init), _leaves(init)
    opt = _make(getattr(optim, name), mine, options)
    ref_opt = _make(getattr(torch.optim, name), ref, {**options, "foreach": False})
    _run(opt, mine, loss_fn, 100)
    _run(ref_opt, ref, loss_fn, 100)
    for a, b in zip(mine, ref, strict=True):
        torch.testing.assert_close(a, b, **TOL[dtype])
    assert not torch.equal(mine[0], init[0])  # it did move


@pytest.mark.parametrize(("name", "options"), CASES[::2], ids=[f"{n}-{o}" for n, o in CASES[::2]])
def test_state_dict_round_trip_continues_identically(name, options):
    init, loss_fn = _problem(torch.float64, seed=1)
    params = _leaves(init)
    opt = _make(getattr(optim, name), params, options)
    _run(opt, params, loss_fn, 50)
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    # a fresh optimizer on a copy of the parameters, restored from the saved state
    resumed = _leaves(params)
    opt2 = _make(getattr(optim, name), resumed, {})  # options come from the state dict
    opt2.load_state_dict(torch.load(io.BytesIO(buffer.getvalue())))
    _run(opt, params, loss_fn, 50)
    _run(opt2, resumed, loss_fn, 50)
    for a, b in zip(params, resumed, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW"])
def test_state_dict_exchanges_with_torch(name):
    options = {"momentum": 0.9} if name == "SGD" else {"amsgrad": True}
    init, loss_fn = _problem(torch.float64, seed=2)
    mine, ref = _leaves(init), _leaves(init)
    opt = _make(getattr(optim, name), mine, options)
    ref_opt = _make(getattr(torch.optim, name), ref, {**options, "foreach": False})
    _run(opt, mine, loss_fn, 20)
    _run(ref_opt, ref, loss_fn, 20)
    # swap states: torch continues from slmbook's state and vice versa
    mine_sd, ref_sd = copy.deepcopy(opt.state_dict()), copy.deepcopy(ref_opt.state_dict())
    opt.load_state_dict(ref_sd)
    ref_opt.load_state_dict(mine_sd)
    _run(opt, mine, loss_fn, 20)
    _run(ref_opt, ref, loss_fn, 20)
    for a, b in zip(mine, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW"])
def test_none_gradients_are_skipped_like_torch(name):
    options = {"momentum": 0.9, "weight_decay": 0.1} if name == "SGD" else {"weight_decay": 0.1}
    init, _ = _problem(torch.float64, seed=3)
    mine, ref = _leaves(init), _leaves(init)
    opt = _make(getattr(optim, name), mine, options)
    ref_opt = _make(getattr(torch.optim, name), ref, {**options, "foreach": False})
    for step in range(6):
        for params, o in ((mine, opt), (ref, ref_opt)):
            o.zero_grad()  # sets .grad to None
            used = params if step % 2 else params[:1]  # only w1 has a gradient on even steps
            sum((p**2).sum() for p in used).backward()
            o.step()
    for a, b in zip(mine, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert len(opt.state[mine[1]]) > 0  # state created on first use...
    fresh = torch.zeros(2, requires_grad=True)
    opt2 = getattr(optim, name)([fresh], **options)
    opt2.step()  # ... and never for a parameter that got no gradient
    assert len(opt2.state[fresh]) == 0
    torch.testing.assert_close(fresh, torch.zeros(2))


def test_sgd_sparse_gradients_match_torch():
    g = torch.Generator().manual_seed(4)
    weight = torch.randn(10, 3, generator=g, dtype=torch.float64)
    idx = torch.tensor([1, 4, 4, 7])
    results = []
    for cls in (optim.SGD, torch.optim.SGD):
        emb = torch.nn.Embedding(10, 3, sparse=True, _weight=weight.clone())
        opt = cls(emb.parameters(), lr=0.1, momentum=0.9)
        for _ in range(5):
            opt.zero_grad()
            emb(idx).pow(2).sum().backward()
            assert emb.weight.grad.is_sparse
            opt.step()
        results.append(emb.weight.detach())
    torch.testing.assert_close(results[0], results[1], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["Adam", "AdamW"])
def test_adam_rejects_sparse_gradients_like_torch(name):
    for cls in (getattr(optim, name), getattr(torch.optim, name)):
        emb = torch.nn.Embedding(10, 3, sparse=True)
        opt = cls(emb.parameters())
        emb(torch.tensor([1, 2])).sum().backward()
        with pytest.raises(RuntimeError, match="does not support sparse gradients"):
            opt.step()


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW"])
def test_step_returns_closure_loss(name):
    w = torch.tensor([1.0, -2.0], requires_grad=True)
    opt = getattr(optim, name)([w], lr=0.1)

    def closure():
        opt.zero_grad()
        loss = (w**2).sum()
        loss.backward()
        return loss

    loss = opt.step(closure)
    torch.testing.assert_close(loss, torch.tensor(5.0))
    assert opt.step() is None


def test_works_with_torch_lr_scheduler():
    w = torch.ones(3, requires_grad=True)
    opt = optim.AdamW([w], lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    w.sum().backward()
    opt.step()
    sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05)


def test_adamw_defaults_like_torch():
    w = torch.ones(2, requires_grad=True)
    ours, theirs = optim.AdamW([w]).defaults, torch.optim.AdamW([w]).defaults
    for key in ("lr", "betas", "eps", "weight_decay", "amsgrad", "decoupled_weight_decay"):
        assert ours[key] == theirs[key], key
    assert optim.Adam([w]).defaults["weight_decay"] == 0


@pytest.mark.parametrize(
    ("cls", "kwargs", "match"),
    [
        (optim.SGD, {"lr": -0.1}, "Invalid learning rate: -0.1"),
        (optim.SGD, {"momentum": -0.5}, "Invalid momentum value: -0.5"),
        (optim.SGD, {"weight_decay": -1e-3}, "Invalid weight_decay value: -0.001"),
        (optim.SGD, {"nesterov": True}, "Nesterov momentum requires momentum > 0"),
        (optim.SGD, {"nesterov": True, "momentum": 0.9, "dampening": 0.1}, "dampening=0.1"),
        (optim.Adam, {"lr": -1.0}, "Invalid learning rate: -1.0"),
        (optim.Adam, {"betas": (1.0, 0.999)}, "beta parameter at index 0: 1.0"),
        (optim.Adam, {"betas": (0.9, -0.1)}, "beta parameter at index 1: -0.1"),
        (optim.Adam, {"eps": 0.0}, "Invalid epsilon value: 0.0"),
        (optim.AdamW, {"eps": -1e-8}, "Invalid epsilon value: -1e-08"),
        (optim.AdamW, {"weight_decay": -0.01}, "Invalid weight_decay value: -0.01"),
        (optim.AdamW, {"lr": float("nan")}, "Invalid learning rate: nan"),
    ],
)
def test_bad_arguments_raise(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls([torch.zeros(2, requires_grad=True)], **kwargs)


def test_bad_param_group_value_raises():
    a, b = torch.zeros(2, requires_grad=True), torch.zeros(2, requires_grad=True)
    with pytest.raises(ValueError, match="Invalid learning rate: -2"):
        optim.SGD([{"params": [a]}, {"params": [b], "lr": -2}], lr=0.1)


@pytest.mark.parametrize("cls", [optim.SGD, optim.Adam, optim.AdamW])
def test_empty_or_single_tensor_params_raise(cls):
    with pytest.raises(ValueError, match="empty parameter list"):
        cls([])
    with pytest.raises(ValueError, match="empty parameter list"):
        cls(torch.nn.ReLU().parameters())
    with pytest.raises(TypeError, match="wrap it in a list"):
        cls(torch.zeros(2, requires_grad=True))


def _trained(cls, shapes, **kw):
    params = [torch.ones(s, requires_grad=True) for s in shapes]
    opt = cls(params, **kw)
    sum(p.sum() for p in params).backward()
    opt.step()
    return opt


def test_load_state_dict_from_other_optimizer_raises():
    sgd = _trained(optim.SGD, [(2,)], momentum=0.9)
    adam = _trained(optim.Adam, [(2,)])
    adamw = _trained(optim.AdamW, [(2,)])
    with pytest.raises(ValueError, match=r"not written by Adam.*lacks \['betas'"):
        _trained(optim.Adam, [(2,)]).load_state_dict(sgd.state_dict())
    with pytest.raises(ValueError, match="not written by SGD"):
        _trained(optim.SGD, [(2,)], momentum=0.9).load_state_dict(adam.state_dict())
    with pytest.raises(ValueError, match="state dict is from Adam, not AdamW"):
        _trained(optim.AdamW, [(2,)]).load_state_dict(adam.state_dict())
    with pytest.raises(ValueError, match="state dict is from AdamW, not Adam"):
        _trained(optim.Adam, [(2,)]).load_state_dict(adamw.state_dict())
    with pytest.raises(ValueError, match="keys 'state' and 'param_groups'"):
        adam.load_state_dict({"weights": 1})


def test_load_state_dict_from_other_layout_raises():
    adam = _trained(optim.Adam, [(2,), (3,)])
    with pytest.raises(ValueError, match="has 2 parameters but this Adam has 1"):
        _trained(optim.Adam, [(2,)]).load_state_dict(adam.state_dict())
    with pytest.raises(ValueError, match=r"has shape \(2,\) but the parameter has shape \(4,\)"):
        _trained(optim.Adam, [(4,), (3,)]).load_state_dict(adam.state_dict())
    a, b = torch.ones(2, requires_grad=True), torch.ones(3, requires_grad=True)
    two_groups = optim.Adam([{"params": [a]}, {"params": [b]}])
    with pytest.raises(ValueError, match="has 1 parameter group"):
        two_groups.load_state_dict(_trained(optim.Adam, [(2,)]).state_dict())
    ams = optim.Adam([torch.ones(2, requires_grad=True)], amsgrad=True)
    sd = adam.state_dict()
    sd["param_groups"][0]["params"] = [0]
    del sd["state"][1]
    sd["param_groups"][0]["amsgrad"] = True  # but no max_exp_avg_sq saved
    with pytest.raises(ValueError, match=r"expects .*max_exp_avg_sq"):
        ams.load_state_dict(sd)


def test_largest_difference_to_torch_over_all_cases():
    """Every option combination, both dtypes: the worst |slmbook - torch| after 100 steps."""
    worst = {}
    for dtype in (torch.float64, torch.float32):
        for name, options in CASES:
            init, loss_fn = _problem(dtype)
            mine, ref = _leaves(init), _leaves(init)
            _run(_make(getattr(optim, name), mine, options), mine, loss_fn, 100)
            _run(
                _make(getattr(torch.optim, name), ref, {**options, "foreach": False}),
                ref,
                loss_fn,
                100,
            )
            key = f"{name} {str(dtype)[6:]}"
            worst[key] = max(worst.get(key, 0.0), _max_diff(mine, ref))
    assert len(worst) == 6
    assert max(v for k, v in worst.items() if k.endswith("float64")) < 1e-12
    assert max(worst.values()) < 1e-5


def _complex_problem(seed: int = 5):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(8, 4, generator=g, dtype=torch.complex128)
    y = torch.randn(8, 3, generator=g, dtype=torch.complex128)
    w = torch.randn(4, 3, generator=g, dtype=torch.complex128)
    b = torch.randn(3, generator=g, dtype=torch.complex128)

    def loss_fn(params):
        a, c = params
        return (x @ a + c - y).abs().pow(2).mean()

    return [w, b], loss_fn


COMPLEX_CASES = [
    ("SGD", {"momentum": 0.9, "weight_decay": 0.1}),
    ("SGD", {"momentum": 0.8, "nesterov": True, "maximize": True}),
    ("Adam", {}),
    ("Adam", {"weight_decay": 0.1, "amsgrad": True}),
    ("AdamW", {}),
    ("AdamW", {"amsgrad": True, "maximize": True}),
]


@pytest.mark.parametrize(
    ("name", "options"), COMPLEX_CASES, ids=[f"{n}-{o}" for n, o in COMPLEX_CASES]
)
def test_complex_parameters_match_torch(name, options):
    init, loss_fn = _complex_problem()
    mine, ref = _leaves(init), _leaves(init)
    opt = getattr(optim, name)(mine, lr=0.05, **options)
    _run(opt, mine, loss_fn, 30)
    _run(getattr(torch.optim, name)(ref, lr=0.05, foreach=False, **options), ref, loss_fn, 30)
    for a, b in zip(mine, ref, strict=True):
        assert a.dtype == torch.complex128
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    if options.get("amsgrad"):
        assert opt.state[mine[0]]["max_exp_avg_sq"].dtype == torch.complex128


@pytest.fixture
def bfloat16_default():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    yield
    torch.set_default_dtype(previous)


@pytest.mark.parametrize("name", ["Adam", "AdamW"])
def test_step_counter_stays_exact_under_bfloat16_default(name, bfloat16_default):
    g = torch.Generator().manual_seed(6)
    init = [torch.randn(7, generator=g, dtype=torch.bfloat16)]
    mine, ref = _leaves(init), _leaves(init)

    def loss_fn(params):
        return (params[0].float() ** 2).sum()

    opt = getattr(optim, name)(mine, lr=1e-3)
    ref_opt = getattr(torch.optim, name)(ref, lr=1e-3, foreach=False)
    _run(opt, mine, loss_fn, 300)  # bfloat16 counts 255, 256, 256, ...
    _run(ref_opt, ref, loss_fn, 300)
    step = opt.state[mine[0]]["step"]
    assert step.dtype == ref_opt.state[ref[0]]["step"].dtype == torch.float32
    assert step.item() == 300
    torch.testing.assert_close(mine[0], ref[0], rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("name", ["Adam", "AdamW"])
@pytest.mark.parametrize("amsgrad", [False, True])
def test_one_element_tensor_betas_match_torch(name, dtype, amsgrad):
    init, loss_fn = _problem(dtype, seed=7)
    mine, ref = _leaves(init), _leaves(init)

    def betas():
        return (torch.tensor([0.8]), torch.tensor([[0.99]]))

    opt = getattr(optim, name)(mine, lr=0.01, betas=betas(), amsgrad=amsgrad)
    ref_opt = getattr(torch.optim, name)(
        ref, lr=0.01, betas=betas(), amsgrad=amsgrad, foreach=False
    )
    _run(opt, mine, loss_fn, 20)
    _run(ref_opt, ref, loss_fn, 20)
    assert [b.shape for b in opt.param_groups[0]["betas"]] == [torch.Size([])] * 2
    for a, b in zip(mine, ref, strict=True):
        torch.testing.assert_close(a, b, **TOL[dtype])


def test_bad_tensor_betas_raise():
    w = [torch.zeros(2, requires_grad=True)]
    with pytest.raises(ValueError, match=r"Tensor betas\[1\] must have one element"):
        optim.Adam(w, betas=(torch.tensor(0.9), torch.tensor([0.9, 0.99])))
    with pytest.raises(ValueError, match="betas must be both floats or both tensors"):
        optim.Adam(w, betas=(torch.tensor(0.9), 0.999))


ADAM_CASES = [c for c in CASES if c[0] != "SGD"]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize(("name", "options"), ADAM_CASES, ids=[f"{n}-{o}" for n, o in ADAM_CASES])
def test_foreach_path_equals_the_loop_bit_for_bit(name, options, dtype):
    """Adam's default (foreach) path and the per-parameter loop: the same numbers, exactly."""
    init, loss_fn = _problem(dtype, seed=3)
    fast, loop, ref = _leaves(init), _leaves(init), _leaves(init)
    fast_opt = _make(getattr(optim, name), fast, options)
    loop_opt = _make(getattr(optim, name), loop, {**options, "foreach": False})
    ref_opt = _make(getattr(torch.optim, name), ref, {**options, "foreach": True})
    assert all(fast_opt._use_foreach(g) is False for g in fast_opt.param_groups)  # no grads yet
    for _ in range(50):
        for opt, params in ((fast_opt, fast), (loop_opt, loop), (ref_opt, ref)):
            _run(opt, params, loss_fn, 1)
    assert all(fast_opt._use_foreach(g) for g in fast_opt.param_groups)
    assert not any(loop_opt._use_foreach(g) for g in loop_opt.param_groups)
    for a, b, c in zip(fast, loop, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
        torch.testing.assert_close(a, c, **TOL[dtype])  # and torch's own foreach path
    for p, q in zip(fast, loop, strict=True):  # the state too: checkpoints do not depend on it
        for key, value in fast_opt.state[p].items():
            torch.testing.assert_close(value, loop_opt.state[q][key], rtol=0, atol=0)


def test_foreach_falls_back_to_the_loop_where_it_does_not_apply():
    w = torch.zeros(3, requires_grad=True, dtype=torch.float64)
    b = torch.zeros(2, requires_grad=True, dtype=torch.float32)
    opt = optim.AdamW([w, b])
    w.grad, b.grad = torch.ones_like(w), torch.ones_like(b)
    assert not opt._use_foreach(opt.param_groups[0])  # two dtypes in one group
    opt.step()
    assert opt.state[w]["step"].item() == opt.state[b]["step"].item() == 1
    tensor_betas = optim.Adam([w], betas=(torch.tensor(0.9), torch.tensor(0.99)))
    assert not tensor_betas._use_foreach(tensor_betas.param_groups[0])
    with pytest.raises(ValueError, match="foreach must be True, False or None"):
        optim.Adam([w], foreach="yes")
