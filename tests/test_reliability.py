"""The reliability catalogue: how npnorm behaves when inputs, threads, processes or files go wrong.

The file reads as the catalogue; each section comment below is one of its headings, and every test's
docstring names the row it covers:

1. Bad input gets a clear error, and nothing is lost
2. Hard numerics (each norm, each impl)
3. Threads, processes and the JIT
4. Files
5. Property-based fuzzing

Run it with::

    python -m pytest tests/test_reliability.py -q -p no:cacheprovider

The default run covers every row in well under a minute on two cores. The tests of section 3 run in
subprocesses (an abort or a hang then fails one test instead of killing or stalling pytest). Section 5
uses the Hypothesis profiles of tests/conftest.py ("default" and "ci": 25 examples per property); the
scheduled long run is::

    HYPOTHESIS_PROFILE=ci-nightly pytest tests/test_reliability.py     # 500 examples per property

Norms are exercised through `npnorm.functional` (F.layer_norm, F.ada_norm, F.rms_norm, F.batch_norm,
F.group_norm, F.weight_norm), each with impl = "numba", "numpy" and "composed".
"""

from __future__ import annotations

import copy
import math
import os
import pathlib
import re
import signal
import subprocess
import sys
import textwrap
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import npnorm
import npnorm.functional as F
from npnorm import nn, optim
from npnorm.autograd import Function

TESTS = pathlib.Path(__file__).resolve().parent
REPO = TESTS.parent
IMPLS = ("numba", "numpy", "composed")


# =============================================================================================== the norms
# One entry per norm: how to call it, its parameters, a float64 oracle written out here from the papers'
# formulas (independent of npnorm's three implementations), and which outputs one poisoned "row" may reach.


def _ln_oracle(x, p, eps, **kw):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)  # two passes, float64
    y = (x - mean) / np.sqrt(var + eps)
    return y * p["weight"] + p["bias"]


def _ada_oracle(x, p, eps, *, C=1.5, k=0.1, **kw):
    mean = x.mean(-1, keepdims=True)
    y = (x - mean) / np.sqrt(((x - mean) ** 2).mean(-1, keepdims=True) + eps)
    return C * (1 - k * y) * y


def _rms_oracle(x, p, eps, **kw):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * p["weight"]


def _bn_oracle(x, p, eps, **kw):
    C = x.shape[1]
    per_channel = (1, C) + (1,) * (x.ndim - 2)
    if _bn_training(x.shape):
        axes = (0,) + tuple(range(2, x.ndim))
        mean = x.mean(axis=axes, keepdims=True)
        var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    else:
        mean, var = p["running_mean"].reshape(per_channel), p["running_var"].reshape(per_channel)
    y = (x - mean) / np.sqrt(var + eps)
    return y * p["weight"].reshape(per_channel) + p["bias"].reshape(per_channel)


