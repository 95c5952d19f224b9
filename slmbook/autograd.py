r"""A tiny scalar automatic-differentiation engine, readable in one sitting.

Each :class:`Value` holds a number (``data``), the derivative of the final
output with respect to it (``grad``), the values it was computed from
(``parents``) and a small function that applies the chain rule for the one
operation that produced it. :meth:`Value.backward` visits the graph from the
output back to the inputs in reverse topological order, so that when a
node's local rule runs, its own ``grad`` is already complete:

.. math::

    \frac{\partial L}{\partial x} = \sum_{y \text{ uses } x}
        \frac{\partial L}{\partial y} \, \frac{\partial y}{\partial x}.

The engine works on Python floats (double precision), so its gradients can be
compared with torch's in float64. Torch does the same thing with tensors.

Calling ``backward()`` more than once behaves like torch with
``retain_graph=True``: the gradients of the inputs (*leaves*, values not
computed from others) **accumulate**, while every intermediate node's
``grad`` is recomputed from scratch, so after two calls each leaf holds twice
its gradient. Call :meth:`Value.zero_grad` on the output (or set
``leaf.grad = 0``) to start again.

See chapter 5, "The backward pass" (book/05_backward.ipynb).
"""

from __future__ import annotations

import math
from collections.abc import Callable

__all__ = ["Value"]

Number = int | float


