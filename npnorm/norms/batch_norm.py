r"""Batch normalization (Ioffe & Szegedy 2015), with PyTorch's running statistics.

The input is (N, C) or (N, C, L): N samples, C channels, L positions. Each channel c is normalized over the
M = N·L values it takes in the batch — LayerNorm's formulas, applied along the other axis.

Forward in training — the batch's own statistics, per channel c:

    μ_c    = (1/M) Σ_{n,l} x[n, c, l]
    σ²_c   = (1/M) Σ_{n,l} (x[n, c, l] − μ_c)²          (biased, as used for normalizing)
    rstd_c = 1 / √(σ²_c + ε)
    x̂      = (x − μ_c) · rstd_c
    y      = γ_c · x̂ + β_c                              (γ = `weight`, β = `bias`, both optional)

and the running statistics move towards the batch's, in place (`momentum` m; PyTorch's convention, which is
1 − the "decay" of other libraries):

    running_mean ← (1 − m) · running_mean + m · μ
    running_var  ← (1 − m) · running_var  + m · σ² · M/(M − 1)        (the *unbiased* variance)

`momentum=None` gives the cumulative average over all batches seen: m = 1/t for the t-th batch, counted in
`num_batches_tracked`.

Forward in evaluation — the running statistics, constants: x̂ = (x − running_mean_c) / √(running_var_c + ε).

Backward — upstream dy, means over the M values of a channel:

    dβ_c = Σ_{n,l} dy
    dγ_c = Σ_{n,l} dy ⊙ x̂
    dx   = γ_c · rstd_c · ( dy − mean(dy) − x̂ · mean(dy ⊙ x̂) )       (training)
    dx   = γ_c · rstd_c · dy                                          (evaluation)

In training, μ and σ are functions of the whole batch, so every sample's gradient depends on every other
sample's: −mean(dy) is the path through μ (Σ_{n,l} dx = 0 per channel), −x̂·mean(dy⊙x̂) the path through σ.
That is LayerNorm's dx = rstd·(g − mean(g) − x̂·mean(g⊙x̂)) with g = γ_c·dy; since γ_c is one number for the
whole channel it factors out of the means. In evaluation μ and σ are constants, so only the direct path is
left — the same gradient that DetachNorm (Xu et al. 2019) gives LayerNorm. Step by step: docs/batch_norm.md.

Three implementations, which must agree (tests/test_batch_norm.py):
* `stats_reference`, `forward_reference`, `backward_reference`: the formulas above in vectorised NumPy, with
  float64 statistics whatever the input dtype;
* the Numba kernels of npnorm.kernels.batch_norm (the default, `impl="numba"`);
* `batch_norm_composed`: the forward built from engine primitives, whose gradient the engine derives.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from .. import _buffers, kernels
from ..autograd import Function
from ..tensor import Tensor
from ._moments import corrected_mean, corrected_two_pass
from ._range import refuse_overflow, refuse_overflowed_rstd

# ------------------------------------------------------------------------------------ argument checks


def check_input(who: str, shape: tuple) -> tuple[int, int, int]:
    """(N, C, L) for an input of shape (N, C) or (N, C, L) — or (N, C, *), with L the product of *."""
    if len(shape) < 2:
        raise ValueError(f"{who}: input must have shape (N, C) or (N, C, L), got {shape}")
    return shape[0], shape[1], math.prod(shape[2:])


def check_training_size(who: str, shape: tuple, M: int) -> None:
    """PyTorch's rule: a variance over one value is 0, so x̂ would be 0 and nothing could be learned."""
    if M == 1:
        raise ValueError(f"{who}: Expected more than 1 value per channel when training, got input shape {shape}")