def _gn_rows(x, num_groups):
    """x (N, C, *) as (N·G, C/G·S): one row per (sample, group). Sizes spelled out: -1 fails when N = 0."""
    N, C = x.shape[:2]
    return x.reshape(N * num_groups, C // num_groups * math.prod(x.shape[2:]))


def _gn_oracle(x, p, eps, *, num_groups, **kw):
    C = x.shape[1]
    rows = _gn_rows(x, num_groups)
    mean = rows.mean(-1, keepdims=True)
    var = ((rows - mean) ** 2).mean(-1, keepdims=True)
    y = ((rows - mean) / np.sqrt(var + eps)).reshape(x.shape)
    per_channel = (1, C) + (1,) * (x.ndim - 2)
    return y * p["weight"].reshape(per_channel) + p["bias"].reshape(per_channel)


def _wn_oracle(v, p, eps, **kw):
    return p["g"][:, None] * v / np.sqrt((v * v).sum(axis=1, keepdims=True))


def _max_rstd(rows, eps) -> float:
    """The largest 1/√(σ² + ε) over the rows of a (rows, features) float64 array (0 when there are none)."""
    if rows.size == 0:
        return 0.0
    return float((1.0 / np.sqrt(rows.var(axis=-1) + eps)).max())


def _abs_max(a) -> float:
    return float(np.abs(a).max(initial=0.0))


# The largest coefficient of the leading term of each backward formula (∂y/∂x with the statistics held
# fixed: rstd·γ for LayerNorm, rrms·γ for RMSNorm, g/‖v‖ for WeightNorm, ...). Every gradient entry is a sum
# of terms of about this size times |dy|, so rounding errors are measured against it (see _term_scale).
def _gain(p) -> float:
    """The largest |γ|, 1 without one (the fuzz drops parameters)."""
    return _abs_max(p["weight"]) if p.get("weight") is not None else 1.0


def _ln_scale(x, p, eps, **kw):
    return _max_rstd(x.reshape(-1, x.shape[-1]), eps) * _gain(p)


def _ada_scale(x, p, eps, *, C=1.5, k=0.1, **kw):
    y = _ada_oracle(x, p, eps, C=1.0, k=0.0)  # with C = 1, k = 0, AdaNorm is y = x̂ itself
    return _max_rstd(x.reshape(-1, x.shape[-1]), eps) * C * (1 + k * _abs_max(y))  # |φ| ≤ C(1 + k|y|)


def _rms_scale(x, p, eps, **kw):
    rows = x.reshape(-1, x.shape[-1])
    rrms = 1.0 / np.sqrt((rows * rows).mean(axis=-1) + eps) if rows.size else np.zeros(0)
    return _abs_max(rrms) * _gain(p)


def _bn_scale(x, p, eps, training=None, **kw):
    channels = np.moveaxis(x, 1, 0).reshape(x.shape[1], -1)  # (C, N·L)
    if _bn_training(x.shape) if training is None else training:
        return _max_rstd(channels, eps) * _gain(p)
    return _abs_max(1.0 / np.sqrt(p["running_var"] + eps)) * _gain(p)


def _gn_scale(x, p, eps, *, num_groups, **kw):
    return _max_rstd(_gn_rows(x, num_groups), eps) * _gain(p)


def _wn_scale(v, p, eps, **kw):
    return _abs_max(p["g"] / np.sqrt((v * v).sum(axis=1))) if v.size else 0.0


def _bn_training(shape) -> bool:
    """BatchNorm normalizes with batch statistics, except with one value per channel (then: running stats)."""
    return shape[0] * math.prod(shape[2:]) != 1


def _bn_call(x, p, impl, eps, training=None, **kw):
    training = _bn_training(x.shape) if training is None else training
    return F.batch_norm(x, p.get("running_mean"), p.get("running_var"), p.get("weight"), p.get("bias"),
                        training=training, eps=eps, impl=impl)  # fmt: skip


def _row_masks(shape, index, **kw):
    """LayerNorm, AdaNorm, RMSNorm: a row is x[n]; dweight sums every row, dbias = Σ dy never sees x."""
    y = np.zeros(shape, bool)
    y[index[0]] = True
    return {"y": y, "dx": y, "dweight": np.ones(shape[-1], bool), "dbias": np.zeros(shape[-1], bool)}


def _channel_masks(shape, index, **kw):
    """BatchNorm: a "row" is a channel x[:, c]; its statistics, γ_c gradient and running stats are its own."""
    C = shape[1]
    y = np.zeros(shape, bool)
    y[:, index[1]] = True
    one = np.zeros(C, bool)
    one[index[1]] = True
    return {"y": y, "dx": y, "dweight": one, "dbias": np.zeros(C, bool), "running_mean": one, "running_var": one}


def _group_masks(shape, index, *, num_groups, **kw):
    """GroupNorm: a row is one (sample, group); γ_c, β_c gradients sum over samples, per channel."""
    C = shape[1]
    per_group = C // num_groups
    channels = slice(index[1] // per_group * per_group, (index[1] // per_group + 1) * per_group)
    y = np.zeros(shape, bool)
    y[index[0], channels] = True
    group = np.zeros(C, bool)
    group[channels] = True
    return {"y": y, "dx": y, "dweight": group, "dbias": np.zeros(C, bool)}


def _weight_norm_masks(shape, index, **kw):
    """WeightNorm (dim=0): a row is v[r]; g[r] belongs to it."""
    y = np.zeros(shape, bool)
    y[index[0]] = True
    one = np.zeros(shape[0], bool)
    one[index[0]] = True
    return {"y": y, "dx": y, "dg": one}


@dataclass(frozen=True)
class Norm:
    name: str
    call: Callable  # (x: Tensor, params: dict, impl, eps, **kw) -> Tensor
    param_shapes: Callable  # x shape -> {name: shape}; running statistics are plain arrays, not Tensors
    oracle: Callable  # (x64, params64, eps, **kw) -> y64
    grad_scale: Callable  # (x64, params64, eps, **kw) -> size of ∂y/∂x with the statistics held fixed
    masks: Callable  # (x shape, index of a poisoned element, **kw) -> {output: where it may be non-finite}
    row_axis: int  # rows (channels for BatchNorm) are independent along this axis
    shapes: dict  # case -> x shape: "base", "H1" (one value per row), "N0" (no rows)
    kw: dict = field(default_factory=dict)  # fixed keyword arguments (num_groups)


def _ln_call(x, p, impl, eps, **kw):
    return F.layer_norm(x, x.shape[-1], p.get("weight"), p.get("bias"), eps, impl=impl)


def _ada_call(x, p, impl, eps, **kw):
    return F.ada_norm(x, x.shape[-1], C=1.5, k=0.1, eps=eps, impl=impl)


def _rms_call(x, p, impl, eps, **kw):
    return F.rms_norm(x, x.shape[-1], p.get("weight"), eps, impl=impl)


def _gn_call(x, p, impl, eps, *, num_groups, **kw):
    return F.group_norm(x, num_groups, p.get("weight"), p.get("bias"), eps, impl=impl)


def _wn_call(v, p, impl, eps, **kw):
    return F.weight_norm(v, p["g"], dim=0, impl=impl)  # WeightNorm has no ε


ROW_SHAPES = {"base": (5, 16), "H1": (5, 1), "N0": (0, 16)}  # (N, H); H1: one value per row; N0: no rows
NORMS = {
    norm.name: norm
    for norm in [
        Norm(name="layer_norm", call=_ln_call, oracle=_ln_oracle, grad_scale=_ln_scale, masks=_row_masks,
             param_shapes=lambda s: {"weight": s[-1:], "bias": s[-1:]}, row_axis=0, shapes=ROW_SHAPES),
        Norm(name="ada_norm", call=_ada_call, oracle=_ada_oracle, grad_scale=_ada_scale, masks=_row_masks,
             param_shapes=lambda s: {}, row_axis=0, shapes=ROW_SHAPES),
        Norm(name="rms_norm", call=_rms_call, oracle=_rms_oracle, grad_scale=_rms_scale, masks=_row_masks,
             param_shapes=lambda s: {"weight": s[-1:]}, row_axis=0, shapes=ROW_SHAPES),
        # BatchNorm's "H = 1" is one value per channel, which only evaluation mode (running statistics) allows.
        Norm(name="batch_norm", call=_bn_call, oracle=_bn_oracle, grad_scale=_bn_scale, masks=_channel_masks,
             param_shapes=lambda s: {"weight": s[1:2], "bias": s[1:2], "running_mean": s[1:2], "running_var": s[1:2]},
             row_axis=1, shapes={"base": (6, 3, 4), "H1": (1, 3), "N0": (0, 3, 4)}),
        # GroupNorm's rows are (sample, group) pairs; with one value per channel (H1) every channel is a group.
        Norm(name="group_norm", call=_gn_call, oracle=_gn_oracle, grad_scale=_gn_scale, masks=_group_masks,
             param_shapes=lambda s: {"weight": s[1:2], "bias": s[1:2]}, row_axis=0,
             shapes={"base": (5, 4, 3), "H1": (5, 2, 1), "N0": (0, 4, 3)}, kw={"num_groups": 2}),
        # WeightNorm (dim=0): "H = 1" is a v with one column, "N = 0" a v with no rows.
        Norm(name="weight_norm", call=_wn_call, oracle=_wn_oracle, grad_scale=_wn_scale, masks=_weight_norm_masks,
             param_shapes=lambda s: {"g": s[:1]}, row_axis=0, shapes=ROW_SHAPES),
    ]
}  # fmt: skip
STATE = ("running_mean", "running_var")  # passed as arrays and updated in place, not Tensors


def _kw(norm: Norm, shape) -> dict:
    kw = dict(norm.kw)
    if norm.name == "group_norm" and math.prod(shape[2:]) == 1:
        kw["num_groups"] = shape[1]  # one value per (sample, group): InstanceNorm of single values
    return kw


def _params(norm: Norm, rng, shape, dtype) -> dict[str, np.ndarray]:
    params = {}
    for name, pshape in norm.param_shapes(shape).items():
        if name == "running_var":
            params[name] = rng.uniform(0.5, 2.0, pshape).astype(dtype)
        else:
            params[name] = (rng.standard_normal(pshape) + (1.0 if name in ("weight", "g") else 0.0)).astype(dtype)
    return params


def _run(norm: Norm, x, params, impl, *, eps=1e-5, dy=None, kw=None, share=False) -> dict[str, np.ndarray]:
    """Forward and backward: {"y", "dx", "d<param>", and the running statistics after the call}.

    `share=True` wraps the given arrays as they are (npnorm.Tensor: any layout) instead of copying them.
    """
    kw = _kw(norm, x.shape) if kw is None else kw
    wrap = npnorm.Tensor if share else npnorm.tensor
    xt = wrap(x, requires_grad=True)
    p = {k: (v.copy() if k in STATE else wrap(v, requires_grad=True)) for k, v in params.items()}
    y = norm.call(xt, p, impl, eps, **kw)
    out = {"y": y.data}
    if dy is None:
        dy = np.random.default_rng(7).standard_normal(y.shape).astype(y.dtype)
    y.backward(dy)
    out["dx"] = xt.grad
    for k, v in p.items():
        out[k if k in STATE else "d" + k] = v if k in STATE else v.grad
    return out


def _oracle_grads(norm: Norm, x, params, *, eps, dy, kw) -> dict[str, np.ndarray]:
    """The gradient the engine derives for the composed form, in float64: the second oracle."""
    x64 = x.astype(np.float64)
    p64 = {k: v.astype(np.float64) for k, v in params.items()}
    return _run(norm, x64, p64, "composed", eps=eps, dy=dy.astype(np.float64), kw=kw)


def _close(actual, desired, rtol, what, floor=0.0):
    """Relative to the largest value of `desired` (at least `floor`), so that near-zero entries of O(1)
    outputs pass."""
    scale = max(float(np.abs(desired).max(initial=0.0)), floor)
    np.testing.assert_allclose(actual, desired, rtol=rtol, atol=rtol * scale, err_msg=what)


def _term_scale(norm: Norm, x, params, eps, dy, kw) -> float:
    """|dy| times the leading coefficient of the backward formula: the size of the terms dx is summed from.

    Where dx cancels to (nearly) 0 by structure — H = 1, two values per BatchNorm channel, a huge RMSNorm
    row whose 1 − x̂² is ε/(ms + ε) — each implementation returns its own rounding noise of about
    (unit roundoff × this size), so dx is compared with a tolerance relative to it, not to the vanishing dx.
    """
    p64 = {k: v.astype(np.float64) for k, v in params.items()}
    return _abs_max(dy) * norm.grad_scale(x.astype(np.float64), p64, eps, **kw)


# ============================================================== 1. Bad input gets a clear error, and nothing is lost

X = np.random.default_rng(0).standard_normal((4, 6))  # (N, H) for the row norms, (N, C) for BatchNorm
X3 = np.random.default_rng(1).standard_normal((4, 6, 2))  # (N, C, L)
RM, RV = np.zeros(6), np.ones(6)

# (function, what is wrong, call(impl), what the message must contain besides the function's name)
_INPUT = r"\b(x|input)\b"  # the name of the input argument
_S = re.escape  # shapes in messages: "(5,)" as a regular expression
BAD_CALLS = [
    ("layer_norm", "normalized_shape", lambda i: F.layer_norm(X, 5, impl=i),
     ["normalized_shape", _S("(5,)"), _S("(4, 6)")]),
    ("layer_norm", "weight shape", lambda i: F.layer_norm(X, 6, np.ones(5), impl=i),
     ["weight", _S("(5,)"), _S("(6,)")]),
    ("layer_norm", "bias shape", lambda i: F.layer_norm(X, 6, None, np.ones((6, 1)), impl=i),
     ["bias", _S("(6, 1)"), _S("(6,)")]),
    ("layer_norm", "eps < 0", lambda i: F.layer_norm(X, 6, eps=-1e-5, impl=i), ["eps", "-1e-05"]),
    ("layer_norm", "complex input", lambda i: F.layer_norm(X.astype(complex), 6, impl=i), [_INPUT, "complex128"]),
    ("layer_norm", "object input", lambda i: F.layer_norm(X.astype(object), 6, impl=i), [_INPUT, "object"]),
    ("layer_norm", "string input", lambda i: F.layer_norm(np.array([["a", "b"]]), 2, impl=i), [_INPUT, "<U1"]),
    ("layer_norm", "complex weight", lambda i: F.layer_norm(X, 6, np.ones(6, complex), impl=i),
     ["weight", "complex128"]),
    ("ada_norm", "normalized_shape", lambda i: F.ada_norm(X, (4, 6, 1), impl=i),
     ["normalized_shape", _S("(4, 6, 1)"), _S("(4, 6)")]),
    ("ada_norm", "eps < 0", lambda i: F.ada_norm(X, 6, eps=-1.0, impl=i), ["eps", "-1.0"]),
    ("ada_norm", "C not finite", lambda i: F.ada_norm(X, 6, C=float("nan"), impl=i), [r"\bC\b", "nan"]),
    ("ada_norm", "complex input", lambda i: F.ada_norm(X.astype(complex), 6, impl=i), [_INPUT, "complex128"]),
    ("rms_norm", "normalized_shape", lambda i: F.rms_norm(X, (3, 6), impl=i),
     ["normalized_shape", _S("(3, 6)"), _S("(4, 6)")]),
    ("rms_norm", "weight shape", lambda i: F.rms_norm(X, 6, np.ones((6, 1)), impl=i),
     ["weight", _S("(6, 1)"), _S("(6,)")]),
    ("rms_norm", "eps < 0", lambda i: F.rms_norm(X, 6, eps=-0.5, impl=i), ["eps", "-0.5"]),
    ("rms_norm", "object input", lambda i: F.rms_norm(X.astype(object), 6, impl=i), [_INPUT, "object"]),
    ("batch_norm", "weight shape", lambda i: F.batch_norm(X3, RM, RV, np.ones(5), impl=i),
     ["weight", _S("(5,)"), _S("(6,)")]),
    ("batch_norm", "bias shape", lambda i: F.batch_norm(X3, RM, RV, None, np.ones(7), impl=i),
     ["bias", _S("(7,)"), _S("(6,)")]),
    ("batch_norm", "running_mean shape", lambda i: F.batch_norm(X3, np.zeros(5), RV, impl=i),
     ["running_mean", _S("(5,)"), _S("(6,)")]),
    ("batch_norm", "running_var shape", lambda i: F.batch_norm(X3, RM, np.ones((6, 1)), impl=i),
     ["running_var", _S("(6, 1)"), _S("(6,)")]),
    ("batch_norm", "momentum > 1", lambda i: F.batch_norm(X3, RM, RV, training=True, momentum=1.5, impl=i),
     ["momentum", "1.5"]),
    ("batch_norm", "momentum < 0", lambda i: F.batch_norm(X3, RM, RV, training=True, momentum=-0.1, impl=i),
     ["momentum", "-0.1"]),
    ("batch_norm", "eps < 0", lambda i: F.batch_norm(X3, RM, RV, eps=-1e-3, impl=i), ["eps", "-0.001"]),
    ("batch_norm", "1-d input", lambda i: F.batch_norm(X[0], RM, RV, impl=i), [_INPUT, _S("(6,)")]),
    ("batch_norm", "complex input", lambda i: F.batch_norm(X3.astype(complex), RM, RV, impl=i),
     [_INPUT, "complex128"]),
    ("group_norm", "num_groups does not divide C", lambda i: F.group_norm(X3, 4, impl=i),
     ["num_groups", r"\b4\b", r"\b6\b"]),
    ("group_norm", "num_groups = 0", lambda i: F.group_norm(X3, 0, impl=i), ["num_groups", r"\b0\b"]),
    ("group_norm", "weight shape", lambda i: F.group_norm(X3, 3, np.ones(3), impl=i),
     ["weight", _S("(3,)"), _S("(6,)")]),
    ("group_norm", "eps < 0", lambda i: F.group_norm(X3, 3, eps=-2.0, impl=i), ["eps", "-2.0"]),
    ("group_norm", "string input", lambda i: F.group_norm(np.array([["a", "b"]]), 1, impl=i), [_INPUT, "<U1"]),
    ("weight_norm", "g shape", lambda i: F.weight_norm(X, np.ones(3), impl=i), [r"\bg\b", _S("(3,)"), _S("(4,)")]),
    ("weight_norm", "dim out of range", lambda i: F.weight_norm(X, np.ones(4), dim=2, impl=i), ["dim", r"\b2\b"]),
    ("weight_norm", "complex v", lambda i: F.weight_norm(X.astype(complex), np.ones(4), impl=i),
     [r"\bv\b", "complex128"]),
    ("weight_norm", "object g", lambda i: F.weight_norm(X, np.ones(4, object), impl=i), [r"\bg\b", "object"]),
]  # fmt: skip

# Functions without an implementation choice.
BAD_CALLS_NO_IMPL = [
    ("cross_entropy", "class >= C", lambda: F.cross_entropy(X, np.array([0, 1, 6, 2])),
     ["target", r"\b6\b", _S("[0, 6)")]),
    ("cross_entropy", "class < 0", lambda: F.cross_entropy(X, np.array([0, -1, 2, 2])),
     ["target", "-1", _S("[0, 6)")]),
    ("cross_entropy", "non-integer class", lambda: F.cross_entropy(X, np.array([0, 1.5, 2, 3])),
     ["target", "integer"]),
    ("cross_entropy", "string classes", lambda: F.cross_entropy(X, np.array(list("abcd"))), ["target", "<U1"]),
    ("cross_entropy", "target shape", lambda: F.cross_entropy(X, np.array([0, 1])),
     ["target", _S("(2,)"), _S("(4,)")]),
    ("cross_entropy", "complex logits", lambda: F.cross_entropy(X.astype(complex), np.zeros(4, int)),
     ["logits", "complex128"]),
    ("dropout", "p < 0", lambda: F.dropout(X, -0.1), [r"\bp\b", "-0.1"]),
    ("dropout", "p > 1", lambda: F.dropout(X, 1.5), [r"\bp\b", "1.5"]),
]  # fmt: skip


def _assert_clear_error(excinfo, who: str, must: list[str]) -> None:
    exc = excinfo.value
    # Never an IndexError/AttributeError/KeyError or a Numba typing error reaching the user.
    assert isinstance(exc, (ValueError, TypeError)), f"{type(exc).__module__}.{type(exc).__name__}: {exc}"
    assert not isinstance(exc, (IndexError, AttributeError, KeyError)), repr(exc)
    assert not type(exc).__module__.startswith("numba"), repr(exc)
    message = str(exc)
    assert re.search(rf"\b{who}\b", message), f"the message does not name {who!r}: {message!r}"
    for pattern in must:
        assert re.search(pattern, message), f"the message lacks {pattern!r}: {message!r}"


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("who,what,call,must", BAD_CALLS, ids=[f"{c[0]}-{c[1]}" for c in BAD_CALLS])
def test_bad_norm_argument_raises_a_clear_error(who, what, call, must, impl):
    """Row: every norm × impl validates at its boundary; ValueError/TypeError naming function, argument, values."""
    with pytest.raises(Exception) as excinfo:
        call(impl)
    _assert_clear_error(excinfo, who, must)


@pytest.mark.parametrize("who,what,call,must", BAD_CALLS_NO_IMPL, ids=[f"{c[0]}-{c[1]}" for c in BAD_CALLS_NO_IMPL])
def test_bad_loss_or_dropout_argument_raises_a_clear_error(who, what, call, must):
    """Row: out-of-range or non-integer class targets (cross_entropy), p outside [0, 1] for dropout."""
    with pytest.raises(Exception) as excinfo:
        call()
    _assert_clear_error(excinfo, who, must)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("norm", NORMS)
def test_backward_with_a_grad_of_the_wrong_shape_raises_a_clear_error(norm, impl):
    """Row: a `grad` of the wrong shape in backward is a ValueError naming both shapes."""
    norm = NORMS[norm]
    rng = np.random.default_rng(0)
    shape = norm.shapes["base"]
    p = {k: (v if k in STATE else npnorm.tensor(v)) for k, v in _params(norm, rng, shape, np.float64).items()}
    x = npnorm.tensor(rng.standard_normal(shape), requires_grad=True)
    y = norm.call(x, p, impl, 1e-5, **_kw(norm, shape))
    bad = shape[:-1] + (shape[-1] + 1,)
    with pytest.raises(Exception) as excinfo:
        y.backward(np.ones(bad))
    _assert_clear_error(excinfo, "backward", ["grad", re.escape(str(bad)), re.escape(str(shape))])
    assert x.grad is None  # nothing was accumulated


def _float64_case(norm: str, seed: int):
    """The norm's base case in float64: (Norm, x shape, keyword arguments, the generator, x, parameters)."""
    n = NORMS[norm]
    shape = n.shapes["base"]
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    return n, shape, _kw(n, shape), rng, x, _params(n, rng, shape, np.float64)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("norm", NORMS)
def test_float64_statistics_that_would_overflow_raise_a_clear_error(norm, impl):
    """Row: a finite float64 row (BatchNorm: channel) whose values reach beyond ~1e154 overflows its variance
    (mean square, squared norm), and normalized by that it would come out 0 (LayerNorm: β): a clear
    OverflowError instead. At 1e150 the statistics still fit, and the row normalizes exactly as unscaled
    (with eps = 0 every norm here is invariant to scaling a row)."""
    n, shape, kw, rng, x, params = _float64_case(norm, seed=11)
    row = tuple(1 if axis == n.row_axis else slice(None) for axis in range(len(shape)))

    def forward(data):
        p = {k: (v.copy() if k in STATE else npnorm.tensor(v)) for k, v in params.items()}
        with np.errstate(over="ignore"):  # the NumPy reference overflows on the way to the error
            return n.call(npnorm.tensor(data), p, impl, 0.0, **kw).data

    plain = forward(x)
    scaled = x.copy()
    scaled[row] *= 1e150
    np.testing.assert_allclose(forward(scaled), plain, rtol=1e-12, atol=1e-12)
    scaled[row] *= 1e10  # 1e160: its square is beyond float64
    stat = "(variance|mean square|squared norm)"
    with pytest.raises(OverflowError, match=rf"^{norm}: the {stat} of .* overflows float64"):
        forward(scaled)
    scaled[row] *= 1e40  # 1e200: the mean's own rounding squared overflows too (inf - inf gave NaN, no error)
    with pytest.raises(OverflowError, match=rf"^{norm}: the {stat} of .* overflows float64"):
        forward(scaled)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("shape", [(3, 2), (70_000, 2), (3, 2, 5), (9_000, 2, 8)], ids=str)
def test_batch_norm_statistics_that_would_overflow_leave_the_running_statistics_alone(shape, impl):
    """Row: BatchNorm in training, one channel spread to 1e200 (several chunks at the larger shapes): the
    OverflowError comes before the running statistics change (they were overwritten with NaN)."""
    x = np.random.default_rng(5).standard_normal(shape)
    x[:, 1] *= 1e200
    running_mean, running_var = np.zeros(2), np.ones(2)
    with pytest.raises(OverflowError, match="^batch_norm: the variance of channel 1 overflows float64"):
        with np.errstate(over="ignore"):
            F.batch_norm(npnorm.tensor(x), running_mean, running_var, training=True, impl=impl)
    np.testing.assert_array_equal(running_mean, [0.0, 0.0])
    np.testing.assert_array_equal(running_var, [1.0, 1.0])


@pytest.mark.parametrize("scale", [1e110, 1e-100])
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("norm", NORMS)
def test_gradients_at_extreme_but_representable_scales_are_the_scaled_gradients(norm, impl, scale):
    """Row: with eps = 0 each norm is invariant to scaling a row (channel), so dx(s·x) = dx(x) / s and the
    parameter gradients do not change. The composed impls once formed (var + eps)^-1.5 on the way back, which
    overflows from a spread of ~1e102 (and underflows below ~1e-103) where the gradient is an ordinary number."""
    n, shape, kw, rng, x, params = _float64_case(norm, seed=12)
    dy = rng.standard_normal(shape)
    plain = _run(n, x, params, impl, eps=0.0, dy=dy, kw=kw)
    scaled = _run(n, x * scale, params, impl, eps=0.0, dy=dy, kw=kw)
    np.testing.assert_allclose(scaled["dx"] * scale, plain["dx"], rtol=1e-9, atol=1e-12 * np.abs(plain["dx"]).max())
    for key in plain:
        if key.startswith("d") and key != "dx":
            np.testing.assert_allclose(scaled[key], plain[key], rtol=1e-9, atol=1e-12, err_msg=key)


@pytest.mark.parametrize("impl", IMPLS)
def test_batch_norm_evaluation_in_float32_is_computed_in_float64(impl):
    """(x - mean) * rstd of a float32 x spread near float32's range: finite in float64 and in the result."""
    x = np.array([[3e38], [1.0]], np.float32)
    y = F.batch_norm(x, np.array([-3e38], np.float32), np.array([3e38], np.float32), training=False, impl=impl).data
    expected = ((x.astype(np.float64) + 3e38) / np.sqrt(np.float64(np.float32(3e38)) + 1e-5)).astype(np.float32)
    np.testing.assert_allclose(y, expected, rtol=1e-6)


def _read_only(a: np.ndarray) -> np.ndarray:
    a = a.copy()
    a.flags.writeable = False
    return a


LAYOUTS = {
    "transposed memory": lambda a: np.moveaxis(np.moveaxis(a, 0, -1).copy(), -1, 0),
    "Fortran order": np.asfortranarray,
    "strided view": lambda a: np.repeat(a, 2, axis=-1)[..., ::2],
    "big-endian": lambda a: a.astype(a.dtype.newbyteorder(">")),
    "read-only": _read_only,
}


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("norm", NORMS)
def test_unusual_but_valid_arrays_are_accepted(norm, impl, layout):
    """Row: never a Numba typing error reaching the user — input and parameters that are non-contiguous,
    Fortran-ordered, strided views, big-endian or read-only give the result of plain arrays: bit for bit on
    the kernels and the reference (they copy to C order first); for "composed" to rounding, because NumPy's
    own reductions add in an order that follows the memory layout."""
    norm = NORMS[norm]
    rng = np.random.default_rng(9)
    shape = norm.shapes["base"]
    x = rng.standard_normal(shape)
    params = _params(norm, rng, shape, np.float64)
    dy = rng.standard_normal(shape)
    expected = _run(norm, x, params, impl, dy=dy)
    odd = {k: (v if k in STATE else LAYOUTS[layout](v)) for k, v in params.items()}
    got = _run(norm, LAYOUTS[layout](x), odd, impl, dy=LAYOUTS[layout](dy), share=True)
    for key, value in expected.items():
        if impl == "composed":
            _close(got[key], value, 1e-13, key)
        else:
            np.testing.assert_array_equal(got[key], value, err_msg=key)


@pytest.mark.parametrize("kind", ["int64", "int8", "uint16", "bool"])
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("norm", NORMS)
def test_integer_and_boolean_inputs_are_cast_to_float64(norm, impl, kind):
    """Row: integer and boolean inputs are cast to float64 (as NumPy would)."""
    norm = NORMS[norm]
    rng = np.random.default_rng(1)
    shape = norm.shapes["base"]
    if kind == "bool":
        x = rng.random(shape) < 0.5
        x.reshape(-1, shape[-1])[:, 0] = True  # no all-zero row: WeightNorm refuses a v row of norm 0
    else:
        x = rng.integers(1, 50, shape).astype(kind)
    params = _params(norm, rng, shape, np.float64)
    kw = _kw(norm, shape)
    p = {k: (v.copy() if k in STATE else npnorm.tensor(v)) for k, v in params.items()}
    y = norm.call(npnorm.Tensor(x), p, impl, 1e-5, **kw)
    p64 = {k: (v.copy() if k in STATE else npnorm.tensor(v)) for k, v in params.items()}
    expected = norm.call(npnorm.tensor(x.astype(np.float64)), p64, impl, 1e-5, **kw)
    assert y.dtype == np.float64
    np.testing.assert_array_equal(y.data, expected.data)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("norm", NORMS)
def test_float16_input_is_computed_and_returned_in_float32(norm, impl):
    """Row: float16 input. The catalogue asks for a float16 result, but a Tensor holds only float32 or
    float64 (the API contract in DESIGN.md), so "returned as float16" cannot hold: float16 becomes float32
    at the Tensor boundary. We test that documented behaviour: computed in float32, result float32, values
    equal to the float32 computation, gradients float32 too."""
    norm = NORMS[norm]
    rng = np.random.default_rng(2)
    shape = norm.shapes["base"]
    x16 = (rng.standard_normal(shape) * 4).astype(np.float16)
    params = _params(norm, rng, shape, np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    got = _run(norm, x16, params, impl, dy=dy)
    expected = _run(norm, x16.astype(np.float32), params, impl, dy=dy)
    for key, value in expected.items():
        assert got[key].dtype == np.float32, key
        np.testing.assert_array_equal(got[key], value, err_msg=key)


def _fail_at_last_apply(monkeypatch, run) -> None:
    """Make the last autograd Function.apply of `run()` raise: a failure deep inside a call, as late as it gets."""
    original = Function.__dict__["apply"].__func__
    calls = []

    def counting(cls, *args, **kwargs):
        calls.append(cls)
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(Function, "apply", classmethod(counting))
    run()
    last = len(calls)
    calls.clear()

    def failing(cls, *args, **kwargs):
        calls.append(cls)
        if len(calls) == last:
            raise MemoryError(f"simulated failure inside {cls.__name__}.forward")
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(Function, "apply", classmethod(failing))


BN_FAILURES = {
    "weight shape": lambda x, s, i: F.batch_norm(x, *s, weight=np.ones(4), training=True, impl=i),
    "bias dtype": lambda x, s, i: F.batch_norm(x, *s, bias=np.zeros(3, np.float32), training=True, impl=i),
    "momentum": lambda x, s, i: F.batch_norm(x, *s, training=True, momentum=2.0, impl=i),
    "eps": lambda x, s, i: F.batch_norm(x, *s, training=True, eps=-1.0, impl=i),
    "bad num_batches_tracked": lambda x, s, i: F.batch_norm(x, *s, training=True, momentum=None,
                                                            num_batches_tracked=np.zeros(1, np.int32), impl=i),
    # running_var read-only: running_mean (writable, checked first) must not be updated alone
    "read-only running_var": lambda x, s, i: F.batch_norm(x, s[0], _read_only(s[1]), training=True, impl=i),
}  # fmt: skip


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", [*BN_FAILURES, "failure inside the forward", "module: wrong channels",
                                  "module: wrong dtype"])  # fmt: skip
def test_failed_batch_norm_call_leaves_running_stats_untouched(case, impl, monkeypatch):
    """Row: a failed call leaves module state untouched — BatchNorm running statistics after a failing call."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((8, 3, 2)) + 5.0
    stats = (rng.standard_normal(3), rng.uniform(1, 2, 3))
    before = [s.copy() for s in stats]
    if case.startswith("module"):
        bn = nn.BatchNorm1d(3, dtype=np.float64, impl=impl)
        bn.running_mean[...], bn.running_var[...] = stats
        bn(x)  # one good step, so that the buffers are not at their initial values
        before = {k: v.copy() for k, v in bn.state_dict().items()}
        bad = rng.standard_normal((8, 4)) if case.endswith("channels") else x.astype(np.float32)
        with pytest.raises((ValueError, TypeError), match="BatchNorm1d|batch_norm"):
            bn(bad)
        for key, value in bn.state_dict().items():
            np.testing.assert_array_equal(value, before[key], err_msg=key)
        return
    if case == "failure inside the forward":
        _fail_at_last_apply(monkeypatch, lambda: F.batch_norm(x, *[s.copy() for s in stats], training=True, impl=impl))
        with pytest.raises(MemoryError, match="simulated"):
            F.batch_norm(x, *stats, training=True, impl=impl)
    else:
        with pytest.raises((ValueError, TypeError), match="batch_norm"):
            BN_FAILURES[case](x, stats, impl)
    for name, stat, old in zip(("running_mean", "running_var"), stats, before):
        np.testing.assert_array_equal(stat, old, err_msg=name)


def _model(seed: int) -> nn.Module:
    npnorm.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    model(np.random.default_rng(seed).standard_normal((5, 4)).astype(np.float32))  # move the running stats
    return model


STATE_DICT_DAMAGE = {
    "last entry wrong shape": lambda sd: sd.__setitem__("4.bias", np.zeros(4, np.float32)),
    "complex value": lambda sd: sd.__setitem__("4.weight", sd["4.weight"].astype(complex)),
    "object value": lambda sd: sd.__setitem__("2.running_var", np.array([None] * 8)),
    "missing key": lambda sd: sd.pop("4.bias"),
    "unexpected key": lambda sd: sd.__setitem__("5.weight", np.ones(3, np.float32)),
}


@pytest.mark.parametrize("damage", STATE_DICT_DAMAGE)
def test_failed_load_state_dict_leaves_parameters_untouched(damage):
    """Row: a failed call leaves module state untouched — parameters and buffers after a failed load_state_dict."""
    model, other = _model(0), _model(1)
    before = model.state_dict()
    sd = other.state_dict()
    STATE_DICT_DAMAGE[damage](sd)
    key = {"missing key": "4.bias", "unexpected key": "5.weight"}.get(damage)
    with pytest.raises((RuntimeError, ValueError, TypeError)) as excinfo:
        model.load_state_dict(sd)
    if key is not None:
        assert key in str(excinfo.value)
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[name], err_msg=name)


def _trained_optimizer(kind: str, seed: int = 0):
    model = _model(seed)
    params = list(model.parameters())
    opt = optim.Adam(params, lr=1e-2) if kind == "Adam" else optim.SGD(params, lr=0.1, momentum=0.9, nesterov=True)
    x = np.random.default_rng(seed).standard_normal((6, 4)).astype(np.float32)
    for _ in range(2):
        opt.zero_grad()
        F.cross_entropy(model(x), np.arange(6) % 3).backward()
        opt.step()
    return model, opt, x


def _damage_last_state(sd: dict) -> None:
    key = [k for k in sd if k.startswith("state.") and sd[k].ndim >= 1][-1]
    sd[key] = np.zeros(sd[key].shape + (2,), sd[key].dtype)


OPTIMIZER_DAMAGE = {
    "last state entry wrong shape": _damage_last_state,
    "missing option": lambda sd: sd.pop("param_groups.0.lr"),
    "negative lr": lambda sd: sd.__setitem__("param_groups.0.lr", np.array(-1.0)),
    "extra group": lambda sd: sd.__setitem__("param_groups.1.lr", np.array(0.1)),
    "unknown key": lambda sd: sd.__setitem__("state.0.momentum_buffer_v2", np.zeros(3)),
}


@pytest.mark.parametrize("damage", OPTIMIZER_DAMAGE)
@pytest.mark.parametrize("kind", ["Adam", "SGD"])
def test_failed_optimizer_load_state_dict_leaves_state_untouched(kind, damage):
    """Row: a failed call leaves module state untouched — optimizer state after a failed load_state_dict."""
    model, opt, x = _trained_optimizer(kind)
    twin_model, twin, _ = _trained_optimizer(kind)
    before = opt.state_dict()
    groups_before = copy.deepcopy([{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups])
    sd = opt.state_dict()
    OPTIMIZER_DAMAGE[damage](sd)
    with pytest.raises((ValueError, TypeError), match=kind):  # the message names the optimizer
        opt.load_state_dict(sd)
    after = opt.state_dict()
    assert sorted(after) == sorted(before)
    for key in before:
        np.testing.assert_array_equal(after[key], before[key], err_msg=key)
    assert [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups] == groups_before
    for m, o in ((model, opt), (twin_model, twin)):  # and the next step is the one it would have been
        o.zero_grad()
        F.cross_entropy(m(x), np.arange(6) % 3).backward()
        o.step()
    for (name, p), q in zip(model.named_parameters(), twin_model.parameters()):
        np.testing.assert_array_equal(p.data, q.data, err_msg=name)


# ============================================================================ 2. Hard numerics (each norm, each impl)

HARD = ["mean 1e4 std 1e-3", "huge 1e30", "tiny 1e-30", "constant rows", "H = 1"]


def _hard_input(case: str, rng, shape) -> tuple[np.ndarray, float]:
    """(float32 input, eps) for a hard case. ε = 0 where it is allowed to matter, so that it hides nothing."""
    z = rng.standard_normal(shape)
    if case == "mean 1e4 std 1e-3":
        return (1e4 + 1e-3 * z).astype(np.float32), 0.0  # E[x²] − E[x]² loses every digit here
    if case == "huge 1e30":
        return (1e30 * z).astype(np.float32), 0.0  # float32 σ² would be ~1e60: overflow
    if case == "tiny 1e-30":
        return (1e-30 * z).astype(np.float32), 0.0  # float32 σ² would be ~1e-60: underflow to 0
    if case == "constant rows":
        return np.full(shape, 3.25, np.float32), 1e-5  # σ = 0: ε keeps rstd finite
    return z.astype(np.float32), 1e-5  # "H = 1": shape has one value per row


@pytest.mark.parametrize("case", HARD)
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("norm", NORMS)
def test_hard_inputs_give_finite_correct_results(norm, impl, case):
    """Rows: mean 1e4 / std 1e-3 float32; huge values (1e30 float32: the variance must not overflow); tiny
    values (1e-30); constant rows; H = 1. Forward against the float64 formula, backward against the
    float64 composed gradient; everything finite and no floating-point warning on the way."""
    norm = NORMS[norm]
    rng = np.random.default_rng(4)
    shape = norm.shapes["H1" if case == "H = 1" else "base"]
    x, eps = _hard_input(case, rng, shape)
    if norm.name == "batch_norm" and case == "constant rows":
        x = np.broadcast_to(np.arange(1.0, 4.0, dtype=np.float32)[:, None], shape).copy()  # constant channels
    params = _params(norm, rng, shape, np.float32)
    if norm.name == "batch_norm" and _bn_training(shape):
        params = {k: v for k, v in params.items() if k not in STATE}  # no running stats to update
    kw = _kw(norm, shape)
    dy = rng.standard_normal(shape).astype(np.float32)
    with np.errstate(over="raise", invalid="raise", divide="raise"), warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        got = _run(norm, x, params, impl, eps=eps, dy=dy, kw=kw)
    expected_y = norm.oracle(x.astype(np.float64), {k: v.astype(np.float64) for k, v in params.items()}, eps, **kw)
    expected = _oracle_grads(norm, x, params, eps=eps, dy=dy, kw=kw)
    for key, value in got.items():
        assert value.dtype == np.float32, key
        assert np.all(np.isfinite(value)), f"{key} is not finite: {value}"
    _close(got["y"], expected_y, 1e-5, "y")
    term = _term_scale(norm, x, params, eps, dy, kw)
    for key in got:
        if key != "y" and key not in STATE:
            _close(got[key], expected[key], 1e-4, key, floor=term if key == "dx" else 0.0)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("norm", NORMS)
def test_zero_rows(norm, impl):
    """Row: zero rows (N = 0): empty output of the right shape, zero parameter gradients, nothing updated."""
    norm = NORMS[norm]
    rng = np.random.default_rng(5)
    shape = norm.shapes["N0"]
    params = _params(norm, rng, shape, np.float32)
    got = _run(norm, np.zeros(shape, np.float32), params, impl, dy=np.zeros(shape, np.float32))
    assert got["y"].shape == shape and got["y"].dtype == np.float32
    assert got["dx"].shape == shape
    for key, value in params.items():
        if key in STATE:  # an empty batch has no statistics: the running ones stay as they were
            np.testing.assert_array_equal(got[key], value, err_msg=key)
        else:
            assert got["d" + key].shape == value.shape
            np.testing.assert_array_equal(got["d" + key], 0, err_msg="d" + key)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("shape,num_groups", [((2, 4, 0), 2), ((1, 1, 0), 1), ((3, 2, 5, 0), 2)])
def test_group_norm_rows_of_zero_values(shape, num_groups, impl):
    """Row: zero rows, the other way round — GroupNorm on (N, C, 0): rows of no values (found by the fuzzer
    of section 5). Like N = 0: an empty output, zero parameter gradients, and no error or warning."""
    x = npnorm.tensor(np.zeros(shape, np.float32), requires_grad=True)
    w = npnorm.tensor(np.ones(shape[1], np.float32), requires_grad=True)
    b = npnorm.tensor(np.zeros(shape[1], np.float32), requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = F.group_norm(x, num_groups, w, b, impl=impl)
        y.backward(np.zeros(shape, np.float32))
    assert y.shape == shape and x.grad.shape == shape
    np.testing.assert_array_equal(w.grad, 0)
    np.testing.assert_array_equal(b.grad, 0)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("norm", NORMS)
def test_non_finite_value_stays_in_its_row(norm, impl, bad):
    """Row: NaN or ±inf in one row -> only that row non-finite, every other row exact, equal to computing
    those rows alone. For BatchNorm a "row" is a channel, for GroupNorm a (sample, group); sums over rows
    (LayerNorm's dweight) are poisoned as the math says, and dbias = Σ dy, which never sees x, stays exact."""
    norm = NORMS[norm]
    rng = np.random.default_rng(6)
    shape = norm.shapes["base"]
    kw = _kw(norm, shape)
    x = rng.standard_normal(shape)
    params = _params(norm, rng, shape, np.float64)
    dy = rng.standard_normal(shape)
    index = (3, 2) + (1,) * (len(shape) - 2)
    poisoned = x.copy()
    poisoned[index] = bad
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # the NumPy paths may say "invalid value"
        got = _run(norm, poisoned, params, impl, dy=dy, kw=kw)
    clean = _run(norm, x, params, impl, dy=dy, kw=kw)  # the same input with that one value finite
    masks = norm.masks(shape, index, **kw)
    for key in got:
        mask = masks[key]
        if key in ("y", "dx"):  # the poison shows in its row (IEEE may leave some entries finite: x/inf = 0)
            assert not np.all(np.isfinite(got[key][mask])), f"{key}: the poisoned row is all finite"
        # outside the poisoned row: bit for bit what the clean input gives
        np.testing.assert_array_equal(got[key][~mask], clean[key][~mask], err_msg=key)
    # and literally "those rows alone": drop the poisoned row (channel, sample) and compute again
    r = index[norm.row_axis]
    alone_params = {k: (np.delete(v, r) if norm.row_axis == 1 or k == "g" else v) for k, v in params.items()}
    alone = _run(norm, np.delete(x, r, axis=norm.row_axis), alone_params, impl,
                 dy=np.delete(dy, r, axis=norm.row_axis), kw=kw)  # fmt: skip
    for key in ("y", "dx"):
        np.testing.assert_array_equal(np.delete(got[key], r, axis=norm.row_axis), alone[key], err_msg=key)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_is_finite_for_huge_logits(dtype):
    """Row: cross_entropy finite for logits of ±1e4 (loss and gradient exact, no overflow warning)."""
    logits = npnorm.tensor(np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, -1e4], [1e4, 1e4, -1e4]]), dtype=dtype,
                           requires_grad=True)  # fmt: skip
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        loss = F.cross_entropy(logits, np.array([0, 0, 1]), reduction="none")
        loss.sum().backward()
    np.testing.assert_allclose(loss.data, [0.0, 2e4, math.log(2)], rtol=1e-6)
    expected_grad = np.array([[0, 0, 0], [-1, 1, 0], [0.5, -0.5, 0]])
    np.testing.assert_allclose(logits.grad, expected_grad, atol=1e-6)
    assert loss.dtype == dtype and logits.grad.dtype == dtype


