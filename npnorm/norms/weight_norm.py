r"""Weight normalization (Salimans & Kingma 2016): a weight row written as a length times a direction.

Every other norm in npnorm normalizes *activations*; this one normalizes *weights*. Each output unit i of a
layer keeps a direction vector v_i and a scalar length g_i, and the layer uses

    w_i = g_i · v_i / ‖v_i‖                     (‖·‖ the Euclidean norm over the row)

so ‖w_i‖ = |g_i| whatever v_i is. For a Linear weight v of shape (out, in) the rows are the out units
(PyTorch's `weight_norm` with its default dim=0); g has shape (out, 1), as PyTorch stores it, or (out,).
In general `dim` names the axis that is kept: every slice v[..., i, ...] along it is one "row", normed over
all its other axes; dim=None norms the whole tensor at once (one g).

Forward — per row v of F entries, with the length g (a scalar per row):

    ‖v‖  = √(Σ_j v_j²)                          (accumulated in float64)
    r    = 1/‖v‖                                (saved for backward, one number per row)
    v̂    = v · r                                (the unit direction; recomputed in backward)
    w    = g · v̂

Backward — with upstream dw = ∂L/∂w for the row:

    dg = Σ_j dw_j · v̂_j = dw · v/‖v‖
    dv = (g/‖v‖) · (dw − v̂ (v̂ · dw)) = (g/‖v‖) · (dw − dg · v̂)

The Jacobian ∂w_j/∂v_k = (g/‖v‖)(δ_jk − v̂_j v̂_k) is g/‖v‖ times the projection onto the plane orthogonal
to v, so dv is dw with its component along v removed, then scaled (Salimans & Kingma's eq. 3). Three
consequences, each tested in tests/test_weight_norm.py:

* dv ⟂ v: Σ_j v_j dv_j = (g/‖v‖)(v·dw − dg‖v‖) = 0, exactly, for every row;
* w is invariant to v → c·v for any c > 0 (c < 0 flips the sign of w), and then dv → dv/c: a longer v
  learns more slowly — the "self-stabilisation" of the paper's §2.1;
* dg only sees the component of dw along the row, the one part of dw that dv cannot express.

Step by step, with the Jacobian written out: docs/weight_norm.md.

A zero row of v has no direction: v/‖v‖ is 0/0. PyTorch returns NaN there (in w and in both gradients)
and carries on; npnorm raises a ValueError that names the row, because a NaN weight row silently poisons
every later step of training. (g = 0 is fine: that row of w is zero, and dv = 0.)

Three implementations, which must agree (tests/test_weight_norm.py):
* `forward_reference` / `backward_reference`: the formulas above in vectorised NumPy, bound to the engine
  by `WeightNormFunction` (impl "numpy");
* the Numba kernels of npnorm.kernels.weight_norm (the default, impl "numba"), bound by the same
  `WeightNormFunction`: one fused pass per row each way, rows in parallel on large weights. A zero row is
  caught after the kernel, from its saved 1/‖v‖ = inf, with the same ValueError as the reference;
* `weight_norm_composed` (impl "composed"): w from the primitives sum, sqrt, div and mul, whose gradient the
  engine derives.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from .. import kernels
from ..autograd import Function
from ..tensor import Tensor, _as_float_array
from . import _dispatch
from ._range import refuse_overflow_of_finite

# ------------------------------------------------------------------------------------------ rows


def _row_axes(ndim: int, dim) -> tuple:
    """The axes that a row is normed over: all but `dim` (all of them when dim is None)."""
    return tuple(a for a in range(ndim) if a != dim)


def _to_rows(a: np.ndarray, dim) -> np.ndarray:
    """v as (R, F): one row per index along `dim` (a single row when dim is None)."""
    if dim is None:
        return a.reshape(1, a.size)  # (1, F)
    F = math.prod(a.shape[:dim] + a.shape[dim + 1 :])  # not -1: that cannot be inferred when R = 0
    return np.moveaxis(a, dim, 0).reshape(a.shape[dim], F)  # (R, F)


def _from_rows(rows: np.ndarray, shape: tuple, dim) -> np.ndarray:
    """The inverse of `_to_rows`: (R, F) back to v's shape."""
    if dim is None:
        return rows.reshape(shape)
    moved = (shape[dim],) + shape[:dim] + shape[dim + 1 :]
    return np.moveaxis(rows.reshape(moved), 0, dim)


