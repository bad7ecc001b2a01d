"""Optimizers, gradient clipping and learning-rate schedules, with PyTorch's update rules.

Every optimizer updates `p.data` in place, in the parameter's own dtype (a float32 parameter stays float32),
and skips parameters whose `.grad` is None. With g = p.grad, θ = p.data, γ = lr, λ = weight_decay:

SGD (momentum μ, dampening τ)::

    g ← g + λθ                                  (if λ ≠ 0: L2 penalty added to the gradient)
    b ← g                      on the first step (no dampening then, as in PyTorch)
    b ← μb + (1 − τ)g          afterwards
    g ← g + μb  (nesterov)  or  g ← b           (if μ ≠ 0)
    θ ← θ − γg

Adam (β₁, β₂, ε), step count t starting at 1::

    g ← g + λθ                                  (Adam: L2 penalty through the moments)
    θ ← θ(1 − γλ)                               (AdamW instead: decoupled decay, before the update)
    m ← β₁m + (1 − β₁)g
    v ← β₂v + (1 − β₂)g²
    θ ← θ − (γ / (1 − β₁ᵗ)) · m / (√v / √(1 − β₂ᵗ) + ε)

The bias corrections and step sizes are computed in Python floats (float64) and rounded once to the
parameter's dtype where they meet an array, as PyTorch does.

`state_dict()` is flat, `{str: ndarray}`, so `npnorm.save` stores it as it is::

    param_groups.0.params   int64 indices of the group's parameters (numbered across groups, in order)
    param_groups.0.lr       0-d float64 (every option of the group: floats, bools, betas as a (2,) array)
    state.3.exp_avg         the per-parameter state of parameter 3 (arrays in the parameter's dtype)
    state.3.step            0-d int64

Loading it back restores every number exactly, so training resumes bit for bit.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping

import numpy as np

from . import kernels
from .tensor import Tensor

__all__ = [
    "SGD",
    "Adam",
    "AdamW",
    "CosineAnnealingLR",
    "LRScheduler",
    "Optimizer",
    "StepLR",
    "clip_grad_norm_",
]


class Optimizer:
    """Base class: parameter groups, per-parameter state, zero_grad, step, state_dict.

    `params` is an iterable of Tensors (one group with the default options), or of dicts
    `{"params": [...], "lr": ..., ...}`: one group each, whose options override the defaults.
    `self.state[id(p)]` holds parameter p's state (keyed by identity: a Tensor is not a dict key).

    A subclass sets `_state_kinds` ({name: "array" | "count"}) and implements `_check_group` (raise a
    ValueError naming a bad option) and `_update(p, grad, state, group)`.
    """

    _state_kinds: dict[str, str] = {}

    def __init__(self, params, defaults: dict):
        self.defaults = defaults
        self._check_group(defaults)
        self.param_groups: list[dict] = []
        self.state: dict[int, dict] = {}
        if isinstance(params, Tensor):
            raise TypeError(
                f"{self._name}: params must be an iterable of Tensors or of dicts, got a single Tensor "
                "(wrap it in a list)"
            )
        if isinstance(params, (set, frozenset)):
            raise TypeError(f"{self._name}: params must be an ordered collection (a list), not a set")
        groups = list(params)
        if not groups:
            raise ValueError(f"{self._name}: got an empty parameter list")
        if not isinstance(groups[0], Mapping):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    @property
    def _name(self) -> str:
        return type(self).__name__

    def __repr__(self) -> str:
        lines = [f"{self._name} ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines.extend(f"    {key}: {value}" for key, value in group.items() if key != "params")
        return "\n".join(lines) + "\n)"

    # ------------------------------------------------------------------------------------------ groups
    def add_param_group(self, group: Mapping) -> None:
        """Add a group `{"params": Tensor or list of Tensors, option: value, ...}`; missing options take
        the defaults. Unknown options raise a ValueError (a typo would otherwise be silently ignored)."""
        if not isinstance(group, Mapping):
            raise TypeError(f"{self._name}: a parameter group must be a dict, got {type(group).__name__}")
        if "params" not in group:
            raise ValueError(f"{self._name}: a parameter group needs a 'params' entry")
        unknown = sorted(set(group) - set(self.defaults) - {"params"})
        if unknown:
            raise ValueError(f"{self._name}: unknown option(s) {unknown}; the options are {sorted(self.defaults)}")
        params = group["params"]
        if isinstance(params, Tensor):
            params = [params]
        elif isinstance(params, (set, frozenset)):
            raise TypeError(f"{self._name}: a group's params must be an ordered collection (a list), not a set")
        params = list(params)
        for p in params:
            if not isinstance(p, Tensor):
                raise TypeError(f"{self._name}: can only optimize Tensors, got {type(p).__name__}")
            if not p.is_leaf:
                raise ValueError(f"{self._name}: can't optimize a non-leaf Tensor (detach it first)")
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        if len({id(p) for p in params}) != len(params) or any(id(p) in seen for p in params):
            raise ValueError(f"{self._name}: some parameters appear more than once (in one group or across groups)")
        new = {"params": params}
        for key, default in self.defaults.items():
            new[key] = _option(self._name, key, group.get(key, default), default)
        self._check_group(new)
        self.param_groups.append(new)

    def _check_group(self, group: dict) -> None:
        raise NotImplementedError

    # -------------------------------------------------------------------------------------------- step
    def zero_grad(self, set_to_none: bool = True) -> None:
        """Forget the gradients: `.grad = None` (or, with set_to_none=False, fill them with zeros)."""
        for group in self.param_groups:
            for p in group["params"]:
                if set_to_none or p.grad is None:
                    p._grad = None  # not through the checking setter: this runs per parameter per step
                else:
                    p.grad[...] = 0

    def step(self, closure=None):
        """Update every parameter that has a gradient. `closure`, if given, recomputes and returns the loss
        (called first, as in PyTorch); its value is returned."""
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.shape != p.data.shape:
                    raise ValueError(
                        f"{self._name}.step: a gradient has shape {p.grad.shape} but its parameter has shape {p.shape}"
                    )
                grad = p.grad.astype(p.data.dtype, copy=False)
                self._update(p, grad, self.state.setdefault(id(p), {}), group)
        return loss

    def _update(self, p: Tensor, grad: np.ndarray, state: dict, group: dict) -> None:
        raise NotImplementedError

    # -------------------------------------------------------------------------------------- state dict
    def state_dict(self) -> dict[str, np.ndarray]:
        """A flat copy `{str: ndarray}` of the options and the state (see the module docstring)."""
        out = {}
        index = 0
        for g, group in enumerate(self.param_groups):
            params = group["params"]
            out[f"param_groups.{g}.params"] = np.arange(index, index + len(params), dtype=np.int64)
            for key, value in group.items():
                if key != "params":
                    out[f"param_groups.{g}.{key}"] = np.array(value)
            for p in params:
                for name, value in self.state.get(id(p), {}).items():
                    out[f"state.{index}.{name}"] = np.array(value, dtype=np.int64 if name == "step" else None)
                index += 1
        return out

    def load_state_dict(self, state_dict: Mapping) -> None:
        """Restore options and state from `state_dict()` output (or `npnorm.load` of it).

        Parameters are matched by position, so the optimizer must be built over the same parameters in the
        same groups. Everything is checked before anything changes: on error the optimizer is untouched.
        """
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"{self._name}.load_state_dict: expected a dict, got {type(state_dict).__name__}")
        who = f"{self._name}.load_state_dict"
        groups: dict[int, dict] = {}
        states: dict[int, dict] = {}
        for key, value in state_dict.items():
            parts = key.split(".") if isinstance(key, str) else []
            if len(parts) != 3 or parts[0] not in ("param_groups", "state") or not parts[1].isdigit():
                raise ValueError(f"{who}: unexpected key {key!r}")
            (groups if parts[0] == "param_groups" else states).setdefault(int(parts[1]), {})[parts[2]] = value

        if sorted(groups) != list(range(len(self.param_groups))):
            raise ValueError(
                f"{who}: the state dict has {len(groups)} parameter group(s), the optimizer has "
                f"{len(self.param_groups)}"
            )
        new_options = []
        id_map = {}  # saved parameter number -> this optimizer's parameter, by position as in PyTorch
        for g, group in enumerate(self.param_groups):
            saved = groups[g]
            if set(saved) != set(group):
                raise ValueError(f"{who}: parameter group {g} has keys {sorted(saved)}, expected {sorted(group)}")
            indices = np.asarray(saved["params"]).reshape(-1)
            if indices.size != len(group["params"]) or indices.dtype.kind not in "iu":
                raise ValueError(
                    f"{who}: parameter group {g} lists {indices.size} parameters in the state dict "
                    f"but holds {len(group['params'])} in the optimizer"
                )
            id_map.update(zip(indices.tolist(), group["params"], strict=True))
            options = {}
            for key, default in self.defaults.items():
                options[key] = _option(who, f"param_groups.{g}.{key}", _plain(saved[key]), default)
            self._check_group(options)
            new_options.append(options)
        if len(id_map) != sum(len(group["params"]) for group in self.param_groups):
            raise ValueError(f"{who}: the parameter groups of the state dict list a parameter number twice")

        new_state = {}
        for i, saved in states.items():
            if i not in id_map:
                raise ValueError(f"{who}: state for parameter {i}, which no parameter group lists")
            p = id_map[i]
            if not set(saved) <= set(self._state_kinds) or (saved and set(saved) != set(self._state_kinds)):
                raise ValueError(
                    f"{who}: state of parameter {i} has entries {sorted(saved)}, expected {sorted(self._state_kinds)}"
                )
            entry = {}
            for name, value in saved.items():
                value = np.asarray(value)
                if self._state_kinds[name] == "count":
                    if value.shape != () or value.dtype.kind not in "iu":
                        raise ValueError(f"{who}: state.{i}.{name} must be a 0-d integer array, got {value!r}")
                    entry[name] = int(value)
                else:
                    if value.shape != p.shape or value.dtype.kind not in "biuf":
                        raise ValueError(
                            f"{who}: state.{i}.{name} has shape {value.shape} and dtype {value.dtype}; "
                            f"the parameter has shape {p.shape}"
                        )
                    entry[name] = np.array(value, dtype=p.data.dtype, copy=True)
            new_state[id(p)] = entry

        for group, options in zip(self.param_groups, new_options, strict=True):
            group.update(options)
        self.state = new_state


def _option(who: str, key: str, value, default):
    """An option converted to the type of its default: float, bool, or a tuple of floats (betas)."""
    if isinstance(default, bool):
        if not isinstance(value, (bool, np.bool_, numbers.Integral)):
            raise TypeError(f"{who}: {key} must be True or False, got {value!r}")
        return bool(value)
    if isinstance(default, tuple):
        try:
            values = tuple(value)
        except TypeError:
            raise TypeError(f"{who}: {key} must be a pair of numbers, got {value!r}") from None
        if len(values) != len(default) or not all(isinstance(v, numbers.Real) for v in values):
            raise TypeError(f"{who}: {key} must be a pair of numbers, got {value!r}")
        return tuple(float(v) for v in values)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{who}: {key} must be a number, got {value!r}")
    return float(value)


def _plain(value):
    """A loaded option (0-d or 1-d array) as Python numbers; other values pass through."""
    if isinstance(value, np.ndarray):
        return value.item() if value.ndim == 0 else value.tolist()
    return value


def _require(who: str, name: str, ok: bool, value, rule: str) -> None:
    if not ok:
        raise ValueError(f"{who}: invalid {name}: {value!r} ({rule})")


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum, dampening, Nesterov momentum and L2 weight decay."""

    _state_kinds = {"momentum_buffer": "array"}

    def __init__(
        self,
        params,
        lr: float,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
    ):
        defaults = {
            "lr": _option("SGD", "lr", lr, 0.0),
            "momentum": _option("SGD", "momentum", momentum, 0.0),
            "dampening": _option("SGD", "dampening", dampening, 0.0),
            "weight_decay": _option("SGD", "weight_decay", weight_decay, 0.0),
            "nesterov": _option("SGD", "nesterov", nesterov, False),
        }
        super().__init__(params, defaults)

    def _check_group(self, group: dict) -> None:
        _require("SGD", "lr", group["lr"] >= 0, group["lr"], "must be >= 0")
        _require("SGD", "momentum", group["momentum"] >= 0, group["momentum"], "must be >= 0")
        _require("SGD", "dampening", math.isfinite(group["dampening"]), group["dampening"], "must be finite")
        _require("SGD", "weight_decay", group["weight_decay"] >= 0, group["weight_decay"], "must be >= 0")
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError("SGD: nesterov momentum requires a momentum > 0 and zero dampening")

    def _update(self, p: Tensor, grad: np.ndarray, state: dict, group: dict) -> None:
        dt = p.data.dtype.type  # typed scalars: a float32 parameter is updated in float32
        momentum, weight_decay = group["momentum"], group["weight_decay"]
        if weight_decay != 0:
            # g ← g + λθ (a new array: p.grad itself is left alone)
            grad = grad + dt(weight_decay) * p.data
        if momentum != 0:
            buf = state.get("momentum_buffer")
            if buf is None:
                # b ← g on the first step, undampened. np.array, not grad.copy(): for a 0-d parameter, grad
                # + λθ above is a NumPy scalar, whose in-place updates below would only rebind `buf`
                buf = state["momentum_buffer"] = np.array(grad, dtype=p.data.dtype)
            else:
                # b ← μb + (1 − τ)g
                buf *= dt(momentum)
                buf += dt(1 - group["dampening"]) * grad
            # Nesterov looks ahead: g + μb; classical momentum steps along b
            grad = grad + dt(momentum) * buf if group["nesterov"] else buf
        # θ ← θ − γg
        p.data -= dt(group["lr"]) * grad


