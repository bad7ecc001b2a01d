"""Argument checks shared by the modules and the fused recurrent cells, with messages in the user's terms."""

from __future__ import annotations

import numbers

import numpy as np

from .._random import default_generator
from ..norms import IMPLS

_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def size(who: str, name: str, value, *, minimum: int = 1) -> int:
    """A whole number >= minimum (bools are rejected: `Linear(True, 3)` is a bug, not a size)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{who}: {name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def flag(who: str, name: str, value) -> bool:
    """True or False, nothing else: a PyTorch call written positionally would otherwise land its next argument
    in our flag (`RNN(4, 3, 2, "relu")` puts "relu" in bias, `LSTM(..., 0.5)` its dropout in layer_norm)
    and build another model without a word."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{who}: {name} must be True or False, got {value!r}")
    return bool(value)


def shape(who: str, value) -> tuple:
    """`normalized_shape` as a non-empty tuple of positive ints (an int n means (n,))."""
    dims = (value,) if isinstance(value, numbers.Integral) else value
    try:
        dims = tuple(dims)
    except TypeError:
        raise TypeError(f"{who}: normalized_shape must be an int or a tuple of ints, got {value!r}") from None
    if not dims:
        raise ValueError(f"{who}: normalized_shape must have at least one dimension")
    return tuple(size(who, "each dim of normalized_shape", n) for n in dims)


def float_dtype(who: str, dtype) -> np.dtype:
    try:
        dtype = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"{who}: dtype must be float32 or float64, got {dtype!r}") from None
    if dtype not in _FLOAT_DTYPES:
        raise TypeError(f"{who}: dtype must be float32 or float64, got {dtype}")
    return dtype


def generator(who: str, rng) -> np.random.Generator:
    """`rng` as a Generator: a Generator itself, an int seed, or None for the one `npnorm.manual_seed` seeds."""
    if rng is None:
        return default_generator()
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, numbers.Integral) and not isinstance(rng, bool) and rng >= 0:
        return np.random.default_rng(int(rng))
    raise TypeError(f"{who}: rng must be a numpy.random.Generator, a non-negative int seed or None, got {rng!r}")


def impl(who: str, value):
    """None (decide at each call: NPNORM_IMPL, else "numba") or one of "numba", "numpy", "composed"."""
    if value is not None and value not in IMPLS:
        raise ValueError(f"{who}: impl must be None or one of {IMPLS}, got {value!r}")
    return value


def gate_hidden_size(who: str, gates: np.ndarray, blocks: tuple[str, ...], states: dict[str, np.ndarray]) -> int:
    """H of a fused recurrent cell's arguments, after checking them: gates (B, k·H) in the k column blocks
    named by `blocks` (("i", "f", "g", "o") for the LSTM), and each of `states` {name: array} (B, H) of
    gates' dtype. The errors name `who`, the function the user called."""
    k = len(blocks)
    if gates.ndim != 2 or gates.shape[1] % k != 0:
        raise ValueError(
            f"{who}: gates must be 2-D, (batch, {k}·hidden_size) in blocks [{'; '.join(blocks)}], "
            f"got shape {gates.shape}"
        )
    B, H = gates.shape[0], gates.shape[1] // k
    together = "both" if len(states) == 1 else "all"
    for name, state in states.items():
        if state.shape != (B, H):
            raise ValueError(
                f"{who}: {name} must have shape (batch, hidden_size) = {(B, H)} to match gates of shape "
                f"{gates.shape}, got {state.shape}"
            )
        if state.dtype != gates.dtype:
            raise TypeError(f"{who}: gates are {gates.dtype} but {name} is {state.dtype}; use one dtype for {together}")
    return H
