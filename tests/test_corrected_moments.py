"""The corrected two-pass mean and variance (norms/_moments.py, and the kernels' second pass), in every impl.

A constant unit (a LayerNorm or GroupNorm row, a BatchNorm channel) has variance exactly 0. The mean Σx/M of a
constant is not the constant in general (the mean of seven 0.1s is not 0.1), so a plain two-pass variance of a
constant float64 row is about ulp², not 0: with ε = 0 its x̂ came out ±1 instead of 0/0 = NaN, and with ε > 0
about 1e-14 instead of 0. The correction takes the mean's rounding back out. These tests use constants whose
sums round (0.1, 1/3, random values) and sizes that are not powers of two; the float64 cases failed before the
correction. A float64 row with |μ| ≫ σ gets its mean to an ulp and its variance to float64 rounding, checked
against exact rational arithmetic (uncorrected: 2.5 ulps and 1e-9).
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import npnorm
import npnorm.functional as F
from npnorm.kernels import batch_norm as batch_norm_kernels
from npnorm.kernels import layer_norm as layer_norm_kernels
from npnorm.norms.batch_norm import stats_reference
from npnorm.norms.layer_norm import forward_reference

IMPLS = ["numba", "numpy", "composed"]
DTYPES = [np.float32, np.float64]
# finite, away from the overflow of a float64 sum of squares and from float32's range
VALUES = st.floats(min_value=-1e30, max_value=1e30, allow_nan=False, allow_subnormal=False)


def _values(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


def _run(norm, x, eps, impl):
    """y of `norm` on x, and β broadcast to y's shape: 0.25 + feature / 8 (LayerNorm) or channel / 8 (GroupNorm,
    BatchNorm), 0 for AdaNorm, which has none."""
    if norm == "ada":
        return F.ada_norm(npnorm.tensor(x), x.shape[-1], eps=eps, impl=impl).data, np.zeros_like(x)
    if norm == "layer":
        bias = (0.25 + np.arange(x.shape[-1]) / 8).astype(x.dtype)
        y = F.layer_norm(npnorm.tensor(x), x.shape[-1], None, npnorm.tensor(bias), eps=eps, impl=impl).data
        return y, np.broadcast_to(bias, x.shape)
    bias = (0.25 + np.arange(x.shape[1]) / 8).astype(x.dtype)
    b = npnorm.tensor(bias)
    if norm == "group":  # one group per channel
        y = F.group_norm(npnorm.tensor(x), x.shape[1], None, b, eps=eps, impl=impl).data
    else:
        y = F.batch_norm(npnorm.tensor(x), None, None, None, b, training=True, eps=eps, impl=impl).data
    return y, np.broadcast_to(bias[:, None], x.shape)


def _with_constant_unit(norm, value, size, dtype, rng):
    """An input of `norm` whose unit 1 (a row, a group, a channel) is `value` everywhere; the others random."""
    if norm in ("layer", "ada"):
        x = _values(rng, (3, size), dtype)
        x[1] = value
        return x, (slice(1, 2), slice(None))
    if norm == "group":  # one group per channel: unit 1 is channel 1 of sample 1
        x = _values(rng, (2, 3, size), dtype)
        x[1, 1] = value
        return x, (slice(1, 2), slice(1, 2))
    x = _values(rng, (size, 3, 2), dtype)  # batch: channel 1 over all samples and positions
    x[:, 1] = value
    return x, (slice(None), slice(1, 2))


NORMS = ["layer", "ada", "group", "batch"]
# a norm, impl and dtype, a constant for the constant unit, the size of a unit, and a seed for the others
CASES = given(
    norm=st.sampled_from(NORMS),
    impl=st.sampled_from(IMPLS),
    dtype=st.sampled_from(DTYPES),
    value=VALUES,
    size=st.integers(2, 300),
    seed=st.integers(0, 2**32 - 1),
)


@settings(max_examples=60, deadline=None)
@CASES
def test_a_constant_unit_is_centred_exactly(norm, impl, dtype, value, size, seed):
    """ε > 0: x̂ = 0 exactly, so y is β exactly (0 for AdaNorm), not β plus ~1e-14."""
    x, unit = _with_constant_unit(norm, value, size, dtype, np.random.default_rng(seed))
    y, bias = _run(norm, x, 1e-5, impl)
    np.testing.assert_array_equal(y[unit], bias[unit])
    assert np.isfinite(y).all()


@settings(max_examples=60, deadline=None)
@CASES
def test_eps_zero_gives_nan_in_the_constant_unit_only(norm, impl, dtype, value, size, seed):
    """ε = 0: x̂ = 0/0 is NaN in the constant unit (PyTorch: NaN), and the other units are untouched."""
    x, unit = _with_constant_unit(norm, value, size, dtype, np.random.default_rng(seed))
    with np.errstate(divide="ignore", invalid="ignore"):
        y, _ = _run(norm, x, 0.0, impl)
    assert np.isnan(y[unit]).all()
    others = np.ones(y.shape, bool)
    others[unit] = False
    assert np.isfinite(y[others]).all()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("H", [7, 300, 2049])
def test_layer_norm_statistics_of_a_constant_row_are_exact(dtype, H):
    """mean = the constant and rstd = 1/√ε exactly, from the kernel (serial and, at 3·2049 ≥ SERIAL_BELOW rows
    of values, parallel) and from the NumPy reference."""
    x = np.random.default_rng(H).standard_normal((16, H)).astype(dtype)
    for i, value in enumerate([0.1, 1 / 3, 1e4 + 0.3, -7.7e-9]):
        x[i] = value
    constant = x[:4, 0].astype(np.float64)
    eps = 1e-5
    y, mean, rstd = np.empty_like(x), np.empty(16), np.empty(16)
    layer_norm_kernels.layer_norm_forward(y, mean, rstd, x, None, None, eps)
    _, ref_mean, ref_rstd = forward_reference(x, None, None, eps)
    for m, r in ((mean, rstd), (ref_mean, ref_rstd)):
        np.testing.assert_array_equal(m[:4], constant)
        np.testing.assert_array_equal(r[:4], 1.0 / np.sqrt(eps))
    np.testing.assert_array_equal(y[:4], 0.0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(7, 5, 1), (4096, 16, 1), (64, 1030, 1), (1024, 4, 9), (5, 3, 7)])
def test_batch_norm_statistics_of_a_constant_channel_are_exact(dtype, shape):
    """mean = the constant, var = 0 exactly: per chunk (several chunks from 32768 values on, and the four-row
    path at C ≥ 1024) and in Chan's combination of the chunks, and in the NumPy reference."""
    x = np.random.default_rng(shape[0]).standard_normal(shape).astype(dtype)
    values = [0.1, 1 / 3, 1e4 + 0.3]
    for c, value in enumerate(values):
        x[:, c] = value
    constant = x[0, : len(values), 0].astype(np.float64)
    mean, var = np.empty(shape[1]), np.empty(shape[1])
    batch_norm_kernels.batch_norm_stats(mean, var, x)
    ref_mean, ref_var = stats_reference(x)
    for m, v in ((mean, var), (ref_mean, ref_var)):
        np.testing.assert_array_equal(m[: len(values)], constant)
        np.testing.assert_array_equal(v[: len(values)], 0.0)
        rest = x[:, len(values) :].astype(np.float64)  # the random channels
        np.testing.assert_allclose(v[len(values) :], rest.var(axis=(0, 2)), rtol=1e-12)


