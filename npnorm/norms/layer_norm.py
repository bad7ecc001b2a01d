r"""Layer normalization (Ba, Kiros & Hinton 2016), and Xu et al. 2019's DetachNorm and AdaNorm.

Forward — per row x of H features (a row is one sample; the H features are its `normalized_shape`):

    μ     = (1/H) Σ_j x_j
    σ²    = (1/H) Σ_j (x_j - μ)²                (biased, computed in two passes)
    rstd  = 1 / √(σ² + ε)                       (ε inside the root, as in PyTorch)
    x̂     = (x - μ) · rstd
    y     = γ ⊙ x̂ + β                          (γ = `weight`, β = `bias`, both optional)

Backward — with upstream dy, g = dy ⊙ γ, and means taken over the H features of a row:

    dβ = Σ_rows dy
    dγ = Σ_rows dy ⊙ x̂
    dx = rstd · ( g − mean(g) − x̂ · mean(g ⊙ x̂) )

The three terms of dx: g·rstd is the path through x̂ with μ and σ held fixed; −mean(g)·rstd is the path
through μ, which re-centres the gradient (Σ_j dx_j = 0 exactly, for any ε); −x̂·mean(g⊙x̂)·rstd is the
path through σ, which re-scales it (Σ_j dx_j x̂_j = H·rstd·mean(g⊙x̂)·ε/(σ²+ε), zero only when ε = 0).
The derivation, step by step, is in docs/layer_norm.md.

Xu et al. 2019 variants — their backward is deliberately *not* the derivative of their forward:

* DetachNorm (`detach_mean`, `detach_var`): the forward is LayerNorm, but μ and/or σ are constants in
  backward. Dropping a path drops its term: detach_mean drops −mean(g), detach_var drops −x̂·mean(g⊙x̂),
  both leave dx = rstd·g. (With μ held constant, σ² still depends on x; its path gives exactly the x̂ term,
  because the cross term is proportional to Σ(x − μ) = 0.)
* AdaNorm: z = φ(y) ⊙ y with y = x̂ and φ(y) = C(1 − k·y), φ a constant in backward, so
  dx = LayerNorm-simple's backward applied to g = dz ⊙ φ(y). There is no γ or β.

ε convention: npnorm follows PyTorch, rstd = 1/√(σ²+ε) with the biased variance. Xu et al.'s reference
code used the unbiased standard deviation and divided by (std + ε); with ε = 1e-5 the two differ by under 1%
in y from H = 64 on for rows with σ ≳ 0.03 (Bessel's factor alone: 0.8% at H = 64, 0.1% at H = 512), but ε's
place matters as σ shrinks (at σ = 0.01, 3-4%; at σ = 1e-3, about 70%): they are not the same function.

Three implementations, which must agree (tests/test_layer_norm.py):
* `forward_reference` / `backward_reference`: the formulas above in vectorised NumPy, statistics in
  float64 whatever the input dtype;
* the Numba kernels of npnorm.kernels.layer_norm (the default, `impl="numba"`);
* `layer_norm_composed`: the forward built from engine primitives (in float64, like the others), whose
  gradient the engine derives.
"""

from __future__ import annotations

import numpy as np

from .. import _buffers, kernels
from ..autograd import Function
from ..tensor import Tensor
from ._moments import corrected_mean, corrected_two_pass
from ._range import refuse_overflow, refuse_overflowed_rstd, row

# ------------------------------------------------------------------------------- NumPy reference


def forward_reference(x, weight, bias, eps):
    """y, mean, rstd for x of shape (N, H); weight and bias of shape (H,) or None.

    mean and rstd are float64 whatever x's dtype: float32 rows with |μ| ≫ σ need the extra precision both
    to form σ² and later to recompute x̂ = (x − μ)·rstd in backward.
    """
    x64 = x.astype(np.float64, copy=False)  # (N, H)
    mean, var = corrected_two_pass(x64, axis=1)  # (N,) each
    rstd = 1.0 / np.sqrt(var + eps)  # (N,)
    y = (x64 - mean[:, None]) * rstd[:, None]  # (N, H)  x̂
    if weight is not None:
        y *= weight
    if bias is not None:
        y += bias
    return y.astype(x.dtype, copy=False), mean, rstd


