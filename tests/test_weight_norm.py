"""Weight normalization: a table of (v shape, dim, g shape) × impl meeting two oracles (finite differences and
the other implementation), the identities of the derivation, the module, PyTorch, and bad input."""

from __future__ import annotations

import warnings
from functools import partial

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import npnorm
import npnorm.functional as F
from npnorm.nn import Linear, WeightNormLinear
from npnorm.norms.weight_norm import backward_reference, forward_reference, weight_norm

# "numba" is the Function with the fused kernels, "numpy" with the hand-derived NumPy reference, "composed"
# the oracle built from primitives.
IMPLS = ["numba", "numpy", "composed"]

# (v shape, dim, g shape): a Linear weight with g as PyTorch stores it and flat; one output unit; one input
# (‖v_i‖ = |v_i|, so w = g·sign(v) and dv = 0); a conv-like 3-D weight; another axis; the whole tensor.
CASES = [
    ((4, 5), 0, (4, 1)),
    ((4, 5), 0, (4,)),
    ((1, 6), 0, (1, 1)),
    ((5, 1), 0, (5, 1)),
    ((3, 2, 4), 0, (3, 1, 1)),
    ((3, 2, 4), 1, (1, 2, 1)),
    ((2, 3, 4), 2, (4,)),
    ((4, 5), None, ()),
]
IDS = [f"v{s}-dim{d}-g{g}" for s, d, g in CASES]


def _leaves(rng, v_shape, g_shape, dtype=np.float64):
    v = npnorm.tensor(rng.standard_normal(v_shape), requires_grad=True, dtype=dtype)
    g = npnorm.tensor(rng.standard_normal(g_shape) + 0.5, requires_grad=True, dtype=dtype)
    return v, g


def _grads(fn, v, g, dw):
    v.grad = g.grad = None
    w = fn(v, g)
    w.backward(dw)
    return w.data, v.grad, g.grad


def _rows(a, dim):
    """a as (R, F), one row per index along dim, as the norm sees it."""
    return a.reshape(1, -1) if dim is None else np.moveaxis(a, dim, 0).reshape(a.shape[dim], -1)


# ------------------------------------------------------------------------------ oracle 1: finite differences


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("v_shape,dim,g_shape", CASES, ids=IDS)
def test_weight_norm_gradcheck(impl, v_shape, dim, g_shape, rng):
    v, g = _leaves(rng, v_shape, g_shape)
    assert npnorm.gradcheck(lambda v_, g_: weight_norm(v_, g_, dim, impl=impl), (v, g))


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("bias", [True, False])
def test_module_gradcheck(impl, bias):
    """WeightNormLinear end to end: x, g, v and b against finite differences."""
    layer = WeightNormLinear(4, 3, bias=bias, dtype=np.float64, rng=1, impl=impl)
    layer.weight_g.data[...] *= np.array([[0.5], [-1.5], [2.0]])  # move g away from ‖v‖
    x = npnorm.tensor(np.random.default_rng(2).standard_normal((5, 4)), requires_grad=True)
    params = tuple(p for p in (layer.weight_g, layer.weight_v, layer.bias) if p is not None)
    assert npnorm.gradcheck(lambda x_, *_: layer(x_), (x, *params))


# ------------------------------------------------------------------------- oracle 2: the implementations agree


@pytest.mark.parametrize("v_shape,dim,g_shape", CASES, ids=IDS)
def test_function_equals_composed(v_shape, dim, g_shape, rng):
    v, g = _leaves(rng, v_shape, g_shape)
    dw = rng.standard_normal(v_shape)
    ref = _grads(lambda a, b: weight_norm(a, b, dim, impl="numpy"), v, g, dw)
    got = _grads(lambda a, b: weight_norm(a, b, dim, impl="composed"), v, g, dw)
    for name, a, b in zip(("w", "dv", "dg"), got, ref):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13, err_msg=name)