def _row_of_v(i: int) -> str:
    return f"row {i} of v"


def check_row_norms(who: str, norm: np.ndarray, v: np.ndarray, axes) -> None:
    """Raise when a row of v has norm 0: its direction v/‖v‖ is undefined (PyTorch gives NaN). Raise too when
    the squared norm of a finite row overflows float64 (norms/_range.py): its w would come out 0.

    `norm` holds the rows' norms in the layout of v reduced over `axes` (kept or dropped); a row holding inf or
    NaN has an infinite or NaN norm that is no error (NaN flows on to its w).
    """
    refuse_overflow_of_finite(who, "squared norm", np.isposinf(norm), v, axes, _row_of_v)
    zero = np.flatnonzero(norm.reshape(-1) == 0)
    if zero.size:
        rows = ", ".join(str(int(i)) for i in zero[:5]) + (", ..." if zero.size > 5 else "")
        raise ValueError(
            f"{who}: row(s) {rows} of v have norm 0, so the direction v/‖v‖ is undefined "
            "(PyTorch returns NaN there); re-initialise those rows of v"
        )


# ------------------------------------------------------------------------------- NumPy reference


def forward_reference(v, g):
    """w, rnorm for v of shape (R, F) and g of shape (R, 1); rnorm = 1/‖v_i‖ is float64, shape (R, 1).

    The norm is accumulated in float64 whatever v's dtype: a float32 sum of squares overflows from
    |v| ≈ 1.8e19 and loses digits below 1e-19, while the float64 square of any float32 is exact.
    """
    v64 = v.astype(np.float64, copy=False)  # (R, F)
    norm = np.sqrt((v64 * v64).sum(axis=1, keepdims=True))  # (R, 1)
    check_row_norms("weight_norm", norm, v64, 1)
    rnorm = 1.0 / norm  # (R, 1)
    w = (g.astype(np.float64, copy=False) * rnorm) * v64  # (R, F)  g · v̂
    return w.astype(v.dtype, copy=False), rnorm


def backward_reference(dw, v, g, rnorm):
    """dv, dg for the row layout of `forward_reference`; v̂ is recomputed from the saved 1/‖v‖."""
    dw64 = dw.astype(np.float64, copy=False)  # (R, F)
    vhat = v.astype(np.float64, copy=False) * rnorm  # (R, F)  v̂
    dg = (dw64 * vhat).sum(axis=1, keepdims=True)  # (R, 1)  dw · v̂
    dv = (g.astype(np.float64, copy=False) * rnorm) * (dw64 - dg * vhat)  # (R, F)  (g/‖v‖)(dw − dg v̂)
    return dv.astype(v.dtype, copy=False), dg.astype(g.dtype, copy=False)


# ------------------------------------------------------------------------------------ engine binding


class WeightNormFunction(Function):
    """w = g · v/‖v‖ row by row along `dim` (module docstring); `backend` is "numba" or "numpy".

    forward(v, g) -> w of v's shape; backward returns dv, dg as derived in the module docstring.

    g has R = v.shape[dim] elements (1 when dim is None), in any shape that holds them; dg comes back in it.
    """

    @staticmethod
    def forward(ctx, v, g, *, dim, backend):
        v2 = np.ascontiguousarray(_to_rows(v, dim))  # (R, F)
        kern = kernels.load("weight_norm") if backend == "numba" else None
        if kern is not None:
            g2 = np.ascontiguousarray(g.reshape(-1))  # (R,)
            w2 = np.empty_like(v2)  # (R, F)
            rnorm = np.empty(v2.shape[0], dtype=np.float64)  # (R,)
            # A zero row leaves rnorm = inf (and NaN in w2, discarded): raise as the reference does. 1/rnorm is
            # the norm again; an infinite row has rnorm = 0, whose 1/0 = inf is no zero. (errstate silences
            # the 1/0 and inf·0 of a zero row also when NUMBA_DISABLE_JIT=1 runs the kernel as NumPy scalars.)
            with np.errstate(divide="ignore", invalid="ignore"):
                kern.weight_norm_forward(w2, rnorm, v2, g2)
                check_row_norms("weight_norm", 1.0 / rnorm, v2, 1)
        else:
            g2 = g.reshape(-1, 1)  # (R, 1)
            w2, rnorm = forward_reference(v2, g2)
        ctx.save_for_backward(v2, g2, rnorm)
        ctx.shapes = v.shape, g.shape, dim
        ctx.kern = kern
        return _from_rows(w2, v.shape, dim)

    @staticmethod
    def backward(ctx, grad):
        v2, g2, rnorm = ctx.saved
        v_shape, g_shape, dim = ctx.shapes
        need_v, need_g = ctx.needs_input_grad
        dw2 = _to_rows(grad, dim)  # (R, F)
        if ctx.kern is not None:
            dv, dg = np.empty_like(v2), np.empty_like(g2)  # (R, F), (R,)
            ctx.kern.weight_norm_backward(dv, dg, np.ascontiguousarray(dw2), v2, g2, rnorm)
        else:
            dv, dg = backward_reference(dw2, v2, g2, rnorm)
        return (
            _from_rows(dv, v_shape, dim) if need_v else None,
            dg.reshape(g_shape) if need_g else None,
        )


