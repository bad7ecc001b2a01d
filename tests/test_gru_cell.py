"""The fused GRU pointwise Function (npnorm/nn/_gru_cell.py): GRUCellOutput, in both conventions for z.

Oracles, for each convention (z weighs the new state, the paper's LN-GRU; z keeps the old one, PyTorch's):
  * finite differences (float64 gradcheck), every input and each one alone (the needs_input_grad paths);
  * the unfused composition of F.sigmoid, F.tanh, slices, 1 − z, * and + (written below): forward and
    backward, to rounding (the composition's dgates_z sums dh' ⊙ n and −dh' ⊙ h, the Function takes
    dh' ⊙ (n − h): where these cancel, agreement is relative to the size of the terms);
  * float32 against the float64 evaluation of the same float32 inputs, within a few float32 ulps;
  * limits at extreme gates (±30, ±100, ±inf) and saturated candidates: finite, correct, no warnings;
    exactly h' = n or h' = h where z is exactly 1 or 0.
And at the model level: a GRUCell (plain and LN) equals its former step, written with the unfused composition.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from _cell_helpers import (
    GRADIENT_VARIANTS,
    counting_kernels,
    gradient_variant,
    outputs_and_grads,
    random_cell,
    same_bits,
    strided,
    within_ulps,
)
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import special

import npnorm
import npnorm.functional as F
from npnorm import nn
from npnorm.nn import _gru_cell as cell_module
from npnorm.nn._gru_cell import GRUCellOutput, gru_cell_output
from npnorm.ops import sigmoid_array

SHAPES = [(1, 1), (1, 3), (4, 1), (2, 3), (3, 5)]  # (B, H); gates are (B, 2H)
CONVENTIONS = {"new": False, "old": True}  # id: z_keeps_old (z weighs the new state / keeps the old one)
NAMES = ("gates", "n_x", "n_h", "h")


# ------------------------------------------------------------------------------------- the oracle


def gru_composed(gates, n_x, n_h, h, *, z_keeps_old=False):
    """h' from engine primitives (what _gru_step recorded before fusing)."""
    H = h.shape[1]
    r = F.sigmoid(gates[:, :H])
    z = F.sigmoid(gates[:, H:])
    n = F.tanh(n_x + r * n_h)
    return (1 - z) * n + z * h if z_keeps_old else (1 - z) * h + z * n


def reference(gates, n_x, n_h, h):
    """r, z, n in float64 from arrays, with scipy's expit."""
    gates, n_x, n_h, h = (np.asarray(a, dtype=np.float64) for a in (gates, n_x, n_h, h))
    H = h.shape[1]
    r, z = special.expit(gates[:, :H]), special.expit(gates[:, H:])
    return r, z, np.tanh(n_x + r * n_h)


def leaves(rng, B, H, dtype=np.float64, requires_grad=(True,) * 4, scale=2.0):
    """gates (B, 2H) with pre-activations of a few units, and n_x, n_h, h (B, H)."""
    arrays = (
        scale * rng.standard_normal((B, 2 * H)),
        rng.standard_normal((B, H)),
        rng.standard_normal((B, H)),
        rng.standard_normal((B, H)),
    )
    return tuple(npnorm.tensor(a, dtype=dtype, requires_grad=rg) for a, rg in zip(arrays, requires_grad))


def forward_backward(fn, inputs, dout, z_keeps_old):
    """fn(*inputs) and the gradients of <out, dout> (None for an input without requires_grad)."""
    for t in inputs:
        t.grad = None
    out = fn(*inputs, z_keeps_old=z_keeps_old)
    out.backward(dout)
    return (out.data, *(t.grad for t in inputs))


def dgates_z_envelope(inputs, dout):
    """|dh'| (|n| + |h|) z (1 − z) in the z block, 0 in the r block: the size of the two terms that the
    composition adds for dgates_z (and the Function subtracts first)."""
    gates, n_x, n_h, h = (t.data for t in inputs)
    _, z, n = reference(gates, n_x, n_h, h)
    size = np.abs(np.asarray(dout, dtype=np.float64)) * (np.abs(n) + np.abs(h.astype(np.float64))) * z * (1 - z)
    return np.hstack([np.zeros_like(size), size])