class Value:
    """A scalar in a computation graph, with its gradient.

    Parameters
    ----------
    data:
        The number.
    label:
        An optional name, used by ``__repr__`` and by graph drawings
        (:func:`slmbook.plotting.plot_scalar_graph`).

    Examples
    --------
    >>> a, b = Value(2.0, label="a"), Value(-1.5, label="b")
    >>> loss = (a * b + 1).tanh()
    >>> loss.backward()
    >>> round(a.grad, 4)  # d tanh(ab + 1) / da = (1 - tanh(ab + 1)^2) * b
    -0.106

    See chapter 5, "The backward pass" (book/05_backward.ipynb).
    """

    def __init__(
        self, data: Number, *, label: str = "", _parents: tuple[Value, ...] = (), _op: str = ""
    ) -> None:
        if isinstance(data, bool) or not isinstance(data, int | float):
            raise TypeError(f"Value holds a Python int or float, got {type(data).__name__}")
        self.data = float(data)
        self.grad = 0.0
        self.label = label
        self.parents = _parents
        self.op = _op
        self._backward: Callable[[], None] = lambda: None

    def __repr__(self) -> str:
        name = f"label={self.label!r}, " if self.label else ""
        return f"Value({name}data={self.data:.6g}, grad={self.grad:.6g})"

    @staticmethod
    def _wrap(other: Value | Number) -> Value:
        if isinstance(other, Value):
            return other
        if isinstance(other, bool) or not isinstance(other, int | float):
            raise TypeError(f"cannot combine a Value with {type(other).__name__}")
        return Value(other)

    # -- operations: each sets out._backward to its local chain rule ------------------
    def __add__(self, other: Value | Number) -> Value:
        other = self._wrap(other)
        out = Value(self.data + other.data, _parents=(self, other), _op="+")

        def _backward() -> None:  # d(a + b)/da = d(a + b)/db = 1
            self.grad += out.grad
            other.grad += out.grad

        out._backward = _backward
        return out

    def __sub__(self, other: Value | Number) -> Value:
        other = self._wrap(other)
        out = Value(self.data - other.data, _parents=(self, other), _op="-")

        def _backward() -> None:  # d(a - b)/da = 1, d(a - b)/db = -1
            self.grad += out.grad
            other.grad -= out.grad

        out._backward = _backward
        return out

    def __mul__(self, other: Value | Number) -> Value:
        other = self._wrap(other)
        out = Value(self.data * other.data, _parents=(self, other), _op="*")

        def _backward() -> None:  # d(ab)/da = b, d(ab)/db = a
            self.grad += other.data * out.grad
            other.grad += self.data * out.grad

        out._backward = _backward
        return out

    def __pow__(self, exponent: Number) -> Value:
        if isinstance(exponent, bool) or not isinstance(exponent, int | float):
            raise TypeError(
                f"the exponent must be an int or float, got {type(exponent).__name__}; "
                "for a Value exponent write (b * a.log()).exp()"
            )
        if self.data == 0 and exponent < 1 and exponent != 0:
            raise ValueError(f"0 ** {exponent} has no finite derivative")
        if self.data < 0 and not float(exponent).is_integer():
            raise ValueError(f"{self.data} ** {exponent} is not a real number")
        out = Value(self.data**exponent, _parents=(self,), _op=f"**{exponent:g}")

        def _backward() -> None:  # d(a^n)/da = n a^(n-1); a^0 = 1 is constant, also at 0
            if exponent != 0:
                self.grad += exponent * self.data ** (exponent - 1) * out.grad

        out._backward = _backward
        return out

    def exp(self) -> Value:
        out = Value(math.exp(self.data), _parents=(self,), _op="exp")

        def _backward() -> None:  # d(e^a)/da = e^a
            self.grad += out.data * out.grad

        out._backward = _backward
        return out

    def log(self) -> Value:
        if self.data <= 0:
            raise ValueError(f"log needs a positive value, got {self.data}")
        out = Value(math.log(self.data), _parents=(self,), _op="log")

        def _backward() -> None:  # d(ln a)/da = 1 / a
            self.grad += out.grad / self.data

        out._backward = _backward
        return out

    def tanh(self) -> Value:
        out = Value(math.tanh(self.data), _parents=(self,), _op="tanh")

        def _backward() -> None:  # d(tanh a)/da = 1 - tanh(a)^2
            self.grad += (1.0 - out.data**2) * out.grad

        out._backward = _backward
        return out

    def relu(self) -> Value:
        out = Value(max(self.data, 0.0), _parents=(self,), _op="relu")

        def _backward() -> None:  # 1 where a > 0, else 0 (0 at a = 0, as in torch)
            self.grad += (self.data > 0) * out.grad

        out._backward = _backward
        return out

    # -- the rest is built from the operations above ----------------------------------
    def __neg__(self) -> Value:
        return self * -1

    def __truediv__(self, other: Value | Number) -> Value:
        return self * self._wrap(other) ** -1

    def __radd__(self, other: Number) -> Value:
        return self + other

    def __rmul__(self, other: Number) -> Value:
        return self * other

    def __rsub__(self, other: Number) -> Value:
        return self._wrap(other) - self

    def __rtruediv__(self, other: Number) -> Value:
        return self._wrap(other) / self

    # -- the backward pass ---------------------------------------------------------------
    def topological_order(self) -> list[Value]:
        """Every node this value depends on (itself included), inputs before outputs."""
        order: list[Value] = []
        visited: set[int] = set()
        stack: list[tuple[Value, bool]] = [(self, False)]
        while stack:  # depth-first search without recursion, so deep graphs work too
            node, parents_done = stack.pop()
            if parents_done:
                order.append(node)
            elif id(node) not in visited:
                visited.add(id(node))
                stack.append((node, True))
                stack.extend((p, False) for p in node.parents if id(p) not in visited)
        return order

    def backward(self) -> None:
        """Fill ``grad`` of every node with d(self)/d(node), by the chain rule.

        Leaves accumulate (``+=``) across calls, like torch's ``.grad``;
        intermediate nodes are reset first, so their ``grad`` is always that
        of the latest call. See the module docstring.
        """
        order = self.topological_order()
        for node in order:
            if node.parents:
                node.grad = 0.0
        self.grad = 1.0 if self.parents else self.grad + 1.0
        for node in reversed(order):  # outputs before inputs
            node._backward()

    def zero_grad(self) -> None:
        """Set ``grad`` to 0 on this node and every node it depends on."""
        for node in self.topological_order():
            node.grad = 0.0
