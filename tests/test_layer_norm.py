"""LayerNorm, DetachNorm and AdaNorm: one table of cases × impl × shape, each meeting two oracles
(finite differences and the other implementations), then numerics and bad input."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import npnorm
import npnorm.functional as F
from npnorm.checks import frozen_layer_norm, straight_through
from npnorm.norms.layer_norm import forward_reference

IMPLS = ["numba", "numpy", "composed"]

# (input shape, normalized_shape): N = 1, H = 1, odd H, a 3-D input, two trailing dims, and a 2-D input
# normalized as a whole (one row of 12: its rows are not the kernel's rows).
SHAPES = [
    ((1, 8), (8,)),
    ((5, 1), (1,)),
    ((4, 7), (7,)),
    ((2, 3, 5), (5,)),
    ((2, 3, 4), (3, 4)),
    ((3, 4), (3, 4)),
]

# name -> keyword arguments of F.layer_norm, and which affine parameters exist
VARIANTS = {
    "affine": dict(weight=True, bias=True),
    "gain_only": dict(weight=True, bias=False),
    "simple": dict(weight=False, bias=False),
    "bias_only": dict(weight=False, bias=True),
}

DETACH = [(True, False), (False, True), (True, True)]


def _inputs(rng, shape, normalized_shape, variant, dtype=np.float64):
    x = npnorm.tensor(rng.standard_normal(shape) * 2 + 0.5, requires_grad=True, dtype=dtype)
    w = npnorm.tensor(rng.standard_normal(normalized_shape), requires_grad=True, dtype=dtype)
    b = npnorm.tensor(rng.standard_normal(normalized_shape), requires_grad=True, dtype=dtype)
    flags = VARIANTS[variant]
    return x, (w if flags["weight"] else None), (b if flags["bias"] else None)


def _grads(fn, tensors, dy):
    for t in tensors:
        if t is not None:
            t.grad = None
    out = fn()
    out.backward(dy)
    return out.data, [None if t is None else t.grad for t in tensors]


# ------------------------------------------------------------------------------ oracle 1: finite differences


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("shape,normalized_shape", SHAPES)
def test_layer_norm_gradcheck(impl, variant, shape, normalized_shape):
    rng = np.random.default_rng(0)
    x, w, b = _inputs(rng, shape, normalized_shape, variant)
    inputs = tuple(t for t in (x, w, b) if t is not None)

    def fn(*args):
        it = iter(args)
        x_ = next(it)
        w_ = next(it) if w is not None else None
        b_ = next(it) if b is not None else None
        return F.layer_norm(x_, normalized_shape, w_, b_, impl=impl)

    assert npnorm.gradcheck(fn, inputs)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("detach_mean,detach_var", DETACH)
@pytest.mark.parametrize("shape,normalized_shape", [((4, 7), (7,)), ((2, 3, 4), (3, 4))])
def test_detach_norm_gradcheck_against_frozen_function(impl, detach_mean, detach_var, shape, normalized_shape):
    """DetachNorm's backward is the exact Jacobian of LayerNorm with μ/σ frozen at the evaluation point."""
    rng = np.random.default_rng(1)
    x, w, b = _inputs(rng, shape, normalized_shape, "affine")
    axes = tuple(range(len(shape) - len(normalized_shape), len(shape)))
    frozen = frozen_layer_norm(x.data.copy(), axes, 1e-5, detach_mean, detach_var)

    def real(x_, w_, b_):
        return F.layer_norm(x_, normalized_shape, w_, b_, detach_mean=detach_mean, detach_var=detach_var, impl=impl)

    def value(x_, w_, b_):
        return frozen(x_) * w_ + b_

    assert npnorm.gradcheck(straight_through(value, real), (x, w, b))


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("detach_mean,detach_var", DETACH)
def test_frozen_check_catches_a_wrong_detach(impl, detach_mean, detach_var):
    """The frozen-function check has teeth: full LayerNorm's gradient does not pass as DetachNorm's."""
    rng = np.random.default_rng(2)
    x, _, _ = _inputs(rng, (3, 6), (6,), "simple")
    frozen = frozen_layer_norm(x.data.copy(), (1,), 1e-5, detach_mean, detach_var)
    fn = straight_through(frozen, lambda x_: F.layer_norm(x_, 6, impl=impl))
    assert not npnorm.gradcheck(fn, (x,), raise_exception=False)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("C,k", [(1.0, 0.1), (2.0, 0.1), (0.5, 0.3)])