def assert_matches_composition(actual, expected, inputs, dout, rtol, atol):
    """out and the four gradients equal to rtol; dgates to rtol of |value| + the z block's envelope."""
    envelope = dgates_z_envelope(inputs, dout)
    for what, a, e in zip(("out", *("d" + n for n in NAMES)), actual, expected):
        assert a.dtype == e.dtype == inputs[0].dtype, what
        if what == "dgates":
            err = np.abs(a.astype(np.float64) - e)
            bound = rtol * (np.abs(e.astype(np.float64)) + envelope) + atol
            assert np.all(err <= bound), f"{what}: worst error/bound {np.max(err / bound):.3g}"
        else:
            np.testing.assert_allclose(a, e, rtol=rtol, atol=atol, err_msg=what)


# ------------------------------------------------------------------------------- gradient checks

REQUIRES_GRAD = {"all": (True,) * 4, **{name: tuple(n == name for n in NAMES) for name in NAMES}}


@pytest.mark.parametrize("requires_grad", REQUIRES_GRAD.values(), ids=REQUIRES_GRAD.keys())
@pytest.mark.parametrize("B, H", SHAPES)
@pytest.mark.parametrize("z_keeps_old", CONVENTIONS.values(), ids=CONVENTIONS.keys())
def test_gradcheck(z_keeps_old, B, H, requires_grad, rng):
    inputs = leaves(rng, B, H, requires_grad=requires_grad)

    def fused(*args):
        return gru_cell_output(*args, z_keeps_old=z_keeps_old)

    assert npnorm.gradcheck(fused, inputs)
    # An input that does not require grad gets none (backward returned None for it); the others get theirs.
    out = fused(*inputs)
    returned = GRUCellOutput.backward(out._node.ctx, np.ones((B, H)))  # what the engine receives
    out.backward(np.ones((B, H)))
    for name, t, g, needs in zip(NAMES, inputs, returned, requires_grad):
        assert (g is None) == (not needs) and (t.grad is None) == (not needs), name
        if needs:
            assert t.grad.shape == t.shape and np.all(np.isfinite(t.grad)), name


@pytest.mark.parametrize("z_keeps_old", CONVENTIONS.values(), ids=CONVENTIONS.keys())
def test_gradcheck_of_two_steps_with_shared_inputs(z_keeps_old, rng):
    # n_x and n_h feed both steps and h' feeds the second as its h: the engine sums the gradients of the
    # shared inputs, one of them adopted from the first step's backward (returns_fresh_grads).
    B, H = 3, 4
    gates, n_x, n_h, h = leaves(rng, B, H)
    gates2 = npnorm.tensor(2 * rng.standard_normal((B, 2 * H)), requires_grad=True)

    def two_steps(gates, n_x, n_h, h, gates2):
        h1 = gru_cell_output(gates, n_x, n_h, h, z_keeps_old=z_keeps_old)
        h2 = gru_cell_output(gates2, n_x, n_h, h1, z_keeps_old=z_keeps_old)
        return F.cat([h1.reshape(-1), h2.reshape(-1)])

    assert npnorm.gradcheck(two_steps, (gates, n_x, n_h, h, gates2))


# ------------------------------------------------------------------------- against the composition


@pytest.mark.parametrize("B, H", SHAPES)
@pytest.mark.parametrize("z_keeps_old", CONVENTIONS.values(), ids=CONVENTIONS.keys())
def test_equals_unfused_composition(z_keeps_old, B, H, rng):
    inputs = leaves(rng, B, H)
    dout = rng.standard_normal((B, H))
    expected = forward_backward(gru_composed, inputs, dout, z_keeps_old)
    actual = forward_backward(gru_cell_output, inputs, dout, z_keeps_old)
    assert_matches_composition(actual, expected, inputs, dout, rtol=1e-12, atol=1e-15)


