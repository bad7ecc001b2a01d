"""Argument checks shared by the norms, with messages in the user's terms (function, argument, shapes)."""

from __future__ import annotations

import math
import numbers

from ..tensor import Tensor, _as_float_array


def check_eps(who: str, eps) -> float:
    if type(eps) is float and eps >= 0:  # the usual case, first (NaN fails the comparison)
        return eps
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or math.isnan(eps) or eps < 0:
        raise ValueError(f"{who}: eps must be a number >= 0, got {eps!r}")
    return float(eps)


def check_normalized_shape(who: str, normalized_shape, input_shape: tuple) -> tuple:
    """`normalized_shape` as a tuple that equals the last dims of `input_shape`."""
    # The usual cases, first: an int or a tuple of ints equal to the trailing dims (these run on every
    # call, and the general checks below cost more than a small LayerNorm kernel).
    if type(normalized_shape) is int:
        if normalized_shape > 0 and input_shape and input_shape[-1] == normalized_shape:
            return (normalized_shape,)
    elif type(normalized_shape) is tuple and 0 < len(normalized_shape) <= len(input_shape):
        if input_shape[len(input_shape) - len(normalized_shape) :] == normalized_shape:
            # a loop, not all(<generator>): 0.25 against 0.79 µs for nn.LayerNorm's (H,), 84 times per LN-LSTM step
            for n in normalized_shape:
                if type(n) is not int or n <= 0:
                    break
            else:
                return normalized_shape
    if isinstance(normalized_shape, numbers.Integral) and not isinstance(normalized_shape, bool):
        normalized_shape = (int(normalized_shape),)
    items = _items(normalized_shape)
    if items is None or not all(isinstance(n, numbers.Integral) and not isinstance(n, bool) for n in items):
        raise TypeError(f"{who}: normalized_shape must be an int or a tuple of ints, got {normalized_shape!r}")
    normalized_shape = tuple(int(n) for n in items)
    if not normalized_shape:
        raise ValueError(f"{who}: normalized_shape must have at least one dimension")
    if any(n <= 0 for n in normalized_shape):
        raise ValueError(f"{who}: normalized_shape {normalized_shape} must have positive sizes")
    if input_shape[len(input_shape) - len(normalized_shape) :] != normalized_shape or len(input_shape) < len(
        normalized_shape
    ):
        raise ValueError(
            f"{who}: normalized_shape {normalized_shape} does not match the last dims of input shape {input_shape}"
        )
    return normalized_shape


def check_param(who: str, name: str, p, shape: tuple, dtype) -> Tensor | None:
    """An optional affine parameter: None, or a Tensor of exactly `shape` and the input's dtype."""
    if p is None:
        return None
    if type(p) is Tensor and p.data.shape == shape and p.data.dtype == dtype:  # the usual case, first
        return p
    if not isinstance(p, Tensor):
        p = Tensor._wrap(_as_float_array(p, copy=False, who=who, what=name))
    if p.shape != shape:
        raise ValueError(f"{who}: {name} has shape {p.shape}, expected {shape}")
    if p.dtype != dtype:
        raise TypeError(f"{who}: {name} is {p.dtype} but the input is {dtype}; use one dtype for both")
    return p


def check_real(who: str, name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{who}: {name} must be a finite number, got {value!r}")
    return float(value)


def _items(value) -> tuple | None:
    """The elements of a tuple, list or array of sizes; None for anything else (strings, generators, ...)."""
    if isinstance(value, (tuple, list)):
        return tuple(value)
    if hasattr(value, "shape") and hasattr(value, "tolist") and getattr(value, "ndim", None) == 1:
        return tuple(value.tolist())
    return None
