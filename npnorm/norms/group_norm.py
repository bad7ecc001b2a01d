r"""Group normalization (Wu & He 2018): LayerNorm over groups of channels, then a per-channel affine.

The input is (N, C, *) with S = the product of *; the C channels fall into G = `num_groups` groups of C/G
consecutive channels. Each (sample, group) pair is normalized over its C/G·S values:

    rows  = x.reshape(N·G, C/G·S)                     one row per (sample n, group k)
    x̂     = LayerNorm-simple(rows)                    μ, rstd per row; no γ, no β
    y_ncs = γ_c · x̂_ncs + β_c                         γ = `weight`, β = `bias`: (C,), one entry per channel

G = 1 is LayerNorm over (C, *) with a per-channel (not per-element) affine; G = C is InstanceNorm.

Backward — with upstream dy and the per-channel affine undone first:

    dβ_c = Σ_{n,s} dy_ncs
    dγ_c = Σ_{n,s} dy_ncs · x̂_ncs
    g    = dy_ncs · γ_c                               the gradient arriving at x̂
    dx   = LayerNorm-simple backward of g, row by row:  rstd · (g − mean(g) − x̂ · mean(g ⊙ x̂))

Why this split works: y depends on x only through x̂, and x̂ is LayerNorm-simple of the rows; the affine step
is elementwise, so the chain rule hands x̂ the gradient g = ∂y/∂x̂ · dy = γ_c · dy and the LayerNorm row
backward does the rest. Unlike LayerNorm's γ, which varies along a row's features and is constant over the
batch, GroupNorm's γ_c is constant over (n, s) and varies along a row — so its gradient is a sum over
samples *and* positions, and g is formed before the row backward instead of inside it. Step by step:
docs/group_norm.md.

Three implementations, which must agree (tests/test_group_norm.py). They reuse LayerNorm's machinery:
* `forward_reference` / `backward_reference`: LayerNorm's NumPy reference on the rows, called without γ
  and β, then the affine step in NumPy, float64 throughout;
* `impl="numba"`: LayerNorm's Numba row kernels for x̂ and dx, and the two kernels of
  npnorm.kernels.group_norm for the per-channel affine step (the row kernels' weight is per feature);
* `group_norm_composed`: `layer_norm_composed` on x.reshape(N, G, -1), then the affine step as engine ops.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from .. import _buffers, kernels
from ..autograd import Function
from ..tensor import Tensor
from . import layer_norm as _layer_norm
from ._range import refuse_overflowed_rstd

# ------------------------------------------------------------------------------------ argument checks


def check_groups(who: str, num_groups, shape: tuple) -> int:
    """`num_groups` as an int ≥ 1 that divides the channel count of an input of shape (N, C, *)."""
    if len(shape) < 2:
        raise ValueError(f"{who}: input must have shape (N, C, *), got {shape}")
    if isinstance(num_groups, bool) or not isinstance(num_groups, numbers.Integral) or num_groups < 1:
        raise ValueError(f"{who}: num_groups must be an integer >= 1, got {num_groups!r}")
    C = shape[1]
    if C % num_groups != 0:
        raise ValueError(
            f"{who}: the {C} channels of input shape {shape} cannot be split into num_groups={num_groups} "
            "groups of equal size"
        )
    return int(num_groups)


# ------------------------------------------------------------------------------- NumPy reference


def forward_reference(x, G, weight, bias, eps):
    """y, mean, rstd for x of shape (N, C, S); mean and rstd are (N·G,) float64, one per LayerNorm row."""
    N, C, S = x.shape
    rows = x.reshape(N * G, C // G * S).astype(np.float64)  # (N·G, C/G·S)
    if rows.shape[1] == 0:  # an empty spatial size: rows of no values, nothing to normalize (like N = 0)
        xhat, mean, rstd = rows, np.zeros(N * G), np.zeros(N * G)
    else:
        xhat, mean, rstd = _layer_norm.forward_reference(rows, None, None, eps)  # LayerNorm-simple, float64
    y = xhat.reshape(N, C, S)  # (N, C, S)
    if weight is not None:
        y *= weight[:, None]
    if bias is not None:
        y += bias[:, None]
    return y.astype(x.dtype, copy=False), mean, rstd


def backward_reference(dy, x, G, mean, rstd, weight):
    """dx, dweight, dbias for x, dy of shape (N, C, S); dweight is None when weight is None."""
    N, C, S = x.shape
    H = C // G * S
    rows = x.reshape(N * G, H)  # (N·G, H)
    dy64 = dy.astype(np.float64, copy=False)  # (N, C, S)
    g = dy64 * weight[:, None] if weight is not None else dy64  # (N, C, S)  the gradient at x̂
    if H == 0:  # rows of no values (see forward_reference)
        dx = np.zeros((N * G, 0))
    else:
        dx, _, _ = _layer_norm.backward_reference(g.reshape(N * G, H), rows, mean, rstd, None)  # (N·G, H)
    xhat = ((rows - mean[:, None]) * rstd[:, None]).reshape(N, C, S)  # (N, C, S) float64, recomputed
    dweight = None if weight is None else (dy64 * xhat).sum(axis=(0, 2)).astype(x.dtype)  # (C,)
    dbias = dy64.sum(axis=(0, 2)).astype(x.dtype)  # (C,)
    return dx.reshape(N, C, S), dweight, dbias


# ------------------------------------------------------------------------------------ engine binding


class GroupNormFunction(Function):
    """y = GroupNorm(x) with G groups; `backend` is "numba" or "numpy".

    forward(x (N, C, *), weight (C,) | None, bias (C,) | None) -> y like x; backward returns dx, dweight,
    dbias as derived in the module docstring.
    """

    # dx, dweight and dbias are new arrays that no input, saved array or caller can see (dx may come from the
    # output pool, which hands a buffer out again only once nobody else holds it): the engine may make them
    # `.grad` without a copy (for 8192x1024 float32 that copy into fresh pages cost more than the kernel).
    returns_fresh_grads = True

    @staticmethod
    def forward(ctx, x, weight, bias, *, G, eps, backend):
        N, C = x.shape[:2]
        S = math.prod(x.shape[2:])
        H = C // G * S  # features per LayerNorm row
        x3 = np.ascontiguousarray(x.reshape(N, C, S))  # (N, C, S)
        ln = kernels.load("layer_norm") if backend == "numba" else None
        gn = kernels.load("group_norm") if ln is not None else None
        if ln is not None:
            y = _buffers.empty_like(x3)  # (N, C, S)
            mean = np.empty(N * G)  # (N·G,) float64
            rstd = np.empty(N * G)  # (N·G,) float64
            ln.layer_norm_forward(y.reshape(N * G, H), mean, rstd, x3.reshape(N * G, H), None, None, eps)
            if weight is not None or bias is not None:
                gn.group_norm_affine_forward(y, weight, bias)
        else:
            y, mean, rstd = forward_reference(x3, G, weight, bias, eps)
        if H > 0:  # rows of no values have no variance (their rstd is a stand-in)
            refuse_overflowed_rstd("group_norm", "variance", rstd, eps, x3.dtype, _group_of_sample(G))
        ctx.save_for_backward(x3, weight, mean, rstd)
        ctx.params = x.shape, G, ln, gn
        return y.reshape(x.shape)

    @staticmethod
    def backward(ctx, grad):
        x3, w, mean, rstd = ctx.saved
        x_shape, G, ln, gn = ctx.params
        need_x, need_w, need_b = ctx.needs_input_grad
        N, C, S = x3.shape
        H = C // G * S
        dy = np.ascontiguousarray(grad.reshape(N, C, S))  # (N, C, S)
        if ln is None:
            dx, dw, db = backward_reference(dy, x3, G, mean, rstd, w)
        else:
            dw = np.empty(C, dtype=x3.dtype) if need_w else None  # (C,)
            db = np.empty(C, dtype=x3.dtype) if need_b else None  # (C,)
            g = _buffers.empty_like(x3) if (w is not None and need_x) else None  # (N, C, S)  γ_c · dy
            if g is not None or dw is not None or db is not None:
                gn.group_norm_affine_backward(g, dw, db, dy, x3, mean.reshape(N, G), rstd.reshape(N, G), w)
            dx = None
            if need_x:
                dx = _buffers.empty_like(x3)  # (N, C, S)
                g_rows = (dy if w is None else g).reshape(N * G, H)  # (N·G, H)
                ln.layer_norm_backward(dx.reshape(N * G, H), None, None, g_rows, x3.reshape(N * G, H), mean, rstd, None)
        return (
            dx.reshape(x_shape) if need_x else None,
            dw if need_w else None,
            db if need_b else None,
        )


# ------------------------------------------------------------------------------------------ composed


def _group_of_sample(G: int):
    """Names LayerNorm row i of the (N·G, C/G·S) view in an error: its sample and group."""
    return lambda i: f"group {i % G} of sample {i // G}"


def group_norm_composed(x: Tensor, G: int, weight, bias, eps) -> Tensor:
    """GroupNorm from primitives: LayerNorm-simple of x.reshape(N, G, -1), then γ_c, β_c broadcast per channel."""
    N, C = x.shape[:2]
    rows = x.reshape(N, G, C // G * math.prod(x.shape[2:]))  # (N, G, C/G·S)
    if rows.shape[2] == 0:  # rows of no values: nothing to normalize, an empty output (like N = 0)
        y = x * 0.0
    else:
        y = _layer_norm.layer_norm_composed(rows, 1, None, None, eps, who="group_norm", unit=_group_of_sample(G))
        y = y.reshape(x.shape)
    per_channel = (1, C) + (1,) * (x.ndim - 2)
    if weight is not None:
        y = y * weight.reshape(per_channel)
    if bias is not None:
        y = y + bias.reshape(per_channel)
    return y