@given(
    B=st.integers(1, 4),
    H=st.integers(1, 5),
    scale=st.sampled_from([0.1, 1.0, 5.0, 30.0]),
    seed=st.integers(0, 2**32 - 1),
    dtype=st.sampled_from([np.float32, np.float64]),
    z_keeps_old=st.booleans(),
)
def test_equals_unfused_composition_property(B, H, scale, seed, dtype, z_keeps_old):
    # Gates up to ±30·(a few) reach both saturations of r and z.
    rng = np.random.default_rng(seed)
    inputs = leaves(rng, B, H, dtype=dtype, scale=scale)
    dout = rng.standard_normal((B, H)).astype(dtype)
    expected = forward_backward(gru_composed, inputs, dout, z_keeps_old)
    actual = forward_backward(gru_cell_output, inputs, dout, z_keeps_old)
    rtol = 1e-12 if dtype == np.float64 else 1e-6
    assert_matches_composition(actual, expected, inputs, dout, rtol=rtol, atol=rtol * 1e-3)


@pytest.mark.parametrize("layer_norm", [False, True], ids=["pytorch", "ln"])
def test_gru_cell_equals_unfused_step(layer_norm, rng):
    # The model-level check: nn.GRUCell (now fused) against its former step, written with the composition.
    cell, x, (h,) = random_cell(nn.GRUCell, layer_norm, rng, states=1)  # parameters randomized: all matter
    H = cell.hidden_size
    dh = rng.standard_normal(h.shape)
    params = [h, *cell.parameters()]
    assert len(params) == (11 if layer_norm else 5)

    def unfused(x, h):
        if layer_norm:
            gi = F.linear(x, cell.weight_ih)  # (B, 3H)
            gh = F.linear(h, cell.weight_hh)  # (B, 3H)
            rz = cell.ln_hh(gh[:, : 2 * H]) + cell.ln_ih(gi[:, : 2 * H])
            r, z = F.sigmoid(rz[:, :H]), F.sigmoid(rz[:, H:])
            n = F.tanh(cell.ln_in(gi[:, 2 * H :]) + r * cell.ln_hn(gh[:, 2 * H :]))
            return (1 - z) * h + z * n
        gi = F.linear(x, cell.weight_ih, cell.bias_ih)
        gh = F.linear(h, cell.weight_hh, cell.bias_hh)
        r = F.sigmoid(gi[:, :H] + gh[:, :H])
        z = F.sigmoid(gi[:, H : 2 * H] + gh[:, H : 2 * H])
        n = F.tanh(gi[:, 2 * H :] + r * gh[:, 2 * H :])
        return (1 - z) * n + z * h

    results = [outputs_and_grads(step, (x, h), params, (dh,)) for step in (cell, unfused)]
    for a, e in zip(*results):
        assert a is not None and e is not None
        np.testing.assert_allclose(a, e, rtol=1e-12, atol=1e-14)


def test_reused_node_and_leaf_gradients_accumulate(rng):
    # returns_fresh_grads lets the engine adopt the gradients as .grad and add into them in place. Two steps
    # share n_x and n_h (so one adopted gradient is added into during the first backward) and a second
    # backward through the same graph must double every gradient and leave the saved arrays untouched.
    B, H = 2, 3
    for z_keeps_old in CONVENTIONS.values():
        gates, n_x, n_h, h = leaves(rng, B, H)
        gates2 = npnorm.tensor(2 * rng.standard_normal((B, 2 * H)), requires_grad=True)
        inputs = (gates, n_x, n_h, h, gates2)
        grads = []
        for fn in (gru_composed, gru_cell_output):
            for t in inputs:
                t.grad = None
            h1 = fn(gates, n_x, n_h, h, z_keeps_old=z_keeps_old)
            out = fn(gates2, n_x, n_h, h1, z_keeps_old=z_keeps_old).sum() + h1.sum()
            out.backward()
            grads.append([t.grad.copy() for t in inputs])
        for a, e in zip(*grads):  # the first backward is right, the in-place sums included
            np.testing.assert_allclose(a, e, rtol=1e-12, atol=1e-15)
        out.backward()  # the fused graph again
        for name, t, first in zip((*NAMES, "gates2"), inputs, grads[1]):
            np.testing.assert_allclose(t.grad, 2 * first, rtol=1e-15, err_msg=name)