def test_non_finite_loss_stops_training():
    """Row: the non-finite-loss stop of `npnorm train` (tests/test_experiments.py covers it on the digits;
    here on a synthetic split, without scikit-learn): NonFiniteLossError, parameters still finite."""
    from npnorm.data import DigitsSplit
    from npnorm.experiments import NonFiniteLossError, make_mlp
    from npnorm.experiments._train import train_classifier

    rng = np.random.default_rng(8)
    x = rng.standard_normal((64, 64)).astype(np.float32)
    y = rng.integers(0, 10, 64)
    data = DigitsSplit(x, y, x[:16], y[:16], mean=0.0, std=1.0, layout="flat")
    built = []

    def build():
        built.append(make_mlp("layer", hidden=8))
        return built[-1]

    with pytest.raises(NonFiniteLossError, match="step"):
        train_classifier(build, data, epochs=3, batch_size=16, lr=1e25, seed=0)
    for name, p in built[0].named_parameters():
        assert np.all(np.isfinite(p.data)), name


# ================================================================================= 3. Threads, processes and the JIT

# Environment variables that would change what a subprocess tests; each test sets what it needs.
# (NUMBA_CACHE_DIR is inherited: a CI that points it somewhere keeps its cache.)
_ENV_RESET = ("NUMBA_DISABLE_JIT", "NUMBA_THREADING_LAYER", "NUMBA_NUM_THREADS", "NPNORM_IMPL")


