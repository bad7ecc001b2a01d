"""The LayerNorm and AdaNorm kernels against their NumPy twins (npnorm.norms.layer_norm), serial against
parallel, and the edge cases: constant rows, H = 1, N = 0, NaN rows, |mean| ≫ std, eps = 0.

float32 kernels are checked against the float64 reference: they accumulate in float64 and round once, so
their outputs must sit within a few float32 ulps of the exact answer.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from npnorm.kernels import _jit
from npnorm.kernels import layer_norm as K
from npnorm.norms.layer_norm import (
    ada_backward_reference,
    ada_forward_reference,
    backward_reference,
    forward_reference,
)

DTYPES = [np.float32, np.float64]
# rtol of kernel vs float64 reference: float64 differs only by summation order; float32 by one rounding
RTOL = {np.float32: 1e-6, np.float64: 1e-12}
AFFINE = [(True, True), (True, False), (False, True), (False, False)]  # (weight, bias)
DETACH = [(False, False), (True, False), (False, True), (True, True)]  # (detach_mean, detach_var)
# N * H at or above _jit.SERIAL_BELOW: these run the parallel kernels through the public functions
BIG_SHAPES = [(1, 40_000), (3000, 17), (257, 300)]
# H ≥ K.BLOCK_FROM_H = 2048 and chunks of more than K.BLOCK_ROWS = 4 rows (16 chunks of 16-17 rows; 15 chunks of
# 9-10 rows; 15 chunks of 11-12 rows): the backward runs blocks of 4 rows, then the leftover rows, and between
# them the chunks leave 0, 1, 2 and 3 rows over (test_wide_shapes_take_the_row_block_path)
WIDE_SHAPES = [(261, 2048), (137, 2055), (167, 2049)]
EXAMPLES = max(40, settings.default.max_examples)


# --------------------------------------------------------------------------------------------- helpers


def make_case(rng, N, H, dtype, affine=(True, True), offset=0.0, scale=1.0):
    """x = offset + scale * noise, weight, bias (or None), dy; all of dtype."""
    x = (offset + scale * rng.standard_normal((N, H))).astype(dtype)
    weight = rng.standard_normal(H).astype(dtype) if affine[0] else None
    bias = rng.standard_normal(H).astype(dtype) if affine[1] else None
    dy = rng.standard_normal((N, H)).astype(dtype)
    return x, weight, bias, dy


def f64(a):
    return None if a is None else a.astype(np.float64)


def kernel_forward(x, weight, bias, eps=1e-5):
    N = x.shape[0]
    y = np.empty_like(x)  # (N, H)
    mean = np.empty(N)  # (N,) float64
    rstd = np.empty(N)  # (N,) float64
    K.layer_norm_forward(y, mean, rstd, x, weight, bias, eps)
    return y, mean, rstd


def kernel_backward(dy, x, mean, rstd, weight, want=(True, True), detach=(False, False)):
    H = x.shape[1]
    dx = np.empty_like(x)
    dweight = np.empty(H, x.dtype) if want[0] else None
    dbias = np.empty(H, x.dtype) if want[1] else None
    K.layer_norm_backward(dx, dweight, dbias, dy, x, mean, rstd, weight, *detach)
    return dx, dweight, dbias


def assert_close(actual, desired, dtype, scale):
    """|actual - desired| ≤ rtol·|desired| + rtol·scale; `scale` is the size of the terms that cancel."""
    assert actual.dtype == dtype
    rtol = RTOL[dtype]
    np.testing.assert_allclose(actual, desired, rtol=rtol, atol=rtol * scale)


def check_layer_norm(x, weight, bias, dy, detach=(False, False), want=(True, True), eps=1e-5):
    """Forward and backward kernels against the float64 reference."""
    dtype = x.dtype.type
    y, mean, rstd = kernel_forward(x, weight, bias, eps)
    y_ref, mean_ref, rstd_ref = forward_reference(f64(x), f64(weight), f64(bias), eps)
    assert mean.dtype == rstd.dtype == np.float64
    np.testing.assert_allclose(mean, mean_ref, rtol=1e-12, atol=1e-12 * np.abs(x).max(initial=1))
    np.testing.assert_allclose(rstd, rstd_ref, rtol=1e-12)
    # Rounding the mean moves every xhat by up to ~ulp(|x|) * rstd: scale the tolerance by |x| * rstd.
    amplification = 1.0 + np.abs(f64(x)).max(initial=0) * rstd.max(initial=0)  # |x| / std
    w_max = 1.0 if weight is None else np.abs(f64(weight)).max(initial=1)
    assert_close(y, y_ref, dtype, scale=np.abs(y_ref).max(initial=1) + amplification * w_max)

    want = (want[0] and weight is not None, want[1])
    dx, dweight, dbias = kernel_backward(dy, x, mean, rstd, weight, want, detach)
    dx_ref, dweight_ref, dbias_ref = backward_reference(f64(dy), f64(x), mean, rstd, f64(weight), *detach)
    g = f64(dy) * (1.0 if weight is None else f64(weight))  # (N, H)
    assert_close(dx, dx_ref, dtype, scale=rstd.max(initial=1) * np.abs(g).max(initial=1) * amplification)
    if want[0]:
        dweight_scale = np.abs(f64(dy)).sum(0).max(initial=1) * amplification
        assert_close(dweight, dweight_ref, dtype, scale=dweight_scale)
    if want[1]:
        assert_close(dbias, dbias_ref, dtype, scale=np.abs(f64(dy)).sum(0).max(initial=1))


def check_ada_norm(x, dz, C, k, eps=1e-5):
    dtype = x.dtype.type
    N = x.shape[0]
    z, mean, rstd = np.empty_like(x), np.empty(N), np.empty(N)
    K.ada_norm_forward(z, mean, rstd, x, C, k, eps)
    z_ref, mean_ref, rstd_ref = ada_forward_reference(f64(x), C, k, eps)
    np.testing.assert_allclose(rstd, rstd_ref, rtol=1e-12)
    amplification = 1.0 + np.abs(f64(x)).max(initial=0) * rstd.max(initial=0)  # see check_layer_norm
    assert_close(z, z_ref, dtype, scale=np.abs(z_ref).max(initial=1) + amplification * abs(C))

    dx = np.empty_like(x)
    K.ada_norm_backward(dx, dz, x, mean, rstd, C, k)
    dx_ref = ada_backward_reference(f64(dz), f64(x), mean, rstd, C, k)
    y = (f64(x) - mean[:, None]) * rstd[:, None]
    g = f64(dz) * C * (1 - k * y)
    assert_close(dx, dx_ref, dtype, scale=rstd.max(initial=1) * np.abs(g).max(initial=1) * amplification)


@pytest.fixture(params=["serial", "parallel"])
def variant(request, monkeypatch):
    """Force every kernel launch onto one variant, whatever the input size."""
    monkeypatch.setattr(_jit, "SERIAL_BELOW", 2**62 if request.param == "serial" else 0)
    return request.param


# ------------------------------------------------------------------------------ kernels == reference

shapes = st.tuples(st.integers(0, 40), st.integers(1, 70))


@settings(max_examples=EXAMPLES, deadline=None)
@given(
    shape=shapes,
    dtype=st.sampled_from(DTYPES),
    affine=st.sampled_from(AFFINE),
    detach=st.sampled_from(DETACH),
    want=st.sampled_from([(True, True), (True, False), (False, True), (False, False)]),
    offset=st.sampled_from([0.0, 2.5, -300.0]),
    scale=st.sampled_from([1e-2, 1.0, 40.0]),
    seed=st.integers(0, 2**32 - 1),
)
def test_layer_norm_matches_reference(shape, dtype, affine, detach, want, offset, scale, seed):
    rng = np.random.default_rng(seed)
    x, weight, bias, dy = make_case(rng, *shape, dtype, affine, offset, scale)
    check_layer_norm(x, weight, bias, dy, detach, want)


@settings(max_examples=EXAMPLES // 2, deadline=None)
@given(
    shape=shapes,
    dtype=st.sampled_from(DTYPES),
    C=st.sampled_from([1.0, 2.0, 0.5]),
    k=st.sampled_from([0.1, 0.0, 0.3]),
    eps=st.sampled_from([1e-5, 0.0, 0.1]),
    seed=st.integers(0, 2**32 - 1),
)
def test_ada_norm_matches_reference(shape, dtype, C, k, eps, seed):
    assume(eps > 0 or shape[1] > 1)  # H = 1 and eps = 0 divide 0 by 0
    rng = np.random.default_rng(seed)
    x, _, _, dz = make_case(rng, *shape, dtype, (False, False), offset=1.0, scale=3.0)
    check_ada_norm(x, dz, C, k, eps)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("N,H", BIG_SHAPES + WIDE_SHAPES)
def test_big_shapes_match_reference(N, H, dtype, rng):
    x, weight, bias, dy = make_case(rng, N, H, dtype, offset=1.5, scale=2.0)
    check_layer_norm(x, weight, bias, dy)
    check_layer_norm(x, None, None, dy, detach=(True, False), want=(False, False))
    check_ada_norm(x, dy, C=2.0, k=0.1)


# --------------------------------------------------------------------------------- serial == parallel


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("N,H", [(1, 33), (7, 5), (130, 64), (3000, 17)] + WIDE_SHAPES)
def test_parallel_equals_serial(N, H, dtype, rng, monkeypatch):
    x, weight, bias, dy = make_case(rng, N, H, dtype, offset=-4.0, scale=3.0)
    # Both variants get the row blocks of a parallel-sized input (a small input run serially has one block,
    # and the row blocks of wide rows start at block boundaries: other blocks, other rounding).
    chunks = _jit.num_chunks
    monkeypatch.setattr(K, "num_chunks", lambda N, H, size=None: chunks(N, H, size=2**62))
    results = {}
    for name, threshold in [("serial", 2**62), ("parallel", 0)]:
        monkeypatch.setattr(_jit, "SERIAL_BELOW", threshold)
        y, mean, rstd = kernel_forward(x, weight, bias)
        dx, dweight, dbias = kernel_backward(dy, x, mean, rstd, weight)
        z, ada_mean, ada_rstd = np.empty_like(x), np.empty(N), np.empty(N)
        K.ada_norm_forward(z, ada_mean, ada_rstd, x, 2.0, 0.1, 1e-5)
        dxa = np.empty_like(x)
        K.ada_norm_backward(dxa, dy, x, ada_mean, ada_rstd, 2.0, 0.1)
        results[name] = dict(y=y, mean=mean, rstd=rstd, dx=dx, z=z, dxa=dxa, dweight=dweight, dbias=dbias)
    serial, parallel = results["serial"], results["parallel"]
    for key in ["y", "mean", "rstd", "dx", "z", "dxa"]:  # per-row outputs: the same arithmetic, bit for bit
        np.testing.assert_array_equal(parallel[key], serial[key], err_msg=key)
    for key in ["dweight", "dbias"]:  # cross-row sums: the same chunks, so equal up to reassociation
        np.testing.assert_allclose(parallel[key], serial[key], rtol=RTOL[dtype], atol=RTOL[dtype] * N)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("H", [7, 64, 1030, K.FORWARD_BLOCK_FROM_H + 2])
def test_forward_rows_do_not_depend_on_where_a_call_begins(H, dtype, variant, rng):
    """The forward fuses a row's output pass with the next row's sum, and the first row of each call is summed
    in that same loop (with a stand-in output): so every row gets the same bits whichever items the rows are
    cut into, also where the float64 sums are inexact and their order shows in the last bit. Wide rows go
    in blocks (_forward_2_rows), the items sharing whole blocks: which loop sums a row depends on N alone."""
    N = 9
    # magnitudes across 2^-40 .. 2^40: float64 sums of these float32 values round, in an order-dependent way
    x = rng.choice([-1.0, 1.0], (N, H)) * 2.0 ** rng.integers(-40, 41, (N, H)) * rng.uniform(1, 2, (N, H))
    x = x.astype(dtype)
    forward_sum, backward_sum = x.astype(np.float64).sum(axis=1), x[:, ::-1].astype(np.float64).sum(axis=1)
    if H > 7:  # the data can tell one summation order from another
        assert (forward_sum != backward_sum).any()
    weight, bias = rng.standard_normal(H).astype(dtype), rng.standard_normal(H).astype(dtype)
    results = []
    for items in (1, 2, 3, 5, N):
        y, mean, rstd = np.empty_like(x), np.empty(N), np.empty(N)
        K._layer_norm_forward.launch(x.size, items, y, mean, rstd, x, weight, bias, True, True, 1e-5)
        results.append((y.tobytes(), mean.tobytes(), rstd.tobytes()))
    assert all(r == results[0] for r in results[1:])
    # and the mean is a float64 sum's: each of the two sums is off by at most (H - 1)·u·Σ|x_j|, so the two means
    # differ by at most 2u·Σ|x_j| (u = 2^-53), whatever the order of either
    _, mean_ref, _ = forward_reference(f64(x), f64(weight), f64(bias), 1e-5)
    assert (np.abs(np.frombuffer(results[0][1]) - mean_ref) <= 2 * 2.0**-53 * np.abs(f64(x)).sum(axis=1)).all()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("H", [7, 64, 1030])
def test_backward_rows_do_not_depend_on_where_a_chunk_begins(H, dtype, variant, rng, monkeypatch):
    """The backward runs a row's dx pass in the loop of the next row's sums, and the first row of each chunk
    is summed in that same loop: dx gets the same bits however the rows are cut into chunks, also where the
    float64 sums are inexact (dweight and dbias add the chunks' partial sums, so only dx is compared)."""
    N = 9
    x = rng.choice([-1.0, 1.0], (N, H)) * 2.0 ** rng.integers(-20, 21, (N, H)) * rng.uniform(1, 2, (N, H))
    x, dy = x.astype(dtype), rng.standard_normal((N, H)).astype(dtype)
    weight, bias = rng.standard_normal(H).astype(dtype), None
    y, mean, rstd = kernel_forward(x, weight, bias)
    results = []
    for nchunks in (1, 2, 3, 5, N):
        monkeypatch.setattr(K, "num_chunks", lambda N, H, size=None, nchunks=nchunks: nchunks)
        dx, dweight, dbias = kernel_backward(dy, x, mean, rstd, weight)
        results.append(dx.tobytes())
    assert all(r == results[0] for r in results[1:])


# ------------------------------------------------------------------------------------------ edge cases


@pytest.mark.parametrize("dtype", DTYPES)
def test_constant_row(dtype, variant, rng):
    x, weight, bias, dy = make_case(rng, 3, 9, dtype)
    x[1] = 0.1  # var 0 (up to the rounding of the mean): rstd = 1/sqrt(eps), y = bias
    y, mean, rstd = kernel_forward(x, weight, bias, eps=1e-5)
    assert np.isclose(rstd[1], 1 / np.sqrt(1e-5), rtol=1e-6)
    np.testing.assert_allclose(y[1], bias, atol=1e-6)
    dx, dweight, dbias = kernel_backward(dy, x, mean, rstd, weight)
    assert np.isfinite(dx).all() and np.isfinite(dweight).all() and np.isfinite(dbias).all()
    check_layer_norm(x, weight, bias, dy)


@pytest.mark.parametrize("dtype", DTYPES)
def test_h_equals_one(dtype, variant, rng):
    x, weight, bias, dy = make_case(rng, 6, 1, dtype, offset=5.0)
    y, mean, rstd = kernel_forward(x, weight, bias)
    np.testing.assert_array_equal(y, np.broadcast_to(bias, y.shape))  # xhat = 0 exactly
    dx, dweight, dbias = kernel_backward(dy, x, mean, rstd, weight)
    np.testing.assert_array_equal(dx, 0)
    np.testing.assert_array_equal(dweight, 0)
    np.testing.assert_allclose(dbias, dy.sum(0, dtype=np.float64), rtol=RTOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_no_rows(dtype, variant):
    x = np.empty((0, 5), dtype)
    weight, bias = np.ones(5, dtype), np.zeros(5, dtype)
    y, mean, rstd = kernel_forward(x, weight, bias)
    assert y.shape == (0, 5) and mean.shape == rstd.shape == (0,)
    dx, dweight, dbias = kernel_backward(np.empty_like(x), x, mean, rstd, weight)
    assert dx.shape == (0, 5)
    np.testing.assert_array_equal(dweight, 0)
    np.testing.assert_array_equal(dbias, 0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("N,H", [(9, 12), WIDE_SHAPES[1]])
def test_nan_stays_in_its_row(N, H, dtype, variant, rng):
    x, weight, bias, dy = make_case(rng, N, H, dtype)
    x[4, 7] = np.nan
    y, mean, rstd = kernel_forward(x, weight, bias)
    dx, dweight, dbias = kernel_backward(dy, x, mean, rstd, weight)
    z, ada_mean, ada_rstd = np.empty_like(x), np.empty(N), np.empty(N)
    K.ada_norm_forward(z, ada_mean, ada_rstd, x, 1.0, 0.1, 1e-5)
    dxa = np.empty_like(x)
    K.ada_norm_backward(dxa, dy, x, ada_mean, ada_rstd, 1.0, 0.1)
    others = np.arange(N) != 4
    for name, out in [("y", y), ("dx", dx), ("z", z), ("ada dx", dxa)]:
        assert np.isnan(out[4]).all(), name
        assert np.isfinite(out[others]).all(), name
    assert np.isnan(dweight).all()  # the sum over rows meets the NaN row: expected
    assert np.isfinite(dbias).all()  # Σ dy does not involve x
    # the clean rows are exactly what they would be without the NaN row
    check_layer_norm(x[others], weight, bias, dy[others])


@pytest.mark.parametrize("detach", DETACH)
@pytest.mark.parametrize("affine", AFFINE)
def test_wide_rows_with_and_without_weight_and_detached(affine, detach, rng):
    """The row blocks with every specialisation: weight or not, dbias only, DetachNorm's flags."""
    x, weight, bias, dy = make_case(rng, *WIDE_SHAPES[1], np.float64, affine, offset=1.5, scale=2.0)
    check_layer_norm(x, weight, bias, dy, detach=detach)


@settings(max_examples=15, deadline=None)
@given(
    N=st.integers(1, 40),
    H=st.integers(K.BLOCK_FROM_H, K.BLOCK_FROM_H + 70),
    dtype=st.sampled_from(DTYPES),
    affine=st.sampled_from(AFFINE),
    seed=st.integers(0, 2**32 - 1),
)
def test_wide_rows_match_reference(N, H, dtype, affine, seed):
    """Random wide shapes: blocks of rows and the leftovers, serial (and, from N·H ≥ SERIAL_BELOW, parallel)."""
    x, weight, bias, dy = make_case(np.random.default_rng(seed), N, H, dtype, affine, offset=0.5, scale=2.0)
    check_layer_norm(x, weight, bias, dy)


def test_wide_shapes_take_the_row_block_path():
    leftovers = set()
    for N, H in WIDE_SHAPES:
        n = _jit.num_chunks(N, H)
        chunk_sizes = [(c + 1) * N // n - c * N // n for c in range(n)]  # as the kernel splits the rows
        assert H >= K.BLOCK_FROM_H and min(chunk_sizes) > K.BLOCK_ROWS
        leftovers.update(size % K.BLOCK_ROWS for size in chunk_sizes)
    assert leftovers == set(range(K.BLOCK_ROWS))  # every count of rows left over after the blocks


def test_large_mean_small_std_float32(rng):
    """mean 1e4, std 1e-2 in float32: E[x²] - E[x]² would return garbage; two float64 passes do not."""
    x, weight, bias, dy = make_case(rng, 64, 256, np.float32, offset=1e4, scale=1e-2)
    y, mean, rstd = kernel_forward(x, None, None)
    y_ref, mean_ref, rstd_ref = forward_reference(f64(x), None, None, 1e-5)
    np.testing.assert_allclose(y, y_ref, rtol=1e-6, atol=1e-6)
    assert np.abs(y_ref).max() > 1  # y is O(1), so the atol above is a relative error of 1e-6
    check_layer_norm(x, weight, bias, dy)


@pytest.mark.parametrize("H", [2, 3, 256, 4099])
def test_float32_statistics_shifted_by_a_first_value_as_far_off_as_can_be(H, variant, rng):
    """float32 rows take mean and variance from one pass of float64 sums of d = x - k, k = the row's first
    value: var = (Σd² - Σd·Σd/H) / H. The subtraction cancels most when k lies farthest from the mean, and
    Samuelson's inequality bounds how far: |k - mean| <= sqrt(H - 1)·σ. Rows at that bound (k one outlier,
    every other value equal), and rows with k a random outlier, on and far off centre, keep mean and rstd
    within 1e-9 of the float64 reference (rstd relative, the mean relative to σ; float32 resolves 6e-8),
    and y within a few float32 ulps."""
    rows = []
    for offset, scale in [(0.0, 1.0), (1e4, 1e-2), (-3e6, 5.0), (1e-30, 1e-33)]:
        extreme = np.ones(H)
        extreme[0] = -(H - 1)  # sum 0: the first value sits at Samuelson's bound
        outlier = rng.standard_normal(H)
        outlier[0] = 50.0 * np.sqrt(H)
        rows += [offset + scale * extreme, offset + scale * outlier, offset - scale * extreme]
    x = np.asarray(rows).astype(np.float32)
    y, mean, rstd = kernel_forward(x, None, None, eps=0.0)
    y_ref, mean_ref, rstd_ref = forward_reference(f64(x), None, None, 0.0)
    assert np.all(np.isfinite(rstd)) and np.all(np.isfinite(rstd_ref))
    np.testing.assert_allclose(rstd, rstd_ref, rtol=1e-9)
    assert np.all(np.abs(mean - mean_ref) <= 1e-9 / rstd_ref)  # the mean to 1e-9 of σ, which x̂ sees
    assert np.all(np.abs(y - y_ref) <= 4 * 2.0**-24 * np.abs(y_ref).max(axis=1, keepdims=True))
    # AdaNorm's forward takes its statistics the same way
    z, ada_mean, ada_rstd = np.empty_like(x), np.empty(len(x)), np.empty(len(x))
    K.ada_norm_forward(z, ada_mean, ada_rstd, x, 1.0, 0.1, 0.0)
    np.testing.assert_allclose(ada_rstd, rstd_ref, rtol=1e-9)
    assert np.all(np.abs(ada_mean - mean_ref) <= 1e-9 / rstd_ref)


@pytest.mark.parametrize("offset,scale", [(0.0, 1.0), (1e4, 1e-2), (-300.0, 5.0), (3e6, 1.0)])
def test_float32_forward_error_is_a_few_ulps_of_the_output(offset, scale, rng):
    """The output pass runs in float32 on a split mean: its error stays ~1e-7 of max|y| for any mean."""
    x, weight, bias, _ = make_case(rng, 64, 1024, np.float32, offset=offset, scale=scale)
    y, _, _ = kernel_forward(x, weight, bias)
    y_ref, _, _ = forward_reference(f64(x), f64(weight), f64(bias), 1e-5)
    assert np.abs(y - y_ref).max() <= 4 * 2.0**-24 * np.abs(y_ref).max()


@pytest.mark.parametrize("N,H", [(64, 256), (67, 2048)])  # one row at a time; blocks of two rows and a rest
@pytest.mark.parametrize("offset,scale", [(0.0, 1.0), (1e4, 1e-2), (-300.0, 5.0), (3e6, 1.0), (0.0, 1e-3)])
@pytest.mark.parametrize("affine,detach", [((True, True), (False, False)), ((False, False), (True, False))])
def test_float32_dx_error_is_within_the_rounding_bound(N, H, offset, scale, affine, detach, rng):
    """dx's pass in float32 (split mean): |dx - exact| ≤ 12u·rstd·(|g| + |mean_g| + |xhat·mean_gxhat|) per element.

    u = 2^-24. The bound counts every float32 rounding of that pass (kernels/layer_norm.py, _dx_row); the
    sums it starts from are float64, whose rounding is far below u.
    """
    x, weight, _, dy = make_case(rng, N, H, np.float32, affine, offset, scale)
    dy = (dy * (1.0 + 100.0 * rng.random((N, 1)))).astype(np.float32)  # rows of very different sizes
    _, mean, rstd = kernel_forward(x, weight, None)
    dx, _, _ = kernel_backward(dy, x, mean, rstd, weight, (weight is not None, True), detach)
    exact = backward_reference(f64(dy), f64(x), mean, rstd, f64(weight), *detach)[0]
    g = f64(dy) * (1.0 if weight is None else f64(weight))
    xhat = (f64(x) - mean[:, None]) * rstd[:, None]
    mean_g = (0.0 if detach[0] else 1.0) * g.mean(1, keepdims=True)
    mean_gxhat = (0.0 if detach[1] else 1.0) * (g * xhat).mean(1, keepdims=True)
    terms = rstd[:, None] * (np.abs(g) + np.abs(mean_g) + np.abs(xhat * mean_gxhat))
    ratio = np.abs(f64(dx) - exact) / terms
    assert ratio.max() <= 12 * 2.0**-24 * (1 + 1e-6)  # (1 + 1e-6): the first-order bound's higher terms


@pytest.mark.parametrize("dtype", DTYPES)
def test_eps_zero_constant_row_does_not_crash(dtype, variant, rng):
    x, weight, bias, dy = make_case(rng, 4, 8, dtype)
    x[2] = 3.0  # the sum is exact: var = 0 exactly, rstd = inf
    with np.errstate(divide="ignore", invalid="ignore"):  # for NUMBA_DISABLE_JIT=1 (NumPy scalars warn)
        y, mean, rstd = kernel_forward(x, weight, bias, eps=0.0)
        dx, dweight, dbias = kernel_backward(dy, x, mean, rstd, weight)
    assert np.isinf(rstd[2])
    others = np.arange(4) != 2
    assert np.isfinite(y[others]).all() and np.isfinite(dx[others]).all()
    check_layer_norm(x[others], weight, bias, dy[others], eps=0.0)


@pytest.mark.parametrize("H", [4, 1030, 2050])  # one row at a time (4, 1030); the backward's two-row blocks (2050)
def test_float32_rows_at_the_edges_of_its_range_take_the_float64_pass(H, variant, rng):
    """Rows whose float32 pass would overflow give what float64 gives, rounded once; their neighbours as usual.

    Row 0 spreads across float32's range (x - mean overflows float32); row 1 has a subnormal spread with
    eps = 0 (rstd ~ 1e40 overflows float32); row 2 is ordinary, row 3 tiny but in range.
    """
    x = rng.standard_normal((8, H)).astype(np.float32)
    x[0, :] = 3e38
    x[0, ::4] = -3e38
    x[1] = (np.arange(H) % 4 * 1e-40).astype(np.float32)  # subnormal float32 values
    x[3] *= np.float32(1e-30)
    weight = rng.standard_normal(H).astype(np.float32)
    bias = rng.standard_normal(H).astype(np.float32)
    dy = rng.standard_normal((8, H)).astype(np.float32)
    with np.errstate(over="ignore", invalid="ignore"):  # for NUMBA_DISABLE_JIT=1 (NumPy scalars warn)
        y, mean, rstd = kernel_forward(x, weight, bias, eps=0.0)
        dx, _, _ = kernel_backward(dy, x, mean, rstd, weight)
    assert rstd[1] > np.finfo(np.float32).max and np.abs(x[0] - mean[0]).max() > np.finfo(np.float32).max
    y_ref, _, _ = forward_reference(f64(x), f64(weight), f64(bias), 0.0)
    dx_ref = backward_reference(f64(dy), f64(x), mean, rstd, f64(weight), False, False)[0]
    with np.errstate(over="ignore"):
        y_ref32, dx_ref32 = y_ref.astype(np.float32), dx_ref.astype(np.float32)  # row 1's dx overflows, as it must
    for row in (0, 1):  # out of float32's range: the float64 pass, bit for bit its rounded result
        np.testing.assert_array_equal(y[row], y_ref32[row])
        np.testing.assert_array_equal(dx[row], dx_ref32[row])
    assert np.isfinite(y[:2]).all()  # not inf or NaN, as the float32 pass gave
    for row in (2, 3, 4):  # in range: the float32 pass, within its rounding bound
        np.testing.assert_allclose(y[row], y_ref[row], rtol=1e-6, atol=1e-6 * np.abs(y_ref[row]).max())
        np.testing.assert_allclose(dx[row], dx_ref[row], rtol=1e-6, atol=1e-6 * np.abs(dx_ref[row]).max())


def test_only_rows_out_of_range_are_redone_in_numpy(variant, rng, monkeypatch):
    """The wrappers' scan of rstd finds out-of-range rows, and only then are rows redone with NumPy."""
    redone = []
    for name in ("_redo_forward_rows", "_redo_backward_rows"):
        original = getattr(K, name)
        monkeypatch.setattr(K, name, lambda *args, name=name, original=original: redone.append(name) or original(*args))
    x, weight, bias, dy = make_case(rng, 64, 512, np.float32)
    _, mean, rstd = kernel_forward(x, weight, bias)
    kernel_backward(dy, x, mean, rstd, weight)
    assert redone == []  # ordinary rows: the float32 passes only
    x[5] = np.float32(1e-40) * (np.arange(512) % 3)  # one row with a subnormal spread, rstd ~ 1e40 with eps = 0
    with np.errstate(over="ignore", invalid="ignore"):  # for NUMBA_DISABLE_JIT=1 (NumPy scalars warn)
        _, mean, rstd = kernel_forward(x, weight, bias, eps=0.0)
        kernel_backward(dy, x, mean, rstd, weight)
    assert redone == ["_redo_forward_rows", "_redo_backward_rows"]
    np.testing.assert_array_equal(K._out_of_range_rows(x, rstd), [5])


# ------------------------------------------------------------------------------------ how kernels run


def test_importing_kernels_package_does_not_import_numba():
    code = "import sys, npnorm.kernels; assert 'numba' not in sys.modules, 'numba imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=_repo_root())


@pytest.mark.skipif(os.environ.get("NUMBA_DISABLE_JIT") == "1", reason="no threads without the JIT")
def test_two_threads_under_workqueue_layer():
    """The workqueue layer aborts the process on concurrent entry; call_parallel's lock must prevent that."""
    code = textwrap.dedent(
        """
        import threading
        import numba
        import numpy as np
        from npnorm.kernels import layer_norm as K

        x = np.random.default_rng(0).standard_normal((512, 128))
        def work():
            y, mean, rstd = np.empty_like(x), np.empty(512), np.empty(512)
            for _ in range(200):
                K.layer_norm_forward(y, mean, rstd, x, None, None, 1e-5)
        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert numba.threading_layer() == "workqueue", numba.threading_layer()
        print("ok")
        """
    )
    env = dict(os.environ, NUMBA_THREADING_LAYER="workqueue")
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=_repo_root(), capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


@pytest.mark.skipif(os.environ.get("NUMBA_DISABLE_JIT") == "1", reason="no threads without the JIT")
def test_parallel_runs_from_several_threads_at_once_give_the_serial_results(rng):
    """Under a thread-safe layer a parallel run enters its body directly, and the body hands its own arguments
    (packed on its stack) to the shared launcher: runs from four Python threads at once must each compute
    their own input's result, bit for bit the serial one."""
    N, H = 256, 192  # 49152 elements: above SERIAL_BELOW, so every call below is a parallel run
    assert N * H >= _jit.SERIAL_BELOW
    inputs = [make_case(rng, N, H, np.float64) for _ in range(4)]
    expected = []
    for x, weight, bias, _dy in inputs:  # serial runs: the references
        y, mean, rstd = np.empty_like(x), np.empty(N), np.empty(N)
        K._layer_norm_forward.serial(1, y, mean, rstd, x, weight, bias, True, True, 1e-5)
        expected.append(y)
    failures = []

    def work(i):
        x, weight, bias, _ = inputs[i]
        y, mean, rstd = np.empty_like(x), np.empty(N), np.empty(N)
        for _ in range(50):
            K.layer_norm_forward(y, mean, rstd, x, weight, bias, 1e-5)
            if not np.array_equal(y, expected[i]):
                failures.append(i)
                return

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []


@pytest.mark.skipif(os.environ.get("NUMBA_DISABLE_JIT") == "1", reason="nothing is cached without the JIT")
def test_unwritable_cache_dir_warns_once_and_still_works(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")  # NUMBA_CACHE_DIR below a regular file can never be created (even by root)
    code = textwrap.dedent(
        """
        import warnings
        import numpy as np
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            from npnorm.kernels import layer_norm as K
            x = np.arange(12.0).reshape(3, 4)
            y, mean, rstd = np.empty_like(x), np.empty(3), np.empty(3)
            K.layer_norm_forward(y, mean, rstd, x, None, None, 1e-5)
        assert abs(y.mean()) < 1e-12, y
        ours = [w for w in caught if "Numba cache" in str(w.message)]
        assert len(ours) == 1, [str(w.message) for w in caught]
        print("ok")
        """
    )
    env = dict(os.environ, NUMBA_CACHE_DIR=str(blocker / "cache"))
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=_repo_root(), capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


@pytest.mark.skipif(os.environ.get("NUMBA_DISABLE_JIT") == "1", reason="nothing is cached without the JIT")
def test_cached_kernels_go_stale_when_the_shared_helpers_change(tmp_path):
    """A kernel compiles in helpers from kernels/_jit.py (add_up_chunks): a change there alone must make its
    cached code stale, although the kernel's own file is unchanged. The change is simulated by a different
    hash of _jit.py in the third process."""
    code = textwrap.dedent(
        """
        import sys
        import numpy as np
        from npnorm.kernels import _jit
        if sys.argv[1] == "changed":
            real = _jit._source_hash
            _jit._source_hash = lambda path: "changed" if path == _jit.__file__ else real(path)
        from npnorm.kernels import rms_norm as K
        x = np.arange(12.0).reshape(3, 4)
        y, rrms = np.empty_like(x), np.empty(3)
        K.rms_norm_forward(y, rrms, x, None, 1e-5)
        stats = K._rms_norm_forward.body.stats
        print(sum(stats.cache_hits.values()), sum(stats.cache_misses.values()))
        """
    )
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))

    def run(mode):
        done = subprocess.run(
            [sys.executable, "-c", code, mode], env=env, cwd=_repo_root(), capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr[-2000:]
        hits, misses = (int(n) for n in done.stdout.split())
        return hits, misses

    assert run("same") == (0, 1)  # compiled, into the empty cache
    assert run("same") == (1, 0)  # loaded
    assert run("changed") == (0, 1)  # _jit.py "changed": compiled again
    assert run("changed") == (1, 0)  # and cached under the new stamp


def test_read_only_source_tree_caches_in_user_dir(monkeypatch):
    """A read-only install (__pycache__ not writable) still caches, in numba's per-user directory."""
    if _jit.numba.config.CACHE_DIR:
        pytest.skip("NUMBA_CACHE_DIR is set")
    monkeypatch.setattr(_jit, "_is_writable_dir", lambda path: not path.endswith("__pycache__"))
    assert _jit._writable_cache_dir(K._layer_norm_forward.py_func) == _jit._user_cache_dir()
    monkeypatch.setattr(_jit, "_is_writable_dir", lambda path: False)
    assert _jit._writable_cache_dir(K._layer_norm_forward.py_func) is None


def test_num_threads_wrappers():
    n = _jit.get_num_threads()
    assert n >= 1
    _jit.set_num_threads(1)
    try:
        assert _jit.get_num_threads() == 1
    finally:
        _jit.set_num_threads(n)


def _repo_root():
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@_jit.kernel(parallel=False, fastmath=_jit.FASTMATH_REASSOC)
def _reassoc_caller(out, partials):
    """add_up_chunks as the kernels call it: from a kernel compiled with reassociation."""
    _jit.add_up_chunks(out, partials)


@pytest.mark.parametrize("nchunks", [1, 2, 5, 8, 16])
@pytest.mark.parametrize("dtype", DTYPES)
def test_chunk_partials_add_up_in_chunk_order(nchunks, dtype, rng):
    """The cross-chunk sum is exactly the left-to-right float64 sum, rounded once, even inside a kernel that
    may reassociate (that is what makes serial and parallel sums equal to a sum one can write down).

    Inlined into such a kernel, the loop took its "reassoc" flag and LLVM interleaved it: a few cases in a
    thousand then differed in the last bit, so each case draws many partial buffers.
    """
    for _ in range(200):
        H = int(rng.integers(1, 40))
        # magnitudes from 1e-8 to 1e8, so that another order of the additions would change the result
        partials = rng.standard_normal((nchunks, H)) * 10.0 ** rng.integers(-8, 9, size=(nchunks, H))
        expected = np.array([sum(partials[1:, j].tolist(), partials[0, j]) for j in range(H)]).astype(dtype)
        out = np.empty(H, dtype=dtype)
        _reassoc_caller(out, partials)
        np.testing.assert_array_equal(out, expected)


@_jit.kernel(parallel=False)
def _item_shares(total, items, item_from, item_to):
    """item_share as a kernel body calls it, for items item_from .. item_to - 1: (first, stop) per row."""
    out = np.empty((item_to - item_from, 2), dtype=np.int64)
    for k in range(item_to - item_from):
        out[k, 0], out[k, 1] = _jit.item_share(total, items, item_from + k)
    return out


@settings(max_examples=300, deadline=None)
@given(total=st.integers(0, 2**40), items=st.integers(1, 2**20))
def test_item_share_in_a_kernel_follows_the_python_rule(total, items):
    """Compiled, item_share is a handful of LLVM instructions (_jit._item_share_instructions); it must give
    the shares of the Python rule for every item, the whole run (item -1, ON_THREADS) and the closing call
    (item == items) and beyond, and the shares of items 0 .. items-1 must tile 0 .. total."""
    first_items = range(min(items, 5))  # the first items, the last ones and the calls that are not items
    last_items = range(max(items - 5, 0), items)
    others = [_jit.ON_THREADS, -1, items, items + 1]
    for item in [*first_items, *last_items, *others]:
        got = tuple(_item_shares(total, items, item, item + 1)[0])
        assert got == _jit._item_share(total, items, item), (total, items, item)
    if items <= 4096:
        shares = _item_shares(total, items, 0, items)
        assert shares[0, 0] == 0 and shares[-1, 1] == total
        assert np.array_equal(shares[1:, 0], shares[:-1, 1])  # each item starts where the one before stopped


# ------------------------------------------------------------------------- the parallel launcher itself


def _misnamed_body(x, n, k):
    """A kernel body whose last two parameters are not called items, item."""
    if k == _jit.ON_THREADS:
        return _jit.run_on_threads(n)
    x[0] = 1.0


@pytest.mark.skipif(os.environ.get("NUMBA_DISABLE_JIT") == "1", reason="nothing is compiled without the JIT")
def test_a_body_must_end_with_items_and_item():
    """The item function replaces the body's last argument with the item: a body that does not end with
    (items, item) is refused when it compiles, not run with its arguments mixed up."""
    misnamed = _jit.ChunkedKernel(_misnamed_body)
    with pytest.raises(Exception, match="must end with the parameters items, item"):
        misnamed.body(np.zeros(2), 2, _jit.ON_THREADS)


_LAUNCHER_PROBE = """
import numpy as np
import npnorm, npnorm.functional as F
from npnorm.kernels import _jit, layer_norm as K

F.layer_norm(npnorm.Tensor(np.ones((4, 64))), 64)  # a serial run: the launcher is not loaded
print("after a serial run:", _jit._launcher_slot.value is not None)
x, y = np.ones((1024, 64)), np.empty((1024, 64))
args = (y, np.empty(1024), np.empty(1024), x, np.ones(64), np.zeros(64), False, False, 1e-5)
try:
    K._layer_norm_forward.body(*args, 4, _jit.ON_THREADS)  # around launch(): nothing installed it
except RuntimeError as exc:
    print("body on threads:", exc)
F.layer_norm(npnorm.Tensor(x), 64)  # a parallel run through launch()
print("after a parallel run:", _jit._launcher_slot.value is not None)
"""


@pytest.mark.skipif(os.environ.get("NUMBA_DISABLE_JIT") == "1", reason="no launcher without the JIT")
def test_the_launcher_is_installed_by_the_first_parallel_run_and_a_body_without_it_raises():
    """In a fresh process: serial runs never load the launcher; a body sent to the threads around launch()
    (so before any parallel run) raises instead of calling through an empty slot; a parallel run installs it."""
    out = subprocess.run([sys.executable, "-c", _LAUNCHER_PROBE], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines() == [
        "after a serial run: False",
        "body on threads: npnorm: a parallel run before the launcher was installed (run kernels through launch())",
        "after a parallel run: True",
    ]


def test_a_failing_item_in_a_parallel_run_raises(rng):
    """A body that fails in a parallel run (here: the backward's items without their partial sums, which
    the kernel refuses) makes the launcher report it, and the run raises instead of returning garbage."""
    N, H = 64, 32
    x, weight, bias, dy = make_case(rng, N, H, np.float64)
    mean, rstd = np.zeros(N), np.ones(N)
    dx, dweight, dbias = np.empty_like(x), np.empty(H), np.empty(H)
    args = (dx, dweight, dbias, dy, x, mean, rstd, weight, True, False, False, _jit.NO_PARTIALS, _jit.NO_PARTIALS)
    with pytest.raises(RuntimeError, match="failed in a parallel run"):
        _jit.call_parallel(K._layer_norm_backward.parallel, 4, *args)
    K._layer_norm_backward.serial(4, *args)  # a serial run allocates its own partials
    parts = np.empty((4, H)), np.empty((4, H))
    dweight_serial = dweight.copy()
    _jit.call_parallel(K._layer_norm_backward.parallel, 4, *args[:-2], *parts)
    np.testing.assert_array_equal(dweight, dweight_serial)  # the same items in the same order


def test_parallel_runs_of_each_specialisation_match_serial_runs(rng):
    """float32 and float64, with and without parameter gradients, all in one process: each parallel run
    hands its items to the shared launcher, which calls back the body compiled for those argument types
    (a wrong one would give wrong numbers or crash)."""
    N, H = 40, 24
    for dtype in DTYPES:
        x, weight, bias, dy = make_case(rng, N, H, dtype)
        y_ref, mean, rstd = kernel_forward(x, weight, bias)
        for want in ((True, True), (False, False)):
            ref = kernel_backward(dy, x, mean, rstd, weight, want=want)
            dx = np.empty_like(x)
            dw = np.empty(H, dtype) if want[0] else None
            db = np.empty(H, dtype) if want[1] else None
            parts = (np.empty((4, H)), np.empty((4, H))) if want[0] else (_jit.NO_PARTIALS, _jit.NO_PARTIALS)
            args = (dx, dw, db, dy, x, mean, rstd, weight, True, False, False, *parts)
            # 3 items share the 4 chunks of the partial sums: the same chunks, so the same bits as serially
            _jit.call_parallel(K._layer_norm_backward.parallel, 3, *args)
            sums = [None if s is None else np.empty(H, dtype) for s in (dw, db)]
            serial = (np.empty_like(x), *sums)
            no_parts = (_jit.NO_PARTIALS, _jit.NO_PARTIALS)
            K._layer_norm_backward.serial(4, *serial, dy, x, mean, rstd, weight, True, False, False, *no_parts)
            np.testing.assert_array_equal(dx, serial[0])
            if want[0]:
                np.testing.assert_array_equal(dw, serial[1])
                np.testing.assert_array_equal(db, serial[2])
            np.testing.assert_allclose(dx, ref[0], rtol=RTOL[dtype] * 10, atol=RTOL[dtype] * 10)