# ----------------------------------------------------------------------------------------- float32


def _envelopes(arrays64, dout64, z_keeps_old):
    """The size of the terms of each result (out, dgates, dn_x, dn_h, dh), from the backward formulas.

    Each result's envelope is the product of its factors' sizes, with 1 − σ taken as 1 (its absolute error is
    an ulp of 1 whatever its size). n carries the rounding of its pre-activation n_x + r ⊙ n_h, scaled by
    tanh' = 1 − n²: N = |n| + (1 − n²)(|n_x| + r |n_h|); 1 − n² then carries that of n, P = 1 + 2 |n| N.
    """
    gates, n_x, n_h, h = arrays64
    r, z, n = reference(gates, n_x, n_h, h)
    g = np.abs(dout64)
    N = np.abs(n) + (1 - n * n) * (np.abs(n_x) + r * np.abs(n_h))
    P = 1 + 2 * np.abs(n) * N
    if z_keeps_old:  # h' = (1 − z) n + z h: ∂h'/∂n = 1 − z, ∂h'/∂h = z
        out, w_n, w_h = N + z * np.abs(h), 1.0, z
    else:  # h' = (1 − z) h + z n: ∂h'/∂n = z, ∂h'/∂h = 1 − z
        out, w_n, w_h = np.abs(h) + z * N, z, 1.0
    dp = g * w_n * P  # dn_x = dh' ⊙ ∂h'/∂n ⊙ (1 − n²)
    dgates = np.hstack([dp * np.abs(n_h) * r, g * (N + np.abs(h)) * z])  # dp n_h r (1 − r), dh' (n − h) z (1 − z)
    return out, dgates, dp, dp * r, g * w_h


@pytest.mark.parametrize("B, H", [(1, 1), (8, 16)])
@pytest.mark.parametrize("z_keeps_old", CONVENTIONS.values(), ids=CONVENTIONS.keys())
def test_float32_within_ulps_of_float64(z_keeps_old, B, H, rng):
    arrays64 = [  # float32 values, held in float64
        (3 * rng.standard_normal((B, 2 * H))).astype(np.float32).astype(np.float64),
        *(rng.standard_normal((B, H)).astype(np.float32).astype(np.float64) for _ in range(3)),
    ]
    dout64 = rng.standard_normal((B, H)).astype(np.float32).astype(np.float64)
    results = {}
    for dtype in (np.float32, np.float64):
        inputs = tuple(npnorm.tensor(a, dtype=dtype, requires_grad=True) for a in arrays64)
        results[dtype] = forward_backward(gru_cell_output, inputs, dout64.astype(dtype), z_keeps_old)
    envelopes = _envelopes(arrays64, dout64, z_keeps_old)
    for what, a, e, env in zip(("out", *("d" + n for n in NAMES)), *results.values(), envelopes):
        assert a.dtype == np.float32
        within_ulps(a, e, env, ulps=6, what=what)


# ----------------------------------------------------------------------------------- extreme inputs

EXTREMES = [-np.inf, -100.0, -30.0, 0.0, 30.0, 100.0, np.inf]
CANDIDATES = [-np.inf, -100.0, -1.5, 0.7, 100.0, np.inf]  # n_x: tanh saturates at ±100 and ±inf


