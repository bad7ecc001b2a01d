"""Primitive differentiable operations: one small Function each, forward beside backward.

Every `forward` takes and returns NumPy arrays; every `backward` takes dL/d(out) and returns one
dL/d(input) per positional input (None where no gradient is needed). Broadcasting is undone in exactly one
place, `unbroadcast`, at the boundary of the binary operations.
"""

from __future__ import annotations

import copy
import math
import operator

import numpy as np

from .autograd import Function, IndexedGrad

# scipy.special.erf is imported inside Gelu, the one op that uses it, not here: importing it costs about
# 0.2 s (it pulls in scipy's array-API layer), more than the rest of `import npnorm` together.


# ------------------------------------------------------------------------------------------ helpers


# NumPy sums float32 in float32. Along the innermost, contiguous axis it sums pairwise (error ~ log n), but over
# any other axis (a batch's bias gradient, a mean over rows) it adds the terms one after another, and the error
# grows with their number: 0.1 summed 10^6 times gave 100958 (1%; PyTorch 99999.91). From WIDE_SUM_FROM terms
# per output, float32 sums therefore accumulate in float64, as the norms' kernels do: that costs about 3x the
# float32 sum ((1024, 1024) over rows: 400 against 130 µs), and below it (batches of up to 255 rows, as the
# training steps here use) nothing changes. At 256 terms a float32 sum is within ~256 ulps in the worst case.
WIDE_SUM_FROM = 256


def accurate_sum(a: np.ndarray, axes: tuple, keepdims: bool = False, *, mean: bool = False) -> np.ndarray:
    """``a.sum(axes)`` (or ``a.mean(axes)``), accumulated in float64 for float32 with many terms per output
    (see WIDE_SUM_FROM); the result keeps ``a``'s dtype."""
    reduce = a.mean if mean else a.sum
    if a.dtype == np.float32 and _reduced_count(a.shape, axes) >= WIDE_SUM_FROM:
        return np.asarray(reduce(axis=axes, keepdims=keepdims, dtype=np.float64), dtype=np.float32)
    return reduce(axis=axes, keepdims=keepdims)


def unbroadcast(grad: np.ndarray, shape: tuple) -> np.ndarray:
    """Sum `grad` over the axes that broadcasting added or stretched, so it gets `shape` back.

    NumPy aligns shapes on the right: leading axes of `grad` that `shape` lacks are summed away, and axes
    where `shape` has 1 but `grad` has more are summed with keepdims.
    """
    if grad.shape == shape:
        return grad
    extra = grad.ndim - len(shape)
    if extra:
        grad = accurate_sum(grad, tuple(range(extra)))
    stretched = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if stretched:
        grad = accurate_sum(grad, stretched, keepdims=True)
    return grad