def check_running_stats(who: str, running_mean, running_var, num_batches_tracked, momentum, training, C, dtype):
    """Validate everything the running-statistics update needs, before anything is computed or written.

    Returns `momentum` as a float, or None for the cumulative average. Raises ValueError (TypeError for
    running statistics that are not arrays at all) naming the argument.
    """
    if (running_mean is None) != (running_var is None):
        raise ValueError(f"{who}: running_mean and running_var must either both be None or neither be None")
    if running_mean is None and not training:
        raise ValueError(f"{who}: running_mean and running_var are required when training=False")
    updating = training and running_mean is not None
    for name, stat in (("running_mean", running_mean), ("running_var", running_var)):
        if stat is None:
            continue
        if not isinstance(stat, np.ndarray):
            raise TypeError(
                f"{who}: {name} must be a numpy.ndarray (it is updated in place), got {type(stat).__name__}"
            )
        if stat.shape != (C,):
            raise ValueError(f"{who}: {name} has shape {stat.shape}, expected ({C},) for an input with {C} channels")
        if stat.dtype != dtype:
            raise ValueError(f"{who}: {name} is {stat.dtype} but the input is {dtype}; use one dtype for both")
        if updating and not stat.flags.writeable:
            raise ValueError(f"{who}: {name} is read-only, but training=True updates it in place")
    momentum = check_momentum(who, momentum)
    if num_batches_tracked is not None:
        nbt = num_batches_tracked
        if not isinstance(nbt, np.ndarray) or nbt.dtype != np.int64 or nbt.size != 1:
            raise ValueError(f"{who}: num_batches_tracked must be a one-element int64 numpy.ndarray, got {nbt!r}")
        if updating and not nbt.flags.writeable:
            raise ValueError(f"{who}: num_batches_tracked is read-only, but training=True updates it in place")
    if momentum is None and updating and num_batches_tracked is None:
        raise ValueError(
            f"{who}: momentum=None (a cumulative moving average) needs num_batches_tracked, "
            "a one-element int64 array that counts the batches"
        )
    return momentum


def check_momentum(who: str, momentum) -> float | None:
    """`momentum` as a float in [0, 1], or None (the cumulative average)."""
    if momentum is None:
        return None
    if isinstance(momentum, bool) or not isinstance(momentum, numbers.Real) or not 0 <= momentum <= 1:
        raise ValueError(f"{who}: momentum must be a number in [0, 1] or None, got {momentum!r}")
    return float(momentum)


# ------------------------------------------------------------------------------- NumPy reference


def stats_reference(x):
    """mean and biased var, (C,) float64, of x (N, C, L) over N and L; corrected two passes (norms/_moments.py)."""
    return corrected_two_pass(x.astype(np.float64, copy=False), axis=(0, 2))


def forward_reference(x, mean, rstd, weight, bias):
    """y = γ_c (x − μ_c) rstd_c + β_c for x (N, C, L); statistics (C,) float64; weight, bias (C,) or None."""
    y = (x.astype(np.float64, copy=False) - mean[:, None]) * rstd[:, None]  # (N, C, L)  x̂
    if weight is not None:
        y *= weight[:, None]
    if bias is not None:
        y += bias[:, None]
    return y.astype(x.dtype, copy=False)


def backward_reference(dy, x, mean, rstd, weight, training):
    """dx, dweight, dbias for x (N, C, L); dweight is None when weight is None.

    `training=True`: mean and rstd are the batch's own and the gradient flows through them;
    `training=False`: they are running statistics, constants.
    """
    dy64 = dy.astype(np.float64, copy=False)  # (N, C, L)
    xhat = (x - mean[:, None]) * rstd[:, None]  # (N, C, L), float64, recomputed
    dx = dy64.copy()  # (N, C, L)
    if training:
        dx -= dy64.mean(axis=(0, 2))[:, None]  # path through μ: re-centres
        dx -= xhat * (dy64 * xhat).mean(axis=(0, 2))[:, None]  # path through σ: re-scales
    scale = rstd if weight is None else rstd * weight  # (C,)  γ_c · rstd_c
    dx *= scale[:, None]
    dweight = None if weight is None else (dy64 * xhat).sum(axis=(0, 2)).astype(x.dtype)  # (C,)
    dbias = dy64.sum(axis=(0, 2)).astype(x.dtype)  # (C,)
    return dx.astype(x.dtype, copy=False), dweight, dbias