def backward_reference(dy, x, mean, rstd, weight, detach_mean=False, detach_var=False):
    """dx, dweight, dbias for x of shape (N, H); dweight is None when weight is None (dbias = Σ_rows dy).

    x̂ is recomputed from the saved mean and rstd: 2N floats kept instead of N·H.
    """
    dy64 = dy.astype(np.float64, copy=False)  # (N, H)
    xhat = (x - mean[:, None]) * rstd[:, None]  # (N, H), float64
    g = dy64 * weight if weight is not None else dy64  # (N, H)
    dx = g.copy()  # (N, H)
    if not detach_mean:
        dx -= g.mean(axis=1, keepdims=True)  # path through μ: re-centres
    if not detach_var:
        dx -= xhat * (g * xhat).mean(axis=1, keepdims=True)  # path through σ: re-scales
    dx *= rstd[:, None]
    dweight = None if weight is None else (dy64 * xhat).sum(axis=0).astype(x.dtype)  # (H,)
    dbias = dy64.sum(axis=0).astype(x.dtype)  # (H,)
    return dx.astype(x.dtype, copy=False), dweight, dbias


def ada_forward_reference(x, C, k, eps):
    """z = C(1 − k·y) ⊙ y with y = x̂; returns z, mean, rstd (float64 statistics)."""
    y, mean, rstd = forward_reference(x.astype(np.float64, copy=False), None, None, eps)  # (N, H)
    z = C * (1.0 - k * y) * y  # (N, H)
    return z.astype(x.dtype, copy=False), mean, rstd


def ada_backward_reference(dz, x, mean, rstd, C, k):
    """dx with φ(y) = C(1 − k·y) held constant: LayerNorm-simple's backward of g = dz ⊙ φ(y)."""
    y = (x - mean[:, None]) * rstd[:, None]  # (N, H), float64
    g = dz.astype(np.float64, copy=False) * (C * (1.0 - k * y))  # (N, H)
    dx = g - g.mean(axis=1, keepdims=True) - y * (g * y).mean(axis=1, keepdims=True)
    dx *= rstd[:, None]
    return dx.astype(x.dtype, copy=False)


# ------------------------------------------------------------------------------------ engine binding


def _as_rows(a: np.ndarray, H: int) -> np.ndarray:
    if a.ndim == 2 and a.shape[1] == H and a.flags.c_contiguous:  # already (N, H) rows: most calls
        return a
    return np.ascontiguousarray(a.reshape(-1, H))  # (N, H)


def _flat(p):
    if p is None or (p.ndim == 1 and p.flags.c_contiguous):
        return p
    return np.ascontiguousarray(p.reshape(-1))  # (H,)


def _shaped(a: np.ndarray, shape: tuple) -> np.ndarray:
    """`a` reshaped to `shape`, without a new view object when it has that shape already (a small saving
    that counts at 64x64, where the kernels take ~7 µs of a ~20 µs forward+backward). Used by LayerNorm,
    AdaNorm and RMSNorm."""
    return a if a.shape == shape else a.reshape(shape)


class LayerNormFunction(Function):
    """y = LayerNorm(x) over the trailing H features; `backend` is "numba" or "numpy".

    forward(x (..., *normalized_shape), weight (*normalized_shape) | None, bias | None) -> y like x;
    backward returns dx, dweight, dbias as derived in the module docstring.
    """

    returns_fresh_grads = True

    @staticmethod
    def forward(ctx, x, weight, bias, *, H, eps, detach_mean, detach_var, backend):
        x2 = _as_rows(x, H)  # (N, H)
        w, b = _flat(weight), _flat(bias)
        kern = kernels.load("layer_norm") if backend == "numba" else None
        if kern is not None:
            y = _buffers.empty_like(x2)  # (N, H)
            mean = np.empty(x2.shape[0], dtype=np.float64)  # (N,)
            rstd = np.empty(x2.shape[0], dtype=np.float64)  # (N,)
            kern.layer_norm_forward(y, mean, rstd, x2, w, b, eps)
        else:
            y, mean, rstd = forward_reference(x2, w, b, eps)
        refuse_overflowed_rstd("layer_norm", "variance", rstd, eps, x2.dtype)
        ctx.save_for_backward(x2, w, mean, rstd)
        # weight and bias have the same shape (normalized_shape); either may be absent.
        ctx.shapes = x.shape, (weight if weight is not None else bias if bias is not None else x).shape
        ctx.flags = H, detach_mean, detach_var, kern
        return _shaped(y, x.shape)

    @staticmethod
    def backward(ctx, grad):
        x2, w, mean, rstd = ctx.saved
        H, detach_mean, detach_var, kern = ctx.flags
        x_shape, p_shape = ctx.shapes
        need_x, need_w, need_b = ctx.needs_input_grad
        dy = _as_rows(grad, H)  # (N, H)
        if kern is not None:
            dx = _buffers.empty_like(x2)  # (N, H)
            dw = np.empty(H, dtype=x2.dtype) if need_w else None  # (H,)
            db = np.empty(H, dtype=x2.dtype) if need_b else None  # (H,)
            kern.layer_norm_backward(dx, dw, db, dy, x2, mean, rstd, w, detach_mean, detach_var)
        else:
            dx, dw, db = backward_reference(dy, x2, mean, rstd, w, detach_mean, detach_var)
        return (
            _shaped(dx, x_shape) if need_x else None,
            _shaped(dw, p_shape) if need_w else None,
            _shaped(db, p_shape) if need_b else None,
        )