def _broadcasting(op: str, ufunc, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """ufunc(a, b), with NumPy's broadcasting error restated in the op's name (no cost when shapes fit)."""
    try:
        return ufunc(a, b)
    except ValueError:
        raise ValueError(f"{op}: shapes {a.shape} and {b.shape} cannot be broadcast together") from None


def _normalize_axes(op: str, axis, ndim: int) -> tuple:
    """`axis` (None, an int or a tuple of ints) as a sorted tuple of non-negative axes."""
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if np.ndim(axis) == 0 else tuple(axis)
    out = [normalized_axis(op, a, ndim) for a in axes]
    if len(set(out)) != len(out):
        raise ValueError(f"{op}: repeated axis in {axis}")
    if ndim == 0:
        return ()  # axis 0 (or -1) of a 0-d tensor is accepted, as in PyTorch, and reduces nothing
    return tuple(sorted(out))


def _axis_index(op: str, a) -> int:
    """An axis as an int; a float (or bool) is a TypeError, as in NumPy, rather than truncated to an axis."""
    try:
        if isinstance(a, (bool, np.bool_)):
            raise TypeError
        return operator.index(a)
    except TypeError:
        raise TypeError(f"{op}: axis must be an integer, got {a!r}") from None


def normalized_axis(op: str, a, ndim: int) -> int:
    """Axis `a` of an ndim-dimensional tensor as a non-negative int (0 and -1 of a 0-d tensor are 0, as in
    PyTorch); a TypeError if it is no integer, a ValueError if it is out of range."""
    a = _axis_index(op, a)
    if not -max(ndim, 1) <= a < max(ndim, 1):
        raise ValueError(f"{op}: axis {a} is out of range for a tensor with {ndim} dimensions")
    return a % max(ndim, 1)


def _expand_reduced(grad: np.ndarray, axes: tuple, keepdims: bool, shape: tuple) -> np.ndarray:
    """Broadcast the gradient of a reduction back over the reduced axes (a view, not a copy)."""
    if not keepdims and shape:
        grad = grad.reshape(tuple(1 if i in axes else n for i, n in enumerate(shape)))
    return np.broadcast_to(grad, shape)


def _reduced_count(shape: tuple, axes: tuple) -> int:
    n = 1
    for a in axes:
        n *= shape[a]
    return n


# ------------------------------------------------------------------------------- binary arithmetic


class Add(Function):
    """out = a + b;  da = g,  db = g (each unbroadcast)."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.shapes = a.shape, b.shape
        return _broadcasting("add", np.add, a, b)

    @staticmethod
    def backward(ctx, grad):
        sa, sb = ctx.shapes
        na, nb = ctx.needs_input_grad
        return (unbroadcast(grad, sa) if na else None, unbroadcast(grad, sb) if nb else None)


class Sub(Function):
    """out = a - b;  da = g,  db = -g."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.shapes = a.shape, b.shape
        return _broadcasting("sub", np.subtract, a, b)

    @staticmethod
    def backward(ctx, grad):
        sa, sb = ctx.shapes
        na, nb = ctx.needs_input_grad
        return (unbroadcast(grad, sa) if na else None, unbroadcast(-grad, sb) if nb else None)


class Mul(Function):
    """out = a * b;  da = g * b,  db = g * a."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return _broadcasting("mul", np.multiply, a, b)

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved
        na, nb = ctx.needs_input_grad
        return (unbroadcast(grad * b, a.shape) if na else None, unbroadcast(grad * a, b.shape) if nb else None)


class Div(Function):
    """out = a / b;  da = g / b,  db = -g * a / b^2 = -g * out / b."""

    @staticmethod
    def forward(ctx, a, b):
        out = _broadcasting("div", np.divide, a, b)
        ctx.save_for_backward(a, b, out)
        return out

    @staticmethod
    def backward(ctx, grad):
        a, b, out = ctx.saved
        na, nb = ctx.needs_input_grad
        da = unbroadcast(grad / b, a.shape) if na else None
        db = unbroadcast(-grad * out / b, b.shape) if nb else None
        return da, db


class Pow(Function):
    """out = a ** b (both tensors);  da = g * b * a^(b-1),  db = g * out * log(a).

    As in PyTorch, da is 0 where b == 0; db is 0 where a == 0 and b >= 0 (the limit of out * log a), and NaN
    where a < 0.
    """

    @staticmethod
    def forward(ctx, a, b):
        out = _broadcasting("pow", np.power, a, b)
        ctx.save_for_backward(a, b, out)
        return out

    @staticmethod
    def backward(ctx, grad):
        a, b, out = ctx.saved
        na, nb = ctx.needs_input_grad
        da = db = None
        # no warnings: inf and NaN are the honest values where they arise (a = 0 with b < 1; a < 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            if na:
                # 0 where b == 0 (a^0 = 1 is constant in a), not 0 * a^-1 = NaN at a = 0; as PyTorch
                da = unbroadcast(np.where(b == 0, 0, grad * b * a ** (b - 1)), a.shape)
            if nb:
                dlog = np.where((a == 0) & (b >= 0), 0, out * np.log(a))
                db = unbroadcast(grad * dlog, b.shape)
        return da, db


class PowScalar(Function):
    """out = a ** p for a constant p;  da = g * p * a^(p-1)."""

    @staticmethod
    def forward(ctx, a, p):
        ctx.save_for_backward(a)
        ctx.p = p
        return a**p

    @staticmethod
    def backward(ctx, grad):
        (a,) = ctx.saved
        p = ctx.p
        if p == 0:
            return np.zeros_like(a), None
        return grad * p * a ** (p - 1), None


class MatMul(Function):
    """out = a @ b with NumPy's rules (1-D operands, batched and broadcast leading dims).

    For 2-D operands: da = g @ bᵀ, db = aᵀ @ g. A 1-D operand is treated as a row (left) or column (right)
    matrix whose added axis is removed from the result; batch axes are summed back by `unbroadcast`.
    """

    returns_fresh_grads = True

    @staticmethod
    def forward(ctx, a, b):
        if a.ndim == 0 or b.ndim == 0:
            raise ValueError(f"matmul: operands must have at least one dimension, got shapes {a.shape} and {b.shape}")
        k_left = a.shape[-1]
        k_right = b.shape[-2] if b.ndim > 1 else b.shape[0]
        if k_left != k_right:
            raise ValueError(
                f"matmul: shapes {a.shape} and {b.shape} are not aligned: "
                f"{k_left} (last dim of the left) != {k_right} (dim -2 of the right)"
            )
        try:
            np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
        except ValueError:
            raise ValueError(f"matmul: batch dims of shapes {a.shape} and {b.shape} cannot be broadcast") from None
        ctx.save_for_backward(a, b)
        return a @ b

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved
        na, nb = ctx.needs_input_grad
        a2 = a[None, :] if a.ndim == 1 else a  # (.., M, K)
        b2 = b[:, None] if b.ndim == 1 else b  # (.., K, P)
        g2 = grad
        if a.ndim == 1:
            g2 = np.expand_dims(g2, -2 if b.ndim > 1 else 0)
        if b.ndim == 1:
            g2 = np.expand_dims(g2, -1)  # (.., M, P)
        da = db = None
        if na:
            da = g2 @ np.swapaxes(b2, -1, -2)  # (.., M, K)
            da = unbroadcast(da, a2.shape).reshape(a.shape)
        if nb:
            db = np.swapaxes(a2, -1, -2) @ g2  # (.., K, P)
            db = unbroadcast(db, b2.shape).reshape(b.shape)
        return da, db


class Linear(Function):
    """out = x @ Wᵀ + b for x of shape (*, in), W of shape (out, in) (PyTorch's layout), b of shape (out,).

    dx = g @ W,  dW = gᵀ x (rows flattened),  db = Σ_rows g.

    `weight_t`, if given, is Wᵀ copied into rows (C-contiguous, shape (in, out)), made by a caller that
    multiplies by one W many times (the recurrent layers, see `nn/rnn.py`): the forward then multiplies by
    it, which NumPy's OpenBLAS does faster than by the transposed view `W.T` for few rows of x. It must
    hold W's values; the gradient still goes to W.
    """

    returns_fresh_grads = True

    @staticmethod
    def forward(ctx, x, weight, bias, weight_t=None):
        if weight.ndim != 2 or x.ndim == 0 or x.shape[-1] != weight.shape[1]:
            raise ValueError(
                f"linear: input of shape {x.shape} does not match weight of shape {weight.shape} "
                "(expected input (*, in_features) and weight (out_features, in_features))"
            )
        if bias is not None and bias.shape != (weight.shape[0],):
            raise ValueError(f"linear: bias has shape {bias.shape}, expected ({weight.shape[0]},)")
        if weight_t is not None and weight_t.shape != weight.shape[::-1]:
            raise ValueError(f"linear: weight_t has shape {weight_t.shape}, expected {weight.shape[::-1]} (Wᵀ)")
        ctx.save_for_backward(x, weight)
        out = x @ (weight.T if weight_t is None else weight_t)
        if bias is not None:
            out += bias
        return out

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved
        nx, nw, nb = ctx.needs_input_grad
        rows = math.prod(x.shape[:-1])  # not -1 in the reshapes: that cannot be inferred when in or out is 0
        g2 = grad.reshape(rows, weight.shape[0])  # (rows, out)
        dx = (grad @ weight) if nx else None  # (*, in)
        dw = (g2.T @ x.reshape(rows, weight.shape[1])) if nw else None  # (out, in)
        db = accurate_sum(g2, (0,)) if nb else None  # (out,)
        return dx, dw, db


class Neg(Function):
    """out = -a;  da = -g."""

    @staticmethod
    def forward(ctx, a):
        return -a

    @staticmethod
    def backward(ctx, grad):
        return -grad


# ----------------------------------------------------------------------------------------- reductions


class Sum(Function):
    """out = Σ_axis a;  da = g broadcast back over the summed axes."""

    @staticmethod
    def forward(ctx, a, axis=None, keepdims=False):
        ctx.axes = _normalize_axes("sum", axis, a.ndim)
        ctx.keepdims, ctx.shape = keepdims, a.shape
        return np.asarray(accurate_sum(a, ctx.axes, keepdims))

    @staticmethod
    def backward(ctx, grad):
        return _expand_reduced(grad, ctx.axes, ctx.keepdims, ctx.shape)


class Mean(Function):
    """out = (1/n) Σ_axis a;  da = g / n broadcast back (n = number of elements reduced)."""

    @staticmethod
    def forward(ctx, a, axis=None, keepdims=False):
        ctx.axes = _normalize_axes("mean", axis, a.ndim)
        ctx.keepdims, ctx.shape = keepdims, a.shape
        n = _reduced_count(a.shape, ctx.axes)
        if n == 0:
            raise ValueError(f"mean: cannot average over zero elements (shape {a.shape}, axis {axis})")
        return np.asarray(accurate_sum(a, ctx.axes, keepdims, mean=True))

    @staticmethod
    def backward(ctx, grad):
        n = _reduced_count(ctx.shape, ctx.axes)
        return _expand_reduced(grad / np.asarray(n, dtype=grad.dtype), ctx.axes, ctx.keepdims, ctx.shape)


class Var(Function):
    """out = Σ_axis (a - mean)^2 / (n - ddof) (two passes, as NumPy);  da = g * 2 (a - mean) / (n - ddof).

    The mean's own gradient term vanishes because Σ (a - mean) = 0.
    """

    @staticmethod
    def forward(ctx, a, axis=None, keepdims=False, ddof=0):
        axes = _normalize_axes("var", axis, a.ndim)
        n = _reduced_count(a.shape, axes)
        if n - ddof <= 0:
            raise ValueError(f"var: {n} elements with ddof={ddof} leave no degrees of freedom (shape {a.shape})")
        centered = a - accurate_sum(a, axes, True, mean=True)
        ctx.save_for_backward(centered)
        ctx.axes, ctx.keepdims, ctx.divisor = axes, keepdims, n - ddof
        return np.asarray(accurate_sum(centered * centered, axes, keepdims) / ctx.divisor)

    @staticmethod
    def backward(ctx, grad):
        (centered,) = ctx.saved
        g = _expand_reduced(grad, ctx.axes, ctx.keepdims, centered.shape)
        return g * centered * np.asarray(2.0 / ctx.divisor, dtype=centered.dtype)


class Max(Function):
    """out = max_axis a;  da = g at the maximal entries, shared equally among ties (0 elsewhere)."""

    @staticmethod
    def forward(ctx, a, axis=None, keepdims=False):
        axes = _normalize_axes("max", axis, a.ndim)
        if _reduced_count(a.shape, axes) == 0:
            raise ValueError(f"max: cannot take the maximum of zero elements (shape {a.shape}, axis {axis})")
        out = np.asarray(a.max(axis=axes, keepdims=True))
        ctx.save_for_backward(a, out)
        ctx.axes, ctx.keepdims = axes, keepdims
        return out if keepdims else np.asarray(out.squeeze(axis=axes))

    @staticmethod
    def backward(ctx, grad):
        a, out = ctx.saved
        mask = (a == out).astype(a.dtype)
        mask /= mask.sum(axis=ctx.axes, keepdims=True)
        return _expand_reduced(grad, ctx.axes, ctx.keepdims, a.shape) * mask


# --------------------------------------------------------------------------------------- elementwise


class Exp(Function):
    """out = e^a;  da = g * out."""

    @staticmethod
    def forward(ctx, a):
        out = np.exp(a)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.saved[0]


class Log(Function):
    """out = ln a;  da = g / a."""

    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a)
        return np.log(a)

    @staticmethod
    def backward(ctx, grad):
        return grad / ctx.saved[0]


class Sqrt(Function):
    """out = √a;  da = g / (2 out)."""

    @staticmethod
    def forward(ctx, a):
        out = np.sqrt(a)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        return grad / (2 * ctx.saved[0])


class Tanh(Function):
    """out = tanh a;  da = g (1 - out^2)."""

    @staticmethod
    def forward(ctx, a):
        out = np.tanh(a)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        out = ctx.saved[0]
        return grad * (1 - out * out)


def sigmoid_array(a: np.ndarray) -> np.ndarray:
    """σ(a) = 1 / (1 + e^-a) as a new array of a's dtype and shape: Sigmoid's forward, shared with the fused
    LSTM cell (npnorm.nn._lstm_cell). Overflow and underflow of e^-a are silenced (see Sigmoid)."""
    out = np.negative(a, out=np.empty_like(a))  # an array also for 0-d input (ufuncs return scalars)
    with np.errstate(over="ignore", under="ignore"):
        np.exp(out, out=out)
    out += 1
    np.reciprocal(out, out=out)
    return out


class Sigmoid(Function):
    """out = 1 / (1 + e^-a);  da = g out (1 - out).

    For a → -∞, e^-a overflows to inf and out to 0, the right limit (below -88 in float32 the true value is
    under 1e-38); for a → +∞ it underflows to 0 and out is 1. Both warnings are silenced. Three vectorised
    passes: 4-5 µs for 4096 float32, against 11-12 µs for scipy.special.expit, which evaluates element by
    element; both are within 2 ulp.
    """

    @staticmethod
    def forward(ctx, a):
        out = sigmoid_array(a)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        out = ctx.saved[0]
        return grad * out * (1 - out)


class Relu(Function):
    """out = max(a, 0);  da = g where a > 0, else 0 (also where g is inf or NaN: as PyTorch, a zeroed unit passes
    nothing back, so log(relu(x)) at x <= 0 has gradient 0, not 0·inf = NaN; a NaN input passes g through)."""

    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a)
        return np.maximum(a, 0)

    @staticmethod
    def backward(ctx, grad):
        on = ~(ctx.saved[0] <= 0)  # not a > 0: a NaN input passes the gradient on, as in PyTorch
        out = grad * on  # 14 µs at (128, 256) float32, np.where 70 µs
        # Σ out² is NaN iff some entry is (2.4 µs, isnan().any() 5): 0·inf or 0·NaN where the unit is off, which
        # must pass nothing back (or a NaN passed on where it is on, which the line below leaves alone)
        if math.isnan(np.vdot(out.reshape(-1), out.reshape(-1))):
            out[~on] = 0
        return out


class Gelu(Function):
    """Exact GELU: out = a Φ(a) = a/2 (1 + erf(a/√2));  da = g (Φ(a) + a φ(a)), φ the normal density.

    With approximate="tanh": out = a/2 (1 + tanh(u)), u = √(2/π)(a + 0.044715 a^3), and
    da = g (1/2 (1 + tanh u) + a/2 (1 - tanh² u) √(2/π)(1 + 3·0.044715 a^2)).
    The constants are Python floats: a NumPy float64 scalar would widen a float32 input (NEP 50).
    """

    @staticmethod
    def forward(ctx, a, approximate="none"):
        ctx.save_for_backward(a)
        ctx.approximate = approximate
        if approximate == "tanh":
            t = np.tanh(math.sqrt(2 / math.pi) * (a + 0.044715 * a**3))
            ctx.t = t
            return 0.5 * a * (1 + t)
        from scipy import special

        return 0.5 * a * (1 + special.erf(a / math.sqrt(2)))

    @staticmethod
    def backward(ctx, grad):
        (a,) = ctx.saved
        if ctx.approximate == "tanh":
            t = ctx.t
            du = math.sqrt(2 / math.pi) * (1 + 3 * 0.044715 * a * a)
            return grad * (0.5 * (1 + t) + 0.5 * a * (1 - t * t) * du)
        from scipy import special

        cdf = 0.5 * (1 + special.erf(a / math.sqrt(2)))
        pdf = np.exp(-0.5 * a * a) / math.sqrt(2 * math.pi)
        return grad * (cdf + a * pdf)


# ------------------------------------------------------------------------------------ shape movement


class Reshape(Function):
    """out = a viewed with a new shape;  da = g reshaped back."""

    @staticmethod
    def forward(ctx, a, shape):
        ctx.shape = a.shape
        try:
            return a.reshape(shape)
        except ValueError:
            raise ValueError(f"reshape: cannot reshape a tensor of shape {a.shape} into shape {tuple(shape)}") from None

    @staticmethod
    def backward(ctx, grad):
        return grad.reshape(ctx.shape)


class Cast(Function):
    """out = a converted to `dtype`;  da = g converted back to a's dtype."""

    @staticmethod
    def forward(ctx, a, dtype):
        ctx.dtype = a.dtype
        return a.astype(dtype)

    @staticmethod
    def backward(ctx, grad):
        return grad.astype(ctx.dtype), None


class Transpose(Function):
    """out = a with axes permuted (NumPy's meaning; None reverses them);  da = g with the inverse permutation."""

    @staticmethod
    def forward(ctx, a, axes=None):
        if axes is None:
            axes = tuple(range(a.ndim))[::-1]
        axes = tuple(_axis_index("transpose", i) for i in axes)
        # in this order: the range is checked before `% a.ndim`, which a 0-d array would divide by zero
        if (
            len(axes) != a.ndim
            or not all(-a.ndim <= i < a.ndim for i in axes)
            or sorted(i % a.ndim for i in axes) != list(range(a.ndim))
        ):
            raise ValueError(f"transpose: axes {axes} are not a permutation of the {a.ndim} axes of shape {a.shape}")
        ctx.inverse = tuple(np.argsort([i % a.ndim for i in axes]))
        return a.transpose(axes)

    @staticmethod
    def backward(ctx, grad):
        return grad.transpose(ctx.inverse)


def _is_basic_index(index) -> bool:
    items = index if isinstance(index, tuple) else (index,)
    return all(isinstance(i, (int, np.integer, slice)) or i is None or i is Ellipsis for i in items)


def _frozen_index(index):
    """``index`` with each array or list in it copied (ints, slices, None and Ellipsis are immutable)."""
    if isinstance(index, tuple):
        return tuple(_frozen_index(i) for i in index)
    if isinstance(index, np.ndarray):
        return index.copy()
    return copy.deepcopy(index) if isinstance(index, list) else index


class GetItem(Function):
    """out = a[index] (ints, slices, integer arrays);  da = g scattered back, adding repeated indices.

    Basic indexing (ints and slices) touches each element at most once, so a plain assignment scatters; an
    integer-array index may repeat elements, so `np.add.at` sums their gradients.
    """

    @staticmethod
    def forward(ctx, a, index):
        # The index's arrays are copied: the caller may reuse its array before backward, which would send the
        # gradient to the new positions (PyTorch refuses such an in-place change; a copy of a few ints is cheaper).
        ctx.shape, ctx.index = a.shape, _frozen_index(index)
        try:
            out = a[index]
        except IndexError as exc:
            raise IndexError(f"index: {exc} (tensor of shape {a.shape})") from None
        return np.array(out, copy=True) if np.ndim(out) == 0 else out

    @staticmethod
    def backward(ctx, grad):
        # Zero outside the index: the engine scatters it into one dense gradient of `a` (autograd.IndexedGrad).
        return IndexedGrad(ctx.shape, ctx.index, grad, _is_basic_index(ctx.index)), None


# ----------------------------------------------------------------------------- probabilities and losses


class Softmax(Function):
    """out = e^(a - max) / Σ e^(a - max) along `axis`;  da = out (g - Σ g·out)."""

    @staticmethod
    def forward(ctx, a, axis=-1):
        e = np.exp(a - a.max(axis=axis, keepdims=True, initial=-np.inf))  # initial: an empty axis has no max
        out = e / e.sum(axis=axis, keepdims=True)
        ctx.save_for_backward(out)
        ctx.axis = axis
        return out

    @staticmethod
    def backward(ctx, grad):
        (out,) = ctx.saved
        return out * (grad - (grad * out).sum(axis=ctx.axis, keepdims=True))


class LogSoftmax(Function):
    """out = a - max - log Σ e^(a - max) along `axis` (no overflow for logits of ±1e4);
    da = g - softmax(a) Σ g."""

    @staticmethod
    def forward(ctx, a, axis=-1):
        shifted = a - a.max(axis=axis, keepdims=True, initial=-np.inf)  # initial: an empty axis has no max
        # After the shift each sum is >= 1 (the max contributes e^0), or NaN: log(0) only comes from an
        # empty axis, whose output is empty anyway
        with np.errstate(divide="ignore"):
            out = shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))
        ctx.save_for_backward(out)
        ctx.axis = axis
        return out

    @staticmethod
    def backward(ctx, grad):
        (out,) = ctx.saved
        return grad - np.exp(out) * grad.sum(axis=ctx.axis, keepdims=True)


