"""`npnorm.functional` (imported as F): stateless layers, activations and losses.

Each function checks its arguments where the user can read the error, then hands arrays to one
Function from `ops` (or, for the norms, from `norms`).
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from . import ops
from ._random import default_generator
from .norms import _checks, _dispatch
from .norms import batch_norm as _batch_norm
from .norms import group_norm as _group_norm
from .norms import layer_norm as _layer_norm
from .norms import rms_norm as _rms_norm
from .norms.weight_norm import weight_norm  # noqa: F401  (F.weight_norm: checks and dispatch live with its math)
from .tensor import Tensor, _as_float_array


def as_tensor(x, who: str, name: str = "input") -> Tensor:
    """`x` itself if it is a Tensor, else a new constant Tensor (arrays, lists and scalars are accepted).

    Errors name the function (`who`) and the argument (`name`), e.g. "layer_norm: input must hold real numbers".
    """
    if isinstance(x, Tensor):
        return x
    return Tensor._wrap(_as_float_array(x, copy=False, who=who, what=name))


# ---------------------------------------------------------------------------------- layers and activations


def linear(x, weight, bias=None) -> Tensor:
    """y = x Wᵀ + b, with W of shape (out_features, in_features) as in PyTorch."""
    x, weight = as_tensor(x, "linear"), as_tensor(weight, "linear", "weight")
    bias = None if bias is None else as_tensor(bias, "linear", "bias")
    for name, p in (("weight", weight), ("bias", bias)):
        if p is not None and p.dtype != x.dtype:
            # As in PyTorch: silently promoting would give float64 outputs with float32 gradients.
            raise TypeError(f"linear: {name} is {p.dtype} but the input is {x.dtype}; use one dtype for both")
    return ops.Linear.apply(x, weight, bias)


def relu(x) -> Tensor:
    return ops.Relu.apply(as_tensor(x, "relu"))


def tanh(x) -> Tensor:
    return ops.Tanh.apply(as_tensor(x, "tanh"))


def sigmoid(x) -> Tensor:
    return ops.Sigmoid.apply(as_tensor(x, "sigmoid"))


def gelu(x, approximate: str = "none") -> Tensor:
    """GELU(x) = x Φ(x), exact (erf) by default; approximate="tanh" is the tanh approximation."""
    if approximate not in ("none", "tanh"):
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    return ops.Gelu.apply(as_tensor(x, "gelu"), approximate=approximate)


def softmax(x, axis: int = -1) -> Tensor:
    """softmax(x)_i = e^(x_i - max x) / Σ_j e^(x_j - max x) along `axis` (shifted, so it never overflows)."""
    x = as_tensor(x, "softmax")
    return ops.Softmax.apply(x, axis=ops.normalized_axis("softmax", axis, x.ndim))


def log_softmax(x, axis: int = -1) -> Tensor:
    """log softmax(x) = x - max x - log Σ e^(x - max x): finite for logits of ±1e4."""
    x = as_tensor(x, "log_softmax")
    return ops.LogSoftmax.apply(x, axis=ops.normalized_axis("log_softmax", axis, x.ndim))


# -------------------------------------------------------------------------------------------- losses

_REDUCTIONS = ("mean", "sum", "none")


def _check_reduction(who: str, reduction: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{who}: reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def _class_targets(target, logits_shape: tuple) -> np.ndarray:
    """Integer class indices of the shape logits have without their class axis 1, each in [0, C)."""
    data = target.data if isinstance(target, Tensor) else np.asarray(target)
    if data.dtype.kind == "f":
        if not np.all(np.isfinite(data)) or not np.all(data == np.round(data)):
            raise TypeError("cross_entropy: target must hold integer class indices, got non-integer values")
    elif data.dtype.kind not in "iu":
        raise TypeError(f"cross_entropy: target must hold integer class indices, got dtype {data.dtype}")
    expected = logits_shape[:1] + logits_shape[2:]
    if data.shape != expected:
        raise ValueError(
            f"cross_entropy: target has shape {data.shape}, expected {expected} for logits of shape {logits_shape}"
        )
    num_classes = logits_shape[1]
    if data.size and (data.min() < 0 or data.max() >= num_classes):
        raise ValueError(
            f"cross_entropy: target holds class {int(data.min()) if data.min() < 0 else int(data.max())}, "
            f"outside [0, {num_classes}) for logits with {num_classes} classes"
        )
    return data.astype(np.intp)


def cross_entropy(logits, target, reduction: str = "mean") -> Tensor:
    """Mean (or sum, or per-sample) of -log softmax(logits)[target], fused and stable.

    logits (N, C) or (N, C, d1, ...), with the classes on axis 1 as in PyTorch; target integer classes of
    shape (N,) or (N, d1, ...). A single sample is logits (C,) with a 0-d target.
    """
    _check_reduction("cross_entropy", reduction)
    logits = as_tensor(logits, "cross_entropy", "logits")
    if logits.ndim == 1 and logits.shape[0] > 0:  # one sample: its target is one class, 0-d as in PyTorch
        if np.ndim(_raw(target)) != 0:
            raise ValueError(
                f"cross_entropy: logits of shape {logits.shape} (one sample) need a 0-d target, "
                f"got shape {np.shape(_raw(target))}"
            )
        out = cross_entropy(logits.reshape(1, -1), np.reshape(_raw(target), (1,)), reduction)
        return out.reshape(()) if reduction == "none" else out
    if logits.ndim <= 1 or logits.shape[1] == 0:
        raise ValueError(f"cross_entropy: logits must have shape (C,) or (N, C, ...) with C > 0, got {logits.shape}")
    t = _class_targets(target, logits.shape)
    if t.size == 0 and reduction == "mean":
        raise ValueError("cross_entropy: the mean over an empty batch is undefined")
    return ops.CrossEntropy.apply(logits, t, reduction=reduction)


def _raw(x):
    return x.data if isinstance(x, Tensor) else np.asarray(x)


def mse_loss(input, target, reduction: str = "mean") -> Tensor:
    """Mean (or sum, or elementwise) of (input - target)^2; shapes must match."""
    _check_reduction("mse_loss", reduction)
    input, target = as_tensor(input, "mse_loss"), as_tensor(target, "mse_loss", "target")
    if input.shape != target.shape:
        raise ValueError(f"mse_loss: input shape {input.shape} and target shape {target.shape} differ")
    sq = (input - target) ** 2
    if reduction == "mean":
        return sq.mean()
    if reduction == "sum":
        return sq.sum()
    return sq


# ------------------------------------------------------------------------------------------ dropout


def dropout(x, p: float = 0.5, training: bool = True, generator: np.random.Generator | None = None) -> Tensor:
    """Zero each element with probability p and scale the rest by 1/(1-p) (inverted dropout).

    In eval mode (training=False), or with p = 0, the input is returned unchanged; with p = 1 every element
    is dropped (x·0, as PyTorch: NaN stays NaN, the gradient is 0). The mask comes from `generator`, else
    from the generator that `npnorm.manual_seed` seeds.
    """
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0 <= p <= 1:
        raise ValueError(f"dropout: p must be in [0, 1], got {p!r}")
    x = as_tensor(x, "dropout")
    if not training or p == 0:
        return x
    if p == 1:  # 1/(1-p) would divide by zero
        return ops.Mul.apply(x, Tensor._wrap(np.zeros(x.shape, x.dtype)))
    if generator is not None and not isinstance(generator, np.random.Generator):
        # not an int seed as nn.Dropout's rng: a seed per call would drop the same units at every call
        raise TypeError(f"dropout: generator must be a numpy.random.Generator or None, got {generator!r}")
    rng = generator if generator is not None else default_generator()
    keep = rng.random(x.shape) >= p
    mask = keep.astype(x.dtype) * np.asarray(1.0 / (1.0 - p), dtype=x.dtype)
    return ops.Mul.apply(x, Tensor._wrap(mask))


# --------------------------------------------------------------------------------------------- norms


def layer_norm(
    x, normalized_shape, weight=None, bias=None, eps=1e-5, *, detach_mean=False, detach_var=False, impl=None
) -> Tensor:
    """LayerNorm over the trailing `normalized_shape` dims: y = γ ⊙ (x − μ)/√(σ² + ε) + β.

    `weight` (γ) and `bias` (β) have shape `normalized_shape` and are optional (without both this is
    Xu et al.'s LayerNorm-simple). `detach_mean`/`detach_var` treat μ or σ as constants in backward
    (both: DetachNorm). `impl` is "numba" (default), "numpy" (the hand-derived reference) or "composed"
    (built from primitive ops); None reads the environment variable NPNORM_IMPL. Math:
    npnorm/norms/layer_norm.py and docs/layer_norm.md.
    """
    who = "layer_norm"
    x = as_tensor(x, who)
    shape = _checks.check_normalized_shape(who, normalized_shape, x.shape)
    weight = _checks.check_param(who, "weight", weight, shape, x.dtype)
    bias = _checks.check_param(who, "bias", bias, shape, x.dtype)
    eps = _checks.check_eps(who, eps)
    impl = _dispatch.resolve_impl(impl, who)
    if impl == "composed":
        return _layer_norm.layer_norm_composed(x, len(shape), weight, bias, eps, bool(detach_mean), bool(detach_var))
    return _layer_norm.LayerNormFunction.apply(
        x,
        weight,
        bias,
        H=math.prod(shape),
        eps=eps,
        detach_mean=bool(detach_mean),
        detach_var=bool(detach_var),
        backend=impl,
    )


def ada_norm(x, normalized_shape, C=1.0, k=0.1, eps=1e-5, *, impl=None) -> Tensor:
    """AdaNorm (Xu et al. 2019): z = C(1 − k·y) ⊙ y with y = LayerNorm-simple(x), C(1 − k·y) constant in backward."""
    who = "ada_norm"
    x = as_tensor(x, who)
    shape = _checks.check_normalized_shape(who, normalized_shape, x.shape)
    C, k = _checks.check_real(who, "C", C), _checks.check_real(who, "k", k)
    eps = _checks.check_eps(who, eps)
    impl = _dispatch.resolve_impl(impl, who)
    if impl == "composed":
        return _layer_norm.ada_norm_composed(x, len(shape), C, k, eps)
    return _layer_norm.AdaNormFunction.apply(x, H=math.prod(shape), C=C, k=k, eps=eps, backend=impl)


def rms_norm(x, normalized_shape, weight=None, eps=None, *, impl=None) -> Tensor:
    """RMSNorm (Zhang & Sennrich 2019) over the trailing `normalized_shape` dims: y = γ ⊙ x/√(mean(x²) + ε).

    `weight` (γ) has shape `normalized_shape` and is optional; there is no bias and no re-centring.
    `eps=None` means the machine epsilon of x's dtype, as in PyTorch. `impl` as in `layer_norm`. Math:
    npnorm/norms/rms_norm.py and docs/rms_norm.md.
    """
    who = "rms_norm"
    x = as_tensor(x, who)
    shape = _checks.check_normalized_shape(who, normalized_shape, x.shape)
    weight = _checks.check_param(who, "weight", weight, shape, x.dtype)
    eps = _checks.check_eps(who, float(np.finfo(x.dtype).eps) if eps is None else eps)
    impl = _dispatch.resolve_impl(impl, who)
    if impl == "composed":
        return _rms_norm.rms_norm_composed(x, len(shape), weight, eps)
    return _rms_norm.RMSNormFunction.apply(x, weight, H=math.prod(shape), eps=eps, backend=impl)


def batch_norm(
    x,
    running_mean,
    running_var,
    weight=None,
    bias=None,
    training=False,
    momentum=0.1,
    eps=1e-5,
    *,
    num_batches_tracked=None,
    impl=None,
) -> Tensor:
    """BatchNorm over the batch: each channel c of x (N, C) or (N, C, L) normalized over its N·L values.

    y = γ_c (x − μ_c)/√(σ²_c + ε) + β_c. With `training=True`, μ and σ² are the batch's (biased variance),
    the gradient flows through them, and `running_mean`/`running_var` ((C,) NumPy arrays of x's dtype, or
    both None) are updated in place: running ← (1 − momentum)·running + momentum·batch, with the unbiased
    variance for running_var. `momentum=None` is the cumulative average and needs `num_batches_tracked`, a
    one-element int64 array that is incremented on every update (whenever it is given). With
    `training=False` the running statistics normalize and are constants in backward. A failing call leaves
    the running statistics untouched. `impl` as in `layer_norm`. Math: npnorm/norms/batch_norm.py and
    docs/batch_norm.md.
    """
    who = "batch_norm"
    x = as_tensor(x, who)
    N, C, L = _batch_norm.check_input(who, x.shape)
    training = bool(training)
    if training:
        _batch_norm.check_training_size(who, x.shape, N * L)
    weight = _checks.check_param(who, "weight", weight, (C,), x.dtype)
    bias = _checks.check_param(who, "bias", bias, (C,), x.dtype)
    eps = _checks.check_eps(who, eps)
    momentum = _batch_norm.check_running_stats(
        who, running_mean, running_var, num_batches_tracked, momentum, training, C, x.dtype
    )
    impl = _dispatch.resolve_impl(impl, who)
    return _batch_norm.batch_norm(
        x, running_mean, running_var, weight, bias, training, momentum, eps, num_batches_tracked, impl
    )


def group_norm(x, num_groups, weight=None, bias=None, eps=1e-5, *, impl=None) -> Tensor:
    """GroupNorm (Wu & He 2018): the C channels of x (N, C, *) in `num_groups` groups, each (sample, group)
    normalized over its C/G·S values, then y = γ_c x̂ + β_c with `weight` (γ), `bias` (β) of shape (C,).

    num_groups = 1 is LayerNorm over (C, *) with a per-channel affine; num_groups = C is InstanceNorm.
    `impl` as in `layer_norm`. Math: npnorm/norms/group_norm.py and docs/group_norm.md.
    """
    who = "group_norm"
    x = as_tensor(x, who)
    G = _group_norm.check_groups(who, num_groups, x.shape)
    C = x.shape[1]
    weight = _checks.check_param(who, "weight", weight, (C,), x.dtype)
    bias = _checks.check_param(who, "bias", bias, (C,), x.dtype)
    eps = _checks.check_eps(who, eps)
    impl = _dispatch.resolve_impl(impl, who)
    if impl == "composed":
        return _group_norm.group_norm_composed(x, G, weight, bias, eps)
    return _group_norm.GroupNormFunction.apply(x, weight, bias, G=G, eps=eps, backend=impl)


# ------------------------------------------------------------------------------------- joining tensors


def _join_inputs(who: str, tensors) -> list:
    """The tensors to join: a non-empty sequence of Tensors (or arrays) of one dtype."""
    if isinstance(tensors, Tensor) or not isinstance(tensors, (list, tuple)):
        raise TypeError(f"{who}: expected a list or tuple of tensors, got {type(tensors).__name__}")
    if not tensors:
        raise ValueError(f"{who}: expected at least one tensor, got an empty {type(tensors).__name__}")
    tensors = [as_tensor(t, who) for t in tensors]
    dtypes = {t.dtype for t in tensors}
    if len(dtypes) > 1:
        # As in linear: promoting would hand float64 gradients to float32 inputs.
        raise TypeError(f"{who}: all tensors must have one dtype, got {sorted(map(str, dtypes))}")
    return tensors


def stack(tensors, axis: int = 0) -> Tensor:
    """Join tensors of one shape along a new axis: stack([a, b], axis=0)[1] is b (numpy.stack, torch.stack)."""
    tensors = _join_inputs("stack", tensors)
    shapes = {t.shape for t in tensors}
    if len(shapes) > 1:
        raise ValueError(f"stack: all tensors must have the same shape, got {[t.shape for t in tensors]}")
    ndim = tensors[0].ndim + 1  # the result's
    axis = ops.normalized_axis("stack", axis, ndim)
    return ops.Stack.apply(*tensors, axis=axis)


def cat(tensors, axis: int = 0) -> Tensor:
    """Join tensors along an existing axis; their shapes agree on every other axis (numpy.concatenate, torch.cat)."""
    tensors = _join_inputs("cat", tensors)
    ndim = tensors[0].ndim
    if ndim == 0 or any(t.ndim != ndim for t in tensors):
        shapes = [t.shape for t in tensors]
        raise ValueError(f"cat: tensors must have the same number (>= 1) of dimensions, got {shapes}")
    axis = ops.normalized_axis("cat", axis, ndim)
    rest = {t.shape[:axis] + t.shape[axis + 1 :] for t in tensors}
    if len(rest) > 1:
        raise ValueError(f"cat: shapes {[t.shape for t in tensors]} differ on an axis other than axis {axis}")
    return ops.Concatenate.apply(*tensors, axis=axis)