class AdaNormFunction(Function):
    """z = AdaNorm(x) over the trailing H features (Xu et al. 2019); `backend` is "numba" or "numpy"."""

    returns_fresh_grads = True

    @staticmethod
    def forward(ctx, x, *, H, C, k, eps, backend):
        x2 = _as_rows(x, H)  # (N, H)
        kern = kernels.load("layer_norm") if backend == "numba" else None
        if kern is not None:
            z = _buffers.empty_like(x2)  # (N, H)
            mean = np.empty(x2.shape[0], dtype=np.float64)
            rstd = np.empty(x2.shape[0], dtype=np.float64)
            kern.ada_norm_forward(z, mean, rstd, x2, C, k, eps)
        else:
            z, mean, rstd = ada_forward_reference(x2, C, k, eps)
        refuse_overflowed_rstd("ada_norm", "variance", rstd, eps, x2.dtype)
        ctx.save_for_backward(x2, mean, rstd)
        ctx.params = x.shape, H, C, k, kern
        return _shaped(z, x.shape)

    @staticmethod
    def backward(ctx, grad):
        x2, mean, rstd = ctx.saved
        x_shape, H, C, k, kern = ctx.params
        dz = _as_rows(grad, H)
        if kern is not None:
            dx = _buffers.empty_like(x2)  # (N, H)
            kern.ada_norm_backward(dx, dz, x2, mean, rstd, C, k)
        else:
            dx = ada_backward_reference(dz, x2, mean, rstd, C, k)
        return _shaped(dx, x_shape)


# ------------------------------------------------------------------------------------------ composed


def _normalize_composed(x: Tensor, axes: tuple, eps: float, detach_mean: bool, detach_var: bool, who: str, unit=row):
    """x̂ from engine primitives: the engine, not a hand derivation, supplies the gradient.

    Works in float64 whatever x's dtype (the numerics rule every implementation keeps); callers cast back.
    """
    x = x.astype(np.float64)
    mean = corrected_mean(x, axes)
    if detach_mean:
        mean = mean.detach()
    centered = x - mean
    var = (centered * centered).mean(axis=axes, keepdims=True)
    refuse_overflow(who, "variance", np.isposinf(var.data), unit)  # +inf only from finite values (inf: NaN)
    if detach_var:
        var = var.detach()
    # a division by the std, not a product with (var + eps)^-0.5: that power's derivative, -0.5 (var + eps)^-1.5,
    # overflows or underflows from a spread of ~1e102 (or ~1e-103 with eps = 0), where the gradient itself is fine
    return centered / (var + eps).sqrt()


def layer_norm_composed(
    x: Tensor, ndim: int, weight, bias, eps, detach_mean=False, detach_var=False, who="layer_norm", unit=row
) -> Tensor:
    """LayerNorm over the last `ndim` axes, built from mean, sub, mul, sqrt and div; detaching as in DetachNorm."""
    axes = tuple(range(x.ndim - ndim, x.ndim))
    y = _normalize_composed(x, axes, eps, detach_mean, detach_var, who, unit).astype(x.dtype)
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y


def ada_norm_composed(x: Tensor, ndim: int, C: float, k: float, eps: float) -> Tensor:
    """AdaNorm from primitives: φ(y) = C(1 − k·y) is computed from a detached y, so it is a constant."""
    axes = tuple(range(x.ndim - ndim, x.ndim))
    y = _normalize_composed(x, axes, eps, False, False, "ada_norm")
    phi = (1 - y.detach() * k) * C
    return (phi * y).astype(x.dtype)