def _at_targets(logp: np.ndarray, target: np.ndarray) -> np.ndarray:
    """logp[..., target]: each position's entry at its target class, shape (N, *).

    For the common (N, C) case by integer indexing, logp[arange(N), target]: the same elements as
    take_along_axis, which builds broadcast index arrays first (about 9 µs of a 30 µs forward at (128, 10)).
    """
    if logp.ndim == 2:
        return logp[np.arange(len(target)), target]
    return np.take_along_axis(logp, target[..., None], axis=-1)[..., 0]


class CrossEntropy(Function):
    """Fused log-softmax + negative log-likelihood over class axis 1 (PyTorch's layout).

    logits (N, C) or (N, C, d1, ...), target (N,) or (N, d1, ...) integer classes.
    loss_i = -log softmax(logits_i)[t_i];  dlogits_i = (softmax(logits_i) - onehot(t_i)) · g_i.
    """

    @staticmethod
    def forward(ctx, logits, target, reduction="mean"):
        moved = np.moveaxis(logits, 1, -1) if logits.ndim > 2 else logits  # (N, *, C)
        shifted = moved - moved.max(axis=-1, keepdims=True)
        logp = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))  # (N, *, C)
        picked = _at_targets(logp, target)  # (N, *)
        ctx.save_for_backward(logp, target)
        ctx.reduction, ctx.moved = reduction, logits.ndim > 2
        losses = -picked
        if reduction == "mean":
            return np.asarray(losses.mean())
        if reduction == "sum":
            return np.asarray(losses.sum())
        return losses

    @staticmethod
    def backward(ctx, grad):
        logp, target = ctx.saved
        if ctx.reduction == "mean":
            g = np.broadcast_to(grad / np.asarray(target.size, dtype=grad.dtype), target.shape)
        elif ctx.reduction == "sum":
            g = np.broadcast_to(grad, target.shape)
        else:
            g = grad
        dlogits = np.exp(logp)  # softmax, (N, *, C)
        if dlogits.ndim == 2:  # (N, C): as below, by plain integer indexing (see _at_targets)
            dlogits[np.arange(len(target)), target] -= 1
        else:
            np.put_along_axis(dlogits, target[..., None], np.take_along_axis(dlogits, target[..., None], -1) - 1, -1)
        dlogits *= g[..., None]
        if ctx.moved:
            dlogits = np.moveaxis(dlogits, -1, 1)
        return dlogits, None


