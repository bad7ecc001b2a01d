"""GroupNorm: one table of impl × variant × shape, each meeting two oracles (finite differences and the
other implementations); its two special cases (G = C is InstanceNorm, G = 1 is LayerNorm over (C, *) with a
per-channel affine); PyTorch; numerics and bad input."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import npnorm
import npnorm.functional as F
from npnorm.kernels import _jit

IMPLS = ["numba", "numpy", "composed"]

# (input shape, num_groups): (N, C); (N, C, L); two spatial dims; G = 1; G = C; N = 1; C/G = 1 with S = 1.
SHAPES = [
    ((4, 6), 3),
    ((2, 6, 5), 2),
    ((2, 4, 3, 2), 4),
    ((3, 4, 5), 1),
    ((1, 3, 4), 3),
    ((2, 6, 1), 2),
]

# name -> (weight?, bias?)
VARIANTS = {"affine": (True, True), "gain_only": (True, False), "simple": (False, False), "bias_only": (False, True)}


def _inputs(rng, shape, variant, dtype=np.float64):
    C = shape[1]
    x = npnorm.tensor(rng.standard_normal(shape) * 2 + 0.5, requires_grad=True, dtype=dtype)
    w = npnorm.tensor(rng.standard_normal(C), requires_grad=True, dtype=dtype)
    b = npnorm.tensor(rng.standard_normal(C), requires_grad=True, dtype=dtype)
    has_w, has_b = VARIANTS[variant]
    return x, (w if has_w else None), (b if has_b else None)


def _grads(fn, tensors, dy):
    for t in tensors:
        if t is not None:
            t.grad = None
    out = fn()
    out.backward(dy)
    return out.data, [None if t is None else t.grad for t in tensors]


def _assert_close(a, b, rtol, atol, what):
    if a is None or b is None:
        assert a is None and b is None, what
        return
    np.testing.assert_allclose(a, b, rtol=rtol, atol=atol, err_msg=what)


def _instance_norm(x, eps):
    """Each (sample, channel) over its spatial values, written out independently of npnorm."""
    axes = tuple(range(2, x.ndim))
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    return (x - mean) / np.sqrt(var + eps)


# ------------------------------------------------------------------------------ oracle 1: finite differences


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("shape,G", SHAPES)
def test_group_norm_gradcheck(impl, variant, shape, G):
    rng = np.random.default_rng(0)
    x, w, b = _inputs(rng, shape, variant)
    inputs = tuple(t for t in (x, w, b) if t is not None)

    def fn(*args):
        it = iter(args)
        x_ = next(it)
        w_ = next(it) if w is not None else None
        b_ = next(it) if b is not None else None
        return F.group_norm(x_, G, w_, b_, impl=impl)

    assert npnorm.gradcheck(fn, inputs)


# ------------------------------------------------------------------------- oracle 2: the implementations agree


def _run_all_impls(x0, G, w0, b0, dy, dtype):
    results = {}
    for impl in IMPLS:
        x = npnorm.tensor(x0, requires_grad=True, dtype=dtype)
        w = None if w0 is None else npnorm.tensor(w0, requires_grad=True, dtype=dtype)
        b = None if b0 is None else npnorm.tensor(b0, requires_grad=True, dtype=dtype)
        results[impl] = _grads(partial(F.group_norm, x, G, w, b, impl=impl), (x, w, b), dy)
    return results


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("shape,G", SHAPES + [((0, 4, 3), 2)])
def test_impls_agree_float64(variant, shape, G):
    rng = np.random.default_rng(1)
    x, w, b = _inputs(rng, shape, variant)
    dy = rng.standard_normal(shape)
    res = _run_all_impls(x.data, G, None if w is None else w.data, None if b is None else b.data, dy, np.float64)
    ref_out, ref_grads = res["numpy"]
    for impl in ("numba", "composed"):
        out, grads = res[impl]
        _assert_close(out, ref_out, 1e-12, 1e-12, f"{impl} forward")
        for name, g, rg in zip(("dx", "dweight", "dbias"), grads, ref_grads):
            _assert_close(g, rg, 1e-10, 1e-11, f"{impl} {name}")


@given(
    N=st.integers(0, 6),
    G=st.integers(1, 4),
    per_group=st.integers(1, 4),
    S=st.integers(1, 12),
    scale=st.sampled_from([1e-3, 1.0, 1e3]),
    shift=st.sampled_from([0.0, 5.0, -1e3]),
    affine=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_numba_equals_numpy_reference(N, G, per_group, S, scale, shift, affine, seed):
    rng = np.random.default_rng(seed)
    C = G * per_group
    shape = (N, C) if S == 1 else (N, C, S)
    x0 = shift + scale * rng.standard_normal(shape)
    w0 = rng.standard_normal(C) if affine else None
    b0 = rng.standard_normal(C) if affine else None
    dy = rng.standard_normal(shape)
    res = _run_all_impls(x0, G, w0, b0, dy, np.float64)
    (out_a, grads_a), (out_b, grads_b) = res["numba"], res["numpy"]
    np.testing.assert_allclose(out_a, out_b, rtol=1e-9, atol=1e-9)
    for g, rg in zip(grads_a, grads_b):
        _assert_close(g, rg, 1e-8, 1e-9 * (1 + (0 if rg is None else np.abs(rg).max(initial=0))), "grad")


def _call_variant(variant, items, kernel, *args):
    """A serial or a parallel run of a chunked kernel body with ``items`` work items (the parallel one only
    through call_parallel)."""
    if variant == "serial":
        return kernel.serial(items, *args)
    return _jit.call_parallel(kernel.parallel, items, *args)


@pytest.mark.parametrize("shape", [(3000, 12), (6, 8, 900)])
def test_serial_and_parallel_affine_kernels_are_bit_identical(shape):
    from npnorm.kernels import batch_norm as bn_kern
    from npnorm.kernels import group_norm as kern

    rng = np.random.default_rng(2)
    N, C = shape[:2]
    x = rng.standard_normal(shape).reshape(N, C, -1)  # float64: the serial variants are compiled already
    dy = rng.standard_normal(x.shape)
    w, b = rng.standard_normal(C), rng.standard_normal(C)
    mean, rstd = rng.standard_normal((N, 4)), 1 + rng.random((N, 4))  # G = 4
    nchunks = bn_kern.num_chunks(N, C, size=_jit.SERIAL_BELOW)  # the blocks of a parallel-sized input
    # one item per chunk for S = 1; for S > 1 any split of the (chunk, channel) pairs (here 5, uneven)
    items = nchunks if x.shape[2] == 1 else 5
    out = {}
    for variant in ("serial", "parallel"):
        call = partial(_call_variant, variant, items)
        # a parallel run brings the partial sums; a serial run allocates its own
        parts = [np.empty((nchunks, C)) if variant == "parallel" else _jit.NO_PARTIALS for _ in range(2)]
        y = x.copy()
        call(kern._affine, y, w, b, True, True)  # weight, bias, has_weight, has_bias
        g = np.empty_like(x)
        dw, db = np.empty(C), np.empty(C)
        call(kern._affine_backward, g, dw, db, dy, x, mean, rstd, w, nchunks, True, True, *parts)
        xhat = (x - np.repeat(mean, C // 4, axis=1)[:, :, None]) * np.repeat(rstd, C // 4, axis=1)[:, :, None]
        np.testing.assert_allclose(db, dy.sum(axis=(0, 2)), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(dw, (dy * xhat).sum(axis=(0, 2)), rtol=1e-11, atol=1e-11)
        # g alone and the sums alone: the flags skip the other output, given as an empty stand-in
        g_only = np.empty_like(x)
        no_sums = _jit.shared_empty(1, x.dtype)
        no_parts = (_jit.NO_PARTIALS, _jit.NO_PARTIALS)
        call(kern._affine_backward, g_only, no_sums, no_sums, dy, x, mean, rstd, w, nchunks, True, False, *no_parts)
        dw_only, db_only = np.empty(C), np.empty(C)
        no_g = _jit.shared_empty(3, x.dtype)
        call(kern._affine_backward, no_g, dw_only, db_only, dy, x, mean, rstd, w, nchunks, False, True, *parts)
        np.testing.assert_array_equal(g_only, g)
        np.testing.assert_array_equal(dw_only, dw)
        np.testing.assert_array_equal(db_only, db)
        out[variant] = (y, g, dw, db)
    for a, b_ in zip(out["serial"], out["parallel"]):
        np.testing.assert_array_equal(a, b_)


# ----------------------------------------------------------------------------------- the special cases


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("shape", [(3, 4, 5), (2, 3, 2, 4)])
def test_one_group_per_channel_is_instance_norm(impl, shape):
    rng = np.random.default_rng(3)
    x0 = rng.standard_normal(shape) * 3 + 1
    w0, b0 = rng.standard_normal(shape[1]), rng.standard_normal(shape[1])
    per_channel = (1, shape[1]) + (1,) * (len(shape) - 2)
    y = F.group_norm(x0, shape[1], w0, b0, eps=1e-3, impl=impl).data
    expected = _instance_norm(x0, 1e-3) * w0.reshape(per_channel) + b0.reshape(per_channel)
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)
    try:
        import torch
    except ImportError:
        return
    ty = torch.nn.functional.instance_norm(
        torch.from_numpy(x0), weight=torch.from_numpy(w0), bias=torch.from_numpy(b0), eps=1e-3
    )
    np.testing.assert_allclose(y, ty.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("shape", [(3, 4, 5), (2, 3, 2, 4), (4, 6)])
def test_one_group_is_layer_norm_with_per_channel_affine(impl, shape):
    """G = 1 is LayerNorm over (C, *) whose γ and β are broadcast per channel; dγ_c sums LayerNorm's dγ over *."""
    rng = np.random.default_rng(4)
    C = shape[1]
    x0, dy = rng.standard_normal(shape), rng.standard_normal(shape)
    w0, b0 = rng.standard_normal(C), rng.standard_normal(C)
    spatial = shape[2:]
    per_channel = (C,) + (1,) * len(spatial)
    x, w, b = (npnorm.tensor(a, requires_grad=True) for a in (x0, w0, b0))
    out, (dx, dw, db) = _grads(lambda: F.group_norm(x, 1, w, b, impl=impl), (x, w, b), dy)
    lx = npnorm.tensor(x0, requires_grad=True)
    lw = npnorm.tensor(np.broadcast_to(w0.reshape(per_channel), shape[1:]).copy(), requires_grad=True)
    lb = npnorm.tensor(np.broadcast_to(b0.reshape(per_channel), shape[1:]).copy(), requires_grad=True)
    l_out, (l_dx, l_dw, l_db) = _grads(lambda: F.layer_norm(lx, shape[1:], lw, lb, impl=impl), (lx, lw, lb), dy)
    spatial_axes = tuple(range(1, 1 + len(spatial)))
    np.testing.assert_allclose(out, l_out, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dx, l_dx, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dw, l_dw.sum(axis=spatial_axes), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(db, l_db.sum(axis=spatial_axes), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("shape,G", [((4, 6), 3), ((3, 6, 5), 2), ((2, 4, 3, 2), 1)])
def test_matches_pytorch_float64(impl, shape, G):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    C = shape[1]
    x0, dy = rng.standard_normal(shape) * 2 - 1, rng.standard_normal(shape)
    w0, b0 = rng.standard_normal(C), rng.standard_normal(C)
    x, w, b = (npnorm.tensor(a, requires_grad=True) for a in (x0, w0, b0))
    out, grads = _grads(lambda: F.group_norm(x, G, w, b, eps=1e-3, impl=impl), (x, w, b), dy)
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x0, w0, b0))
    ty = torch.nn.functional.group_norm(tx, G, tw, tb, eps=1e-3)
    ty.backward(torch.from_numpy(dy))
    np.testing.assert_allclose(out, ty.detach().numpy(), rtol=1e-12, atol=1e-12)
    for g, t in zip(grads, (tx, tw, tb)):
        np.testing.assert_allclose(g, t.grad.numpy(), rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------------------------------------- numerics


@pytest.mark.parametrize("impl", ["numba", "numpy"])
def test_float32_matches_float64_reference(impl):
    rng = np.random.default_rng(6)
    x, w, b = _inputs(rng, (16, 8, 30), "affine")
    dy = rng.standard_normal((16, 8, 30))
    ref = _run_all_impls(x.data, 4, w.data, b.data, dy, np.float64)["numpy"]
    out, grads = _run_all_impls(
        x.data.astype(np.float32),
        4,
        w.data.astype(np.float32),
        b.data.astype(np.float32),
        dy.astype(np.float32),
        np.float32,
    )[impl]
    assert out.dtype == np.float32 and all(g.dtype == np.float32 for g in grads)
    np.testing.assert_allclose(out, ref[0], rtol=1e-5, atol=1e-5)
    for g, rg in zip(grads, ref[1]):
        np.testing.assert_allclose(g, rg, rtol=1e-4, atol=1e-4 * np.abs(rg).max())


@pytest.mark.parametrize("impl", ["numba", "numpy"])
def test_large_mean_small_spread_float32(impl):
    rng = np.random.default_rng(7)
    x32 = (1e4 + 1e-2 * rng.standard_normal((8, 6, 64))).astype(np.float32)
    y = F.group_norm(x32, 3, impl=impl).data
    expected = F.group_norm(x32.astype(np.float64), 3, impl="numpy").data  # the same data, float64 math
    assert np.abs(y - expected).max() < 1e-5


@pytest.mark.parametrize("impl", IMPLS)
def test_constant_input_gives_bias_and_finite_gradients(impl):
    x = npnorm.tensor(np.full((3, 4, 5), -1.5), requires_grad=True)
    w = npnorm.tensor(np.linspace(0.5, 1.5, 4), requires_grad=True)
    b = npnorm.tensor(np.linspace(-1, 1, 4), requires_grad=True)
    y = F.group_norm(x, 2, w, b, impl=impl)
    np.testing.assert_allclose(y.data, np.broadcast_to(b.data[:, None], (3, 4, 5)), atol=1e-12)
    y.backward(np.random.default_rng(8).standard_normal((3, 4, 5)))
    for t in (x, w, b):
        assert np.all(np.isfinite(t.grad))


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("eps", [0.0, 0.5])
def test_gradient_identities_per_group(impl, eps):
    """Per (sample, group) row: Σ dx = 0, Σ dx·x̂ = H·rstd·mean(g·x̂)·ε/(σ² + ε) with g = γ_c·dy."""
    rng = np.random.default_rng(9)
    x, w, _ = _inputs(rng, (3, 6, 4), "gain_only")
    dy = rng.standard_normal((3, 6, 4))
    F.group_norm(x, 3, w, eps=eps, impl=impl).backward(dy)
    rows = x.data.reshape(9, 8)  # (N·G, H) with H = 2 channels · 4 positions
    mean, var = rows.mean(axis=1, keepdims=True), rows.var(axis=1, keepdims=True)
    rstd = 1 / np.sqrt(var + eps)
    xhat = (rows - mean) * rstd
    g = (dy * w.data[:, None]).reshape(9, 8)
    dx = x.grad.reshape(9, 8)
    np.testing.assert_allclose(dx.sum(axis=1), 0, atol=1e-12)
    expected = 8 * rstd * (g * xhat).mean(axis=1, keepdims=True) * eps / (var + eps)
    np.testing.assert_allclose((dx * xhat).sum(axis=1, keepdims=True), expected, atol=1e-12)


@pytest.mark.parametrize("impl", IMPLS)
def test_non_contiguous_input(impl):
    base = np.random.default_rng(10).standard_normal((5, 4, 3))
    x = npnorm.tensor(base, requires_grad=True)
    view = x.transpose(2, 1, 0)  # (3, 4, 5), non-contiguous
    y = F.group_norm(view, 2, impl=impl)
    expected = F.group_norm(np.ascontiguousarray(base.transpose(2, 1, 0)), 2, impl="numpy")
    np.testing.assert_allclose(y.data, expected.data, rtol=1e-12, atol=1e-12)
    assert npnorm.gradcheck(lambda t: F.group_norm(t.transpose(2, 1, 0), 2, impl=impl), (x,))


# --------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("num_groups", [4, 5])
def test_channels_not_divisible_by_groups(num_groups):
    message = rf"the 6 channels of input shape \(2, 6, 3\) cannot be split into num_groups={num_groups}"
    with pytest.raises(ValueError, match=message):
        F.group_norm(np.zeros((2, 6, 3)), num_groups)


@pytest.mark.parametrize("num_groups", [0, -2, 1.5, True, "2"])
def test_bad_num_groups(num_groups):
    with pytest.raises(ValueError, match="num_groups must be an integer >= 1"):
        F.group_norm(np.zeros((2, 6)), num_groups)


@pytest.mark.parametrize(
    "kwargs,error,message",
    [
        (dict(weight=np.ones(3)), ValueError, r"group_norm: weight has shape \(3,\), expected \(6,\)"),
        (dict(bias=np.ones((6, 1))), ValueError, r"bias has shape \(6, 1\), expected \(6,\)"),
        (dict(weight=np.ones(6, np.float32)), TypeError, "weight is float32 but the input is float64"),
        (dict(eps=-1.0), ValueError, "eps must be a number >= 0"),
        (dict(impl="gpu"), ValueError, "impl must be one of"),
    ],
)
def test_bad_arguments_name_themselves(kwargs, error, message):
    with pytest.raises(error, match=message):
        F.group_norm(np.zeros((2, 6, 3)), 3, **kwargs)


def test_input_needs_a_channel_axis():
    with pytest.raises(ValueError, match=r"input must have shape \(N, C, \*\), got \(6,\)"):
        F.group_norm(np.zeros(6), 2)