class Adam(Optimizer):
    """Adam (Kingma & Ba, 2015) with bias correction; `weight_decay` adds λθ to the gradient (L2)."""

    _state_kinds = {"step": "count", "exp_avg": "array", "exp_avg_sq": "array"}
    _decoupled = False

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0):
        name = type(self).__name__
        defaults = {
            "lr": _option(name, "lr", lr, 0.0),
            "betas": _option(name, "betas", betas, (0.0, 0.0)),
            "eps": _option(name, "eps", eps, 0.0),
            "weight_decay": _option(name, "weight_decay", weight_decay, 0.0),
        }
        super().__init__(params, defaults)

    def _check_group(self, group: dict) -> None:
        name = self._name
        _require(name, "lr", group["lr"] >= 0, group["lr"], "must be >= 0")
        _require(name, "eps", group["eps"] >= 0, group["eps"], "must be >= 0")
        for i, beta in enumerate(group["betas"]):
            _require(name, f"betas[{i}]", 0 <= beta < 1, beta, "must be in [0, 1)")
        _require(name, "weight_decay", group["weight_decay"] >= 0, group["weight_decay"], "must be >= 0")

    def _update(self, p: Tensor, grad: np.ndarray, state: dict, group: dict) -> None:
        dt = p.data.dtype.type
        lr, weight_decay, eps = group["lr"], group["weight_decay"], group["eps"]
        beta1, beta2 = group["betas"]
        if not state:
            state["step"] = 0
            state["exp_avg"] = np.zeros_like(p.data)  # m, the first moment
            state["exp_avg_sq"] = np.zeros_like(p.data)  # v, the second moment
        state["step"] += 1
        t, m, v = state["step"], state["exp_avg"], state["exp_avg_sq"]
        if weight_decay != 0:
            if self._decoupled:
                # AdamW: θ ← θ(1 − γλ), outside the moments
                p.data *= dt(1 - lr * weight_decay)
            else:
                # Adam: g ← g + λθ, so the decay is rescaled by the moments like any gradient
                grad = grad + dt(weight_decay) * p.data
        step_size = lr / (1 - beta1**t)  # the scalars in float64, as in PyTorch
        bias_correction2_sqrt = math.sqrt(1 - beta2**t)
        kern = _adam_kernel()
        if kern is not None and _flat_views_of(p.data, m, v, grad):
            kern.adam_update(
                p.data.reshape(-1), m.reshape(-1), v.reshape(-1), grad.reshape(-1),
                beta1, beta2, eps, step_size, bias_correction2_sqrt,
            )  # fmt: skip
        else:
            _adam_update_numpy(p.data, m, v, grad, beta1, beta2, eps, step_size, bias_correction2_sqrt)