@pytest.mark.parametrize("impl", IMPLS)
def test_eps_zero_constant_row_agrees_with_torch(impl):
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(3).standard_normal((4, 7))
    x[1], x[3] = 0.1, 1e4 + 0.3
    expected = torch.nn.functional.layer_norm(torch.from_numpy(x), (7,), eps=0.0).numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        y = F.layer_norm(npnorm.tensor(x), 7, eps=0.0, impl=impl).data
    np.testing.assert_array_equal(np.isnan(y), np.isnan(expected))
    np.testing.assert_allclose(y[[0, 2]], expected[[0, 2]], rtol=1e-12, atol=1e-12)


def _exact_moments(values) -> tuple[Fraction, Fraction]:
    exact = [Fraction(v) for v in values]
    mean = sum(exact) / len(exact)
    return mean, sum((v - mean) ** 2 for v in exact) / len(exact)


def _check_against_exact(mean, var, units, var_rtol=1e-13):
    for m, v, values in zip(mean, var, units):
        exact_mean, exact_var = _exact_moments(values)
        assert abs(Fraction(m) - exact_mean) <= Fraction(np.spacing(m))  # within an ulp
        assert abs(Fraction(v) - exact_var) <= Fraction(var_rtol) * exact_var


def test_layer_norm_statistics_of_a_far_off_centre_float64_row_are_correctly_rounded():
    x = 1e8 + 1e-3 * np.random.default_rng(5).standard_normal((12, 1000))
    y, mean, rstd = np.empty_like(x), np.empty(12), np.empty(12)
    layer_norm_kernels.layer_norm_forward(y, mean, rstd, x, None, None, 0.0)
    _, ref_mean, ref_rstd = forward_reference(x, None, None, 0.0)
    for m, r in ((mean, rstd), (ref_mean, ref_rstd)):
        _check_against_exact(m, 1 / r**2, x)


@pytest.mark.parametrize(
    "shape, channels",
    [
        ((4096, 10, 1), range(10)),  # (N, C): several chunks (≥ 32768 values)
        ((40960, 8, 1), range(8)),  # 16 chunks
        ((64, 1024, 1), (0, 511, 1023)),  # C ≥ 1024: the four-row passes, 4 chunks
        ((4096, 4, 10), range(4)),  # (N, C, L)
    ],
    ids=str,
)
@pytest.mark.parametrize("off_centre", [1e6, 1e11])
def test_batch_norm_statistics_of_a_far_off_centre_float64_channel_are_correctly_rounded(shape, channels, off_centre):
    """|μ|/σ up to 1e11. Uncorrected, the kernel's mean was off by 2.5 ulps; combining several chunks carried the
    chunk means' rounding (an ulp of |μ|) into the variance, 1e-8 to 8e-8 of it at 1e11, until the chunks summed
    x minus a sample of the channel (kernels/batch_norm.py, "Statistics")."""
    x = 1e8 + (1e8 / off_centre) * np.random.default_rng(6).standard_normal(shape)
    mean, var = np.empty(shape[1]), np.empty(shape[1])
    batch_norm_kernels.batch_norm_stats(mean, var, x)
    ref_mean, ref_var = stats_reference(x)
    channels = list(channels)
    units = [x[:, c, :].ravel() for c in channels]
    for m, v in ((mean, var), (ref_mean, ref_var)):
        _check_against_exact(m[channels], v[channels], units)


def test_is_float64_is_a_dtype_test_in_compiled_and_plain_code():
    import numba

    from npnorm.kernels import _jit

    probe = numba.njit(lambda a: _jit.is_float64(a))
    for dtype, expected in ((np.float64, True), (np.float32, False)):
        a = np.zeros((2, 3), dtype)
        assert probe(a) is expected and probe(a[0]) is expected and _jit._is_float64(a) is expected