def _python(code: str, *, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter that imports this checkout's npnorm and tests/_reliability_helpers.

    `env` adds variables to the environment; a value of None removes one.
    """
    full_env = {k: v for k, v in os.environ.items() if k not in _ENV_RESET}
    full_env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(TESTS), os.environ.get("PYTHONPATH", "")])
    for key, value in (env or {}).items():
        if value is None:
            full_env.pop(key, None)
        else:
            full_env[key] = value
    try:
        return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                              env=full_env, cwd=str(REPO), timeout=timeout)  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the subprocess hung (no exit within {timeout} s); its output so far:\n{exc.stdout}\n{exc.stderr}")


def _assert_ok(result: subprocess.CompletedProcess) -> None:
    how = f"exit code {result.returncode}"
    if result.returncode < 0:
        how = f"killed by {signal.Signals(-result.returncode).name}"
    assert result.returncode == 0, f"the subprocess failed ({how}):\n{result.stdout}\n{result.stderr}"


def _assert_same_outputs(got: dict, expected: dict, *, exact: bool = True) -> None:
    """Bit for bit, or (exact=False) up to reassociated float64 sums, rounded once to the output dtype."""
    assert sorted(got) == sorted(expected)
    for key in expected:
        assert got[key].dtype == expected[key].dtype, key
        if exact:
            np.testing.assert_array_equal(got[key], expected[key], err_msg=key)
        else:
            _close(got[key], expected[key], 1e-6 if expected[key].dtype == np.float32 else 1e-10, key)


_THREADS_SCRIPT = """
    import sys, threading
    import numpy as np
    import npnorm, npnorm.functional as F
    from npnorm.kernels._jit import SERIAL_BELOW

    H = 256
    N = 2 * SERIAL_BELOW // H  # twice the serial threshold: every call takes the parallel kernels
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((N, H)).astype(np.float32) for _ in range(8)]
    w, b = rng.standard_normal(H).astype(np.float32), rng.standard_normal(H).astype(np.float32)
    dy = rng.standard_normal((N, H)).astype(np.float32)

    def step(x):
        xt, wt, bt = (npnorm.tensor(a, requires_grad=True) for a in (x, w, b))
        y = F.layer_norm(xt, H, wt, bt, impl="numba")
        y.backward(dy)
        return y.data, xt.grad, wt.grad, bt.grad

    expected = [step(x) for x in xs]  # single-threaded
    mismatches, errors = [], []

    def worker(i):
        try:
            for _ in range(50):
                if not all(np.array_equal(a, e) for a, e in zip(step(xs[i]), expected[i])):
                    mismatches.append(i)
        except BaseException as exc:
            errors.append(repr(exc))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    import numba
    print("layer", numba.threading_layer())
    assert not errors, errors
    assert not mismatches, f"threads gave results that differ from the single-threaded ones: {mismatches}"
