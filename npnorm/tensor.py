"""Tensor: a NumPy array, its gradient, and the operator sugar that routes everything to `ops`.

`.data` is a float32 or float64 ndarray (kept as given); `.grad` is None or an ndarray of the same shape
and dtype. Operators broadcast like NumPy in both argument orders; a Python scalar takes the dtype of the
Tensor it meets (float32 * 2.0 stays float32), while an ndarray operand follows NumPy's promotion.
"""

from __future__ import annotations

import numbers

import numpy as np

from . import autograd, ops

_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _as_float_array(data, dtype=None, *, copy: bool, who: str = "Tensor", what: str = "data") -> np.ndarray:
    """Validate and convert user data to a float32/float64 array.

    Integers and booleans become float64 (as NumPy would promote them), float16 becomes float32; complex,
    object and string data raise a TypeError rather than failing later inside an operation.
    """
    if dtype is not None:
        dtype = np.dtype(dtype)
        if dtype not in _FLOAT_DTYPES:
            raise TypeError(f"{who}: dtype must be float32 or float64, got {dtype}")
    try:
        array = np.asarray(data)
    except (ValueError, TypeError) as exc:  # ragged nested lists and the like
        raise TypeError(f"{who}: cannot convert {what} of type {type(data).__name__} to an array: {exc}") from None
    kind = array.dtype.kind
    if kind not in "fiub":
        raise TypeError(f"{who}: {what} must hold real numbers, got an array of dtype {array.dtype}")
    if dtype is None:
        if array.dtype in _FLOAT_DTYPES:
            dtype = array.dtype
        elif kind == "f" and array.dtype.itemsize < 4:
            dtype = np.dtype(np.float32)
        else:
            dtype = np.dtype(np.float64)
    return np.array(array, dtype=dtype, copy=True) if copy else np.asarray(array, dtype=dtype)