# ----------------------------------------------------------------------------------- joining tensors


class Stack(Function):
    """out = stack(a_0, ..., a_{n-1}) along a new `axis`: n arrays of one shape become one of n slices;
    da_i = g at index i of that axis (a view: each input takes back its own slice)."""

    @staticmethod
    def forward(ctx, *arrays, axis=0):
        ctx.axis = axis
        return np.stack(arrays, axis=axis)

    @staticmethod
    def backward(ctx, grad):
        slices = np.moveaxis(grad, ctx.axis, 0)  # (n, *input shape)
        return tuple(slices[i] if need else None for i, need in enumerate(ctx.needs_input_grad))


class Concatenate(Function):
    """out = concatenate(a_0, ..., a_{n-1}) along an existing `axis` (the sizes along it add up);
    da_i = g over a_i's extent of that axis."""

    @staticmethod
    def forward(ctx, *arrays, axis=0):
        ctx.axis = axis
        ctx.bounds = np.cumsum([a.shape[axis] for a in arrays])[:-1]  # where each input ends, but the last
        return np.concatenate(arrays, axis=axis)

    @staticmethod
    def backward(ctx, grad):
        pieces = np.split(grad, ctx.bounds, axis=ctx.axis)
        return tuple(p if need else None for p, need in zip(pieces, ctx.needs_input_grad))