@pytest.mark.parametrize("z_keeps_old", CONVENTIONS.values(), ids=CONVENTIONS.keys())
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_extreme_gates_give_finite_limits_without_warnings(dtype, z_keeps_old, rng):
    # Every combination of r's and z's pre-activation and n_x, one per row (H = 1); n_h and h finite.
    grid = np.array(np.meshgrid(EXTREMES, EXTREMES, CANDIDATES, indexing="ij")).reshape(3, -1).T  # (7·7·6, 3)
    B = grid.shape[0]
    gates_np, n_x_np = grid[:, :2].astype(dtype), grid[:, 2:].astype(dtype)
    n_h_np, h_np = rng.uniform(-3, 3, (B, 1)).astype(dtype), rng.uniform(-3, 3, (B, 1)).astype(dtype)
    dout = rng.standard_normal((B, 1)).astype(dtype)

    # The limits, in float64 with scipy's expit (σ(±inf) = 1, 0; tanh(±inf) = ±1; derivatives 0 there).
    r, z, n = reference(gates_np, n_x_np, n_h_np, h_np)
    n_h, h, d = n_h_np.astype(np.float64), h_np.astype(np.float64), dout.astype(np.float64)
    if z_keeps_old:
        out, dn, dzh, dh = (1 - z) * n + z * h, d * (1 - z), d * (h - n), d * z
    else:
        out, dn, dzh, dh = (1 - z) * h + z * n, d * z, d * (n - h), d * (1 - z)
    dp = dn * (1 - n * n)
    expected = (out, np.hstack([dp * n_h * r * (1 - r), dzh * z * (1 - z)]), dp, dp * r, dh)
    # Near saturation 1 − σ and 1 − tanh² are known only to an ulp of 1 (σ(30) rounds to 1 in float32, σ(100)
    # in float64), so the derivatives there are right to an absolute error of a few ulps of the terms (<= 3).
    rtol, atol = (1e-12 if dtype == np.float64 else 1e-6), 50 * float(np.finfo(dtype).eps)
    inputs = tuple(npnorm.tensor(a, requires_grad=True) for a in (gates_np, n_x_np, n_h_np, h_np))
    with warnings.catch_warnings(), np.errstate(over="warn", invalid="warn", divide="warn"):
        warnings.simplefilter("error")  # any RuntimeWarning (overflow, invalid value) fails the test
        actual = forward_backward(gru_cell_output, inputs, dout, z_keeps_old)
    for what, a, e in zip(("out", *("d" + n for n in NAMES)), actual, expected):
        assert a.dtype == dtype and np.all(np.isfinite(a)), what
        np.testing.assert_allclose(a, e, rtol=rtol, atol=atol, err_msg=what)


@pytest.mark.parametrize("r_pre", [-np.inf, np.inf], ids=["r=0", "r=1"])
def test_saturated_gates_are_exact_limits(r_pre):
    # σ(±inf) is exactly 1 or 0, so h' is exactly n or h, and the gradient through the other is exactly 0.
    n_x, n_h, h = np.array([[0.3, -1.2]]), np.array([[-0.9, 2.5]]), np.array([[0.25, -3.0]])
    n = np.tanh(n_x + (n_h if r_pre > 0 else 0.0))  # r = 1 adds n_h, r = 0 resets it away
    dout = np.array([[0.7, -1.3]])
    # new: h' = n (z = 1 in the paper's convention, z = 0 in PyTorch's); else h' = h
    for z_pre, z_keeps_old, new in [
        (np.inf, False, True),
        (np.inf, True, False),
        (-np.inf, False, False),
        (-np.inf, True, True),
    ]:
        gates = npnorm.tensor([[r_pre, r_pre, z_pre, z_pre]], requires_grad=True)
        inputs = (gates, *(npnorm.tensor(a, requires_grad=True) for a in (n_x, n_h, h)))
        out, dgates, dn_x, dn_h, dh = forward_backward(gru_cell_output, inputs, dout, z_keeps_old)
        np.testing.assert_array_equal(out, n if new else h)
        np.testing.assert_array_equal(dh, 0 * dout if new else dout)
        np.testing.assert_array_equal(dn_x, dout * (1 - n * n) if new else 0 * dout)
        np.testing.assert_array_equal(dn_h, dn_x if r_pre > 0 else 0 * dout)  # dn_x ⊙ r
        np.testing.assert_array_equal(dgates, np.zeros((1, 4)))  # r (1 − r) = z (1 − z) = 0