def test_ada_norm_gradcheck_against_frozen_function(impl, C, k):
    """AdaNorm's backward is the Jacobian of φ0 ⊙ LayerNorm-simple(x), φ0 = C(1 − k y) frozen at the point."""
    rng = np.random.default_rng(3)
    x = npnorm.tensor(rng.standard_normal((2, 3, 5)), requires_grad=True)
    simple = frozen_layer_norm(x.data.copy(), (2,), 1e-5, False, False)  # nothing frozen
    phi0 = npnorm.tensor(C * (1 - k * simple(npnorm.tensor(x.data)).data))
    fn = straight_through(lambda x_: phi0 * simple(x_), lambda x_: F.ada_norm(x_, 5, C=C, k=k, impl=impl))
    assert npnorm.gradcheck(fn, (x,))
    # ... and that backward is not the derivative of AdaNorm's own forward.
    assert not npnorm.gradcheck(lambda x_: F.ada_norm(x_, 5, C=C, k=k, impl=impl), (x,), raise_exception=False)


# ------------------------------------------------------------------------- oracle 2: the implementations agree


def _run_all_impls(x0, w0, b0, normalized_shape, dy, dtype, **kwargs):
    results = {}
    for impl in IMPLS:
        x = npnorm.tensor(x0, requires_grad=True, dtype=dtype)
        w = None if w0 is None else npnorm.tensor(w0, requires_grad=True, dtype=dtype)
        b = None if b0 is None else npnorm.tensor(b0, requires_grad=True, dtype=dtype)
        out, grads = _grads(
            lambda x=x, w=w, b=b, impl=impl: F.layer_norm(x, normalized_shape, w, b, impl=impl, **kwargs), (x, w, b), dy
        )
        results[impl] = (out, grads)
    return results


def _assert_close(a, b, rtol, atol, what):
    if a is None or b is None:
        assert a is None and b is None, what
        return
    np.testing.assert_allclose(a, b, rtol=rtol, atol=atol, err_msg=what)


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("detach", [(False, False)] + DETACH)
@pytest.mark.parametrize("shape,normalized_shape", SHAPES + [((0, 6), (6,))])
def test_impls_agree_float64(variant, detach, shape, normalized_shape):
    rng = np.random.default_rng(4)
    x, w, b = _inputs(rng, shape, normalized_shape, variant)
    dy = rng.standard_normal(shape)
    res = _run_all_impls(
        x.data,
        None if w is None else w.data,
        None if b is None else b.data,
        normalized_shape,
        dy,
        np.float64,
        detach_mean=detach[0],
        detach_var=detach[1],
    )
    ref_out, ref_grads = res["numpy"]
    for impl in ("numba", "composed"):
        out, grads = res[impl]
        _assert_close(out, ref_out, 1e-12, 1e-12, f"{impl} forward")
        for name, g, rg in zip(("dx", "dweight", "dbias"), grads, ref_grads):
            _assert_close(g, rg, 1e-10, 1e-11, f"{impl} {name}")


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("variant", ["affine", "simple"])
def test_float32_matches_float64_reference(impl, variant):
    """float32 results against the float64 reference, within a few float32 roundings."""
    rng = np.random.default_rng(5)
    x, w, b = _inputs(rng, (64, 96), (96,), variant)
    dy = rng.standard_normal((64, 96))
    weight, bias = (None if w is None else w.data), (None if b is None else b.data)
    ref = _run_all_impls(x.data, weight, bias, (96,), dy, np.float64)["numpy"]
    x32 = npnorm.tensor(x.data, requires_grad=True, dtype=np.float32)
    w32 = None if w is None else npnorm.tensor(w.data, requires_grad=True, dtype=np.float32)
    b32 = None if b is None else npnorm.tensor(b.data, requires_grad=True, dtype=np.float32)
    out, grads = _grads(lambda: F.layer_norm(x32, 96, w32, b32, impl=impl), (x32, w32, b32), dy.astype(np.float32))
    assert out.dtype == np.float32 and grads[0].dtype == np.float32
    np.testing.assert_allclose(out, ref[0], rtol=1e-5, atol=1e-5)
    for g, rg in zip(grads, ref[1]):
        if rg is not None:
            np.testing.assert_allclose(g, rg, rtol=1e-4, atol=1e-4 * np.abs(rg).max())