class Tensor:
    """An n-dimensional array that records the operations applied to it, for reverse-mode gradients.

    `Tensor(data)` wraps a float ndarray without copying it; `npnorm.tensor(data)` always copies.
    """

    __slots__ = ("data", "_grad", "requires_grad", "_node", "__weakref__")

    # NumPy must not treat a Tensor as an array-like object in `ndarray + Tensor`: returning
    # NotImplemented from the ndarray makes Python call Tensor.__radd__, so the result is a Tensor.
    __array_ufunc__ = None

    def __init__(self, data, requires_grad: bool = False, dtype=None):
        if isinstance(data, Tensor):
            data = data.data
        self.data = _as_float_array(data, dtype, copy=False)
        self._grad = None
        self.requires_grad = bool(requires_grad)
        self._node = None

    @classmethod
    def _wrap(cls, array) -> Tensor:
        """Fast constructor for arrays produced by operations (already float, no validation)."""
        t = object.__new__(cls)
        t.data = array if type(array) is np.ndarray else np.asarray(array)
        t._grad = None
        t.requires_grad = False
        t._node = None
        return t

    @property
    def grad(self) -> np.ndarray | None:
        """The accumulated gradient: a NumPy array of this tensor's shape and dtype, or None."""
        return self._grad

    @grad.setter
    def grad(self, value) -> None:
        # Checked here, as PyTorch checks: backward adds into `.grad` in place, and would otherwise broadcast
        # into a wrong shape or round into another dtype without a word. (The engine writes `_grad` itself.)
        if value is not None:
            if type(value) is not np.ndarray:
                hint = " (a Tensor's array is its .data)" if isinstance(value, Tensor) else ""
                raise TypeError(f"grad must be a NumPy array or None, got {type(value).__name__}{hint}")
            if value.shape != self.data.shape or value.dtype != self.data.dtype:
                raise ValueError(
                    f"grad must have the tensor's shape {self.data.shape} and dtype {self.data.dtype}, got shape "
                    f"{value.shape} and dtype {value.dtype}"
                )
        self._grad = value

    # ----------------------------------------------------------------------------------- description
    @property
    def shape(self) -> tuple:
        return self.data.shape

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def size(self) -> int:
        return self.data.size

    @property
    def is_leaf(self) -> bool:
        return self._node is None

    def __len__(self) -> int:
        if self.data.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.data.shape[0]

    def __bool__(self) -> bool:
        # NumPy's rule, as PyTorch's: one element gives its truth value, more are ambiguous (a ValueError).
        # Without it Python would take len(): tensor([0.0]) would be True and a 0-d tensor a TypeError.
        return bool(self.data)

    def __iter__(self):
        # Rows as Tensors in the graph (self[i]). Without it Python would iterate through __getitem__ until
        # an IndexError, and a 0-d tensor would silently yield nothing.
        if self.data.ndim == 0:
            raise TypeError("iteration over a 0-d tensor")
        return (self[i] for i in range(self.data.shape[0]))

    def __repr__(self) -> str:
        body = np.array2string(self.data, separator=", ", prefix="tensor(")
        extra = ""
        if self.data.dtype != np.float64:
            extra += f", dtype={self.data.dtype}"
        if self.requires_grad:
            extra += ", requires_grad=True"
        return f"tensor({body}{extra})"

    def item(self) -> float:
        if self.data.size != 1:
            raise ValueError(
                f"item: only a tensor with one element converts to a Python number, got shape {self.shape}"
            )
        return self.data.item()

    def numpy(self) -> np.ndarray:
        """The underlying array (shared, not copied, as in PyTorch)."""
        return self.data

    def __array__(self, dtype=None, copy=None):
        # NumPy 2's protocol: copy=True must copy (np.array(t) must not share t's memory), copy=False must
        # not, and None copies only to convert. np.asarray(t) shares, as for a PyTorch tensor.
        if dtype is None or np.dtype(dtype) == self.data.dtype:
            return self.data.copy() if copy else self.data
        if copy is False:
            raise ValueError(f"cannot convert a {self.data.dtype} tensor to {np.dtype(dtype)} without a copy")
        return self.data.astype(dtype)

    # ---------------------------------------------------------------------------------------- graph
    def detach(self) -> Tensor:
        """A Tensor sharing this one's data, cut from the graph."""
        return Tensor._wrap(self.data)

    def requires_grad_(self, requires_grad: bool = True) -> Tensor:
        if not self.is_leaf:
            if requires_grad and self.requires_grad:  # what it already is (PyTorch allows this too)
                return self
            raise RuntimeError("requires_grad_: only leaf tensors can change requires_grad; use detach() first")
        self.requires_grad = bool(requires_grad)
        return self

    def backward(self, grad=None) -> None:
        """Accumulate d(self)/d(leaf) into `leaf.grad` for every leaf that requires grad.

        `grad` is dL/d(self); it may be omitted only when self has one element.
        """
        if not self.requires_grad:
            raise RuntimeError(
                "backward: this tensor does not require grad and has no graph "
                "(it was computed under no_grad(), detached, or from inputs without requires_grad=True)"
            )
        if grad is None:
            if self.data.size != 1:
                raise RuntimeError(
                    f"backward: grad can be omitted only for a one-element output; this output has shape "
                    f"{self.shape}, pass grad= of that shape"
                )
            grad = np.ones_like(self.data)
        else:
            if type(grad) is not np.ndarray or grad.dtype != self.data.dtype:  # the usual case skips this
                grad = _as_float_array(
                    grad.data if isinstance(grad, Tensor) else grad, copy=False, who="backward", what="grad"
                ).astype(self.data.dtype, copy=False)
            if grad.shape != self.data.shape:
                raise ValueError(f"backward: grad has shape {grad.shape} but the output has shape {self.shape}")
        autograd.backward(self, grad)

    # ------------------------------------------------------------------------------------ operators
    def _operand(self, other) -> Tensor:
        if isinstance(other, Tensor):
            return other
        if isinstance(other, numbers.Real) and not isinstance(other, np.ndarray):
            # A Python (or NumPy) scalar is "weak": it takes our dtype and never widens float32.
            return Tensor._wrap(np.asarray(other, dtype=self.data.dtype))
        if isinstance(other, np.ndarray) and other.dtype.kind in "biu":
            # NumPy's promotion: float32 with a bool, int8/16 or uint8/16 array stays float32 (a mask must not
            # widen a float32 model), with int32/64 it becomes float64. Tensor(other) alone would make float64.
            return Tensor(other, dtype=np.result_type(self.data.dtype, other.dtype))
        return Tensor(other)

    def __add__(self, other):
        return ops.Add.apply(self, self._operand(other))

    def __radd__(self, other):
        return ops.Add.apply(self._operand(other), self)

    def __sub__(self, other):
        return ops.Sub.apply(self, self._operand(other))

    def __rsub__(self, other):
        return ops.Sub.apply(self._operand(other), self)

    def __mul__(self, other):
        return ops.Mul.apply(self, self._operand(other))

    def __rmul__(self, other):
        return ops.Mul.apply(self._operand(other), self)

    def __truediv__(self, other):
        return ops.Div.apply(self, self._operand(other))

    def __rtruediv__(self, other):
        return ops.Div.apply(self._operand(other), self)

    def __pow__(self, exponent):
        if isinstance(exponent, numbers.Real) and not isinstance(exponent, np.ndarray):
            return ops.PowScalar.apply(self, float(exponent))
        return ops.Pow.apply(self, self._operand(exponent))

    def __rpow__(self, base):
        return ops.Pow.apply(self._operand(base), self)

    def __matmul__(self, other):
        return ops.MatMul.apply(self, self._operand(other))

    def __rmatmul__(self, other):
        return ops.MatMul.apply(self._operand(other), self)

    def __neg__(self):
        return ops.Neg.apply(self)

    def __pos__(self):
        return self

    def __getitem__(self, index):
        return ops.GetItem.apply(self, _plain_index(index))

    # -------------------------------------------------------------------------------------- methods
    def sum(self, axis=None, keepdims: bool = False) -> Tensor:
        return ops.Sum.apply(self, axis=axis, keepdims=keepdims)

    def mean(self, axis=None, keepdims: bool = False) -> Tensor:
        return ops.Mean.apply(self, axis=axis, keepdims=keepdims)

    def max(self, axis=None, keepdims: bool = False) -> Tensor:
        return ops.Max.apply(self, axis=axis, keepdims=keepdims)

    def var(self, axis=None, keepdims: bool = False, ddof: int = 0) -> Tensor:
        return ops.Var.apply(self, axis=axis, keepdims=keepdims, ddof=ddof)

    def exp(self) -> Tensor:
        return ops.Exp.apply(self)

    def log(self) -> Tensor:
        return ops.Log.apply(self)

    def sqrt(self) -> Tensor:
        return ops.Sqrt.apply(self)

    def tanh(self) -> Tensor:
        return ops.Tanh.apply(self)

    def sigmoid(self) -> Tensor:
        return ops.Sigmoid.apply(self)

    def relu(self) -> Tensor:
        return ops.Relu.apply(self)

    def reshape(self, *shape) -> Tensor:
        if len(shape) == 1 and not isinstance(shape[0], numbers.Integral):
            shape = tuple(shape[0])
        return ops.Reshape.apply(self, shape=shape)

    def transpose(self, *axes) -> Tensor:
        if len(axes) == 1 and not isinstance(axes[0], numbers.Integral):  # one sequence, or None
            axes = None if axes[0] is None else tuple(axes[0])
        elif not axes:  # no arguments reverse the axes; an empty sequence is a permutation of no axes only
            axes = None
        return ops.Transpose.apply(self, axes=axes)

    def astype(self, dtype) -> Tensor:
        """This tensor converted to float32 or float64 (itself when already of that dtype)."""
        dtype = np.dtype(dtype)
        if dtype not in _FLOAT_DTYPES:
            raise TypeError(f"astype: dtype must be float32 or float64, got {dtype}")
        if dtype == self.data.dtype:
            return self
        return ops.Cast.apply(self, dtype)

    @property
    def T(self) -> Tensor:
        return ops.Transpose.apply(self, axes=None)


def _plain_index(index):
    """Replace Tensors inside an index by their arrays (indices carry no gradient)."""
    if isinstance(index, Tensor):
        return _integer_index(index.data)
    if isinstance(index, tuple):
        return tuple(_integer_index(i.data) if isinstance(i, Tensor) else i for i in index)
    return index


def _integer_index(array: np.ndarray) -> np.ndarray:
    # Tensors hold floats; an index Tensor must hold whole numbers.
    if not np.all(np.isfinite(array)) or not np.all(array == np.round(array)):
        raise IndexError("index: a Tensor used as an index must hold whole numbers")
    return array.astype(np.intp)


def tensor(data, requires_grad: bool = False, dtype=None) -> Tensor:
    """A new Tensor holding a copy of `data` (Python scalars, lists and integer arrays become float64)."""
    t = Tensor._wrap(_as_float_array(data.data if isinstance(data, Tensor) else data, dtype, copy=True))
    t.requires_grad = bool(requires_grad)
    return t


autograd._Tensor = Tensor