# ----------------------------------------------------------------- the Numba kernel and its NumPy twin

needs_kernel = pytest.mark.skipif(
    cell_module._kernels() is None, reason="no compiled kernels (numba missing or NUMBA_DISABLE_JIT)"
)


@needs_kernel
@given(
    B=st.integers(0, 9),
    H=st.integers(0, 40),
    scale=st.sampled_from([0.1, 1.0, 5.0, 30.0, 100.0]),
    dtype=st.sampled_from([np.float32, np.float64]),
    needs=st.tuples(st.booleans(), st.booleans(), st.booleans(), st.booleans()),
    z_keeps_old=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_kernel_gives_the_twins_bits(B, H, scale, dtype, needs, z_keeps_old, seed):
    # kernels/gru_cell.py against _backward_numpy: the same operations in the same order, bit for bit (signed
    # zeros included), in both conventions and for every combination of wanted gradients; the gates and the
    # candidate reach their saturations.
    rng = np.random.default_rng(seed)
    gates = (scale * rng.standard_normal((B, 2 * H))).astype(dtype)
    n_x, n_h, h, grad = (rng.standard_normal((B, H)).astype(dtype) for _ in range(4))
    rz = sigmoid_array(gates)  # as the forward saves it
    n = np.tanh(n_x + scale * rz[:, :H] * n_h)
    outputs = [np.empty((B, 2 * H), dtype) if needs[0] else None]
    outputs += [np.empty((B, H), dtype) if need else None for need in needs[1:]]
    cell_module._kernels().gru_cell_backward(*outputs, grad, rz, n, n_h, h, z_keeps_old)
    expected = cell_module._backward_numpy(grad, rz, n, n_h, h, z_keeps_old, *needs)
    for a, e, what in zip(outputs, expected, NAMES):
        same_bits(a, e, "d" + what)


@needs_kernel
@pytest.mark.parametrize("layer_norm", [True, False], ids=["LN-GRU", "GRU"])
def test_a_gru_runs_its_cell_backward_through_the_kernel(layer_norm, monkeypatch, rng):
    # Once per step and layer, also for the plain GRU, whose n_h is a column block of its projection (copied
    # into a contiguous array first).
    spy, calls = counting_kernels(cell_module._kernels(), "gru_cell_backward")
    monkeypatch.setattr(cell_module, "_kernels", lambda: spy)
    T, B = 5, 3
    gru = nn.GRU(4, 6, layer_norm=layer_norm, dtype=np.float32, rng=rng)
    out, _ = gru(npnorm.tensor(rng.standard_normal((T, B, 4)), dtype=np.float32))
    out.sum().backward()
    assert calls == ["gru_cell_backward"] * T


@pytest.mark.parametrize("variant", GRADIENT_VARIANTS)
@pytest.mark.parametrize("z_keeps_old", CONVENTIONS.values(), ids=CONVENTIONS.keys())
def test_kernel_and_twin_give_the_same_gradients_through_the_function(z_keeps_old, variant, monkeypatch, rng):
    # Through the Function, with the kernel (where numba runs it) and with the twin: the same bits. A strided
    # gradient or input is copied into a contiguous array first; a gradient the kernel does not take
    # (read-only, of another dtype) goes to the twin, and the float64 one is promoted as NumPy promotes it.
    B, H = 3, 5
    arrays = [(2 * rng.standard_normal((B, 2 * H))).astype(np.float32)]
    arrays += [rng.standard_normal((B, H)).astype(np.float32) for _ in range(3)]
    dout = rng.standard_normal((B, H)).astype(np.float32)
    dout = gradient_variant(dout, variant)
    if variant == "strided":
        arrays[2] = strided(arrays[2])  # n_h as a column view too
    results = []
    # First the kernel on a writable copy of the gradient: a read-only one never reaches the kernel, and the two
    # runs below would then compare the twin with itself.
    for kernel_on, gradient in ((True, np.array(dout)), (True, dout), (False, dout)):
        if not kernel_on:
            monkeypatch.setattr(cell_module, "_kernels", lambda: None)
        inputs = [npnorm.Tensor(a.copy() if a.flags.c_contiguous else a, requires_grad=True) for a in arrays]
        results.append(forward_backward(gru_cell_output, inputs, gradient, z_keeps_old))
    for kernel, *others, what in zip(*results, ("out", *NAMES)):
        for other in others:
            same_bits(other, kernel, what)


# -------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "shapes, match",
    [
        (
            ((8,), (2, 2), (2, 2), (2, 2)),
            r"gru_cell_output: gates must be 2-D, \(batch, 2·hidden_size\).*got shape \(8,\)",
        ),
        (((1, 2, 4), (2, 2), (2, 2), (2, 2)), r"gru_cell_output: gates must be 2-D"),
        (((), (1, 1), (1, 1), (1, 1)), r"gru_cell_output: gates must be 2-D.*got shape \(\)"),
        (((2, 5), (2, 2), (2, 2), (2, 2)), r"gru_cell_output: gates must be 2-D, \(batch, 2·hidden_size\)"),
        (((2, 4), (2, 3), (2, 2), (2, 2)), r"gru_cell_output: n_x must have shape .* = \(2, 2\).*got \(2, 3\)"),
        (((2, 4), (3, 2), (2, 2), (2, 2)), r"gru_cell_output: n_x must have shape"),
        (((2, 4), (2, 2), (2, 4), (2, 2)), r"gru_cell_output: n_h must have shape .* = \(2, 2\).*got \(2, 4\)"),
        (((2, 4), (2, 2), (2,), (2, 2)), r"gru_cell_output: n_h must have shape"),
        (((2, 4), (2, 2), (2, 2), (1, 2)), r"gru_cell_output: h must have shape .* = \(2, 2\).*got \(1, 2\)"),
        (((2, 4), (2, 2), (2, 2), (2, 2, 1)), r"gru_cell_output: h must have shape"),
        (((2, 4), (2, 2), (2, 2), (2, 1)), r"gru_cell_output: h must have shape"),  # h broadcasts: still an error
    ],
)
def test_bad_shapes_raise(shapes, match):
    for z_keeps_old in CONVENTIONS.values():
        with pytest.raises(ValueError, match=match):
            gru_cell_output(*(npnorm.tensor(np.zeros(s)) for s in shapes), z_keeps_old=z_keeps_old)