@given(
    R=st.integers(0, 6),
    Fdim=st.integers(1, 9),
    scale=st.sampled_from([1e-3, 1.0, 1e3]),
    seed=st.integers(0, 2**16),
)
def test_function_equals_composed_property(R, Fdim, scale, seed):
    rng = np.random.default_rng(seed)
    v, g = _leaves(rng, (R, Fdim), (R, 1))
    v.data *= scale
    dw = rng.standard_normal((R, Fdim))
    ref = _grads(lambda a, b: weight_norm(a, b, impl="numpy"), v, g, dw)
    got = _grads(lambda a, b: weight_norm(a, b, impl="composed"), v, g, dw)
    for name, a, b in zip(("w", "dv", "dg"), got, ref):
        atol = 1e-11 * (1 + np.abs(b).max(initial=0))
        if name == "dv":
            # dv = (g/‖v‖)(dw − v̂(v̂·dw)): the difference cancels down to rounding of ‖dw‖, which g/‖v‖ then
            # scales up (up to 1e5 for v of scale 1e-3). For Fdim = 1 dv is 0 exactly, and each way of computing
            # it leaves a different few ulps: R=4, Fdim=1, scale=1e-3, seed=2253 gave -1.05e-11 against 0.
            amplified = np.abs(g.data) / np.linalg.norm(v.data, axis=1, keepdims=True)  # (R, 1)
            atol = atol + 64 * np.finfo(np.float64).eps * amplified * np.linalg.norm(dw, axis=1, keepdims=True)
        assert np.all(np.abs(a - b) <= 1e-11 * np.abs(b) + atol), (name, np.max(np.abs(a - b), initial=0))


@pytest.mark.parametrize("impl", IMPLS)
def test_float32_matches_float64_reference(impl, rng):
    v, g = _leaves(rng, (16, 64), (16, 1))
    dw = rng.standard_normal((16, 64))
    ref = _grads(lambda a, b: weight_norm(a, b, impl="numpy"), v, g, dw)
    v32, g32 = (npnorm.tensor(t.data, requires_grad=True, dtype=np.float32) for t in (v, g))
    got = _grads(lambda a, b: weight_norm(a, b, impl=impl), v32, g32, dw.astype(np.float32))
    for a, b in zip(got, ref):
        assert a.dtype == np.float32
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6 * np.abs(b).max())


# --------------------------------------------------------------------------- the identities of the derivation


