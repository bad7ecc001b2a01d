"""The gradcheck table behind `npnorm check` and `npnorm demo`: every norm, every implementation.

Each row builds small float64 inputs, runs `npnorm.gradcheck` on the norm and prints the verdict and the
largest gap between the analytic gradient and finite differences, over every entry of every input's Jacobian.
A row whose norm raises any error is a FAIL too, with the error, and the table goes on.

DetachNorm and AdaNorm have a backward that is deliberately not the derivative of their forward, so
finite differences of the forward cannot confirm it. Their rows check the backward against a *frozen*
function instead: the same forward with the detached quantities (μ, σ, or φ) fixed at their values at the
point of evaluation. At that point the frozen function's true Jacobian is what the detached backward
claims to compute. The row's function has the frozen function's values and the real norm's gradient:

    f(x) = norm(x) + (frozen(x) − norm(x)).detach()

That is only a check of the norm if the frozen function *is* the norm at that point: before gradcheck, such a
row compares the two forwards there, and fails if they differ (a wrong forward would otherwise pass, its
values thrown away by the detach).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from . import functional as F
from . import kernels
from .gradcheck import largest_gap_or_raise
from .norms import IMPLS
from .tensor import Tensor


@dataclass(frozen=True)
class Case:
    norm: str
    variant: str
    build: Callable  # (impl, rng) -> (fn, inputs)


def _leaf(rng, shape, scale=1.0, shift=0.0) -> Tensor:
    return Tensor(shift + scale * rng.standard_normal(shape), requires_grad=True)


def frozen_layer_norm(x0: np.ndarray, H_axes: tuple, eps, detach_mean: bool, detach_var: bool):
    """LayerNorm with μ and/or σ² replaced by constants taken at x0."""
    mean0 = x0.mean(axis=H_axes, keepdims=True)
    var0 = ((x0 - mean0) ** 2).mean(axis=H_axes, keepdims=True)

    def frozen(x: Tensor) -> Tensor:
        mean = Tensor(mean0) if detach_mean else x.mean(axis=H_axes, keepdims=True)
        centered = x - mean
        var = Tensor(var0) if detach_var else (centered * centered).mean(axis=H_axes, keepdims=True)
        return centered * (var + eps) ** -0.5

    return frozen


def straight_through(value_fn, grad_fn):
    """Values of value_fn, gradients of grad_fn: grad_fn(x) + (value_fn(x) − grad_fn(x)).detach().

    The result keeps both functions as ``fn.value_fn`` and ``fn.grad_fn``, so that a row can check that they
    agree in value at the point of evaluation."""

    def fn(*args):
        g = grad_fn(*args)
        return g + (value_fn(*args) - g).detach()

    fn.value_fn, fn.grad_fn = value_fn, grad_fn
    return fn


def _layer_norm_case(affine: bool, bias: bool = True):
    def build(impl, rng):
        x = _leaf(rng, (4, 3, 5))
        w = _leaf(rng, (3, 5)) if affine else None
        b = _leaf(rng, (3, 5)) if bias and affine else None
        inputs = tuple(t for t in (x, w, b) if t is not None)

        def fn(*args):
            it = iter(args)
            x_, w_, b_ = next(it), next(it) if w is not None else None, next(it) if b is not None else None
            return F.layer_norm(x_, (3, 5), w_, b_, impl=impl)

        return fn, inputs

    return build


def _detach_case(detach_mean: bool, detach_var: bool):
    def build(impl, rng):
        x = _leaf(rng, (4, 6))
        w = _leaf(rng, (6,))
        frozen_norm = frozen_layer_norm(x.data.copy(), (1,), 1e-5, detach_mean, detach_var)

        def real(x_, w_):
            return F.layer_norm(x_, 6, w_, None, detach_mean=detach_mean, detach_var=detach_var, impl=impl)

        def frozen(x_, w_):
            return frozen_norm(x_) * w_

        return straight_through(frozen, real), (x, w)

    return build


def _ada_norm_case(C: float, k: float):
    def build(impl, rng):
        x = _leaf(rng, (4, 7))
        y0 = frozen_layer_norm(x.data.copy(), (1,), 1e-5, False, False)(Tensor(x.data.copy())).data
        phi0 = Tensor(C * (1 - k * y0))
        simple = frozen_layer_norm(x.data.copy(), (1,), 1e-5, False, False)  # nothing frozen: LayerNorm-simple

        def real(x_):
            return F.ada_norm(x_, 7, C=C, k=k, impl=impl)

        def frozen(x_):
            return phi0 * simple(x_)

        return straight_through(frozen, real), (x,)

    return build


CASES = [
    Case("layer_norm", "affine", _layer_norm_case(affine=True)),
    Case("layer_norm", "gain only (bias=False)", _layer_norm_case(affine=True, bias=False)),
    Case("layer_norm", "simple (no gain, no bias)", _layer_norm_case(affine=False)),
    Case("layer_norm", "detach_mean", _detach_case(True, False)),
    Case("layer_norm", "detach_var", _detach_case(False, True)),
    Case("layer_norm", "DetachNorm (both)", _detach_case(True, True)),
    Case("ada_norm", "C=1, k=0.1", _ada_norm_case(1.0, 0.1)),
    Case("ada_norm", "C=2, k=0.1", _ada_norm_case(2.0, 0.1)),
]


def _rms_norm_case(affine: bool):
    def build(impl, rng):
        x = _leaf(rng, (4, 3, 5))
        w = _leaf(rng, (3, 5)) if affine else None

        def fn(x_, w_=None):
            return F.rms_norm(x_, (3, 5), w_, impl=impl)

        return fn, ((x, w) if affine else (x,))

    return build


CASES += [
    Case("rms_norm", "affine", _rms_norm_case(affine=True)),
    Case("rms_norm", "no weight", _rms_norm_case(affine=False)),
]


def _weight_norm_case(v_shape: tuple, dim, g_shape: tuple):
    """w = g·v/‖v‖ (Salimans & Kingma), through each impl (numba: kernels/weight_norm.py)."""

    def build(impl, rng):
        from .norms.weight_norm import weight_norm

        v, g = _leaf(rng, v_shape), _leaf(rng, g_shape, shift=0.5)

        def fn(v_, g_):
            return weight_norm(v_, g_, dim, impl=impl)

        return fn, (v, g)

    return build


CASES += [
    Case("weight_norm", "v (out, in), g (out, 1)", _weight_norm_case((4, 5), 0, (4, 1))),
    Case("weight_norm", "dim=None (whole tensor)", _weight_norm_case((3, 4), None, ())),
]


def _batch_norm_case(shape: tuple, training: bool):
    """Training differentiates through the batch statistics; evaluation uses fixed running statistics."""

    def build(impl, rng):
        C = shape[1]
        x, w, b = _leaf(rng, shape), _leaf(rng, (C,)), _leaf(rng, (C,))
        running_mean, running_var = rng.standard_normal(C), 0.5 + rng.random(C)

        def fn(x_, w_, b_):
            # copies: every training call updates the running statistics in place
            return F.batch_norm(x_, running_mean.copy(), running_var.copy(), w_, b_, training=training, impl=impl)

        return fn, (x, w, b)

    return build


def _group_norm_case(shape: tuple, num_groups: int):
    def build(impl, rng):
        C = shape[1]
        x, w, b = _leaf(rng, shape), _leaf(rng, (C,)), _leaf(rng, (C,))

        def fn(x_, w_, b_):
            return F.group_norm(x_, num_groups, w_, b_, impl=impl)

        return fn, (x, w, b)

    return build


CASES += [
    Case("batch_norm", "training (N, C)", _batch_norm_case((6, 4), True)),
    Case("batch_norm", "training (N, C, L)", _batch_norm_case((4, 3, 5), True)),
    Case("batch_norm", "evaluation (N, C, L)", _batch_norm_case((4, 3, 5), False)),
    Case("group_norm", "G=2, (N, C, L)", _group_norm_case((3, 4, 5), 2)),
    Case("group_norm", "G=C (InstanceNorm)", _group_norm_case((2, 3, 2, 2), 3)),
    Case("group_norm", "G=1, (N, C)", _group_norm_case((4, 6), 1)),
]


EPS = 1e-6  # the finite-difference step, gradcheck's default
FORWARDS_AGREE = 1e-10  # a frozen function and its norm at the point of evaluation: equal up to rounding (~4e-16)


def _check_row(fn, inputs) -> tuple[str, str]:
    """(the largest gap, or "-", and an error message, or "") of one row."""
    try:
        if hasattr(fn, "value_fn"):  # a frozen function standing in for the norm: it must be the norm at x0
            differ = float(np.max(np.abs(fn.value_fn(*inputs).data - fn.grad_fn(*inputs).data), initial=0.0))
            if not differ <= FORWARDS_AGREE:
                return "-", (
                    f"the frozen function differs from the norm's forward at the point of evaluation by "
                    f"{differ:.2e} (allowed {FORWARDS_AGREE:g}): the norm's forward, or the frozen copy, is wrong"
                )
        return f"{largest_gap_or_raise(fn, inputs, eps=EPS):.1e}", ""
    except Exception as exc:  # a GradcheckError, or the norm itself failing: a FAIL row either way
        return "-", f"{type(exc).__name__}: {exc}"


def run_checks(norms=None, impls=None, *, seed: int = 0, out=print) -> bool:
    """Gradcheck every selected norm × impl; print one line each; True when all pass."""
    known = sorted({c.norm for c in CASES})
    for name in norms or ():
        if name not in known:
            raise ValueError(f"check: unknown norm {name!r}; known: {', '.join(known)}")
    cases = [c for c in CASES if not norms or c.norm in norms]
    impls = list(dict.fromkeys(impls or IMPLS))
    no_numba = "numba" in impls and kernels.load("_jit") is None  # impl "numba" then runs the NumPy reference
    out(f"{'norm':<12} {'variant':<27} {'impl':<9} {'verdict':<8} {'max gap':>8} {'time':>7}")
    all_ok = True
    for case in cases:
        for impl in impls:
            fn, inputs = case.build(impl, np.random.default_rng(seed))
            start = time.perf_counter()
            gap, error = _check_row(fn, inputs)
            elapsed = time.perf_counter() - start
            all_ok = all_ok and not error
            verdict, detail = ("FAIL", f"\n    {error}") if error else ("ok", "")
            label = "numba*" if impl == "numba" and no_numba else impl
            out(f"{case.norm:<12} {case.variant:<27} {label:<9} {verdict:<8} {gap:>8} {elapsed:6.2f}s{detail}")
    out("all gradients agree with finite differences" if all_ok else "some gradient checks FAILED")
    out(
        "max gap: the largest |analytic - numerical| over every entry of every input's Jacobian (central "
        f"differences, step {EPS:g}); gradcheck allows 1e-05 + 1e-03 * |numerical| per entry"
    )
    if no_numba:
        out("* numba cannot be imported here: the numba rows ran the NumPy reference")
    elif "numba" in impls:
        out(
            "(a numba row's time includes compiling its kernels the first time they are used; they are cached "
            "on disk, and `npnorm warmup` compiles all of them ahead)"
        )
    return all_ok