@pytest.mark.parametrize("name", ["n_x", "n_h", "h"])
def test_mixed_dtypes_raise(name):
    for gates_dtype, other_dtype in ((np.float32, np.float64), (np.float64, np.float32)):
        inputs = {n: npnorm.tensor(np.zeros((2, 4 if n == "gates" else 2)), dtype=gates_dtype) for n in NAMES}
        inputs[name] = npnorm.tensor(np.zeros((2, 2)), dtype=other_dtype)
        match = f"gru_cell_output: gates are {np.dtype(gates_dtype)} but {name} is {np.dtype(other_dtype)}; use one"
        with pytest.raises(TypeError, match=match):
            gru_cell_output(*inputs.values())


@given(shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=9), z_keeps_old=st.booleans())
def test_any_gate_shape_works_or_raises_value_error(shape, z_keeps_old):
    # Whatever shape the gates have, either it is a valid (B, 2H) with its matching n_x, n_h, h, or the error
    # names the function; never a NumPy IndexError or broadcasting error from inside forward.
    gates = np.zeros(shape)
    valid = gates.ndim == 2 and gates.shape[1] % 2 == 0
    other = np.zeros((gates.shape[0], gates.shape[1] // 2)) if valid else np.zeros((1, 1))
    args = (npnorm.Tensor(gates), *(npnorm.Tensor(other) for _ in range(3)))
    if valid:
        assert GRUCellOutput.apply(*args, z_keeps_old=z_keeps_old).shape == other.shape
    else:
        with pytest.raises(ValueError, match="gru_cell_output"):
            GRUCellOutput.apply(*args, z_keeps_old=z_keeps_old)