def _adam_update_numpy(theta, m, v, grad, beta1, beta2, eps, step_size, bias_correction2_sqrt) -> None:
    """Adam's moments and step on whole arrays, in place: the readable twin of kernels/adam.py.

    Two scratch arrays instead of a new array per operation (eight per step and parameter: for a 256x256
    weight that was half of the optimizer's time). Same operations in the same order as the
    one-expression-per-line form in the comments, and as the kernel, so all three give the same numbers.
    """
    dt = theta.dtype.type
    tmp, tmp2 = np.empty_like(m), np.empty_like(m)
    # m ← β₁m + (1 − β₁)g
    m *= dt(beta1)
    m += np.multiply(grad, dt(1 - beta1), out=tmp)
    # v ← β₂v + (1 − β₂)g²
    v *= dt(beta2)
    np.multiply(grad, grad, out=tmp)
    tmp *= dt(1 - beta2)
    v += tmp
    # θ ← θ − (γ / (1 − β₁ᵗ)) · m / (√v / √(1 − β₂ᵗ) + ε)
    denom = np.sqrt(v, out=tmp)
    denom /= dt(bias_correction2_sqrt)
    denom += dt(eps)
    update = np.multiply(m, dt(step_size), out=tmp2)
    update /= denom
    theta -= update


