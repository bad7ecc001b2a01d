"""RMSNorm: one table of cases × impl × shape, each meeting two oracles (finite differences and the other
implementations), then the kernels, the identity, numerics, PyTorch and bad input."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import npnorm
import npnorm.functional as F
from npnorm.norms.rms_norm import backward_reference, forward_reference

IMPLS = ["numba", "numpy", "composed"]
# Every implementation forms its statistics in float64, so float32 extremes (x² of 1e30 overflows float32)
# are tested on all of them.
FLOAT64_STATS_IMPLS = IMPLS

# (input shape, normalized_shape): N = 1, H = 1, odd H, a 3-D input, two trailing dims.
SHAPES = [
    ((1, 8), (8,)),
    ((5, 1), (1,)),
    ((4, 7), (7,)),
    ((2, 3, 5), (5,)),
    ((2, 3, 4), (3, 4)),
]


def _inputs(rng, shape, normalized_shape, affine, dtype=np.float64):
    x = npnorm.tensor(rng.standard_normal(shape) * 2 + 0.5, requires_grad=True, dtype=dtype)
    w = npnorm.tensor(rng.standard_normal(normalized_shape), requires_grad=True, dtype=dtype) if affine else None
    return x, w


def _grads(fn, tensors, dy):
    for t in tensors:
        if t is not None:
            t.grad = None
    out = fn()
    out.backward(dy)
    return out.data, [None if t is None else t.grad for t in tensors]


def _run(x0, w0, normalized_shape, dy, impl, dtype=np.float64, eps=None):
    x = npnorm.tensor(x0, requires_grad=True, dtype=dtype)
    w = None if w0 is None else npnorm.tensor(w0, requires_grad=True, dtype=dtype)
    return _grads(lambda: F.rms_norm(x, normalized_shape, w, eps=eps, impl=impl), (x, w), dy)


def _assert_close(a, b, rtol, atol, what):
    if a is None or b is None:
        assert a is None and b is None, what
        return
    np.testing.assert_allclose(a, b, rtol=rtol, atol=atol, err_msg=what)


# ------------------------------------------------------------------------------ oracle 1: finite differences


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("affine", [True, False], ids=["affine", "no_weight"])
@pytest.mark.parametrize("shape,normalized_shape", SHAPES)
def test_rms_norm_gradcheck(impl, affine, shape, normalized_shape):
    rng = np.random.default_rng(0)
    x, w = _inputs(rng, shape, normalized_shape, affine)
    if affine:
        assert npnorm.gradcheck(lambda x_, w_: F.rms_norm(x_, normalized_shape, w_, impl=impl), (x, w))
    else:
        assert npnorm.gradcheck(lambda x_: F.rms_norm(x_, normalized_shape, impl=impl), (x,))


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("affine", [True, False], ids=["affine", "no_weight"])
def test_non_contiguous_input(impl, affine):
    rng = np.random.default_rng(1)
    base = rng.standard_normal((6, 5))
    x = npnorm.tensor(base, requires_grad=True)
    w = npnorm.tensor(rng.standard_normal(6), requires_grad=True) if affine else None
    assert not x.T.data.flags.c_contiguous
    y = F.rms_norm(x.T, 6, w, impl=impl)
    expected = forward_reference(np.ascontiguousarray(base.T), None if w is None else w.data, 1e-16)[0]
    np.testing.assert_allclose(y.data, expected, rtol=1e-12, atol=1e-12)
    inputs = (x, w) if affine else (x,)
    assert npnorm.gradcheck(lambda t, *w_: F.rms_norm(t.T, 6, *w_, impl=impl), inputs)


# ------------------------------------------------------------------------- oracle 2: the implementations agree


@pytest.mark.parametrize("affine", [True, False], ids=["affine", "no_weight"])
@pytest.mark.parametrize("shape,normalized_shape", SHAPES + [((0, 6), (6,))])
def test_impls_agree_float64(affine, shape, normalized_shape):
    rng = np.random.default_rng(2)
    x, w = _inputs(rng, shape, normalized_shape, affine)
    dy = rng.standard_normal(shape)
    w0 = None if w is None else w.data
    ref_out, ref_grads = _run(x.data, w0, normalized_shape, dy, "numpy")
    for impl in ("numba", "composed"):
        out, grads = _run(x.data, w0, normalized_shape, dy, impl)
        _assert_close(out, ref_out, 1e-12, 1e-12, f"{impl} forward")
        for name, g, rg in zip(("dx", "dweight"), grads, ref_grads, strict=True):
            _assert_close(g, rg, 1e-10, 1e-11, f"{impl} {name}")


def _assert_numba_matches_numpy(x0, w0, dy, out_tol, grad_tol, eps=None):
    """impl="numba" against the NumPy reference over the last axis, float64: y within out_tol (relative and
    absolute), dx and dweight within grad_tol (relative, and absolute scaled by the gradient's size)."""
    H = x0.shape[-1]
    out_a, grads_a = _run(x0, w0, (H,), dy, "numba", eps=eps)
    out_b, grads_b = _run(x0, w0, (H,), dy, "numpy", eps=eps)
    np.testing.assert_allclose(out_a, out_b, rtol=out_tol, atol=out_tol)
    for g, rg in zip(grads_a, grads_b, strict=True):
        _assert_close(g, rg, grad_tol, grad_tol * (1 + (0 if rg is None else np.abs(rg).max(initial=0))), "grad")


@given(
    rows=st.integers(0, 12),
    H=st.integers(1, 40),
    scale=st.sampled_from([1e-3, 1.0, 1e3]),
    shift=st.sampled_from([0.0, 5.0, -1e3]),
    affine=st.booleans(),
    eps=st.sampled_from([None, 0.0, 1e-5, 1.0]),
    seed=st.integers(0, 2**16),
)
def test_numba_equals_numpy_reference(rows, H, scale, shift, affine, eps, seed):
    rng = np.random.default_rng(seed)
    x0 = shift + scale * rng.standard_normal((rows, H))
    w0 = rng.standard_normal(H) if affine else None
    dy = rng.standard_normal((rows, H))
    _assert_numba_matches_numpy(x0, w0, dy, out_tol=1e-10, grad_tol=1e-9, eps=eps)


@pytest.mark.parametrize("impl", FLOAT64_STATS_IMPLS)
@pytest.mark.parametrize("affine", [True, False], ids=["affine", "no_weight"])
def test_float32_matches_float64_reference(impl, affine):
    """float32 results against the float64 reference, within a few float32 roundings; dtypes are kept."""
    rng = np.random.default_rng(3)
    x, w = _inputs(rng, (64, 96), (96,), affine)
    dy = rng.standard_normal((64, 96))
    w0 = None if w is None else w.data
    ref_out, ref_grads = _run(x.data, w0, (96,), dy, "numpy", eps=1e-6)
    out, grads = _run(x.data, w0, (96,), dy.astype(np.float32), impl, dtype=np.float32, eps=1e-6)
    assert out.dtype == np.float32 and all(g.dtype == np.float32 for g in grads if g is not None)
    np.testing.assert_allclose(out, ref_out, rtol=1e-5, atol=1e-5)
    for g, rg in zip(grads, ref_grads, strict=True):
        if rg is not None:
            np.testing.assert_allclose(g, rg, rtol=1e-4, atol=1e-4 * np.abs(rg).max())


# ---------------------------------------------------------------------------------------------- kernels


@pytest.mark.parametrize("N,H", [(5, 2050), (7, 2048), (141, 2055), (30, 4096)])
@pytest.mark.parametrize("affine", [True, False], ids=["affine", "no_weight"])
def test_wide_rows_four_at_a_time_equal_the_reference(N, H, affine):
    """H ≥ BLOCK_FROM_H: the backward takes four rows per update of dweight's partial row, then the N mod 4
    rows left in each chunk one by one (5, 7: one chunk; 141: 15 chunks of 9-10 rows; 30 x 4096: 7 chunks
    of 4-5 rows, run in parallel)."""
    from npnorm.kernels import rms_norm as kern

    assert H >= kern.BLOCK_FROM_H
    rng = np.random.default_rng(N + H)
    x0 = 0.5 + 2.0 * rng.standard_normal((N, H))
    w0 = rng.standard_normal(H) if affine else None
    dy = rng.standard_normal((N, H))
    _assert_numba_matches_numpy(x0, w0, dy, out_tol=1e-12, grad_tol=1e-10)


@settings(max_examples=15, deadline=None)
@given(N=st.integers(1, 40), extra=st.integers(0, 70), affine=st.booleans(), seed=st.integers(0, 2**16))
def test_wide_rows_match_reference_random_shapes(N, extra, affine, seed):
    from npnorm.kernels import rms_norm as kern

    H = kern.BLOCK_FROM_H + extra
    rng = np.random.default_rng(seed)
    x0, dy = rng.standard_normal((N, H)), rng.standard_normal((N, H))
    w0 = rng.standard_normal(H) if affine else None
    _assert_numba_matches_numpy(x0, w0, dy, out_tol=1e-12, grad_tol=1e-10)


@pytest.mark.parametrize("N,H", [(203, 37), (141, 2055)])  # neither divides evenly into the row blocks
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("affine", [True, False], ids=["affine", "no_weight"])
def test_parallel_kernels_equal_serial_bit_for_bit(N, H, dtype, affine):
    """prange over rows and over fixed row blocks: thread count and scheduling cannot change a bit."""
    from npnorm.kernels import _jit
    from npnorm.kernels import rms_norm as kern
    from npnorm.kernels._jit import num_chunks

    rng = np.random.default_rng(4)
    x = rng.standard_normal((N, H)).astype(dtype)
    dy = rng.standard_normal((N, H)).astype(dtype)
    # the kernels take the weight as an array and a flag (the public wrappers pass ones for None)
    w = rng.standard_normal(H).astype(dtype) if affine else np.ones(H, dtype)
    nchunks = num_chunks(N, H, size=_jit.SERIAL_BELOW)  # the blocks of an input big enough to run in parallel
    assert nchunks > 1
    results = []
    forward, backward = kern._rms_norm_forward, kern._rms_norm_backward
    # the forward's rows are independent: a parallel run in 3 items (uneven) against one serial item
    for run in (partial(forward.serial, 1), partial(_jit.call_parallel, forward.parallel, 3)):
        y, rrms = np.empty_like(x), np.empty(N)
        run(y, rrms, x, w, affine, 1e-5)
        results.append((y, rrms))
    # A serial run's items are the chunks, and it allocates the partial sums; a parallel run brings them and
    # its items (here 3, fewer than the chunks) share the chunks: the same chunks, so the same bits.
    for run, parts in (
        (partial(backward.serial, nchunks), _jit.NO_PARTIALS),
        (partial(_jit.call_parallel, backward.parallel, 3), np.empty((nchunks, H))),
    ):
        dx, dweight = np.empty_like(x), np.empty(H, dtype)
        run(dx, dweight, dy, x, results[0][1], w, affine, parts)
        results.append((dx, dweight))
    for a, b in zip(results[0], results[1], strict=True):  # forward: serial vs parallel
        np.testing.assert_array_equal(a, b)
    for a, b in zip(results[2], results[3], strict=True):  # backward: serial vs parallel
        np.testing.assert_array_equal(a, b)


def test_kernels_cover_both_variants_through_the_public_api():
    """Above the serial threshold the public call runs the parallel kernels; they match the reference."""
    from npnorm.kernels._jit import SERIAL_BELOW

    rng = np.random.default_rng(5)
    N, H = SERIAL_BELOW // 64 + 3, 64
    x0, w0, dy = rng.standard_normal((N, H)), rng.standard_normal(H), rng.standard_normal((N, H))
    out, grads = _run(x0, w0, H, dy, "numba")
    ref_out, ref_grads = _run(x0, w0, H, dy, "numpy")
    np.testing.assert_allclose(out, ref_out, rtol=1e-12, atol=1e-12)
    for g, rg in zip(grads, ref_grads, strict=True):
        np.testing.assert_allclose(g, rg, rtol=1e-10, atol=1e-10 * np.abs(rg).max())


# ---------------------------------------------------------------------------------------------- identity


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("eps", [0.0, 1e-5, 0.3, 4.0])
@pytest.mark.parametrize("affine", [True, False], ids=["affine", "no_weight"])
def test_identity_gradient_along_the_row(impl, eps, affine):
    """Σ_j x_j·dx_j = ε/(ms+ε)·Σ_j dy_j·y_j (= ε/(ms+ε)·Σ_j g_j·x̂_j), y the output, per row; and Σ_j dx_j ≠ 0."""
    rng = np.random.default_rng(6)
    x0 = rng.standard_normal((6, 9)) * np.array([[0.1], [0.5], [1.0], [2.0], [3.0], [10.0]])
    w0 = rng.standard_normal(9) if affine else None
    dy = rng.standard_normal((6, 9))
    y, (dx, _) = _run(x0, w0, 9, dy, impl, eps=eps)
    ms = (x0 * x0).mean(axis=1)
    lhs = (x0 * dx).sum(axis=1)  # (N,)
    rhs = eps / (ms + eps) * (dy * y).sum(axis=1)  # (N,)
    scale = np.abs(x0 * dx).sum(axis=1)  # the size of the terms that cancel on the left
    np.testing.assert_allclose(lhs, rhs, rtol=1e-10, atol=1e-13 * scale.max())
    if eps > 0.1:  # the identity has teeth: ε/(ms+ε) is far from 0 on the small rows
        assert np.abs(rhs[:2]).min() > 1e-3
    # No re-centring (LayerNorm's Σ dx = 0 comes from its path through μ, which RMSNorm lacks).
    assert np.all(np.abs(dx.sum(axis=1)) > 1e-6)


def test_reference_backward_matches_its_formula():
    """backward_reference is the docstring's formula, term by term (a guard against a silent refactor)."""
    rng = np.random.default_rng(11)
    x, w, dy = rng.standard_normal((3, 5)), rng.standard_normal(5), rng.standard_normal((3, 5))
    _, rrms = forward_reference(x, w, 1e-3)
    dx, dw = backward_reference(dy, x, rrms, w)
    xhat, g = x * rrms[:, None], dy * w
    np.testing.assert_allclose(dx, rrms[:, None] * (g - xhat * (g * xhat).mean(axis=1, keepdims=True)), rtol=1e-14)
    np.testing.assert_allclose(dw, (dy * xhat).sum(axis=0), rtol=1e-14)


@pytest.mark.parametrize("eps", [0.0, 1e-3, 0.5])
def test_jacobian_spectrum(eps):
    """J = rrms (I − x̂x̂ᵀ/H): symmetric; eigenvalue rrms·ε/(ms+ε) along x̂, rrms on the H − 1 others."""
    H = 6
    x = np.random.default_rng(13).standard_normal(H) * 0.3
    xs = np.tile(x, (H, 1))  # (H, H): row k of the backward with dy = e_k is row k of J
    _, rrms = forward_reference(xs, None, eps)
    J, _ = backward_reference(np.eye(H), xs, rrms, None)
    np.testing.assert_allclose(J, J.T, rtol=0, atol=1e-14)
    ms, r = (x * x).mean(), rrms[0]
    expected = np.sort(np.r_[r * eps / (ms + eps), np.full(H - 1, r)])
    np.testing.assert_allclose(np.linalg.eigvalsh(J), expected, rtol=1e-12, atol=1e-12 * r)
    np.testing.assert_allclose(J @ x, r * eps / (ms + eps) * x, rtol=1e-12, atol=1e-12 * r)


# ---------------------------------------------------------------------------------------------- numerics


@pytest.mark.parametrize("impl", IMPLS)
def test_zero_row_gives_zero_and_finite_gradients(impl):
    """x = 0: ms = 0, rrms = 1/√ε, y = 0 and dx = g/√ε (only the first path of dx survives), dγ = 0."""
    rng = np.random.default_rng(7)
    x0 = rng.standard_normal((3, 5))
    x0[1] = 0.0
    w0, dy = rng.standard_normal(5), rng.standard_normal((3, 5))
    eps = 1e-6
    y, (dx, _) = _run(x0, w0, 5, dy, impl, eps=eps)
    np.testing.assert_array_equal(y[1], np.zeros(5))
    np.testing.assert_allclose(dx[1], dy[1] * w0 / np.sqrt(eps), rtol=1e-12)
    _, (dx_default, dw) = _run(x0, w0, 5, dy, impl)  # eps = finfo(float64).eps: huge but finite
    assert np.all(np.isfinite(dx_default)) and np.all(np.isfinite(dw))


@pytest.mark.parametrize("impl", IMPLS)
def test_constant_row_gives_its_sign_and_finite_gradients(impl):
    x0 = np.array([[2.5] * 5, [-1e-3] * 5])
    y, (dx, _) = _run(x0, None, 5, np.ones((2, 5)), impl, eps=0.0)
    np.testing.assert_allclose(y, np.sign(x0), rtol=1e-14)
    np.testing.assert_allclose(dx, 0.0, atol=1e-12)  # a constant row and dy ∥ x: only the scale changes


@pytest.mark.parametrize("impl", IMPLS)
def test_single_feature(impl):
    """H = 1: y = γ·x/√(x² + ε), dx = g·ε·rrms³ — small, but not zero as it is for LayerNorm."""
    x0 = np.array([[0.5], [-2.0], [1e-3]])
    w0, dy, eps = np.array([1.5]), np.array([[1.0], [2.0], [-1.0]]), 1e-4
    y, (dx, dw) = _run(x0, w0, 1, dy, impl, eps=eps)
    rrms = 1 / np.sqrt(x0 * x0 + eps)
    np.testing.assert_allclose(y, w0 * x0 * rrms, rtol=1e-13)
    np.testing.assert_allclose(dx, dy * w0 * eps * rrms**3, rtol=1e-9)
    np.testing.assert_allclose(dw, (dy * x0 * rrms).sum(axis=0), rtol=1e-13)


@pytest.mark.parametrize("impl", IMPLS)
def test_zero_rows(impl):
    x = npnorm.tensor(np.zeros((0, 3, 4)), requires_grad=True)
    w = npnorm.tensor(np.ones(4), requires_grad=True)
    y = F.rms_norm(x, 4, w, impl=impl)
    assert y.shape == (0, 3, 4)
    y.backward(np.zeros((0, 3, 4)))
    assert x.grad.shape == (0, 3, 4)
    np.testing.assert_array_equal(w.grad, np.zeros(4))


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_value_stays_in_its_row(impl, bad):
    rng = np.random.default_rng(8)
    data = rng.standard_normal((4, 6))
    data[2, 3] = bad
    x = npnorm.tensor(data, requires_grad=True)
    y = F.rms_norm(x, 6, impl=impl)
    y.backward(np.ones((4, 6)))
    clean = [0, 1, 3]
    expected = forward_reference(data[clean], None, np.finfo(np.float64).eps)[0]
    np.testing.assert_allclose(y.data[clean], expected, rtol=1e-12, atol=1e-12)
    assert np.all(np.isfinite(x.grad[clean]))
    assert not np.all(np.isfinite(y.data[2]))


@pytest.mark.parametrize("impl", FLOAT64_STATS_IMPLS)
def test_huge_float32_values_do_not_overflow(impl):
    """|x| ~ 1e30: x² = 1e60 overflows float32 (max 3.4e38), not the float64 accumulator."""
    rng = np.random.default_rng(9)
    x32 = (1e30 * rng.standard_normal((4, 16))).astype(np.float32)
    w32, dy32 = rng.standard_normal(16).astype(np.float32), rng.standard_normal((4, 16)).astype(np.float32)
    out, (dx, dw) = _run(x32, w32, 16, dy32, impl, dtype=np.float32)
    eps32 = float(np.finfo(np.float32).eps)
    ref_out, (ref_dx, ref_dw) = _run(x32.astype(np.float64), w32, 16, dy32.astype(np.float64), "numpy", eps=eps32)
    for a, ref in ((out, ref_out), (dx, ref_dx), (dw, ref_dw)):
        assert np.all(np.isfinite(a))
        np.testing.assert_allclose(a, ref, rtol=1e-5, atol=1e-6 * np.abs(ref).max())
    xhat = F.rms_norm(npnorm.tensor(x32), 16, impl=impl).data.astype(np.float64)
    np.testing.assert_allclose(np.sqrt((xhat * xhat).mean(axis=1)), 1.0, rtol=1e-6)


@pytest.mark.parametrize("impl", FLOAT64_STATS_IMPLS)
def test_tiny_float32_values_do_not_underflow(impl):
    """|x| ~ 1e-30: x² = 1e-60 is 0 in float32, but not in float64; with ε = 0 every row has RMS 1."""
    rng = np.random.default_rng(10)
    x32 = (1e-30 * rng.standard_normal((4, 16))).astype(np.float32)
    dy32 = rng.standard_normal((4, 16)).astype(np.float32)
    out, (dx, _) = _run(x32, None, 16, dy32, impl, dtype=np.float32, eps=0.0)
    np.testing.assert_allclose(np.sqrt((out.astype(np.float64) ** 2).mean(axis=1)), 1.0, rtol=1e-6)
    ref_out, (ref_dx, _) = _run(x32.astype(np.float64), None, 16, dy32.astype(np.float64), "numpy", eps=0.0)
    assert np.all(np.isfinite(dx))
    np.testing.assert_allclose(out, ref_out, rtol=1e-6)
    np.testing.assert_allclose(dx, ref_dx, rtol=1e-5, atol=1e-6 * np.abs(ref_dx).max())
    # With the default ε = finfo(float32).eps ≈ 1.2e-7 ≫ ms = 1e-60, y ≈ x/√ε: tiny, but not flushed to 0.
    y = F.rms_norm(npnorm.tensor(x32), 16, impl=impl).data
    np.testing.assert_allclose(y, x32 / np.sqrt(np.float64(np.finfo(np.float32).eps)), rtol=1e-6)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_eps_none_is_the_machine_epsilon_of_the_dtype(impl, dtype):
    x = npnorm.tensor(np.array([[1e-4, -2e-4, 3e-4, 0.0]]), dtype=dtype)  # ms ~ 3.5e-8, comparable to ε(float32)
    default = F.rms_norm(x, 4, impl=impl).data
    explicit = F.rms_norm(x, 4, eps=float(np.finfo(dtype).eps), impl=impl).data
    np.testing.assert_array_equal(default, explicit)
    if dtype == np.float32:
        assert not np.allclose(default, F.rms_norm(x, 4, eps=0.0, impl=impl).data, rtol=1e-3)


def test_integer_input_becomes_float64():
    y = F.rms_norm(np.arange(12).reshape(3, 4), 4)
    assert y.dtype == np.float64
    expected = forward_reference(np.arange(12.0).reshape(3, 4), None, np.finfo(np.float64).eps)[0]
    np.testing.assert_allclose(y.data, expected, rtol=1e-15)


# ------------------------------------------------------------------------------------------------ oracle: torch


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("eps", [None, 1e-3])
@pytest.mark.parametrize("affine", [True, False], ids=["affine", "no_weight"])
def test_matches_pytorch_float64(impl, eps, affine):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(12)
    x0, w0, dy = rng.standard_normal((3, 4, 5)), rng.standard_normal((4, 5)), rng.standard_normal((3, 4, 5))
    out, grads = _run(x0, w0 if affine else None, (4, 5), dy, impl, eps=eps)
    tx = torch.tensor(x0, requires_grad=True)
    tw = torch.tensor(w0, requires_grad=True) if affine else None
    ty = torch.nn.functional.rms_norm(tx, (4, 5), tw, eps=eps)
    ty.backward(torch.from_numpy(dy))
    np.testing.assert_allclose(out, ty.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(grads[0], tx.grad.numpy(), rtol=1e-10, atol=1e-12)
    if affine:
        np.testing.assert_allclose(grads[1], tw.grad.numpy(), rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------------------------------- bad input


def test_normalized_shape_mismatch_names_the_shapes():
    x = npnorm.tensor(np.zeros((2, 3, 5)))
    with pytest.raises(ValueError, match=r"rms_norm: normalized_shape \(4,\) does not match the last dims of input"):
        F.rms_norm(x, 4)
    with pytest.raises(ValueError, match="normalized_shape"):
        F.rms_norm(x, (2, 3, 5, 1))


def test_weight_of_wrong_shape_or_dtype():
    x = npnorm.tensor(np.zeros((2, 5)), dtype=np.float32)
    with pytest.raises(ValueError, match=r"rms_norm: weight has shape \(4,\), expected \(5,\)"):
        F.rms_norm(x, 5, npnorm.tensor(np.ones(4), dtype=np.float32))
    with pytest.raises(TypeError, match="rms_norm: weight is float64 but the input is float32"):
        F.rms_norm(x, 5, npnorm.tensor(np.ones(5)))


@pytest.mark.parametrize("eps", [-1e-5, float("nan"), "small"])
def test_bad_eps(eps):
    with pytest.raises(ValueError, match="rms_norm: eps must be a number >= 0"):
        F.rms_norm(npnorm.tensor(np.zeros((2, 5))), 5, eps=eps)


def test_bad_impl():
    with pytest.raises(ValueError, match="rms_norm: impl must be one of"):
        F.rms_norm(npnorm.tensor(np.zeros((2, 5))), 5, impl="cuda")


@pytest.mark.parametrize("impl", IMPLS)
def test_module_matches_functional_and_pytorch_layout(impl):
    from npnorm import nn

    rng = np.random.default_rng(21)
    m = nn.RMSNorm((3, 4), eps=1e-6, dtype=np.float64, impl=impl)
    assert [n for n, _ in m.named_parameters()] == ["weight"]
    m.weight.data[...] = rng.standard_normal((3, 4))
    x = npnorm.tensor(rng.standard_normal((2, 3, 4)), requires_grad=True)
    np.testing.assert_allclose(m(x).data, F.rms_norm(x, (3, 4), m.weight, 1e-6, impl=impl).data, rtol=1e-14)
    assert npnorm.gradcheck(lambda t, w: F.rms_norm(t, (3, 4), w, 1e-6, impl=impl), (x, m.weight))
    assert npnorm.gradcheck(lambda t, w: m(t), (x, m.weight))  # the layer itself uses its weight
    assert list(nn.RMSNorm(4, elementwise_affine=False).parameters()) == []
    with pytest.raises(ValueError, match="eps"):
        nn.RMSNorm(4, eps=-1.0)
