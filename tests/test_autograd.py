"""Tests of slmbook.autograd.Value: values and gradients equal to torch's (float64) on fixed
and on random expression graphs (hypothesis property test), reverse operations with numbers,
calling backward() twice (leaves accumulate, like torch), zero_grad, the error paths, and
slmbook.plotting.plot_scalar_graph."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from torch.testing import assert_close

from slmbook.autograd import Value

# Each operation is written once and works both on Value and on a torch tensor, because
# both have +, -, *, /, ** and the methods exp, log, tanh and relu. Inputs to log, ** 0.5
# and division are kept positive, so every random graph is well defined.
UNARY = {
    "square": lambda a: a**2,
    "cube": lambda a: a**3,
    "sqrt": lambda a: (a * a + 1) ** 0.5,
    "exp_tanh": lambda a: a.tanh().exp(),
    "log": lambda a: (a * a + 0.5).log(),
    "tanh": lambda a: a.tanh(),
    "relu": lambda a: a.relu(),
    "neg": lambda a: -a,
    "rsub": lambda a: 1.5 - a,
    "rmul": lambda a: 0.5 * a,
    "radd": lambda a: 2.0 + a,
    "rdiv": lambda a: 1.0 / (a * a + 1),
}
BINARY = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / (b * b + 1),
}


def _build(leaves, program, to_node):
    """Run a program of (op name, operand indices) over the leaves; returns every node."""
    nodes = [to_node(x) for x in leaves]
    for name, i, j in program:
        a, b = nodes[i % len(nodes)], nodes[j % len(nodes)]
        nodes.append(UNARY[name](a) if name in UNARY else BINARY[name](a, b))
    return nodes


programs = st.lists(
    st.tuples(
        st.sampled_from(sorted(UNARY) + sorted(BINARY)), st.integers(0, 99), st.integers(0, 99)
    ),
    min_size=1,
    max_size=15,
)
leaf_values = st.lists(
    st.floats(-2.0, 2.0, allow_nan=False).filter(lambda x: abs(x) > 1e-3), min_size=1, max_size=4
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(leaves=leaf_values, program=programs)
def test_random_graphs_equal_torch(leaves, program):
    ours = _build(leaves, program, lambda x: Value(x))
    assume(all(abs(n.data) < 1e6 for n in ours))
    out = ours[-1] + 0.5 * ours[len(ours) // 2]  # the output uses two different nodes
    out.backward()

    xs = [torch.tensor(x, dtype=torch.float64, requires_grad=True) for x in leaves]
    theirs = _build(xs, program, lambda x: x)
    ref = theirs[-1] + 0.5 * theirs[len(theirs) // 2]
    ref.backward()

    assert_close(torch.tensor(out.data, dtype=torch.float64), ref.detach(), rtol=1e-9, atol=1e-12)
    assert_close(
        torch.tensor([leaf.grad for leaf in ours[: len(leaves)]], dtype=torch.float64),
        torch.stack([torch.zeros(()) if x.grad is None else x.grad for x in xs]).double(),
        rtol=1e-7,
        atol=1e-9,
    )


def test_small_graph_by_hand():
    a, b, c = Value(2.0, label="a"), Value(-3.0, label="b"), Value(10.0, label="c")
    e = a * b
    d = e + c
    f = Value(-2.0, label="f")
    loss = d * f  # (ab + c) f = 8
    loss.backward()
    assert loss.data == pytest.approx(-8.0)
    assert (a.grad, b.grad, c.grad, f.grad) == pytest.approx((6.0, -4.0, -2.0, 4.0))
    assert (e.grad, d.grad) == pytest.approx((-2.0, -2.0))


def test_a_node_used_twice_sums_its_gradients():
    a = Value(3.0)
    y = a * a + a  # dy/da = 2a + 1
    y.backward()
    assert a.grad == pytest.approx(7.0)


def test_backward_twice_accumulates_in_leaves_like_torch():
    a, b = Value(1.5), Value(-0.5)
    mid = (a * b).tanh()
    out = mid * a
    out.backward()
    first = (a.grad, b.grad, mid.grad)
    out.backward()
    assert (a.grad, b.grad) == pytest.approx((2 * first[0], 2 * first[1]))
    assert mid.grad == pytest.approx(first[2])  # intermediate nodes are recomputed, not summed

    ta = torch.tensor(1.5, dtype=torch.float64, requires_grad=True)
    tb = torch.tensor(-0.5, dtype=torch.float64, requires_grad=True)
    tout = (ta * tb).tanh() * ta
    tout.backward(retain_graph=True)
    tout.backward()
    assert (a.grad, b.grad) == pytest.approx((ta.grad.item(), tb.grad.item()))

    out.zero_grad()
    assert (a.grad, b.grad, mid.grad, out.grad) == (0.0, 0.0, 0.0, 0.0)
    out.backward()
    assert (a.grad, b.grad) == pytest.approx(first[:2])


def test_deep_graph_needs_no_recursion():
    x = Value(0.5)
    total = x
    for _ in range(5000):
        total = total + x
    total.backward()
    assert x.grad == pytest.approx(5001.0)


def test_repr_and_topological_order():
    a = Value(2.0, label="a")
    b = a.exp()
    assert repr(a) == "Value(label='a', data=2, grad=0)"
    assert repr(b).startswith("Value(data=7.38906")
    order = (b * a).topological_order()
    assert order.index(a) < order.index(b)
    assert b.op == "exp" and b.parents == (a,)


def test_operations_values():
    a = Value(4.0)
    assert (a - 1).data == 3.0
    assert (1 - a).data == -3.0
    assert (a / 2).data == 2.0
    assert (2 / a).data == 0.5
    assert (a**0.5).data == 2.0
    assert a.log().data == pytest.approx(math.log(4.0))
    assert Value(-1.0).relu().data == 0.0


@pytest.mark.parametrize("x", [0.0, -3.0, 2.5])
@pytest.mark.parametrize("exponent", [0, 0.0])
def test_power_zero_is_one_with_zero_derivative_like_torch(x, exponent):
    a = Value(x)
    out = a**exponent
    out.backward()
    t = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    t_out = t**exponent
    t_out.backward()
    assert out.data == t_out.item() == 1.0
    assert a.grad == t.grad.item() == 0.0


def test_errors():
    with pytest.raises(TypeError, match=r"int or float, got str"):
        Value("1.0")
    with pytest.raises(TypeError, match=r"exponent must be an int or float, got Value"):
        Value(2.0) ** Value(3.0)
    with pytest.raises(ValueError, match=r"log needs a positive value, got -1.0"):
        Value(-1.0).log()
    with pytest.raises(ValueError, match=r"0 \*\* -1 has no finite derivative"):
        Value(0.0) ** -1
    with pytest.raises(ValueError, match=r"-2.0 \*\* 0.5 is not a real number"):
        Value(-2.0) ** 0.5
    with pytest.raises(TypeError, match=r"cannot combine a Value with str"):
        Value(1.0) + "2"


def test_plot_scalar_graph_draws_every_node():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from slmbook.plotting import plot_scalar_graph

    a, b = Value(2.0, label="a"), Value(-1.0, label="b")
    loss = ((a * b).tanh() - a) ** 2
    loss.backward()
    ax = plot_scalar_graph(loss)
    texts = [t.get_text() for t in ax.texts]
    assert sum("data =" in t for t in texts) == len(loss.topological_order())  # one box each
    assert any(t.startswith("a\n") and f"grad = {a.grad:.4g}" in t for t in texts)
    assert {"×", "tanh", "-", "**2"} <= set(texts)
    plt.close(ax.figure)