"""


@pytest.mark.parametrize("layer", ["default", "workqueue"])
def test_threads_calling_parallel_kernels_at_once(layer):
    """Row: 8 Python threads × 50 forward+backward LayerNorm calls on the numba impl (parallel kernel path),
    identical to single-threaded results, no abort; also with NUMBA_THREADING_LAYER=workqueue, the layer that
    aborts on concurrent entry without npnorm's lock."""
    env = {} if layer == "default" else {"NUMBA_THREADING_LAYER": layer}
    result = _python(_THREADS_SCRIPT, env=env, timeout=180)
    _assert_ok(result)
    if layer == "workqueue":
        assert "layer workqueue" in result.stdout


_POOL_SCRIPT = """
    import multiprocessing, os, sys
    import numpy as np
    import _reliability_helpers as h

    if __name__ == "__main__":
        import npnorm
        import npnorm.functional as F

        first = "{first}"  # what the parent runs before it forks: each starts numba's thread pool
        if first == "parallel kernels":
            h.pool_task(0)
        elif first == "a serial kernel":
            F.layer_norm(np.ones((4, 8), np.float32), 8)
        else:
            npnorm.get_num_threads()
        import numba
        print("parent layer:", numba.threading_layer(), flush=True)
        method = "{method}"
        if method == "fork":
            # A bare fork first: a child that aborts shows up here, at once, with its exit status.
            read_end, write_end = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.close(read_end)
                out = h.pool_task(0)
                with os.fdopen(write_end, "wb") as pipe:
                    np.savez(pipe, **out)
                os._exit(0)
            os.close(write_end)
            with os.fdopen(read_end, "rb") as pipe:
                data = pipe.read()
            _, status = os.waitpid(pid, 0)
            if os.WIFSIGNALED(status):
                sys.exit(f"the forked child was killed by signal {{os.WTERMSIG(status)}}")
            if os.WEXITSTATUS(status) != 0:
                sys.exit(f"the forked child exited with status {{os.WEXITSTATUS(status)}}")
            import io
            from_child = dict(np.load(io.BytesIO(data)))
        expected = h.pool_task(0)  # in the parent, after any fork
        if method == "fork":
            assert sorted(from_child) == sorted(expected)
            for key in expected:
                assert np.array_equal(from_child[key], expected[key]), key
        ctx = multiprocessing.get_context(method)
        with ctx.Pool(2) as pool:
            results = pool.map_async(h.pool_task, [0, 1, 0]).get(timeout={timeout})
        for key in expected:
            assert np.array_equal(results[0][key], expected[key]), key
            assert np.array_equal(results[2][key], expected[key]), key
        print("ok", flush=True)
"""