@pytest.mark.parametrize("v_shape,dim,g_shape", CASES, ids=IDS)
def test_reference_backward_is_the_closed_form(v_shape, dim, g_shape, rng):
    """dg = dw·v̂ and dv = (g/‖v‖)(dw − v̂ (v̂·dw)), written out independently of the implementation."""
    v, g = _leaves(rng, v_shape, g_shape)
    dw = rng.standard_normal(v_shape)
    w, dv, dg = _grads(lambda a, b: weight_norm(a, b, dim, impl="numpy"), v, g, dw)
    V, DW, G = _rows(v.data, dim), _rows(dw, dim), g.data.reshape(-1, 1)
    norm = np.linalg.norm(V, axis=1, keepdims=True)
    vhat = V / norm
    np.testing.assert_allclose(_rows(w, dim), G * vhat, rtol=1e-13)
    np.testing.assert_allclose(dg.reshape(-1, 1), (DW * vhat).sum(1, keepdims=True), rtol=1e-12, atol=1e-14)
    expected_dv = G / norm * (DW - vhat * (vhat * DW).sum(1, keepdims=True))
    np.testing.assert_allclose(_rows(dv, dim), expected_dv, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("v_shape,dim,g_shape", CASES, ids=IDS)
def test_dv_is_orthogonal_to_v(impl, v_shape, dim, g_shape, rng):
    """Σ_j v_j dv_j = 0 for every row: the gradient cannot change ‖v‖ to first order."""
    v, g = _leaves(rng, v_shape, g_shape)
    dw = rng.standard_normal(v_shape)
    _, dv, _ = _grads(lambda a, b: weight_norm(a, b, dim, impl=impl), v, g, dw)
    V, DV = _rows(v.data, dim), _rows(dv, dim)
    # relative to the size of each term of v·dv = (g/‖v‖)(v·dw − (v̂·dw)‖v‖): |g|·‖dw‖
    scale = np.abs(g.data.reshape(-1)) * np.linalg.norm(_rows(dw, dim), axis=1)
    np.testing.assert_allclose((V * DV).sum(axis=1) / scale, 0, atol=1e-14)


@pytest.mark.parametrize("impl", IMPLS)
def test_scale_invariance_in_v(impl, rng):
    """w(c·v) = w(v) for every c > 0 (one c per row too), and then dv(c·v) = dv(v)/c; c < 0 flips w."""
    v, g = _leaves(rng, (5, 7), (5, 1))
    dw = rng.standard_normal((5, 7))
    w0, dv0, dg0 = _grads(lambda a, b: weight_norm(a, b, impl=impl), v, g, dw)
    for c in (1e-3, 0.37, 4.0, 1e4, rng.uniform(0.1, 10, size=(5, 1))):
        vc = npnorm.tensor(v.data * c, requires_grad=True)
        w, dv, dg = _grads(lambda a, b: weight_norm(a, b, impl=impl), vc, g, dw)
        np.testing.assert_allclose(w, w0, rtol=1e-14, atol=1e-15)
        np.testing.assert_allclose(dg, dg0, rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(dv * c, dv0, rtol=1e-13, atol=1e-15)
    w_neg = weight_norm(npnorm.tensor(-2.0 * v.data), g, impl=impl).data
    np.testing.assert_allclose(w_neg, -w0, rtol=1e-14)


@pytest.mark.parametrize("impl", IMPLS)
def test_row_length_is_g(impl, rng):
    v, g = _leaves(rng, (6, 9), (6, 1))
    w = weight_norm(v, g, impl=impl).data
    np.testing.assert_allclose(np.linalg.norm(w, axis=1), np.abs(g.data[:, 0]), rtol=1e-14)


@pytest.mark.parametrize("impl", IMPLS)
def test_zero_g_gives_zero_row_and_zero_dv(impl, rng):
    v, g = _leaves(rng, (3, 4), (3, 1))
    g.data[1] = 0.0
    w, dv, dg = _grads(lambda a, b: weight_norm(a, b, impl=impl), v, g, rng.standard_normal((3, 4)))
    np.testing.assert_array_equal(w[1], 0.0)
    np.testing.assert_array_equal(dv[1], 0.0)
    assert np.all(np.isfinite(dg))


@pytest.mark.parametrize("impl", IMPLS)
def test_tiny_and_huge_float32_rows(impl):
    """The norm accumulates in float64: float32 rows of 1e-25 or 1e20 (whose float32 squares underflow or
    overflow) still give unit directions."""
    v = npnorm.tensor(np.array([[3e-25, 4e-25], [3e20, 4e20]]), dtype=np.float32)
    g = npnorm.tensor(np.ones((2, 1)), dtype=np.float32)
    w = weight_norm(v, g, impl=impl).data
    np.testing.assert_allclose(w, [[0.6, 0.8], [0.6, 0.8]], rtol=1e-6)


# ------------------------------------------------------------------------------------------- zero rows


@pytest.mark.parametrize("impl", IMPLS)
def test_zero_row_of_v_raises_and_names_the_row(impl, rng):
    """PyTorch returns NaN for a zero row (0/0); npnorm refuses, naming the row."""
    v, g = _leaves(rng, (4, 3), (4, 1))
    v.data[2] = 0.0
    with pytest.raises(ValueError, match=r"weight_norm: row\(s\) 2 of v have norm 0"):
        weight_norm(v, g, impl=impl)
    layer = WeightNormLinear(3, 4, dtype=np.float64, rng=0, impl=impl)
    layer.weight_v.data[0] = 0.0
    with pytest.raises(ValueError, match=r"row\(s\) 0 of v have norm 0"):
        layer(np.zeros((2, 3)))


def test_zero_row_in_pytorch_is_nan():
    """The behaviour npnorm declines to copy (so that this stays a documented, checked difference)."""
    torch = pytest.importorskip("torch")
    v = torch.zeros(2, 3, dtype=torch.float64)
    v[0] = 1.0
    w = torch._weight_norm(v, torch.ones(2, 1, dtype=torch.float64), 0)
    assert torch.isnan(w[1]).all() and not torch.isnan(w[0]).any()


def test_no_rows_is_fine():
    v = npnorm.tensor(np.zeros((0, 3)), requires_grad=True)
    g = npnorm.tensor(np.zeros((0, 1)), requires_grad=True)
    for impl in IMPLS:
        w = weight_norm(v, g, impl=impl)
        assert w.shape == (0, 3)
        w.backward(np.zeros((0, 3)))
        assert v.grad.shape == (0, 3) and g.grad.shape == (0, 1)


# ----------------------------------------------------------------------------------------------- module


def test_module_init_starts_with_w_equal_to_v_and_linear_draws():
    layer = WeightNormLinear(6, 4, rng=7)
    linear = Linear(6, 4, rng=7)
    assert layer.weight_g.shape == (4, 1) and layer.weight_v.shape == (4, 6) and layer.bias.shape == (4,)
    assert layer.weight_v.dtype == layer.weight_g.dtype == np.float32
    np.testing.assert_array_equal(layer.weight_v.data, linear.weight.data)
    np.testing.assert_array_equal(layer.bias.data, linear.bias.data)
    np.testing.assert_allclose(layer.weight.data, layer.weight_v.data, rtol=1e-6)
    x = np.random.default_rng(0).standard_normal((3, 6)).astype(np.float32)
    np.testing.assert_allclose(layer(x).data, linear(x).data, rtol=1e-5, atol=1e-6)


def test_module_state_dict_names_and_repr():
    layer = WeightNormLinear(3, 2, rng=0)
    assert list(layer.state_dict()) == ["weight_g", "weight_v", "bias"]
    assert [n for n, _ in layer.named_parameters()] == ["weight_g", "weight_v", "bias"]
    assert repr(layer) == "WeightNormLinear(in_features=3, out_features=2, bias=True)"
    no_bias = WeightNormLinear(3, 2, bias=False, impl="composed")
    assert no_bias.bias is None and list(no_bias.state_dict()) == ["weight_g", "weight_v"]
    assert "impl='composed'" in repr(no_bias)


@pytest.mark.parametrize("impl", IMPLS)
def test_module_float32_training_step(impl):
    """float32 in, float32 out and float32 gradients; an SGD step moves g and v."""
    layer = WeightNormLinear(5, 3, rng=3, impl=impl)
    x = np.random.default_rng(4).standard_normal((8, 5)).astype(np.float32)
    y = layer(x)
    assert y.dtype == np.float32
    (y * y).mean().backward()
    for p in layer.parameters():
        assert p.grad is not None and p.grad.dtype == np.float32 and p.grad.shape == p.shape
    before = {k: a.copy() for k, a in layer.state_dict().items()}
    npnorm.optim.SGD(layer.parameters(), lr=0.1).step()
    assert all(not np.array_equal(before[k], a) for k, a in layer.state_dict().items())


@pytest.mark.parametrize("bad", [dict(in_features=0), dict(out_features=-1), dict(dtype=np.int32), dict(impl="cuda")])
def test_module_bad_arguments(bad):
    kwargs = dict(in_features=3, out_features=2) | bad
    with pytest.raises((ValueError, TypeError), match="WeightNormLinear"):
        WeightNormLinear(**kwargs)


# ------------------------------------------------------------------------------------------ oracle: torch


@pytest.mark.parametrize("v_shape,dim,g_shape", CASES, ids=IDS)
def test_matches_torch_weight_norm(v_shape, dim, g_shape, rng):
    torch = pytest.importorskip("torch")
    v, g = _leaves(rng, v_shape, g_shape)
    dw = rng.standard_normal(v_shape)
    w, dv, dg = _grads(lambda a, b: weight_norm(a, b, dim, impl="numpy"), v, g, dw)
    # torch wants g with v's rank (size 1 off `dim`), and spells "the whole tensor" dim=-1.
    keep = [1] * len(v_shape) if dim is None else [n if a == dim else 1 for a, n in enumerate(v_shape)]
    tv = torch.tensor(v.data, requires_grad=True)
    tg = torch.tensor(g.data.reshape(keep), requires_grad=True)
    tw = torch._weight_norm(tv, tg, -1 if dim is None else dim)
    tw.backward(torch.from_numpy(dw))
    np.testing.assert_allclose(w, tw.detach().numpy(), rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(dv, tv.grad.numpy(), rtol=1e-11, atol=1e-14)
    np.testing.assert_allclose(dg, tg.grad.numpy().reshape(g_shape), rtol=1e-11, atol=1e-14)


@pytest.mark.parametrize("impl", IMPLS)
def test_module_matches_torch_parametrized_linear(impl):
    """Weights copied from torch.nn.utils.parametrizations.weight_norm(Linear) give the same outputs and grads."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    tlayer = torch.nn.utils.parametrizations.weight_norm(torch.nn.Linear(4, 3).double())
    sd = tlayer.state_dict()
    layer = WeightNormLinear(4, 3, dtype=np.float64, impl=impl)
    layer.load_state_dict(
        {
            "weight_g": sd["parametrizations.weight.original0"].numpy(),
            "weight_v": sd["parametrizations.weight.original1"].numpy(),
            "bias": sd["bias"].numpy(),
        }
    )
    with torch.no_grad():
        tlayer.parametrizations.weight.original0.mul_(torch.tensor([[0.5], [2.0], [-1.0]], dtype=torch.float64))
    layer.weight_g.data[...] *= np.array([[0.5], [2.0], [-1.0]])
    x0 = np.random.default_rng(5).standard_normal((6, 4))
    dy = np.random.default_rng(6).standard_normal((6, 3))
    x, tx = npnorm.tensor(x0, requires_grad=True), torch.tensor(x0, requires_grad=True)
    y, ty = layer(x), tlayer(tx)
    y.backward(dy)
    ty.backward(torch.from_numpy(dy))
    np.testing.assert_allclose(y.data, ty.detach().numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(x.grad, tx.grad.numpy(), rtol=1e-11, atol=1e-14)
    pt = tlayer.parametrizations.weight
    for ours, theirs in ((layer.weight_g, pt.original0), (layer.weight_v, pt.original1), (layer.bias, tlayer.bias)):
        np.testing.assert_allclose(ours.grad, theirs.grad.numpy(), rtol=1e-11, atol=1e-14)


def test_state_dict_keys_match_torch_weight_norm():
    """PyTorch's (older) torch.nn.utils.weight_norm saves exactly our keys, so its state_dict loads as is."""
    torch = pytest.importorskip("torch")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # deprecated in favour of parametrizations
        tlayer = torch.nn.utils.weight_norm(torch.nn.Linear(3, 2))
    sd = {k: v.detach().numpy() for k, v in tlayer.state_dict().items()}
    layer = WeightNormLinear(3, 2)
    assert sorted(sd) == sorted(layer.state_dict())
    layer.load_state_dict(sd)
    x = np.random.default_rng(8).standard_normal((4, 3)).astype(np.float32)
    np.testing.assert_allclose(layer(x).data, tlayer(torch.from_numpy(x)).detach().numpy(), rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------------------------- bad input


def test_g_of_wrong_shape_names_the_shapes():
    v = npnorm.tensor(np.ones((4, 5)))
    with pytest.raises(ValueError, match=r"weight_norm: g has shape \(5,\), expected \(4, 1\) or \(4,\)"):
        weight_norm(v, np.ones(5))
    with pytest.raises(ValueError, match="expected one element"):
        weight_norm(v, np.ones(4), dim=None)


@pytest.mark.parametrize("dim,match", [(2, "out of range"), (-1, "reads dim=-1 as None"), (1.0, "must be None")])
def test_bad_dim(dim, match):
    with pytest.raises((ValueError, TypeError), match=match):
        weight_norm(np.ones((4, 5)), np.ones((4, 1)), dim=dim)


def test_bad_dtype_impl_and_rank():
    v = npnorm.tensor(np.ones((2, 3)), dtype=np.float32)
    with pytest.raises(TypeError, match="g is float64 but v is float32"):
        weight_norm(v, np.ones((2, 1)))
    with pytest.raises(ValueError, match="impl must be one of"):
        weight_norm(np.ones((2, 3)), np.ones((2, 1)), impl="cuda")
    with pytest.raises(ValueError, match="at least one dimension"):
        weight_norm(np.float64(1.0), np.ones(1), dim=None)


def test_reference_functions_directly():
    """The NumPy pair on (R, F) rows, as a reader would call them."""
    v = np.array([[3.0, 4.0], [0.0, 2.0]])
    g = np.array([[10.0], [-1.0]])
    w, rnorm = forward_reference(v, g)
    np.testing.assert_allclose(w, [[6.0, 8.0], [0.0, -1.0]])
    np.testing.assert_allclose(rnorm, [[0.2], [0.5]])
    dv, dg = backward_reference(np.array([[1.0, 0.0], [1.0, 0.0]]), v, g, rnorm)
    np.testing.assert_allclose(dg, [[0.6], [0.0]])
    np.testing.assert_allclose(dv, [[10 * 0.2 * (1 - 0.36), 10 * 0.2 * (-0.48)], [-0.5, 0.0]])


def test_functional_linear_with_weight_norm():
    """The module is F.linear over weight_norm; so is a hand-built layer."""
    rng = np.random.default_rng(9)
    v, g = _leaves(rng, (3, 4), (3, 1))
    x = rng.standard_normal((2, 4))
    y = F.linear(x, weight_norm(v, g))
    w = g.data * v.data / np.linalg.norm(v.data, axis=1, keepdims=True)
    np.testing.assert_allclose(y.data, x @ w.T, rtol=1e-13)


# ---------------------------------------------------------------------------------------------- kernels


def _run_rows(v0, g0, dw, impl, dtype):
    """w, dv, dg of weight_norm on (R, F) rows, in `dtype`."""
    v = npnorm.tensor(v0, requires_grad=True, dtype=dtype)
    g = npnorm.tensor(g0, requires_grad=True, dtype=dtype)
    return _grads(lambda a, b: weight_norm(a, b, impl=impl), v, g, dw.astype(dtype))


def _assert_numba_equals_numpy(v0, g0, dw, dtype):
    got = _run_rows(v0, g0, dw, "numba", dtype)
    ref = _run_rows(v0, g0, dw, "numpy", dtype)
    # Both compute in float64 and round once to dtype; the kernel may reorder the row sums and products
    # (FASTMATH_REASSOC), which changes float64 roundings and so can move a float32 result by one ulp.
    # dv = (g/‖v‖)(dw − dg v̂) and dg = dw·v̂ can cancel to ~0, so atol is relative to the size of their terms.
    V, G, DW = (np.asarray(a, dtype).astype(np.float64) for a in (v0, g0, dw))
    g_rnorm = np.abs(G) / np.linalg.norm(V, axis=1, keepdims=True)  # (R, 1)  |g|/‖v‖
    term = {"w": np.abs(G).max(), "dv": (g_rnorm * np.abs(DW)).max(), "dg": np.linalg.norm(DW, axis=1).max()}
    rtol = 1e-6 if dtype == np.float32 else 1e-12
    for name, a, b in zip(("w", "dv", "dg"), got, ref, strict=True):
        assert a.dtype == dtype
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * term[name], err_msg=name)


@given(
    R=st.integers(1, 50),
    Fdim=st.integers(1, 70),
    dtype=st.sampled_from([np.float32, np.float64]),
    scale=st.sampled_from([1e-3, 1.0, 1e3]),
    seed=st.integers(0, 2**16),
)
def test_numba_equals_numpy_reference(R, Fdim, dtype, scale, seed):
    rng = np.random.default_rng(seed)
    v0 = scale * rng.standard_normal((R, Fdim))
    g0 = rng.standard_normal((R, 1))
    _assert_numba_equals_numpy(v0, g0, rng.standard_normal((R, Fdim)), dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numba_equals_numpy_above_the_serial_threshold(dtype):
    """Above SERIAL_BELOW elements the public call runs the parallel kernels."""
    from npnorm.kernels._jit import SERIAL_BELOW

    rng = np.random.default_rng(11)
    R, Fdim = SERIAL_BELOW // 64 + 3, 64
    _assert_numba_equals_numpy(
        rng.standard_normal((R, Fdim)), rng.standard_normal((R, 1)), rng.standard_normal((R, Fdim)), dtype
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_parallel_kernels_equal_serial_bit_for_bit(dtype):
    """prange over independent rows: thread count and scheduling cannot change a bit of w, rnorm, dv or dg."""
    from npnorm.kernels import _jit
    from npnorm.kernels import weight_norm as kern

    rng = np.random.default_rng(12)
    R, Fdim = 203, 37
    v = rng.standard_normal((R, Fdim)).astype(dtype)
    g = rng.standard_normal(R).astype(dtype)
    dw = rng.standard_normal((R, Fdim)).astype(dtype)
    forward, backward = kern._weight_norm_forward, kern._weight_norm_backward
    results = []
    # rows are independent: one serial item against a parallel run in 3 (uneven) items
    for run in (partial(forward.serial, 1), partial(_jit.call_parallel, forward.parallel, 3)):
        w, rnorm = np.empty_like(v), np.empty(R)
        run(w, rnorm, v, g)
        results.append((w, rnorm))
    for run in (partial(backward.serial, 1), partial(_jit.call_parallel, backward.parallel, 3)):
        dv, dg = np.empty_like(v), np.empty_like(g)
        run(dv, dg, dw, v, g, results[0][1])
        results.append((dv, dg))
    for a, b in zip(results[0] + results[2], results[1] + results[3], strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("v_shape,dim,g_shape", CASES, ids=IDS)
def test_functional_numba_gradcheck(v_shape, dim, g_shape, rng):
    """F.weight_norm with the kernels, float64, against finite differences (the table above does the same
    through weight_norm; this is the public entry point)."""
    v, g = _leaves(rng, v_shape, g_shape)
    assert npnorm.gradcheck(lambda v_, g_: F.weight_norm(v_, g_, dim, impl="numba"), (v, g))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numba_zero_row_raises_like_the_reference(dtype):
    """The kernel leaves 1/‖v‖ = inf on a zero row; the caller raises the reference's error (no NaN escapes),
    while an infinite row (1/‖v‖ = 0) is not mistaken for a zero one."""
    v = np.ones((7, 3), dtype=dtype)
    v[[1, 4]] = 0.0
    g = np.ones((7, 1), dtype=dtype)
    for impl in ("numba", "numpy"):
        with pytest.raises(ValueError, match=r"weight_norm: row\(s\) 1, 4 of v have norm 0"):
            weight_norm(v, g, impl=impl)
    v[[1, 4]] = 1.0
    v[2, 0] = np.inf
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # inf · 0 in the reference
        got, ref = (weight_norm(v, g, impl=impl).data for impl in ("numba", "numpy"))
    np.testing.assert_array_equal(got, ref)