def _flat_views_of(theta: np.ndarray, *others: np.ndarray) -> bool:
    """True if the arrays are C-contiguous, of one dtype and one size: the kernel's 1-D views of them."""
    if not theta.flags.c_contiguous:
        return False
    for a in others:
        if a.dtype != theta.dtype or a.size != theta.size or not a.flags.c_contiguous:
            return False
    return True


def _adam_kernel():
    """kernels/adam.py, or None where numba is missing or NUMBA_DISABLE_JIT is set.

    Unlike the norm kernels, Adam does not run its kernel as plain Python under NUMBA_DISABLE_JIT (a Python
    loop per element of every weight): it takes the NumPy twin, which gives the same numbers.
    """
    return kernels.load_compiled("adam")


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter, 2019): θ ← θ(1 − γλ) before the Adam step."""

    _decoupled = True

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 1e-2):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)


# ------------------------------------------------------------------------------------------- clipping
def clip_grad_norm_(params, max_norm: float, norm_type: float = 2.0, error_if_nonfinite: bool = False) -> float:
    """Scale the gradients in place so that their joint norm is at most `max_norm`; return the norm before.

    total = ‖(‖g₁‖, ‖g₂‖, ...)‖ (the p-norm of all gradients seen as one vector; norm_type may be inf), and
    every gradient is multiplied by min(max_norm / (total + 1e-6), 1), as in PyTorch. Parameters without a
    gradient are ignored. A non-finite total is returned as it is and, like PyTorch, still used to scale
    (an inf total zeroes the finite gradients, a nan one makes them nan); `error_if_nonfinite=True` raises
    a RuntimeError instead.
    """
    if isinstance(params, Tensor):
        params = [params]
    norm_type = float(norm_type)
    if not (norm_type > 0 or norm_type == -math.inf):
        raise ValueError(f"clip_grad_norm_: invalid norm_type: {norm_type!r} (must be > 0 or inf)")
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return 0.0
    norms = np.array([np.linalg.norm(g.ravel(), norm_type) for g in grads])
    total = float(np.linalg.norm(norms, norm_type))
    if error_if_nonfinite and not math.isfinite(total):
        raise RuntimeError(
            f"clip_grad_norm_: the total norm of order {norm_type} of the gradients is non-finite ({total}), "
            "so it cannot be clipped; set error_if_nonfinite=False to scale by it anyway"
        )
    coef = float(max_norm) / (total + 1e-6)
    if not coef >= 1.0:  # also true for nan, which PyTorch's clamp propagates
        with np.errstate(invalid="ignore"):  # inf · 0 = nan: the documented outcome of a non-finite norm
            for g in grads:
                g *= g.dtype.type(coef)
    return total


# ------------------------------------------------------------------------------------------ schedulers
class LRScheduler:
    """Base class: sets each group's lr to `_lr(base_lr, epoch)`, a closed form, at every `step()`.

    `base_lrs` are the groups' learning rates when the scheduler is made; epoch 0 keeps them unchanged.
    """

    def __init__(self, optimizer: Optimizer):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(
                f"{type(self).__name__}: expected an npnorm.optim Optimizer, got {type(optimizer).__name__}"
            )
        self.optimizer = optimizer
        self.base_lrs = [group["lr"] for group in optimizer.param_groups]
        self.last_epoch = 0
        self._last_lr = list(self.base_lrs)

    def _lr(self, base_lr: float, epoch: int) -> float:
        raise NotImplementedError

    def get_lr(self) -> list[float]:
        """The learning rates of the current epoch (closed form)."""
        if self.last_epoch == 0:
            return list(self.base_lrs)
        return [self._lr(base_lr, self.last_epoch) for base_lr in self.base_lrs]

    def step(self) -> None:
        """Advance one epoch and write the new learning rates into the optimizer."""
        if len(self.base_lrs) != len(self.optimizer.param_groups):
            raise ValueError(
                f"{type(self).__name__}.step: the optimizer has {len(self.optimizer.param_groups)} parameter "
                f"groups but the scheduler knows {len(self.base_lrs)} base lr(s) (a group added after the scheduler "
                "was made has none): make the scheduler after adding every group"
            )
        self.last_epoch += 1
        self._last_lr = self.get_lr()
        for group, lr in zip(self.optimizer.param_groups, self._last_lr, strict=True):
            group["lr"] = lr

    def get_last_lr(self) -> list[float]:
        """The learning rates the last `step()` (or the constructor) set."""
        return list(self._last_lr)

    def state_dict(self) -> dict[str, np.ndarray]:
        return {"last_epoch": np.array(self.last_epoch, dtype=np.int64), "base_lrs": np.array(self.base_lrs)}

    def load_state_dict(self, state_dict: Mapping) -> None:
        """Restore the epoch and base learning rates (the optimizer's own state holds the current lr)."""
        who = f"{type(self).__name__}.load_state_dict"
        if not isinstance(state_dict, Mapping) or set(state_dict) != {"last_epoch", "base_lrs"}:
            raise ValueError(f"{who}: expected the keys 'last_epoch' and 'base_lrs'")
        base_lrs = np.asarray(state_dict["base_lrs"], dtype=np.float64).reshape(-1)
        if base_lrs.size != len(self.optimizer.param_groups):
            raise ValueError(f"{who}: {base_lrs.size} base lr(s) for {len(self.optimizer.param_groups)} group(s)")
        if not np.all((base_lrs >= 0) & np.isfinite(base_lrs)):
            raise ValueError(f"{who}: base_lrs must be finite and >= 0, got {base_lrs.tolist()}")
        last_epoch = np.asarray(state_dict["last_epoch"])
        if last_epoch.shape != () or last_epoch.dtype.kind not in "iu" or last_epoch < 0:
            raise ValueError(f"{who}: last_epoch must be a 0-d integer >= 0, got {state_dict['last_epoch']!r}")
        self.last_epoch = int(last_epoch)
        self.base_lrs = [float(lr) for lr in base_lrs]
        self._last_lr = self.get_lr()


class StepLR(LRScheduler):
    """lr = base_lr · gamma^⌊epoch / step_size⌋: decay by `gamma` every `step_size` epochs."""

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1):
        if isinstance(step_size, bool) or not isinstance(step_size, numbers.Integral) or step_size < 1:
            raise ValueError(f"StepLR: invalid step_size: {step_size!r} (must be an integer >= 1)")
        if not (isinstance(gamma, numbers.Real) and gamma >= 0):
            raise ValueError(f"StepLR: invalid gamma: {gamma!r} (must be >= 0)")
        self.step_size = int(step_size)
        self.gamma = float(gamma)
        super().__init__(optimizer)

    def _lr(self, base_lr: float, epoch: int) -> float:
        return base_lr * self.gamma ** (epoch // self.step_size)


class CosineAnnealingLR(LRScheduler):
    """lr = eta_min + (base_lr − eta_min) · (1 + cos(π · epoch / T_max)) / 2 (SGDR without restarts).

    Past T_max the cosine rises again, as PyTorch's schedule does.
    """

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0):
        if isinstance(T_max, bool) or not isinstance(T_max, numbers.Real) or not T_max > 0:
            raise ValueError(f"CosineAnnealingLR: invalid T_max: {T_max!r} (must be > 0)")
        if not (isinstance(eta_min, numbers.Real) and 0 <= eta_min < math.inf):
            raise ValueError(f"CosineAnnealingLR: invalid eta_min: {eta_min!r} (must be finite and >= 0)")
        self.T_max = T_max
        self.eta_min = float(eta_min)
        super().__init__(optimizer)

    def _lr(self, base_lr: float, epoch: int) -> float:
        return self.eta_min + (base_lr - self.eta_min) * (1 + math.cos(math.pi * epoch / self.T_max)) / 2