@pytest.mark.parametrize(
    "method, first",
    [
        ("fork", "parallel kernels"),
        ("fork", "a serial kernel"),  # the pool starts with npnorm's first kernel, serial or not
        ("fork", "a thread query"),  # npnorm.get_num_threads() starts it too, without importing the kernels
        ("spawn", "parallel kernels"),
    ],
)
def test_process_pool_after_numbas_threads_started(method, first):
    """Row: fork() after numba's thread pool started (GNU OpenMP kills a child that then enters a parallel
    region) must not hang or kill the child, whatever started the pool — a bare fork, whose child's results
    must equal the parent's bit for bit, then a multiprocessing pool with the "fork" context, and one with
    "spawn", mapping a function that calls the numba kernels; in a subprocess with a timeout, so that a hang
    fails the test instead of stalling CI."""
    if method == "fork" and not hasattr(os, "fork"):
        pytest.skip("no fork() on this platform")
    result = _python(_POOL_SCRIPT.format(method=method, first=first, timeout=60), timeout=120)
    _assert_ok(result)
    assert "ok" in result.stdout


_CACHE_SCRIPT = """
    import warnings
    import numpy as np
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import npnorm
        import _reliability_helpers as h
        got = h.norm_outputs("numba")
    expected = h.norm_outputs("numpy")
    messages = [f"{w.category.__name__}: {w.message}" for w in caught]
    assert len(messages) <= 1, messages
    for key in expected:
        np.testing.assert_allclose(got[key], expected[key], rtol=1e-12, atol=1e-12, err_msg=key)
    print("warnings:", messages)
"""