# ------------------------------------------------------------------------------------------ composed


def weight_norm_composed(v: Tensor, g: Tensor, dim) -> Tensor:
    """w = v · (g/‖v‖) from the primitives sum, sqrt, div and mul, in float64; the engine derives dv and dg."""
    axes = _row_axes(v.ndim, dim)
    keep = tuple(1 if a in axes else n for a, n in enumerate(v.shape))  # ‖v‖ with keepdims
    v64 = v.astype(np.float64)
    norm = (v64 * v64).sum(axis=axes, keepdims=True).sqrt()  # keep
    check_row_norms("weight_norm", norm.data, v64.data, axes)
    scale = g.astype(np.float64).reshape(keep) / norm  # keep   g/‖v‖
    return (v64 * scale).astype(v.dtype)


# ----------------------------------------------------------------------------------------- entry point


def _check_dim(who: str, dim, ndim: int):
    if dim is None:
        return None
    if isinstance(dim, bool) or not isinstance(dim, numbers.Integral):
        raise TypeError(f"{who}: dim must be None or an int, got {dim!r}")
    if dim < 0:
        # PyTorch's weight_norm reads dim=-1 as "the whole tensor", not "the last axis"; refuse to guess.
        raise ValueError(
            f"{who}: dim must be None (one norm over the whole tensor) or an axis 0..{ndim - 1}, got {dim} "
            "(PyTorch's weight_norm reads dim=-1 as None)"
        )
    if dim >= ndim:
        raise ValueError(f"{who}: dim {dim} is out of range for v with {ndim} dimensions")
    return int(dim)


def _check_g(who: str, g: Tensor, v_shape: tuple, dim) -> None:
    if dim is None:
        ok, expected = g.size == 1, "one element, e.g. shape ()"
    else:
        R = v_shape[dim]
        keep = tuple(R if a == dim else 1 for a in range(len(v_shape)))
        ok, expected = g.shape in (keep, (R,)), f"{keep} or {(R,)}"
    if not ok:
        raise ValueError(f"{who}: g has shape {g.shape}, expected {expected} for v of shape {v_shape} and dim={dim}")


def weight_norm(v, g, dim=0, *, impl=None) -> Tensor:
    """w = g · v/‖v‖, each slice of v along `dim` normed over its other axes (dim=None: the whole of v).

    For a Linear weight v (out, in) and dim=0, g is (out, 1) as PyTorch stores it, or (out,). `impl` is
    "numba" (fused kernels), "numpy" (the hand-derived reference) or "composed" (built from primitives);
    None reads NPNORM_IMPL. A zero row of v raises ValueError. Math: the module docstring and
    docs/weight_norm.md.
    """
    who = "weight_norm"
    v = v if isinstance(v, Tensor) else Tensor._wrap(_as_float_array(v, copy=False, who=who, what="v"))
    g = g if isinstance(g, Tensor) else Tensor._wrap(_as_float_array(g, copy=False, who=who, what="g"))
    if v.ndim == 0:
        raise ValueError(f"{who}: v must have at least one dimension, got a 0-d tensor")
    dim = _check_dim(who, dim, v.ndim)
    _check_g(who, g, v.shape, dim)
    if g.dtype != v.dtype:
        raise TypeError(f"{who}: g is {g.dtype} but v is {v.dtype}; use one dtype for both")
    impl = _dispatch.resolve_impl(impl, who)
    if impl == "composed":
        return weight_norm_composed(v, g, dim)
    return WeightNormFunction.apply(v, g, dim=dim, backend=impl)