# ------------------------------------------------------------------------------------ engine binding


def _as_ncl(a: np.ndarray, N: int, C: int, L: int) -> np.ndarray:
    return np.ascontiguousarray(a.reshape(N, C, L))  # (N, C, L)


def batch_stats(x: np.ndarray, backend: str):
    """mean and biased var, (C,) float64, of x (N, C, *) with N·L > 0, by kernel or reference."""
    N, C, L = check_input("batch_norm", x.shape)
    x3 = _as_ncl(x, N, C, L)
    kern = kernels.load("batch_norm") if backend == "numba" else None
    if kern is None:
        return stats_reference(x3)
    mean = np.empty(C)  # (C,) float64
    var = np.empty(C)  # (C,) float64
    kern.batch_norm_stats(mean, var, x3)
    return mean, var


class BatchNormFunction(Function):
    """y = BatchNorm(x) with given per-channel statistics; `backend` is "numba" or "numpy".

    forward(x (N, C, *), weight (C,) | None, bias (C,) | None; mean, rstd (C,) float64) -> y like x.
    `training=True` declares that mean and rstd are x's own batch statistics, so backward differentiates
    through them; `training=False` treats them as constants (running statistics).
    """

    # dx, dweight and dbias are new arrays that no input, saved array or caller can see (dx may come from the
    # output pool, which hands a buffer out again only once nobody else holds it): the engine may make them
    # `.grad` without a copy (for 8192x1024 float32 that copy into fresh pages cost more than the kernel).
    returns_fresh_grads = True

    @staticmethod
    def forward(ctx, x, weight, bias, *, mean, rstd, training, backend):
        N, C, L = check_input("batch_norm", x.shape)
        x3 = _as_ncl(x, N, C, L)  # (N, C, L)
        kern = kernels.load("batch_norm") if backend == "numba" else None
        if kern is not None:
            y = _buffers.empty_like(x3)  # (N, C, L)
            kern.batch_norm_forward(y, x3, mean, rstd, weight, bias)
        else:
            y = forward_reference(x3, mean, rstd, weight, bias)
        ctx.save_for_backward(x3, weight, mean, rstd)
        ctx.params = x.shape, training, kern
        return y.reshape(x.shape)

    @staticmethod
    def backward(ctx, grad):
        x3, w, mean, rstd = ctx.saved
        x_shape, training, kern = ctx.params
        need_x, need_w, need_b = ctx.needs_input_grad
        dy = _as_ncl(grad, *x3.shape)  # (N, C, L)
        C = x3.shape[1]
        if kern is not None:
            dx = _buffers.empty_like(x3) if need_x else None  # (N, C, L)
            dw = np.empty(C, dtype=x3.dtype) if need_w else None  # (C,)
            db = np.empty(C, dtype=x3.dtype) if need_b else None  # (C,)
            kern.batch_norm_backward(dx, dw, db, dy, x3, mean, rstd, w, training)
        else:
            dx, dw, db = backward_reference(dy, x3, mean, rstd, w, training)
        return (
            dx.reshape(x_shape) if need_x else None,
            dw if need_w else None,
            db if need_b else None,
        )


# ------------------------------------------------------------------------------------------ composed