def test_unwritable_numba_cache_dir(tmp_path):
    """Row: on-disk JIT cache — an unwritable NUMBA_CACHE_DIR (<a regular file>/sub, which can never be
    created, even by root) must not break import or calls: kernels run, results correct, at most one warning."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    result = _python(_CACHE_SCRIPT, env={"NUMBA_CACHE_DIR": str(blocker / "sub")})
    _assert_ok(result)
    assert "cannot write the Numba cache" in result.stdout


def test_read_only_package_directory(tmp_path):
    """Row: on-disk JIT cache — a read-only package directory is equivalent. kernels/_jit.py takes the same
    path as for an unwritable NUMBA_CACHE_DIR (no writable cache directory -> compile without the cache, one
    warning). We make it so on a copy of the package: its kernels/__pycache__ is a regular file, and numba's
    per-user fallback (XDG_CACHE_HOME) lies under a regular file too."""
    import shutil

    copy_root = tmp_path / "site"
    shutil.copytree(REPO / "npnorm", copy_root / "npnorm", ignore=shutil.ignore_patterns("__pycache__"))
    (copy_root / "npnorm" / "kernels" / "__pycache__").write_text("a file where the cache directory would be")
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    code = f"import sys; sys.path.insert(0, {str(copy_root)!r})\n" + textwrap.dedent(_CACHE_SCRIPT)
    code += f"\nassert npnorm.__file__.startswith({str(copy_root)!r}), npnorm.__file__\n"
    env = {"XDG_CACHE_HOME": str(blocker / "sub"), "HOME": str(blocker / "home"), "PYTHONDONTWRITEBYTECODE": "1",
           "NUMBA_CACHE_DIR": None}  # fmt: skip
    result = _python(code, env=env)
    _assert_ok(result)
    assert "cannot write the Numba cache" in result.stdout


def test_disable_jit_gives_the_jit_results(tmp_path):
    """Row: NUMBA_DISABLE_JIT=1 — every norm's kernels run as plain Python in a subprocess (including the
    parallel path) and give the JIT's results (up to float64 reassociation: the JIT may reorder sums).
    CI also runs the kernel tests this way (.ci/run)."""
    out = tmp_path / "out.npz"
    code = f"""
        import numba, npnorm
        assert numba.config.DISABLE_JIT
        import _reliability_helpers as h
        npnorm.save(h.norm_outputs("numba", big=h.ALL_PARALLEL), {str(out)!r})
    """
    _assert_ok(_python(code, env={"NUMBA_DISABLE_JIT": "1"}, timeout=180))
    from _reliability_helpers import ALL_PARALLEL, norm_outputs

    _assert_same_outputs(npnorm.load(out), norm_outputs("numba", big=ALL_PARALLEL), exact=False)


def test_disable_jit_parallel_runs_after_numbas_pool_has_started():
    """Row: NUMBA_DISABLE_JIT=1 — npnorm.set_num_threads starts numba's thread pool even then; parallel-sized
    runs must still run their items as plain Python, the second and later ones too (the shortcut for a
    thread-safe layer once sent them to the launcher, which cannot run without the JIT)."""
    code = """
        import numba, numpy as np, npnorm
        import npnorm.functional as F
        assert numba.config.DISABLE_JIT
        npnorm.set_num_threads(2)
        x = npnorm.Tensor(np.random.default_rng(0).standard_normal((600, 64)), requires_grad=True)
        for _ in range(3):
            F.layer_norm(x, 64, impl="numba").sum().backward()
        print(numba.threading_layer())
    """
    _assert_ok(_python(code, env={"NUMBA_DISABLE_JIT": "1"}, timeout=180))


def test_disable_jit_kernels_warn_as_little_as_compiled_ones():
    """Row: NUMBA_DISABLE_JIT=1 — plain-Python kernels give NaN and inf silently, as compiled ones do
    (error_model="numpy"), so that a caller with warnings as errors fails no more without the JIT: GroupNorm
    on rows of no values (0/0), constant rows with eps = 0 (1/0), in serial and parallel runs."""
    code = """
        import warnings, numba, numpy as np, npnorm
        import npnorm.functional as F
        assert numba.config.DISABLE_JIT
        warnings.simplefilter("error")
        x = npnorm.tensor(np.zeros((2, 4, 0), np.float32), requires_grad=True)
        F.group_norm(x, 2, impl="numba").backward(np.zeros((2, 4, 0), np.float32))
        for rows in (4, 600):  # serial and parallel
            x = npnorm.tensor(np.ones((rows, 64)), requires_grad=True)
            y = F.layer_norm(x, 64, eps=0.0, impl="numba")
            y.backward(np.ones((rows, 64)))
    """
    _assert_ok(_python(code, env={"NUMBA_DISABLE_JIT": "1"}, timeout=180))


def test_without_numba_everything_works_on_numpy():
    """Row: without numba importable at all (a meta-path finder blocks it): each norm with impl="numba"
    falls back with exactly one RuntimeWarning, an MLP training step works, `npnorm check` exits with 0."""
    code = """
        import sys, warnings
        import numpy as np
        import _reliability_helpers as h
        h.block_numba()
        import npnorm, npnorm.functional as F
        from npnorm import nn, optim
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            got = h.norm_outputs("numba")
        runtime = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
        assert len(runtime) == 1 and "numba" in runtime[0], runtime
        assert [str(w.message) for w in caught] == runtime, [str(w.message) for w in caught]
        expected = h.norm_outputs("numpy")
        for key in expected:
            assert np.array_equal(got[key], expected[key]), key
        # an MLP training step, with the default impl
        npnorm.manual_seed(0)
        model = nn.Sequential(nn.Linear(8, 16), nn.LayerNorm(16), nn.ReLU(), nn.BatchNorm1d(16),
                              nn.Linear(16, 4))
        opt = optim.Adam(model.parameters(), lr=1e-2)
        x = np.random.default_rng(0).standard_normal((32, 8)).astype(np.float32)
        y = np.arange(32) % 4
        losses = []
        for _ in range(5):
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        assert losses[-1] < losses[0], losses
        assert npnorm.get_num_threads() == 1
        npnorm.set_num_threads(2)  # accepted, and nothing to do
        assert "numba" not in sys.modules or sys.modules["numba"] is None
        from npnorm.cli import main
        code = main(["check"])
        print("check exit code", code)
        sys.exit(code)
    """
    result = _python(code)
    _assert_ok(result)
    assert "check exit code 0" in result.stdout


def _assert_independent_of_thread_count(got: dict, expected: dict) -> None:
    """Per-row results bit for bit; sums across rows (parameter gradients, running statistics) within one
    unit in the last place: float64 partial sums may be reassociated, then are rounded once to the dtype."""
    assert sorted(got) == sorted(expected)
    for key in expected:
        if key.endswith((".y", ".dx")):
            np.testing.assert_array_equal(got[key], expected[key], err_msg=key)
        else:
            np.testing.assert_array_max_ulp(got[key], expected[key], maxulp=1)


def test_set_num_threads_is_honoured_and_results_do_not_depend_on_it():
    """Row: npnorm.set_num_threads(n) is honoured (get_num_threads reports it; the kernels run) and 1 vs 2
    threads give identical per-row outputs and input gradients, and parameter gradients and running
    statistics within 1 ulp (the bound stated in _assert_independent_of_thread_count). Every norm with a
    kernel runs on its parallel path."""
    from _reliability_helpers import ALL_PARALLEL, norm_outputs

    original = npnorm.get_num_threads()
    results = {}
    try:
        for n in (1, 2):
            npnorm.set_num_threads(n)
            assert npnorm.get_num_threads() == n
            results[n] = norm_outputs("numba", big=ALL_PARALLEL)
    finally:
        npnorm.set_num_threads(original)
    assert npnorm.get_num_threads() == original
    _assert_independent_of_thread_count(results[1], results[2])
    _assert_same_outputs(results[1], norm_outputs("numpy", big=ALL_PARALLEL), exact=False)  # and correct
    with pytest.raises(ValueError, match="set_num_threads"):
        npnorm.set_num_threads(0)
    with pytest.raises(ValueError, match="NUMBA_NUM_THREADS"):
        npnorm.set_num_threads(10_000)
    with pytest.raises(TypeError, match="set_num_threads"):
        npnorm.set_num_threads(1.5)


@pytest.mark.skipif(
    os.environ.get("NUMBA_DISABLE_JIT") == "1",
    reason="compares a compiled run with this process's, whose kernels run as Python (float64 sums in another order)",
)
def test_numba_num_threads_environment_variable_is_honoured(tmp_path):
    """Row: NUMBA_NUM_THREADS is honoured: in a process started with NUMBA_NUM_THREADS=1, get_num_threads()
    reports 1, the parallel kernels run, and the results equal this process's (same bound as above)."""
    from _reliability_helpers import ALL_PARALLEL, norm_outputs

    out = tmp_path / "out.npz"
    code = f"""
        import numba, npnorm
        import _reliability_helpers as h
        assert npnorm.get_num_threads() == 1, npnorm.get_num_threads()
        npnorm.save(h.norm_outputs("numba", big=h.ALL_PARALLEL), {str(out)!r})
        assert numba.config.NUMBA_NUM_THREADS == 1 and numba.get_num_threads() == 1
        print("layer", numba.threading_layer())  # raises if no parallel kernel ran
    """
    _assert_ok(_python(code, env={"NUMBA_NUM_THREADS": "1"}))
    _assert_independent_of_thread_count(npnorm.load(out), norm_outputs("numba", big=ALL_PARALLEL))


# ======================================================================================================= 4. Files


def test_save_replaces_the_file_atomically(tmp_path):
    """Row: checkpoints — atomic replace. A reader that opened the old checkpoint keeps reading the old bytes
    (the new file is renamed over it, never rewritten in place), and the new one is complete."""
    target = tmp_path / "ckpt.npz"
    npnorm.save({"a": np.arange(1000.0)}, target)
    old = target.read_bytes()
    with open(target, "rb") as reader:
        npnorm.save({"b": np.ones(5000)}, target)
        assert reader.read() == old
    np.testing.assert_array_equal(npnorm.load(target)["b"], np.ones(5000))
    assert sorted(os.listdir(tmp_path)) == ["ckpt.npz"]


def test_save_killed_half_way_leaves_the_old_file_intact(tmp_path):
    """Row: checkpoints — a save interrupted half-way leaves the old file intact. A real crash: the saving
    process is SIGKILLed after it has written part of the new archive (no exception handler can run)."""
    if not hasattr(signal, "SIGKILL"):
        pytest.skip("no SIGKILL on this platform")
    target = tmp_path / "ckpt.npz"
    old = {"w": np.arange(12.0).reshape(3, 4), "step": np.array(7)}
    npnorm.save(old, target)
    old_bytes = target.read_bytes()
    code = f"""
        import os, signal
        import numpy as np
        import npnorm
        write_array = np.lib.format.write_array
        written = []

        def write_then_die(fp, array, *args, **kwargs):
            write_array(fp, array, *args, **kwargs)
            written.append(1)
            if len(written) == 2:  # half of the four arrays are in the temporary file
                fp.flush()
                os.kill(os.getpid(), signal.SIGKILL)

        np.lib.format.write_array = write_then_die
        npnorm.save({{k: np.full(100_000, i, float) for i, k in enumerate("abcd")}}, {str(target)!r})
    """
    result = _python(code)
    assert result.returncode == -signal.SIGKILL, (result.returncode, result.stderr)
    assert target.read_bytes() == old_bytes
    loaded = npnorm.load(target)
    for key, value in old.items():
        np.testing.assert_array_equal(loaded[key], value)
    # A crash may leave its temporary file behind (io.py says so); it is never a loadable checkpoint.
    for stray in set(os.listdir(tmp_path)) - {"ckpt.npz"}:
        assert stray.startswith(".ckpt.npz.") and stray.endswith(".tmp"), stray
        with pytest.raises(ValueError, match="not a valid npnorm checkpoint"):
            npnorm.load(tmp_path / stray)


