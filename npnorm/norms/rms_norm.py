r"""Root mean square layer normalization, RMSNorm (Zhang & Sennrich 2019).

LayerNorm re-centres and re-scales each row. Zhang & Sennrich keep only the re-scaling: they divide by the
root mean square of the row instead of its standard deviation, and drop the bias.

Forward — per row x of H features (the H features are its `normalized_shape`):

    ms    = (1/H) Σ_j x_j²                      (accumulated in float64)
    rrms  = 1 / √(ms + ε)                       (ε inside the root, as in PyTorch; ε = None means
                                                 the machine epsilon of x's dtype, as in PyTorch)
    x̂     = x · rrms
    y     = γ ⊙ x̂                              (γ = `weight`, optional; there is no bias)

Backward — with upstream dy, g = dy ⊙ γ, and means taken over the H features of a row:

    dγ = Σ_rows dy ⊙ x̂
    dx = rrms · ( g − x̂ · mean(g ⊙ x̂) )

The two terms of dx: g·rrms is the path through x̂ with rrms held fixed; −x̂·mean(g⊙x̂)·rrms is the path
through ms, which re-scales the gradient. There is no path through a mean, so, unlike LayerNorm's,
this dx is not re-centred: Σ_j dx_j ≠ 0 in general.

Identity (tested): with y = γ ⊙ x̂ the output, so that g ⊙ x̂ = dy ⊙ y,

    Σ_j x_j · dx_j  =  ε/(ms + ε) · Σ_j g_j · x̂_j  =  ε/(ms + ε) · Σ_j dy_j · y_j .

The left side is d/dt L(t·x) at t = 1: the gradient along the row itself. With ε = 0 RMSNorm is
invariant to re-scaling a row, so that gradient is exactly zero; ε > 0 leaves the fraction ε/(ms + ε).
The derivation, step by step, is in docs/rms_norm.md.

Three implementations, which must agree (tests/test_rms_norm.py):
* `forward_reference` / `backward_reference`: the formulas above in vectorised NumPy, statistics in
  float64 whatever the input dtype;
* the Numba kernels of npnorm.kernels.rms_norm (the default, `impl="numba"`);
* `rms_norm_composed`: the forward built from engine primitives, whose gradient the engine derives.
"""

from __future__ import annotations

import numpy as np

from .. import _buffers, kernels
from ..autograd import Function
from ..tensor import Tensor
from ._range import refuse_overflow_of_finite, refuse_overflowed_rstd
from .layer_norm import _as_rows, _flat, _shaped  # the same (rows, H) view of the input, (H,) view of γ

# ------------------------------------------------------------------------------- NumPy reference


def forward_reference(x, weight, eps):
    """y, rrms for x of shape (N, H); weight of shape (H,) or None.

    rrms is float64 whatever x's dtype. One pass suffices for ms: it is a sum of non-negative terms, so
    there is no cancellation (LayerNorm's two passes guard against E[x²] − E[x]², a difference). float64
    matters for range, not cancellation: a float32 x² overflows from |x| ≈ 1.8e19, loses precision below
    |x| ≈ 1e-19 and is 0 below ≈ 4e-23, while the float64 square of any float32 is finite, exact and,
    unless x = 0, non-zero. (float64 input squares overflow from |x| ≈ 1.3e154: a clear error, norms/_range.py.)
    """
    x64 = x.astype(np.float64, copy=False)  # (N, H)
    ms = (x64 * x64).mean(axis=1)  # (N,)
    rrms = 1.0 / np.sqrt(ms + eps)  # (N,)
    y = x64 * rrms[:, None]  # (N, H)  x̂
    if weight is not None:
        y *= weight
    return y.astype(x.dtype, copy=False), rrms


def backward_reference(dy, x, rrms, weight):
    """dx, dweight for x of shape (N, H); dweight is None when weight is None.

    x̂ is recomputed from the saved rrms: N floats kept instead of N·H.
    """
    dy64 = dy.astype(np.float64, copy=False)  # (N, H)
    xhat = x * rrms[:, None]  # (N, H), float64
    g = dy64 * weight if weight is not None else dy64  # (N, H)
    dx = (g - xhat * (g * xhat).mean(axis=1, keepdims=True)) * rrms[:, None]  # (N, H); path through ms re-scales
    dweight = None if weight is None else (dy64 * xhat).sum(axis=0).astype(x.dtype)  # (H,)
    return dx.astype(x.dtype, copy=False), dweight


# ------------------------------------------------------------------------------------ engine binding


class RMSNormFunction(Function):
    """y = RMSNorm(x) over the trailing H features; `backend` is "numba" or "numpy".

    forward(x (..., *normalized_shape), weight (*normalized_shape) | None) -> y like x;
    backward returns dx, dweight as derived in the module docstring.
    """

    returns_fresh_grads = True

    @staticmethod
    def forward(ctx, x, weight, *, H, eps, backend):
        x2 = _as_rows(x, H)  # (N, H)
        w = _flat(weight)  # (H,)
        kern = kernels.load("rms_norm") if backend == "numba" else None
        if kern is not None:
            y = _buffers.empty_like(x2)  # (N, H)
            rrms = np.empty(x2.shape[0], dtype=np.float64)  # (N,)
            kern.rms_norm_forward(y, rrms, x2, w, eps)
        else:
            y, rrms = forward_reference(x2, w, eps)
        refuse_overflowed_rstd("rms_norm", "mean square", rrms, eps, x2.dtype, rows=x2)
        ctx.save_for_backward(x2, w, rrms)
        ctx.shapes = x.shape, None if weight is None else weight.shape
        ctx.flags = H, kern
        return _shaped(y, x.shape)

    @staticmethod
    def backward(ctx, grad):
        x2, w, rrms = ctx.saved
        H, kern = ctx.flags
        x_shape, w_shape = ctx.shapes
        need_x, need_w = ctx.needs_input_grad
        dy = _as_rows(grad, H)  # (N, H)
        if kern is not None:
            dx = _buffers.empty_like(x2)  # (N, H)
            dw = np.empty(H, dtype=x2.dtype) if need_w else None  # (H,)
            kern.rms_norm_backward(dx, dw, dy, x2, rrms, w)
        else:
            dx, dw = backward_reference(dy, x2, rrms, w)
        return (
            _shaped(dx, x_shape) if need_x else None,
            _shaped(dw, w_shape) if need_w else None,
        )


# ------------------------------------------------------------------------------------------ composed


def rms_norm_composed(x: Tensor, ndim: int, weight, eps: float) -> Tensor:
    """RMSNorm over the last `ndim` axes, built from mul, mean, add, sqrt and div; the engine derives the gradient.

    The statistics are formed in float64 whatever x's dtype, like the other implementations (float32 x² of
    1e30 would overflow).
    """
    axes = tuple(range(x.ndim - ndim, x.ndim))
    x64 = x.astype(np.float64)
    ms = (x64 * x64).mean(axis=axes, keepdims=True)
    refuse_overflow_of_finite("rms_norm", "mean square", np.isposinf(ms.data), x64.data, axes)
    y = (x64 / (ms + eps).sqrt()).astype(x.dtype)  # not * (ms + eps)^-0.5: see layer_norm's _normalize_composed
    if weight is not None:
        y = y * weight
    return y
