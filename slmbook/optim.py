r"""Optimizers from scratch: SGD (with momentum and Nesterov), Adam and AdamW.

Each optimizer is a :class:`torch.optim.Optimizer` subclass, so it works with
parameter groups, ``state_dict``/``load_state_dict`` and torch's learning-rate
schedulers. The update is a plain loop over the parameters that follows
torch's single-tensor implementation operation for operation, so the
parameters match ``torch.optim`` step for step. Adam and AdamW also have a
``foreach`` path (their default for real, dense parameters): the same
operations, each applied to all the parameters of a group in one call
(``torch._foreach_*``), which saves the cost of launching a few hundred small
operations per step; it gives the same numbers as the loop, bit for bit. The
conventions that matter for matching torch:

- SGD's momentum buffer starts as the first gradient (not as zero);
- Adam divides by the bias corrections, then adds ``eps``;
- AdamW shrinks the weights *before* the Adam update, by ``lr * weight_decay``;
- ``state["step"]`` is a 0-d float32 tensor (float64 under a float64
  default), as in torch, so state dicts can be exchanged with
  ``torch.optim.Adam``/``AdamW`` in both directions, and the step count stays
  exact under a bfloat16 default dtype (bfloat16 cannot count past 256);
- Adam treats a complex parameter as its real and imaginary parts (a real
  view, ``torch.view_as_real``), so each part gets its own second moment;
  SGD's update is linear and works on complex tensors directly;
- ``betas`` may be one-element tensors; they are squeezed to 0-d tensors.

Differences from torch, on purpose: ``eps`` must be strictly positive, the
error messages say how to fix the mistake, and ``load_state_dict`` refuses a
state dict that comes from another optimizer or another parameter layout.

See chapter 6, "Updating the parameters" (book/06_update.ipynb).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

__all__ = ["SGD", "Adam", "AdamW"]

Params = Iterable[torch.Tensor] | Iterable[dict[str, Any]]


class _Optimizer(torch.optim.Optimizer):
    """Shared checks: the parameter list, each group's values, loaded state dicts."""

    #: hyper-parameters a param group of this optimizer must carry
    _group_keys: tuple[str, ...] = ()

    def __init__(self, params: Params, defaults: dict[str, Any]) -> None:
        if isinstance(params, torch.Tensor):
            raise TypeError(
                f"{type(self).__name__} expects an iterable of tensors such as "
                "model.parameters(), got a single tensor; wrap it in a list: [tensor]"
            )
        params = list(params)
        if len(params) == 0:
            raise ValueError(
                f"{type(self).__name__} got an empty parameter list: pass "
                "model.parameters() of a model that has parameters"
            )
        self._check(defaults)
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group of parameters, checking its hyper-parameters first."""
        self._check({**self.defaults, **param_group})
        super().add_param_group(param_group)

    def _check(self, group: dict[str, Any]) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def _expected_state_keys(self, group: dict[str, Any]) -> tuple[set[str], set[str]]:
        """(required, allowed) keys of a non-empty per-parameter state."""
        raise NotImplementedError  # pragma: no cover - overridden

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state dict, refusing one from another optimizer or parameter layout.

        Raises
        ------
        ValueError
            If the number of groups, of parameters per group, a hyper-parameter,
            the per-parameter state or a state tensor's shape does not match.
        """
        name = type(self).__name__
        saved_groups = state_dict.get("param_groups")
        saved_state = state_dict.get("state")
        if not isinstance(saved_groups, list) or not isinstance(saved_state, dict):
            raise ValueError(
                f"{name}.load_state_dict expects the dict returned by "
                "optimizer.state_dict() (keys 'state' and 'param_groups')"
            )
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(
                f"state dict has {len(saved_groups)} parameter group(s) but this {name} "
                f"has {len(self.param_groups)}: build the optimizer with the same groups"
            )
        for i, (saved, group) in enumerate(zip(saved_groups, self.param_groups, strict=True)):
            if len(saved["params"]) != len(group["params"]):
                raise ValueError(
                    f"parameter group {i} of the state dict has {len(saved['params'])} "
                    f"parameters but this {name} has {len(group['params'])}: "
                    "the state dict belongs to another model"
                )
            missing = [k for k in self._group_keys if k not in saved]
            if missing:
                raise ValueError(
                    f"state dict was not written by {name}: its parameter group {i} lacks "
                    f"{missing}; create the optimizer that wrote it instead"
                )
            self._check_saved_group(i, saved)
            for index, p in zip(saved["params"], group["params"], strict=True):
                self._check_saved_state(saved_state.get(index, {}), saved, p, index)
        super().load_state_dict(state_dict)

    def _check_saved_group(self, i: int, saved: dict[str, Any]) -> None:
        """Hook for subclasses: compare a saved group with this optimizer's kind."""

    def _check_saved_state(
        self, state: dict[str, Any], group: dict[str, Any], p: torch.Tensor, index: Any
    ) -> None:
        if len(state) == 0:
            return
        name = type(self).__name__
        required, allowed = self._expected_state_keys(group)
        keys = set(state)
        if not required <= keys or not keys <= allowed:
            raise ValueError(
                f"state of parameter {index} has keys {sorted(keys)}, but a {name} "
                f"expects {sorted(required)}: the state dict is from another optimizer"
            )
        for key, value in state.items():
            if key != "step" and torch.is_tensor(value) and value.shape != p.shape:
                raise ValueError(
                    f"state '{key}' of parameter {index} has shape {tuple(value.shape)} "
                    f"but the parameter has shape {tuple(p.shape)}: the state dict "
                    "belongs to another model"
                )