def _truncated(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _corrupt(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0xFF  # a flipped byte inside an array: the zip's CRC-32 catches it
    path.write_bytes(bytes(data))


def _object_array(path):
    np.savez(path, w=np.ones(2), bad=np.array([{"a": 1}], dtype=object), allow_pickle=True)  # path ends in .npz


BAD_FILES = {
    "truncated": (_truncated, ValueError, "not a valid npnorm checkpoint"),
    "corrupt": (_corrupt, ValueError, "not a valid npnorm checkpoint"),
    "object array": (_object_array, ValueError, "not a valid npnorm checkpoint"),
    "missing": (lambda path: path.unlink(), FileNotFoundError, "no such checkpoint file"),
}


@pytest.mark.parametrize("what", ["model", "optimizer"])
@pytest.mark.parametrize("damage", BAD_FILES)
def test_bad_checkpoint_file_raises_a_clear_error(tmp_path, damage, what):
    """Row: checkpoints (model and optimizer state) — truncated, corrupt, object-array and missing files raise
    a clear error that names `load` and the path."""
    model, opt, _ = _trained_optimizer("Adam")
    path = tmp_path / f"{what}.npz"
    npnorm.save(model.state_dict() if what == "model" else opt.state_dict(), path)
    action, error, message = BAD_FILES[damage]
    action(path)
    with pytest.raises(error, match=message) as excinfo:
        npnorm.load(path)
    assert "load" in str(excinfo.value) and str(path) in str(excinfo.value)


class _Payload:
    """Unpickling this creates a file: proof that code from the checkpoint ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


@pytest.mark.parametrize("container", ["npz member", "bare pickle"])
def test_loading_never_executes_code(tmp_path, container):
    """Row: checkpoints — loading never executes code from the file."""
    import pickle  # the test builds the malicious file; the package itself never imports pickle

    marker = tmp_path / "code-ran"
    path = tmp_path / "evil.npz"
    payload = np.empty(1, dtype=object)
    payload[0] = _Payload(marker)
    if container == "npz member":
        with zipfile.ZipFile(path, "w") as archive, archive.open("w.npy", "w") as member:
            np.lib.format.write_array(member, payload, allow_pickle=True)
    else:
        path.write_bytes(pickle.dumps({"w": payload}))
    with pytest.raises(ValueError, match="not a valid npnorm checkpoint"):
        npnorm.load(path)
    assert not marker.exists(), "loading the checkpoint ran code from it"


def test_no_pickle_in_the_package():
    """Row: checkpoints — no pickle in the package: the grep of npnorm/ sources lives in tests/test_io.py."""
    import test_io

    test_io.test_the_package_never_uses_pickle()


def test_optimizer_state_checkpoint_resumes_bit_for_bit(tmp_path):
    """Row: checkpoints — optimizer state too: model and optimizer saved, loaded into fresh objects, and the
    next steps equal those of the uninterrupted run."""
    model, opt, x = _trained_optimizer("Adam", seed=3)
    npnorm.save(model.state_dict(), tmp_path / "model.npz")
    npnorm.save(opt.state_dict(), tmp_path / "opt.npz")
    resumed = _model(4)
    resumed_opt = optim.Adam(resumed.parameters(), lr=0.5)
    resumed.load_state_dict(npnorm.load(tmp_path / "model.npz"))
    resumed_opt.load_state_dict(npnorm.load(tmp_path / "opt.npz"))
    for m, o in ((model, opt), (resumed, resumed_opt)):
        for _ in range(2):
            o.zero_grad()
            F.cross_entropy(m(x), np.arange(6) % 3).backward()
            o.step()
    for (name, p), q in zip(model.named_parameters(), resumed.parameters()):
        np.testing.assert_array_equal(p.data, q.data, err_msg=name)


# ======================================================================================= 5. Property-based fuzzing


@st.composite
def _norm_case(draw, norm_name: str, max_side: int = 5):
    """(x, params, kw) for one norm: shapes with 0- and 1-sized dims, float32/float64, varied scales."""
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    side = st.integers(0, max_side)
    pos = st.integers(1, max_side)
    kw = {}
    if norm_name in ("layer_norm", "ada_norm", "rms_norm"):
        shape = tuple(draw(st.lists(side, min_size=0, max_size=2))) + (draw(pos),)
    elif norm_name == "batch_norm":
        shape = (draw(side), draw(pos)) + tuple(draw(st.lists(side, min_size=0, max_size=1)))
    elif norm_name == "group_norm":
        groups, per_group = draw(pos), draw(st.integers(1, 3))
        shape = (draw(side), groups * per_group) + tuple(draw(st.lists(side, min_size=0, max_size=2)))
        kw["num_groups"] = groups
    else:  # weight_norm: rows of v must not be all zero
        shape = (draw(side), draw(pos))
    scale = draw(st.sampled_from([1e-3, 1.0, 1e3]))
    offset = draw(st.sampled_from([0.0, 1.0, 100.0])) * scale
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    x = (offset + scale * rng.standard_normal(shape)).astype(dtype)
    norm = NORMS[norm_name]
    params = _params(norm, rng, shape, dtype)
    # any of the affine parameters may be absent: the kernels skip them by flags, which need the coverage too
    for name in ("weight", "bias"):
        if name in params and draw(st.booleans()):
            del params[name]
    if norm_name == "batch_norm":
        kw["training"] = draw(st.booleans())
        if kw["training"]:  # batch statistics only; evaluation normalizes with the running ones
            params = {k: v for k, v in params.items() if k not in STATE}
    return x, params, kw


FUZZ_RTOL = {np.float32: 1e-4, np.float64: 1e-9}


@pytest.mark.parametrize("norm_name", NORMS)
@given(data=st.data())
def test_fuzz_implementations_agree_and_stay_finite(norm_name, data):
    """Row: property-based fuzzing — for every norm, numba == numpy == composed (forward and backward) and
    finite outputs for finite inputs, over shapes with 0- and 1-sized dims, float32/float64, value ranges."""
    norm = NORMS[norm_name]
    x, params, kw = data.draw(_norm_case(norm_name))
    kw = kw or _kw(norm, x.shape)
    if norm.name == "batch_norm" and kw["training"] and x.shape[0] * math.prod(x.shape[2:]) == 1:
        with pytest.raises(ValueError, match="batch_norm"):  # one value per channel cannot be trained on
            _run(norm, x, params, "numpy", kw=kw)
        return
    dy = np.random.default_rng(7).standard_normal(x.shape).astype(x.dtype)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        results = {impl: _run(norm, x, params, impl, dy=dy, kw=kw) for impl in IMPLS}
    reference = results["numpy"]
    rtol = FUZZ_RTOL[x.dtype.type]
    term = _term_scale(norm, x, params, 1e-5, dy, kw)
    for impl in IMPLS:
        for key, value in results[impl].items():
            assert value.dtype == x.dtype and value.shape == reference[key].shape, (impl, key)
            assert np.all(np.isfinite(value)), (impl, key)
            _close(value, reference[key], rtol, f"{impl} vs numpy: {key}", floor=term if key == "dx" else 0.0)


def _ada_frozen_phi(x, eps, C=1.5, k=0.1):
    """AdaNorm with φ = C(1 − k·y) frozen at x's values: the function whose true gradient, at x, is the one
    AdaNorm's detached backward computes (finite differences of AdaNorm itself would not match, by design)."""
    from npnorm.checks import frozen_layer_norm

    simple = frozen_layer_norm(x.copy(), (x.ndim - 1,), eps, False, False)  # nothing frozen: LayerNorm-simple
    phi = npnorm.Tensor(C * (1 - k * simple(npnorm.Tensor(x.copy())).data))
    return lambda xt: phi * simple(xt)


@pytest.mark.parametrize("norm_name", NORMS)
@given(data=st.data())
def test_fuzz_gradcheck(norm_name, data):
    """Row: property-based fuzzing — gradcheck passes on small float64 cases, for every impl (AdaNorm against
    its frozen-φ function, as `npnorm check` does)."""
    from npnorm.checks import straight_through

    norm = NORMS[norm_name]
    x, params, kw = data.draw(_norm_case(norm_name, max_side=3))
    x = x.astype(np.float64)
    kw = kw or _kw(norm, x.shape)
    if norm.name == "batch_norm" and kw["training"] and x.shape[0] * math.prod(x.shape[2:]) == 1:
        return  # a clear ValueError, tested by the property above
    impl = data.draw(st.sampled_from(IMPLS))
    names = [k for k in params if k not in STATE]
    inputs = (npnorm.tensor(x, requires_grad=True),) + tuple(
        npnorm.tensor(params[k].astype(np.float64), requires_grad=True) for k in names
    )

    state = {k: params[k].astype(np.float64) for k in STATE if k in params}  # BatchNorm evaluation: read only

    def fn(xt, *ps):
        return norm.call(xt, dict(zip(names, ps, strict=True), **state), impl, 1e-5, **kw)

    if norm.name == "ada_norm":
        fn = straight_through(_ada_frozen_phi(x, 1e-5), fn)
    assert npnorm.gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3)


LONG_SHAPES = {
    "layer_norm": (100_000, 4),
    "rms_norm": (100_000, 4),
    "batch_norm": (100_000, 3),
    "group_norm": (50_000, 4, 2),
}


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("norm", sorted(LONG_SHAPES))
def test_float32_parameter_gradients_over_many_rows_keep_float32_accuracy(norm, impl):
    """Row: dweight/dbias sum over 10^5 rows. The composed impl summed them in float32 one row after another
    (1% off at 10^6 rows); every impl must stay near the float64 result, as the kernels and reference do."""
    norm = NORMS[norm]
    shape = LONG_SHAPES[norm.name]
    rng = np.random.default_rng(3)
    x = rng.standard_normal(shape).astype(np.float32)
    params = _params(norm, rng, shape, np.float32)
    dy = (0.1 + rng.random(shape)).astype(np.float32)  # one sign: partial sums grow with the rows
    got = _run(norm, x, params, impl, dy=dy)
    exact = _run(norm, x.astype(np.float64), {k: v.astype(np.float64) for k, v in params.items()}, "numpy",
                 dy=dy.astype(np.float64))  # fmt: skip
    for name in ("dweight", "dbias"):
        if name in got:
            assert got[name].dtype == np.float32
            scale = np.max(np.abs(exact[name]))
            assert np.max(np.abs(got[name] - exact[name])) <= 2e-6 * scale, name