def batch_norm_composed(x: Tensor, weight, bias, eps, training, running_mean, running_var):
    """BatchNorm from mean, sub, mul, sqrt and div; returns y and, in training, the batch's (mean, biased var).

    Statistics are formed in float64 whatever x's dtype, like the other implementations.
    """
    C = x.shape[1]
    axes = (0,) + tuple(range(2, x.ndim))  # every axis but the channels
    per_channel = (1, C) + (1,) * (x.ndim - 2)  # (C,) parameters broadcast along axis 1
    stats = None
    if training:
        x64 = x.astype(np.float64)
        mean = corrected_mean(x64, axes)
        centered = x64 - mean
        var = (centered * centered).mean(axis=axes, keepdims=True)
        refuse_overflow("batch_norm", "variance", np.isposinf(var.data), lambda c: f"channel {c}")
        y = (centered / (var + eps).sqrt()).astype(x.dtype)  # not * (var + eps)^-0.5: see _normalize_composed
        stats = mean.data.reshape(C).astype(np.float64), var.data.reshape(C).astype(np.float64)
    else:  # running statistics: constants, so the engine sees no path through them
        # in float64, as the other implementations: in float32, (x - mean) * rstd overflows for a spread near
        # float32's range even where y itself is finite
        mean = Tensor(running_mean.astype(np.float64).reshape(per_channel))
        rstd = Tensor((1.0 / np.sqrt(running_var.astype(np.float64) + eps)).reshape(per_channel))
        y = ((x.astype(np.float64) - mean) * rstd).astype(x.dtype)
    if weight is not None:
        y = y * weight.reshape(per_channel)
    if bias is not None:
        y = y + bias.reshape(per_channel)
    return y, stats


# --------------------------------------------------------------------------------- the whole call


def update_running_stats(running_mean, running_var, num_batches_tracked, mean, var, M, momentum) -> None:
    """The in-place update, from float64 batch statistics; every new value is computed before any is written."""
    count = None
    if num_batches_tracked is not None:
        count = int(num_batches_tracked.reshape(-1)[0]) + 1
    m = 1.0 / count if momentum is None else momentum  # momentum=None: cumulative average, m = 1/t
    unbiased = var * (M / (M - 1))  # (C,)  M ≥ 2 here
    new_mean = ((1.0 - m) * running_mean.astype(np.float64) + m * mean).astype(running_mean.dtype)
    new_var = ((1.0 - m) * running_var.astype(np.float64) + m * unbiased).astype(running_var.dtype)
    running_mean[...] = new_mean
    running_var[...] = new_var
    if count is not None:
        num_batches_tracked[...] = count


def batch_norm(x: Tensor, running_mean, running_var, weight, bias, training, momentum, eps, num_batches_tracked, impl):
    """BatchNorm on checked arguments (see functional.batch_norm): statistics, normalization, then the update.

    The running statistics are written last, after the forward has succeeded, so a failing call leaves
    them as they were.
    """
    N, C, L = check_input("batch_norm", x.shape)
    M = N * L
    if training and M == 0:
        # An empty batch has no statistics: the output is empty whatever we use, and the running statistics
        # stay as they are. It still counts as a batch, as in PyTorch, whose module counts every training
        # call: with momentum=None the next batch's weight 1/count depends on it.
        backend = "numpy" if impl == "composed" else impl
        y = BatchNormFunction.apply(x, weight, bias, mean=np.zeros(C), rstd=np.ones(C), training=False, backend=backend)
        if num_batches_tracked is not None:
            num_batches_tracked[...] += 1
        return y
    if impl == "composed":
        y, stats = batch_norm_composed(x, weight, bias, eps, training, running_mean, running_var)
    elif training:
        stats = batch_stats(x.data, impl)
        rstd = 1.0 / np.sqrt(stats[1] + eps)  # (C,) float64
        refuse_overflowed_rstd("batch_norm", "variance", rstd, eps, x.dtype, lambda c: f"channel {c}")
        y = BatchNormFunction.apply(x, weight, bias, mean=stats[0], rstd=rstd, training=True, backend=impl)
    else:
        mean = running_mean.astype(np.float64)  # (C,)
        rstd = 1.0 / np.sqrt(running_var.astype(np.float64) + eps)  # (C,)
        y = BatchNormFunction.apply(x, weight, bias, mean=mean, rstd=rstd, training=False, backend=impl)
    if training and running_mean is not None:
        update_running_stats(running_mean, running_var, num_batches_tracked, *stats, M, momentum)
    return y