def _step_dtype() -> torch.dtype:
    """The dtype of Adam's step counter: float64 under a float64 default, else float32 (torch's)."""
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


def _to_scalar(value: float | torch.Tensor, what: str) -> float | torch.Tensor:
    """A one-element tensor hyper-parameter becomes a 0-d tensor; a number stays a number."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(
                f"Tensor {what} must have one element, got shape {tuple(value.shape)}; "
                "pass a float or a one-element tensor"
            )
        return value.squeeze() if value.dim() != 0 else value
    return value


def _check_non_negative(value: float, what: str) -> None:
    if not value >= 0.0:  # also catches NaN
        raise ValueError(f"Invalid {what}: {value}; it must be >= 0")


class SGD(_Optimizer):
    r"""Stochastic gradient descent, optionally with momentum and Nesterov momentum.

    With gradient :math:`g_t = \nabla_\theta L(\theta_{t-1})` (negated when
    ``maximize``), learning rate :math:`\gamma`, weight decay :math:`\lambda`,
    momentum :math:`\mu` and dampening :math:`\tau`:

    .. math::

        g_t &\leftarrow g_t + \lambda \theta_{t-1} \\
        b_1 &= g_1, \qquad b_t = \mu b_{t-1} + (1 - \tau) g_t \quad (t > 1) \\
        d_t &= g_t + \mu b_t \ \text{(Nesterov)} \quad\text{or}\quad d_t = b_t \\
        \theta_t &= \theta_{t-1} - \gamma d_t

    Without momentum :math:`d_t = g_t`: plain gradient descent.

    Parameters
    ----------
    params : iterable of tensors or of dicts (parameter groups)
    lr : float, default 1e-3
    momentum : float, default 0
    dampening : float, default 0
    weight_decay : float, default 0
        L2 penalty added to the gradient.
    nesterov : bool, default False
        Needs ``momentum > 0`` and ``dampening == 0``.
    maximize : bool, default False
        Ascend instead of descend.

    Sparse gradients are supported as in torch (the same tensor operations).

    See chapter 6, "Updating the parameters" (book/06_update.ipynb).
    """

    _group_keys = ("lr", "momentum", "dampening", "weight_decay", "nesterov")

    def __init__(
        self,
        params: Params,
        lr: float = 1e-3,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
    ) -> None:
        defaults = dict(
            lr=lr,
            momentum=momentum,
            dampening=dampening,
            weight_decay=weight_decay,
            nesterov=nesterov,
            maximize=maximize,
        )
        super().__init__(params, defaults)

    def _check(self, group: dict[str, Any]) -> None:
        _check_non_negative(group["lr"], "learning rate")
        _check_non_negative(group["momentum"], "momentum value")
        _check_non_negative(group["weight_decay"], "weight_decay value")
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError(
                f"Nesterov momentum requires momentum > 0 and dampening = 0, got "
                f"momentum={group['momentum']}, dampening={group['dampening']}"
            )

    def _expected_state_keys(self, group: dict[str, Any]) -> tuple[set[str], set[str]]:
        return {"momentum_buffer"}, {"momentum_buffer"}

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        """Update every parameter that has a gradient; return the closure's loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, mu, tau = group["lr"], group["momentum"], group["dampening"]
            for p in group["params"]:
                if p.grad is None:  # not used in this step's loss: leave it alone
                    continue
                g = -p.grad if group["maximize"] else p.grad
                if group["weight_decay"] != 0:
                    g = g.add(p, alpha=group["weight_decay"])  # g + λθ
                if mu != 0:
                    state = self.state[p]
                    buf = state.get("momentum_buffer")
                    if buf is None:  # first step: the buffer is the gradient itself
                        buf = g.detach().clone()
                        state["momentum_buffer"] = buf
                    else:
                        buf.mul_(mu).add_(g, alpha=1 - tau)  # μb + (1-τ)g
                    g = g.add(buf, alpha=mu) if group["nesterov"] else buf
                p.add_(g, alpha=-lr)  # θ ← θ - γ d
        return loss