@given(
    rows=st.integers(0, 12),
    H=st.integers(1, 40),
    scale=st.sampled_from([1e-3, 1.0, 1e3]),
    shift=st.sampled_from([0.0, 5.0, -1e3]),
    affine=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_numba_equals_numpy_reference(rows, H, scale, shift, affine, seed):
    rng = np.random.default_rng(seed)
    x0 = shift + scale * rng.standard_normal((rows, H))
    w0 = rng.standard_normal(H) if affine else None
    b0 = rng.standard_normal(H) if affine else None
    dy = rng.standard_normal((rows, H))
    res = _run_all_impls(x0, w0, b0, (H,), dy, np.float64)
    (out_a, grads_a), (out_b, grads_b) = res["numba"], res["numpy"]
    # x − μ keeps only about 16 − log10(|μ|/σ) digits, in either implementation, and they round differently.
    lost = 1e-15 * abs(shift) / scale
    np.testing.assert_allclose(out_a, out_b, rtol=1e-10, atol=1e-10 + lost)
    for g, rg in zip(grads_a, grads_b):
        scale_g = 1 + (0 if rg is None else np.abs(rg).max(initial=0))
        _assert_close(g, rg, 1e-9, (1e-9 + lost) * scale_g, "grad")


@pytest.mark.parametrize("impl", IMPLS)
def test_non_contiguous_input(impl):
    rng = np.random.default_rng(6)
    base = rng.standard_normal((6, 5))
    x = npnorm.tensor(base, requires_grad=True)
    xt = x.T  # (5, 6), a non-contiguous view
    assert not xt.data.flags.c_contiguous
    y = F.layer_norm(xt, 6, impl=impl)
    expected = forward_reference(np.ascontiguousarray(base.T), None, None, 1e-5)[0]
    np.testing.assert_allclose(y.data, expected, rtol=1e-12, atol=1e-12)
    assert npnorm.gradcheck(lambda t: F.layer_norm(t.T, 6, impl=impl), (x,))


# ---------------------------------------------------------------------------------------------- numerics


@pytest.mark.parametrize("impl", IMPLS)
def test_large_mean_small_spread_float32(impl):
    """Rows with mean 1e4 and std 1e-2: E[x²] − E[x]² would lose everything; two passes in float64 do not."""
    rng = np.random.default_rng(7)
    x32 = (1e4 + 1e-2 * rng.standard_normal((16, 256))).astype(np.float32)
    reference = forward_reference(x32.astype(np.float64), None, None, 1e-5)[0]  # same float32 data, float64 math
    y = F.layer_norm(npnorm.tensor(x32), 256, impl=impl).data
    err = np.abs(y - reference).max() / np.abs(reference).max()
    assert err < 1e-6
    try:
        import torch
    except ImportError:
        return
    y_torch = torch.nn.functional.layer_norm(torch.from_numpy(x32), (256,)).numpy()
    err_torch = np.abs(y_torch - reference).max() / np.abs(reference).max()
    assert err <= max(err_torch, 1e-7)


@pytest.mark.parametrize("impl", IMPLS)
def test_constant_row_gives_bias_and_finite_gradients(impl):
    x = npnorm.tensor(np.full((3, 5), 2.5), requires_grad=True)
    w = npnorm.tensor(np.linspace(0.5, 1.5, 5), requires_grad=True)
    b = npnorm.tensor(np.linspace(-1, 1, 5), requires_grad=True)
    y = F.layer_norm(x, 5, w, b, impl=impl)
    np.testing.assert_allclose(y.data, np.broadcast_to(b.data, (3, 5)), atol=1e-12)
    y.backward(np.random.default_rng(8).standard_normal((3, 5)))
    for t in (x, w, b):
        assert np.all(np.isfinite(t.grad))


@pytest.mark.parametrize("impl", IMPLS)
def test_single_feature_gives_bias_and_zero_dx(impl):
    x = npnorm.tensor(np.random.default_rng(9).standard_normal((4, 1)), requires_grad=True)
    b = npnorm.tensor([0.75], requires_grad=True)
    w = npnorm.tensor([2.0], requires_grad=True)
    y = F.layer_norm(x, 1, w, b, impl=impl)
    np.testing.assert_array_equal(y.data, np.full((4, 1), 0.75))
    y.backward(np.ones((4, 1)))
    np.testing.assert_array_equal(x.grad, np.zeros((4, 1)))


@pytest.mark.parametrize("impl", IMPLS)
def test_zero_rows(impl):
    x = npnorm.tensor(np.zeros((0, 3, 4)), requires_grad=True)
    w = npnorm.tensor(np.ones(4), requires_grad=True)
    b = npnorm.tensor(np.zeros(4), requires_grad=True)
    y = F.layer_norm(x, 4, w, b, impl=impl)
    assert y.shape == (0, 3, 4)
    y.backward(np.zeros((0, 3, 4)))
    assert x.grad.shape == (0, 3, 4)
    np.testing.assert_array_equal(w.grad, np.zeros(4))
    np.testing.assert_array_equal(b.grad, np.zeros(4))


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_value_stays_in_its_row(impl, bad):
    rng = np.random.default_rng(10)
    data = rng.standard_normal((4, 6))
    data[2, 3] = bad
    x = npnorm.tensor(data, requires_grad=True)
    y = F.layer_norm(x, 6, impl=impl)
    y.backward(np.ones((4, 6)))
    clean = [0, 1, 3]
    expected = forward_reference(data[clean], None, None, 1e-5)[0]
    np.testing.assert_allclose(y.data[clean], expected, rtol=1e-12, atol=1e-12)
    assert np.all(np.isfinite(x.grad[clean]))
    assert not np.all(np.isfinite(y.data[2]))


@pytest.mark.parametrize("impl", IMPLS)
def test_eps_zero_is_allowed(impl):
    x = npnorm.tensor(np.random.default_rng(11).standard_normal((3, 8)))
    y = F.layer_norm(x, 8, eps=0.0, impl=impl).data
    np.testing.assert_allclose(y.mean(axis=1), 0, atol=1e-12)
    np.testing.assert_allclose((y * y).mean(axis=1), 1, rtol=1e-12)


# ------------------------------------------------------------------------------------------------ oracle: torch


@pytest.mark.parametrize("impl", IMPLS)
def test_matches_pytorch_float64(impl):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(12)
    x0, w0, b0 = rng.standard_normal((3, 4, 5)), rng.standard_normal((4, 5)), rng.standard_normal((4, 5))
    dy = rng.standard_normal((3, 4, 5))
    x, w, b = (npnorm.tensor(a, requires_grad=True) for a in (x0, w0, b0))
    out, grads = _grads(lambda: F.layer_norm(x, (4, 5), w, b, eps=1e-3, impl=impl), (x, w, b), dy)
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x0, w0, b0))
    ty = torch.nn.functional.layer_norm(tx, (4, 5), tw, tb, eps=1e-3)
    ty.backward(torch.from_numpy(dy))
    np.testing.assert_allclose(out, ty.detach().numpy(), rtol=1e-12, atol=1e-12)
    for g, t in zip(grads, (tx, tw, tb)):
        np.testing.assert_allclose(g, t.grad.numpy(), rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------------------------------------ selection


def test_impl_from_environment(monkeypatch):
    x = npnorm.tensor(np.random.default_rng(13).standard_normal((2, 4)), requires_grad=True)
    monkeypatch.setenv("NPNORM_IMPL", "composed")
    assert F.layer_norm(x, 4)._node.fn.__name__ != "LayerNormFunction"
    monkeypatch.setenv("NPNORM_IMPL", "numpy")
    assert F.layer_norm(x, 4)._node.fn.__name__ == "LayerNormFunction"
    monkeypatch.setenv("NPNORM_IMPL", "fortran")
    with pytest.raises(ValueError, match="NPNORM_IMPL"):
        F.layer_norm(x, 4)


def test_numba_missing_falls_back_to_numpy_with_one_warning(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "numba" or name.startswith("numba."):
            raise ImportError("No module named 'numba'", name="numba")
        return real_import(name, *args, **kwargs)

    import sys

    monkeypatch.setattr(npnorm.kernels, "_modules", {})
    monkeypatch.setattr(npnorm.kernels, "_warned_no_numba", False)
    for mod in [m for m in sys.modules if m.startswith("npnorm.kernels.")]:
        monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setattr(builtins, "__import__", fake_import)
    x = npnorm.tensor(np.random.default_rng(14).standard_normal((3, 5)))
    with pytest.warns(RuntimeWarning, match="numba cannot be imported"):
        y = F.layer_norm(x, 5, impl="numba")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y2 = F.layer_norm(x, 5, impl="numba")  # no second warning
    expected = forward_reference(x.data, None, None, 1e-5)[0]
    np.testing.assert_allclose(y.data, expected, rtol=1e-12)
    np.testing.assert_allclose(y2.data, expected, rtol=1e-12)


# --------------------------------------------------------------------------------------------- bad input


def test_normalized_shape_mismatch_names_the_shapes():
    x = npnorm.tensor(np.zeros((2, 3, 5)))
    expected = r"normalized_shape \(4,\) does not match the last dims of input shape \(2, 3, 5\)"
    with pytest.raises(ValueError, match=expected):
        F.layer_norm(x, 4)
    with pytest.raises(ValueError, match="normalized_shape"):
        F.layer_norm(x, (2, 3, 5, 1))


@pytest.mark.parametrize("name", ["weight", "bias"])
def test_parameter_of_wrong_shape(name):
    x = npnorm.tensor(np.zeros((2, 5)))
    kwargs = {name: npnorm.tensor(np.ones(4))}
    with pytest.raises(ValueError, match=rf"layer_norm: {name} has shape \(4,\), expected \(5,\)"):
        F.layer_norm(x, 5, **kwargs)


def test_parameter_dtype_must_match_input():
    x = npnorm.tensor(np.zeros((2, 5)), dtype=np.float32)
    with pytest.raises(TypeError, match="weight is float64 but the input is float32"):
        F.layer_norm(x, 5, weight=npnorm.tensor(np.ones(5)))


@pytest.mark.parametrize("eps", [-1e-5, float("nan"), "small"])
def test_bad_eps(eps):
    with pytest.raises(ValueError, match="eps must be a number >= 0"):
        F.layer_norm(npnorm.tensor(np.zeros((2, 5))), 5, eps=eps)


def test_bad_impl_and_non_numeric_input():
    with pytest.raises(ValueError, match="impl must be one of"):
        F.layer_norm(npnorm.tensor(np.zeros((2, 5))), 5, impl="cuda")
    with pytest.raises(TypeError, match="layer_norm"):
        F.layer_norm(np.array([["a", "b"]]), 2)
    with pytest.raises(ValueError, match="ada_norm: C must be a finite number"):
        F.ada_norm(npnorm.tensor(np.zeros((2, 5))), 5, C=float("inf"))


def test_integer_input_becomes_float64():
    y = F.layer_norm(np.arange(12).reshape(3, 4), 4)
    assert y.dtype == np.float64
    np.testing.assert_allclose(y.data, forward_reference(np.arange(12.0).reshape(3, 4), None, None, 1e-5)[0])


@pytest.mark.parametrize("bad", ["12", (1.7, 2.2), (True,), None, True])
@pytest.mark.parametrize("norm", [F.layer_norm, F.rms_norm, F.ada_norm])
def test_normalized_shape_must_be_integers(bad, norm):
    rows = np.zeros((2, 1 if bad is True else 12))  # True would be taken for 1 if read as an int
    with pytest.raises(TypeError, match="normalized_shape must be an int or a tuple of ints"):
        norm(npnorm.tensor(rows), bad)


@pytest.mark.parametrize("impl", IMPLS)
def test_gradients_accumulate_across_backward_calls(impl):
    """Leaves adopt LayerNorm's fresh gradients without a copy; a second backward must still add, not alias."""
    rng = np.random.default_rng(15)
    x, w, b = _inputs(rng, (4, 6), (6,), "affine")
    y = F.layer_norm(x, 6, w, b, impl=impl)
    dy = rng.standard_normal((4, 6))
    dy_before = dy.copy()
    y.backward(dy)
    first = [t.grad.copy() for t in (x, w, b)]
    y.backward(dy)
    for t, g in zip((x, w, b), first):
        np.testing.assert_allclose(t.grad, 2 * g, rtol=1e-14)
    np.testing.assert_array_equal(dy, dy_before)  # the caller's upstream gradient is never adopted or changed
