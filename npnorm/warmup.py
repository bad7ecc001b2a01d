"""`npnorm warmup`: compile every Numba kernel ahead of time, so that no user call pays for compilation.

Numba compiles a kernel on its first call, once per *specialisation*: per dtype (float32, float64), per
variant (serial below ``SERIAL_BELOW`` elements, parallel above, see kernels/_jit.py) and per argument type
(an absent weight is ``None``, a different type from an array). Each compiled specialisation lands in the
on-disk cache, from which later processes load it in milliseconds instead of compiling it again.

``warmup()`` therefore calls every norm's public ``F.*`` function, forward and backward with
``impl="numba"``, on one small input (serial kernels) and one just large enough for the parallel ones, with
and without affine parameters, in both training and evaluation modes where a norm has them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np

DTYPES = ("float32", "float64")
H = 64  # features of every warm-up input; the row count decides serial vs parallel
SMALL_ROWS = 4  # 4 x 64 = 256 elements: the serial variants


def _parallel_rows() -> int:
    """Rows of the input that reaches the parallel variants: N * H >= SERIAL_BELOW."""
    try:
        from .kernels._jit import SERIAL_BELOW
    except ImportError:  # no numba: impl="numba" runs the NumPy reference, any size will do
        SERIAL_BELOW = 32_768
    return math.ceil(SERIAL_BELOW / H)


def _fwd_bwd(norm: Callable, x: np.ndarray, params: dict[str, np.ndarray | None], *args, **options) -> None:
    """``norm(x, *args, **params, **options)`` on Tensors that require grad, then backward with a ones gradient."""
    from .tensor import Tensor

    xt = Tensor(x, requires_grad=True)
    pt = {k: None if v is None else Tensor(v, requires_grad=True) for k, v in params.items()}
    y = norm(xt, *args, **pt, **options, impl="numba")
    y.backward(np.ones_like(y.data))


def _affine_choices(dtype) -> list[dict[str, np.ndarray | None]]:
    """weight and bias both present, both absent, and each alone: each is its own specialisation."""
    w, b = np.ones(H, dtype=dtype), np.zeros(H, dtype=dtype)
    return [dict(weight=w, bias=b), dict(weight=None, bias=None), dict(weight=w, bias=None), dict(weight=None, bias=b)]


def _layer_norm(x):
    from . import functional as F

    for params in _affine_choices(x.dtype):
        for detach_mean, detach_var in ((False, False), (True, False), (False, True), (True, True)):
            _fwd_bwd(F.layer_norm, x, params, H, detach_mean=detach_mean, detach_var=detach_var)


def _ada_norm(x):
    from . import functional as F

    _fwd_bwd(F.ada_norm, x, {}, H)


def _rms_norm(x):
    from . import functional as F

    w = np.ones(H, dtype=x.dtype)
    for params in (dict(weight=w), dict(weight=None)):  # rms_norm has a weight only
        _fwd_bwd(F.rms_norm, x, params, H)


def _batch_norm(x):
    from . import functional as F

    for params in _affine_choices(x.dtype):
        _fwd_bwd(F.batch_norm, x, params, None, None, training=True)
        running_mean, running_var = np.zeros(H, dtype=x.dtype), np.ones(H, dtype=x.dtype)
        _fwd_bwd(F.batch_norm, x, params, running_mean, running_var, training=False)


def _group_norm(x):
    from . import functional as F

    for params in _affine_choices(x.dtype):
        _fwd_bwd(F.group_norm, x, params, 4)


def _weight_norm(x):
    from . import functional as F

    g = np.ones((x.shape[0], 1), dtype=x.dtype)
    _fwd_bwd(F.weight_norm, x, dict(g=g), dim=0)  # x is v; g as a keyword


NORMS: dict[str, Callable[[np.ndarray], None]] = {
    "layer_norm": _layer_norm,
    "ada_norm": _ada_norm,
    "rms_norm": _rms_norm,
    "batch_norm": _batch_norm,
    "group_norm": _group_norm,
    "weight_norm": _weight_norm,
}


def warmup(dtypes=DTYPES, progress: Callable[[str], object] | None = print) -> dict:
    """Compile (or load from the on-disk cache) every kernel specialisation the norms can reach.

    Returns {"seconds": total, "norms": {norm: seconds}, "dtypes": [...], "shapes": {"serial": (N, H),
    "parallel": (N, H)}}. ``progress`` receives one line per norm (None: silent).
    """
    shapes = {"serial": (SMALL_ROWS, H), "parallel": (_parallel_rows(), H)}
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal(shape).astype(dtype) for dtype in dtypes for shape in shapes.values()]
    seconds = {}
    start = time.perf_counter()
    for name, run in NORMS.items():
        t0 = time.perf_counter()
        for x in inputs:
            run(x)
        seconds[name] = time.perf_counter() - t0
        if progress is not None:
            progress(f"  {name:<12} {seconds[name]:6.2f} s")
    return {
        "seconds": time.perf_counter() - start,
        "norms": seconds,
        "dtypes": [str(np.dtype(d)) for d in dtypes],
        "shapes": shapes,
    }