class Adam(_Optimizer):
    r"""Adam: per-parameter step sizes from running moments of the gradient.

    With gradient :math:`g_t` (plus :math:`\lambda\theta_{t-1}` when
    ``weight_decay`` is set: L2 regularisation, coupled to the moments),
    learning rate :math:`\gamma`, ``betas`` :math:`(\beta_1, \beta_2)`:

    .. math::

        m_t &= \beta_1 m_{t-1} + (1 - \beta_1) g_t \\
        v_t &= \beta_2 v_{t-1} + (1 - \beta_2) g_t^2 \\
        \hat v_t &= \max(\hat v_{t-1}, v_t) \ \text{(amsgrad)} \quad\text{or}\quad v_t \\
        \theta_t &= \theta_{t-1} - \frac{\gamma}{1 - \beta_1^t}\,
            \frac{m_t}{\sqrt{\hat v_t} / \sqrt{1 - \beta_2^t} + \epsilon}

    with :math:`m_0 = v_0 = 0`. Note where :math:`\epsilon` goes: after the
    bias correction of :math:`\sqrt{v_t}`, as in torch.

    Parameters
    ----------
    params : iterable of tensors or of dicts (parameter groups)
    lr : float, default 1e-3
    betas : (float, float), default (0.9, 0.999)
        Each in [0, 1); two floats or two one-element tensors.
    eps : float, default 1e-8
        Must be > 0.
    weight_decay : float, default 0
    amsgrad : bool, default False
    maximize : bool, default False
    foreach : bool or None, default None
        ``None`` or ``True``: update all the parameters of a group with one
        call per operation (``torch._foreach_*``), the loop's arithmetic,
        faster for many small tensors, wherever it applies (the group's
        parameters real and dense, on one device, in one dtype, float betas;
        the loop elsewhere). ``False``: always the plain per-parameter loop,
        the one chapter 6 reads. Both give identical numbers.

    Sparse gradients raise ``RuntimeError``, as in torch.

    See chapter 6, "Updating the parameters" (book/06_update.ipynb).
    """

    _group_keys = ("lr", "betas", "eps", "weight_decay", "amsgrad")
    _decoupled = False  # AdamW sets True

    def __init__(
        self,
        params: Params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
    ) -> None:
        if foreach not in (None, True, False):
            raise ValueError(f"foreach must be True, False or None (None: wherever it "
                             f"applies), got {foreach!r}")
        self.foreach = foreach
        betas = tuple(betas)
        if len(betas) == 2:
            if isinstance(betas[0], torch.Tensor) != isinstance(betas[1], torch.Tensor):
                raise ValueError(
                    f"betas must be both floats or both tensors, got {betas}; "
                    "convert both the same way"
                )
            betas = tuple(_to_scalar(b, f"betas[{i}]") for i, b in enumerate(betas))
        defaults = dict(
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            amsgrad=amsgrad,
            maximize=maximize,
            decoupled_weight_decay=self._decoupled,
        )
        super().__init__(params, defaults)

    def _check(self, group: dict[str, Any]) -> None:
        _check_non_negative(group["lr"], "learning rate")
        if not group["eps"] > 0.0:
            raise ValueError(f"Invalid epsilon value: {group['eps']}; it must be > 0")
        betas = group["betas"]
        if len(betas) != 2:
            raise ValueError(f"betas must be a pair (beta1, beta2), got {betas}")
        for i, beta in enumerate(betas):
            if not 0.0 <= beta < 1.0:
                raise ValueError(
                    f"Invalid beta parameter at index {i}: {beta}; it must be in [0, 1)"
                )
        _check_non_negative(group["weight_decay"], "weight_decay value")

    def _check_saved_group(self, i: int, saved: dict[str, Any]) -> None:
        decoupled = saved.get("decoupled_weight_decay", self._decoupled)  # absent: older torch
        if decoupled != self._decoupled:
            other = "AdamW" if decoupled else "Adam"
            raise ValueError(
                f"state dict is from {other}, not {type(self).__name__} (parameter group {i}): "
                "load it into the optimizer that wrote it"
            )

    def _expected_state_keys(self, group: dict[str, Any]) -> tuple[set[str], set[str]]:
        keys = {"step", "exp_avg", "exp_avg_sq"}
        if group["amsgrad"]:
            keys.add("max_exp_avg_sq")
        return keys, keys | {"max_exp_avg_sq"}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state dict written by the same kind of optimizer (see the base class)."""
        super().load_state_dict(state_dict)
        for group in self.param_groups:  # AdamW stays AdamW, Adam stays Adam
            group["decoupled_weight_decay"] = self._decoupled

    def _init_state(self, p: torch.Tensor, amsgrad: bool) -> dict[str, Any]:
        state = self.state[p]
        if len(state) == 0:  # lazily, on the parameter's first update
            state["step"] = torch.tensor(0.0, dtype=_step_dtype())  # float32, like torch's
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            if amsgrad:
                state["max_exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return state

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        """Update every parameter that has a gradient; return the closure's loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
            wd = group["weight_decay"]
            if self._use_foreach(group):
                self._foreach_step(group)
                continue
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError(
                        f"{type(self).__name__} does not support sparse gradients; use "
                        "torch.optim.SparseAdam, or SGD, for sparse embeddings"
                    )
                g = -p.grad if group["maximize"] else p.grad
                state = self._init_state(p, group["amsgrad"])
                state["step"] += 1
                t = state["step"].item()
                if wd != 0:
                    if group["decoupled_weight_decay"]:
                        p.mul_(1 - lr * wd)  # AdamW: shrink θ first, apart from the moments
                    else:
                        g = g.add(p, alpha=wd)  # Adam: L2 term goes through the moments
                m, v = state["exp_avg"], state["exp_avg_sq"]
                vmax = state.get("max_exp_avg_sq")
                if torch.is_complex(p):  # real and imaginary parts as separate numbers
                    p, g, m, v = (torch.view_as_real(x) for x in (p, g, m, v))
                    if vmax is not None:
                        vmax = torch.view_as_real(vmax)
                b1 = beta1.to(p.device, p.dtype) if torch.is_tensor(beta1) else beta1
                m.lerp_(g, 1 - b1)  # m ← β1 m + (1-β1) g
                v.mul_(beta2).addcmul_(g, g, value=1 - beta2)  # v ← β2 v + (1-β2) g²
                if group["amsgrad"]:
                    torch.maximum(vmax, v, out=vmax)
                    v = vmax
                bias_correction1 = 1 - beta1**t
                bias_correction2_sqrt = (1 - beta2**t) ** 0.5
                denom = (v.sqrt() / bias_correction2_sqrt).add_(eps)  # eps after correction
                p.addcdiv_(m, denom, value=-lr / bias_correction1)
        return loss

    def _use_foreach(self, group: dict[str, Any]) -> bool:
        """Whether ``group`` takes the foreach path (see ``foreach`` in the class docstring)."""
        if getattr(self, "foreach", None) is False:
            return False
        params = [p for p in group["params"] if p.grad is not None]
        return (bool(params)
                and not any(torch.is_tensor(b) for b in group["betas"])
                and all(not p.grad.is_sparse and not torch.is_complex(p) for p in params)
                and len({(p.device, p.dtype) for p in params}) == 1)

    def _foreach_step(self, group: dict[str, Any]) -> None:
        """The loop of :meth:`step` for one group, each operation on all its parameters at once."""
        lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
        wd, amsgrad = group["weight_decay"], group["amsgrad"]
        params = [p for p in group["params"] if p.grad is not None]
        grads = [p.grad for p in params]
        if group["maximize"]:
            grads = torch._foreach_neg(grads)
        states = [self._init_state(p, amsgrad) for p in params]
        steps = [s["step"] for s in states]
        torch._foreach_add_(steps, 1)
        if wd != 0:
            if group["decoupled_weight_decay"]:
                torch._foreach_mul_(params, 1 - lr * wd)
            else:
                grads = torch._foreach_add(grads, params, alpha=wd)
        m = [s["exp_avg"] for s in states]
        v = [s["exp_avg_sq"] for s in states]
        torch._foreach_lerp_(m, grads, 1 - beta1)
        torch._foreach_mul_(v, beta2)
        torch._foreach_addcmul_(v, grads, grads, value=1 - beta2)
        if amsgrad:
            vmax = [s["max_exp_avg_sq"] for s in states]
            torch._foreach_maximum_(vmax, v)
            v = vmax
        t = [s.item() for s in steps]
        denom = torch._foreach_sqrt(v)
        torch._foreach_div_(denom, [(1 - beta2**k) ** 0.5 for k in t])
        torch._foreach_add_(denom, eps)
        torch._foreach_addcdiv_(params, m, denom, [-lr / (1 - beta1**k) for k in t])


class AdamW(Adam):
    r"""AdamW: Adam with decoupled weight decay.

    Identical to :class:`Adam` except for the weight decay, which no longer
    enters the gradient (and so the moments). Before the Adam update, each
    parameter shrinks towards zero:

    .. math::

        \theta_{t-1} \leftarrow \theta_{t-1} (1 - \gamma \lambda)

    then :math:`\theta_t` follows Adam's rule with the plain gradient.
    The default ``weight_decay`` is 0.01, as in ``torch.optim.AdamW``.

    See chapter 6, "Updating the parameters" (book/06_update.ipynb).
    """

    _decoupled = True

    def __init__(
        self,
        params: Params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
    ) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize=maximize,
                         foreach=foreach)
